//! The node's part in onion circuits: relaying cells between the two links
//! of each circuit through it, ending circuits at their exit, and, on a
//! request VM, building the one circuit its stream takes.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use guest_agent::onion::cell::{CMD_STREAM, NONCE_LEN};
use guest_agent::onion::header::process;
use guest_agent::onion::{
    public_key, Drbg, ExitHop, Hop, Processed, RelayHop, SourceCircuit, CELL_LEN, HEADER_LEN, MAX_DATA,
};
use guest_agent::routing::{NodeId, Route, RouteContext};
use guest_agent::transport::{Segment, Stream};
use guest_agent::wire::{OverlayRepr, Protocol, WireError};

use super::{Flow, Node, MAX_FLOWS};
use crate::clock;

/// Circuit ends a node keeps; creates beyond are dropped.
const MAX_CIRCUITS: usize = 8192;
/// A circuit idle this long is forgotten.
const CIRCUIT_IDLE_US: u64 = 120_000_000;
/// Transport segment bytes one data cell carries.
pub const ONION_MSS: usize = MAX_DATA - guest_agent::transport::segment::HEADER_LEN;

/// What one (port, circuit id) is to this node.
enum End {
    /// Cells arriving here travel forward, out of `out_port` as `out_circ`.
    RelayIn { out_port: usize, out_circ: u32, hop: RelayHop, alpha: [u8; 32], next_header: Box<[u8; HEADER_LEN]> },
    /// Cells arriving here travel backward, out of `in_port` as `in_circ`.
    RelayOut { in_port: usize, in_circ: u32, hop: RelayHop },
    /// The circuit ends here, carrying stream `flow`.
    Exit { hop: ExitHop, flow: u32, alpha: [u8; 32] },
    /// This node built the circuit (a request VM).
    Source,
}

/// A node's onion state.
pub struct Onion {
    secret: [u8; 32],
    public: [u8; 32],
    directory: Vec<(NodeId, [u8; 32])>,
    pub(super) rng: Drbg,
    ends: BTreeMap<(usize, u32), (End, u64)>,
    /// On a request VM: its circuit, the port and id it starts on, and
    /// whether the exit has answered (until then segments ride in create
    /// cells, so a lost create is repeated with the next retransmission).
    source: Option<(SourceCircuit, usize, u32, bool)>,
}

impl Onion {
    /// Onion state from the node's static secret, the directory and the
    /// boot seed.
    pub fn new(secret: [u8; 32], directory: Vec<(NodeId, [u8; 32])>, seed: [u8; 32]) -> Self {
        Self { public: public_key(&secret), secret, directory, rng: Drbg::new(seed), ends: BTreeMap::new(), source: None }
    }

    /// Forgets circuits idle for long (their streams are long gone).
    pub fn expire(&mut self, now: u64) {
        self.ends.retain(|_, (e, at)| matches!(e, End::Source) || now.saturating_sub(*at) < CIRCUIT_IDLE_US);
    }

    fn fresh_circ(&mut self, port: usize) -> u32 {
        loop {
            let c = self.rng.u32();
            if c != 0 && !self.ends.contains_key(&(port, c)) {
                return c;
            }
        }
    }
}

fn alpha_of(cell: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&cell[NONCE_LEN..NONCE_LEN + 32]);
    a
}

impl Node {
    /// Sends a cell to the neighbour on port `j` as circuit `circ`. The
    /// header names only the two ends of the link.
    fn send_cell(&mut self, j: usize, circ: u32, cell: &[u8]) -> bool {
        let repr = OverlayRepr {
            protocol: Protocol::Onion,
            flags: 0,
            hop_limit: 1,
            flow_id: circ,
            src: self.me,
            dst: self.ports[j].peer,
            state_len: 0,
            payload_len: cell.len() as u16,
            link_id: 0,
            link_seq: 0,
        };
        self.send(j, repr, &[], cell)
    }

    /// An onion cell arrived on port `i` as circuit `circ`.
    pub(super) fn onion_cell(&mut self, i: usize, circ: u32, payload: &[u8]) -> Result<(), WireError> {
        if payload.len() != CELL_LEN {
            return Err(WireError::BadLength);
        }
        let mut cell = payload.to_vec();
        let now = clock::now_us();
        let Some((end, at)) = self.onion.ends.get_mut(&(i, circ)) else { return self.onion_create(i, circ, cell) };
        *at = now;
        match end {
            End::RelayIn { out_port, out_circ, hop, alpha, next_header } => {
                let (j, c) = (*out_port, *out_circ);
                // The same create again (the source repeats it until the
                // exit answers): pass it on as a create once more.
                let again = alpha_of(&cell) == *alpha;
                hop.forward(&mut cell, again.then_some(&**next_header)).map_err(|_| WireError::BadLength)?;
                if self.send_cell(j, c, &cell) {
                    self.stats.forwarded += 1;
                }
            }
            End::RelayOut { in_port, in_circ, hop } => {
                let (j, c) = (*in_port, *in_circ);
                hop.backward(&mut cell).map_err(|_| WireError::BadLength)?;
                if self.send_cell(j, c, &cell) {
                    self.stats.forwarded += 1;
                }
            }
            End::Exit { hop, flow, alpha } => {
                let create = alpha_of(&cell) == *alpha;
                let flow = *flow;
                let (_, range) = hop.open(&mut cell, create).map_err(|_| WireError::BadMac)?;
                let seg = Segment::parse(&cell[range]).map_err(|_| WireError::BadLength)?;
                if let Some(f) = self.flows.get_mut(&flow) {
                    f.stream.on_segment(now, &seg);
                    self.stats.delivered += 1;
                }
            }
            End::Source => {
                let Some((src, _, _, established)) = self.onion.source.as_mut() else { return Err(WireError::NoRoute) };
                let (_, range) = src.open(&mut cell).map_err(|_| WireError::BadMac)?;
                *established = true;
                let seg = Segment::parse(&cell[range]).map_err(|_| WireError::BadLength)?;
                if let Some(e) = self.edge.as_mut() {
                    e.stream.on_segment(now, &seg);
                    self.stats.delivered += 1;
                }
            }
        }
        Ok(())
    }

