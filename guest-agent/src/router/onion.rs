//! The node's part in onion circuits: relaying cells between the two links
//! of each circuit through it, ending circuits at their exit, and, on a
//! request VM, building the circuit its stream takes (and another one
//! around a relay that died).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::onion::cell::{CMD_ATTACH, CMD_STREAM, NONCE_LEN, TOKEN_LEN};
use crate::onion::header::process;
use crate::onion::{
    public_key, Drbg, ExitHop, Hop, Processed, RelayHop, SourceCircuit, CELL_LEN, HEADER_LEN, MAX_CREATE_DATA, MAX_DATA,
};
use crate::routing::{NodeId, Route, RouteContext};
use crate::transport::{Segment, Stream};
use crate::wire::{OverlayRepr, Protocol};

use super::drop::DropReason;
use super::streams::{fit_stream, Flow, MAX_FLOWS};
use super::{LinkPort, Notice, Router};

/// Circuit ends a node keeps; creates beyond are dropped.
const MAX_CIRCUITS: usize = 8192;
/// A circuit idle this long is forgotten.
const CIRCUIT_IDLE_US: u64 = 120_000_000;
/// How often a replacement circuit's attach is repeated until the exit
/// answers.
const ATTACH_RETRY_US: u64 = 200_000;
/// Transport segment bytes one data cell carries.
pub const ONION_MSS: usize = MAX_DATA - crate::transport::segment::HEADER_LEN;

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

/// A request VM's circuit.
struct Source {
    circuit: SourceCircuit,
    /// The path, this node first.
    path: Vec<NodeId>,
    /// The port and circuit id it starts on.
    port: usize,
    circ: u32,
    /// It replaces a circuit the stream used before (the exit must be told
    /// to move the stream, even if the stream has nothing to send).
    replaces: bool,
    /// When the last attach went out unanswered.
    attach_sent: u64,
    /// The exit has answered on this circuit; until then every segment
    /// rides in a create cell (so a lost create is repeated with the next
    /// retransmission).
    established: bool,
}

/// A node's onion state.
pub struct Onion {
    secret: [u8; 32],
    public: [u8; 32],
    directory: Vec<(NodeId, [u8; 32])>,
    pub(super) rng: Drbg,
    ends: BTreeMap<(usize, u32), (End, u64)>,
    source: Option<Source>,
    /// A request VM's stream token: the exit knows the stream by it, on
    /// whichever circuit it arrives.
    token: [u8; TOKEN_LEN],
}

impl Onion {
    /// Onion state from the node's static secret, the directory and the
    /// boot seed.
    pub fn new(secret: [u8; 32], directory: Vec<(NodeId, [u8; 32])>, seed: [u8; 32]) -> Self {
        let mut rng = Drbg::new(seed);
        let mut token = [0u8; TOKEN_LEN];
        rng.fill(&mut token);
        Self { public: public_key(&secret), secret, directory, rng, ends: BTreeMap::new(), source: None, token }
    }

    /// The node's static onion secret (streams' end-to-end keys agree
    /// with it too).
    pub(super) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Node `n`'s onion public key, from the directory.
    pub(super) fn directory_key(&self, n: NodeId) -> Option<[u8; 32]> {
        self.directory.iter().find(|(id, _)| *id == n).map(|(_, k)| *k)
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

/// Bytes of the source's wall-clock stamp at the front of a create's data.
const STAMP_LEN: usize = 8;

/// What a create carries for the exit besides a segment: when the source
/// sent it (the exit refuses creates replayed later) and the stream's
/// token.
struct Attach {
    stamp_us: u64,
    token: [u8; TOKEN_LEN],
}

/// Splits an opened cell's data by command: `(attach, segment)`.
fn attach_parts(cmd: u8, data: &[u8]) -> Result<(Option<Attach>, &[u8]), DropReason> {
    match cmd {
        CMD_STREAM => Ok((None, data)),
        CMD_ATTACH if data.len() >= STAMP_LEN + TOKEN_LEN => {
            let mut stamp = [0u8; STAMP_LEN];
            stamp.copy_from_slice(&data[..STAMP_LEN]);
            let mut token = [0u8; TOKEN_LEN];
            token.copy_from_slice(&data[STAMP_LEN..STAMP_LEN + TOKEN_LEN]);
            Ok((Some(Attach { stamp_us: u64::from_be_bytes(stamp), token }), &data[STAMP_LEN + TOKEN_LEN..]))
        }
        _ => Err(DropReason::BadCell),
    }
}

impl<L: LinkPort> Router<L> {
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
    pub(super) fn onion_cell(&mut self, i: usize, circ: u32, payload: &[u8], now: u64) -> Result<(), DropReason> {
        if payload.len() != CELL_LEN {
            return Err(DropReason::BadCell);
        }
        let mut cell = payload.to_vec();
        let Some((end, at)) = self.onion.ends.get_mut(&(i, circ)) else { return self.onion_create(i, circ, cell, now) };
        *at = now;
        match end {
            End::RelayIn { out_port, out_circ, hop, alpha, next_header } => {
                let (j, c) = (*out_port, *out_circ);
                // The same create again (the source repeats it until the
                // exit answers): pass it on as a create once more.
                let again = alpha_of(&cell) == *alpha;
                hop.forward(&mut cell, again.then_some(&**next_header)).map_err(|_| DropReason::BadCell)?;
                if self.send_cell(j, c, &cell) {
                    self.stats.forwarded += 1;
                }
            }
            End::RelayOut { in_port, in_circ, hop } => {
                let (j, c) = (*in_port, *in_circ);
                hop.backward(&mut cell).map_err(|_| DropReason::BadCell)?;
                if self.send_cell(j, c, &cell) {
                    self.stats.forwarded += 1;
                }
            }
            End::Exit { hop, flow, alpha } => {
                let create = alpha_of(&cell) == *alpha;
                let flow = *flow;
                let (cmd, range) = hop.open(&mut cell, create).map_err(|_| DropReason::BadMac)?;
                let (_, seg) = attach_parts(cmd, &cell[range])?;
                self.exit_segment(flow, seg, now)?;
            }
            End::Source => {
                let Some(src) = self.onion.source.as_mut() else { return Err(DropReason::NoRoute) };
                if (src.port, src.circ) != (i, circ) {
                    // A circuit this source has given up.
                    return Ok(());
                }
                let (_, range) = src.circuit.open(&mut cell).map_err(|_| DropReason::BadMac)?;
                src.established = true;
                let seg = Segment::parse(&cell[range]).map_err(|_| DropReason::BadSegment)?;
                if let Some(e) = self.request.as_mut() {
                    e.stream.on_segment(now, &seg);
                    self.stats.delivered += 1;
                }
            }
        }
        Ok(())
    }

    /// A segment for the stream `flow` that ends here (nothing if empty:
    /// an attach without data).
    fn exit_segment(&mut self, flow: u32, seg: &[u8], now: u64) -> Result<(), DropReason> {
        if seg.is_empty() {
            return Ok(());
        }
        let seg = Segment::parse(seg).map_err(|_| DropReason::BadSegment)?;
        if let Some(f) = self.flows.get_mut(&flow) {
            f.stream.on_segment(now, &seg);
            self.stats.delivered += 1;
        }
        Ok(())
    }

    /// A cell on a circuit this node does not know: a create.
    fn onion_create(&mut self, i: usize, circ: u32, mut cell: Vec<u8>, now: u64) -> Result<(), DropReason> {
        if self.onion.ends.len() + 2 > MAX_CIRCUITS {
            return Err(DropReason::NoRoute);
        }
        let alpha = alpha_of(&cell);
        match process(&self.onion.secret, &self.onion.public, &cell[NONCE_LEN..]).map_err(|_| DropReason::BadMac)? {
            Processed::Forward { next, header, keys } => {
                let j = self.port_to(next).ok_or(DropReason::NoRoute)?;
                let out_circ = self.onion.fresh_circ(j);
                let hop = RelayHop::new(keys);
                hop.forward(&mut cell, Some(&*header)).map_err(|_| DropReason::BadCell)?;
                self.onion
                    .ends
                    .insert((j, out_circ), (End::RelayOut { in_port: i, in_circ: circ, hop: hop.clone() }, now));
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
                let tag = keys.replay_tag();
                let hop = ExitHop::new(keys);
                let (cmd, range) = hop.open(&mut cell, true).map_err(|_| DropReason::BadMac)?;
                let (attach, seg) = attach_parts(cmd, &cell[range])?;
                // A create opens state from nothing: it must be fresh and
                // never seen, or a recording of it would re-home or
                // re-open its stream.
                let Some(attach) = attach else { return Err(DropReason::BadCell) };
                let wall = self.clock.at(now);
                self.handshakes.check(&tag, attach.stamp_us, wall)?;
                self.handshakes.insert(tag, attach.stamp_us, wall);
                let token = Some(attach.token);
                // A stream this exit already carries, on a new circuit.
                let known = token.and_then(|t| self.flows.iter().find(|(_, f)| f.token == Some(t)).map(|(id, _)| *id));
                if let Some(flow) = known {
                    self.onion.ends.insert((i, circ), (End::Exit { hop, flow, alpha }, now));
                    self.stats.circuits += 1;
                    if let Some(f) = self.flows.get_mut(&flow) {
                        f.circuit = Some((i, circ));
                        // Resend at once what the dead circuit swallowed;
                        // the acknowledgement tells the source it works.
                        f.stream.path_changed(now);
                    }
                    return self.exit_segment(flow, seg, now);
                }
                let seg = Segment::parse(seg).map_err(|_| DropReason::BadSegment)?;
                let Some((mut stream, info)) = Stream::accept(&seg) else { return Ok(()) };
                if self.flows.len() >= MAX_FLOWS {
                    return Err(DropReason::NoRoute);
                }
                fit_stream(&mut stream, Protocol::Onion);
                let flow = loop {
                    let f = self.onion.rng.u32();
                    if !self.flows.contains_key(&f) {
                        break f;
                    }
                };
                self.onion.ends.insert((i, circ), (End::Exit { hop, flow, alpha }, now));
                self.stats.circuits += 1;
                self.stats.delivered += 1;
                let mut f = Flow::new(stream, 0, Protocol::Onion, Some((i, circ)));
                f.token = token;
                self.open_flow(flow, f, &info);
                Ok(())
            }
        }
    }

    /// Sends a segment of the exit's stream on circuit (`port`, `circ`).
    pub(super) fn onion_send_backward(&mut self, port: usize, circ: u32, seg: &[u8]) -> Result<bool, DropReason> {
        let mut cell = Vec::with_capacity(CELL_LEN);
        match self.onion.ends.get_mut(&(port, circ)) {
            Some((End::Exit { hop, .. }, _)) => {
                hop.seal(CMD_STREAM, seg, &mut cell).map_err(|_| DropReason::BadCell)?
            }
            _ => return Err(DropReason::NoRoute),
        }
        Ok(self.send_cell(port, circ, &cell))
    }

    /// A new circuit to `dst` for a request VM: at least three relays
    /// (`routing::onion`), none the app asked to avoid, each with a key in
    /// the directory, starting on a port other than `not_via`.
    fn onion_build(&mut self, dst: NodeId, not_via: Option<usize>) -> Result<Source, DropReason> {
        let avoid = self.request.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
        let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
        let Some(Route::Circuit(path)) = self.routes.route(Protocol::Onion, dst, &mut ctx) else {
            return Err(DropReason::NoRoute);
        };
        let port = self.port_to(path[1]).ok_or(DropReason::NoRoute)?;
        // The edge host steers a request's frames by its flow id, and the
        // first relay knows that id on that link as the old circuit's.
        if Some(port) == not_via {
            return Err(DropReason::NoRoute);
        }
        let mut hops = Vec::with_capacity(path.len() - 1);
        for &n in &path[1..] {
            hops.push(Hop { node: n, public: self.onion.directory_key(n).ok_or(DropReason::NoRoute)? });
        }
        let circuit = SourceCircuit::new(&hops, &mut self.onion.rng).map_err(|_| DropReason::NoRoute)?;
        let circ = self.control_flow;
        self.notice(Notice::CircuitBuilt { relays: path.len() - 2 });
        self.onion.ends.insert((port, circ), (End::Source, 0));
        Ok(Source { circuit, path, port, circ, established: false, replaces: false, attach_sent: 0 })
    }

    /// Builds a request VM's circuit to `dst` if it has none yet.
    pub(super) fn onion_prepare(&mut self, dst: NodeId) -> Result<(), DropReason> {
        if self.onion.source.is_none() {
            let s = self.onion_build(dst, None)?;
            self.onion.source = Some(s);
        }
        Ok(())
    }

    /// On a request VM: whether its circuit still stands in the topology as
    /// measured; if a link of it is gone, a new circuit (the stream
    /// re-attaches to the exit by its token and retransmits), else false:
    /// the stream cannot go on. While a replacement circuit is unanswered,
    /// the stream acknowledges every [`ATTACH_RETRY_US`] so an attach goes
    /// out even when it has nothing to send.
    pub(super) fn onion_check(&mut self, dst: NodeId, now: u64) -> bool {
        let Some(src) = self.onion.source.as_mut() else { return true };
        if src.replaces && !src.established && now.saturating_sub(src.attach_sent) >= ATTACH_RETRY_US {
            src.attach_sent = now;
            if let Some(e) = self.request.as_mut() {
                e.stream.ack_now();
            }
        }
        if src.path.windows(2).all(|w| self.topology.link(w[0], w[1]).is_some()) {
            return true;
        }
        let old_port = src.port;
        match self.onion_build(dst, Some(old_port)) {
            Ok(mut s) => {
                self.notice(Notice::CircuitMoved);
                s.replaces = true;
                s.attach_sent = now;
                self.onion.source = Some(s);
                if let Some(e) = self.request.as_mut() {
                    e.stream.path_changed(now);
                }
                true
            }
            Err(_) => {
                self.notice(Notice::CircuitLost);
                self.onion.source = None;
                false
            }
        }
    }

    /// Sends a segment of a request VM's stream to `dst` on its circuit:
    /// in a create cell with its stamp and the stream's token until the
    /// exit answers,
    /// then in data cells.
    pub(super) fn onion_send_forward(&mut self, dst: NodeId, seg: &[u8], now: u64) -> Result<bool, DropReason> {
        self.onion_prepare(dst)?;
        let token = self.onion.token;
        let stamp = self.clock.at(now);
        let Some(src) = self.onion.source.as_mut() else { return Err(DropReason::NoRoute) };
        let (port, circ) = (src.port, src.circ);
        let mut cell = Vec::with_capacity(CELL_LEN);
        if src.established {
            src.circuit.seal(false, CMD_STREAM, seg, &mut cell).map_err(|_| DropReason::BadCell)?;
        } else {
            // A full-sized segment does not fit beside the header: the
            // create carries the token alone and the stream sends the
            // segment again once the circuit is up.
            let mut data = stamp.to_be_bytes().to_vec();
            data.extend_from_slice(&token);
            if STAMP_LEN + TOKEN_LEN + seg.len() <= MAX_CREATE_DATA {
                data.extend_from_slice(seg);
            }
            src.circuit.seal(true, CMD_ATTACH, &data, &mut cell).map_err(|_| DropReason::BadCell)?;
        }
        Ok(self.send_cell(port, circ, &cell))
    }
}