    /// A cell on a circuit this node does not know: a create.
    fn onion_create(&mut self, i: usize, circ: u32, mut cell: Vec<u8>) -> Result<(), WireError> {
        if self.onion.ends.len() + 2 > MAX_CIRCUITS {
            return Err(WireError::NoRoute);
        }
        let alpha = alpha_of(&cell);
        let now = clock::now_us();
        match process(&self.onion.secret, &self.onion.public, &cell[NONCE_LEN..]).map_err(|_| WireError::BadMac)? {
            Processed::Forward { next, header, keys } => {
                let j = self.port_to(next).ok_or(WireError::NoRoute)?;
                let out_circ = self.onion.fresh_circ(j);
                let hop = RelayHop::new(keys);
                hop.forward(&mut cell, Some(&*header)).map_err(|_| WireError::BadLength)?;
                self.onion.ends.insert((j, out_circ), (End::RelayOut { in_port: i, in_circ: circ, hop: hop.clone() }, now));
                self.onion
                    .ends
                    .insert((i, circ), (End::RelayIn { out_port: j, out_circ, hop, alpha, next_header: header }, now));
                self.stats.circuits += 1;
                if self.send_cell(j, out_circ, &cell) {
                    self.stats.forwarded += 1;
                }
                Ok(())
            }
            Processed::Exit { keys } => {
                let hop = ExitHop::new(keys);
                let (_, range) = hop.open(&mut cell, true).map_err(|_| WireError::BadMac)?;
                let seg = Segment::parse(&cell[range]).map_err(|_| WireError::BadLength)?;
                let Some((mut stream, info)) = Stream::accept(&seg) else { return Ok(()) };
                if self.flows.len() >= MAX_FLOWS {
                    return Err(WireError::NoRoute);
                }
                super::fit_stream(&mut stream, Protocol::Onion);
                let flow = loop {
                    let f = self.onion.rng.u32();
                    if !self.flows.contains_key(&f) {
                        break f;
                    }
                };
                self.onion.ends.insert((i, circ), (End::Exit { hop, flow, alpha }, now));
                self.stats.circuits += 1;
                self.stats.delivered += 1;
                self.open_flow(flow, Flow::new(stream, 0, Protocol::Onion, Some((i, circ))), &info);
                Ok(())
            }
        }
    }

    /// Sends a segment of the exit's stream on circuit (`port`, `circ`).
    pub(super) fn onion_send_backward(&mut self, port: usize, circ: u32, seg: &[u8]) -> Result<bool, WireError> {
        let mut cell = Vec::with_capacity(CELL_LEN);
        match self.onion.ends.get_mut(&(port, circ)) {
            Some((End::Exit { hop, .. }, _)) => hop.seal(CMD_STREAM, seg, &mut cell).map_err(|_| WireError::BadLength)?,
            _ => return Err(WireError::NoRoute),
        }
        Ok(self.send_cell(port, circ, &cell))
    }

    /// Builds a request VM's circuit to `dst` (if it has none yet): at
    /// least three relays (`routing::onion`), none the app asked to avoid, each with a
    /// key in the directory.
    pub(super) fn onion_prepare(&mut self, dst: NodeId) -> Result<(), WireError> {
        let circ = self.control_flow;
        if self.onion.source.is_none() {
            let avoid = self.edge.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
            let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
            let Some(Route::Circuit(path)) = self.routes.route(Protocol::Onion, dst, &mut ctx) else {
                return Err(WireError::NoRoute);
            };
            let mut hops = Vec::with_capacity(path.len() - 1);
            for &n in &path[1..] {
                let public = self.onion.directory.iter().find(|(id, _)| *id == n).map(|(_, k)| *k);
                hops.push(Hop { node: n, public: public.ok_or(WireError::NoRoute)? });
            }
            let circuit = SourceCircuit::new(&hops, &mut self.onion.rng).map_err(|_| WireError::NoRoute)?;
            let port = self.port_to(path[1]).ok_or(WireError::NoRoute)?;
            crate::log!("edge: onion circuit through {} relays", path.len() - 2);
            self.onion.ends.insert((port, circ), (End::Source, 0));
            self.onion.source = Some((circuit, port, circ, false));
        }
        Ok(())
    }

    /// Sends a segment of a request VM's stream to `dst` on its circuit.
    pub(super) fn onion_send_forward(&mut self, dst: NodeId, seg: &[u8]) -> Result<bool, WireError> {
        self.onion_prepare(dst)?;
        let Some((src, port, circ, established)) = self.onion.source.as_mut() else { return Err(WireError::NoRoute) };
        let (port, circ) = (*port, *circ);
        let mut cell = Vec::with_capacity(CELL_LEN);
        src.seal(!*established, CMD_STREAM, seg, &mut cell).map_err(|_| WireError::BadLength)?;
        Ok(self.send_cell(port, circ, &cell))
    }
}
