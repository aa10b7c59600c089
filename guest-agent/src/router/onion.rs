//! The node's part in onion circuits: relaying cells between the two links
//! of each circuit through it, ending circuits at their exit, and, on a
//! request VM, building the circuit its stream takes (and another one
//! around a relay that died).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::onion::cell::{CMD_ATTACH, CMD_STREAM, NONCE_LEN, TOKEN_LEN};
use crate::onion::header::process;
use crate::onion::keys::{mac, same};
use crate::onion::{
    Drbg, ExitHop, Hop, HopKeys, OnionKeyRing, Processed, RelayHop, SourceCircuit, CELL_LEN, HEADER_LEN,
    MAX_CREATE_DATA, MAX_DATA,
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

/// How a stream that came over an onion circuit is known at its exit:
/// the token its source names it by, and the key only the source and the
/// exit hold (from the circuit that opened it) under which every later
/// attach must carry a proof. Knowing the token alone moves nothing.
#[derive(Clone)]
pub(super) struct StreamAttach {
    pub(super) token: [u8; TOKEN_LEN],
    key: [u8; 32],
}

impl Drop for StreamAttach {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl StreamAttach {
    /// The stream's attach key, from the keys of the circuit that opened it.
    fn new(token: [u8; TOKEN_LEN], opened_by: &HopKeys) -> Self {
        Self { token, key: opened_by.stream_key() }
    }

    /// The proof an attach carries: a MAC under the stream's key of its
    /// stamp and of the create it rides in (so it fits no other create).
    fn proof(&self, stamp_us: u64, create: &HopKeys) -> [u8; PROOF_LEN] {
        let mut m = [0u8; STAMP_LEN + 16];
        m[..STAMP_LEN].copy_from_slice(&stamp_us.to_be_bytes());
        m[STAMP_LEN..].copy_from_slice(&create.replay_tag());
        mac(&self.key, &m)
    }
}

/// Why a source has no circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoCircuit {
    /// No path of enough relays avoids what the app avoids: there will be
    /// none (link state only ever removes links).
    NoPath,
    /// A relay's current onion key is not known yet (its link state has
    /// not arrived), or it is unusable.
    NoKey,
}

/// A node's onion state.
pub struct Onion {
    /// The node's onion keys (none on a request VM, which only builds).
    keys: Option<OnionKeyRing>,
    pub(super) rng: Drbg,
    ends: BTreeMap<(usize, u32), (End, u64)>,
    source: Option<Source>,
    /// A request VM's stream, as its exit will know it (set by the first
    /// circuit; again by the next while no exit has answered).
    attach: Option<StreamAttach>,
    /// An exit has answered on one of this source's circuits: it knows
    /// the stream by `attach`.
    attached: bool,
}

impl Onion {
    /// Onion state from the boot seed; a node with a rotation period
    /// (`period_s` > 0) draws its first onion key at `now`.
    pub fn new(period_s: u32, seed: [u8; 32], now: u64) -> Self {
        let mut rng = Drbg::new(seed);
        let keys = (period_s > 0).then(|| OnionKeyRing::new(period_s, now, &mut rng));
        Self { keys, rng, ends: BTreeMap::new(), source: None, attach: None, attached: false }
    }

    /// The onion public key this node advertises now (all zero: none).
    pub(super) fn public(&self) -> [u8; 32] {
        self.keys.as_ref().map_or([0; 32], OnionKeyRing::public)
    }

    /// Rotates the node's onion key when its period is over; true when
    /// the key changed (advertise it).
    pub(super) fn rotate(&mut self, now: u64) -> bool {
        match self.keys.as_mut() {
            Some(k) => k.tick(now, &mut self.rng),
            None => false,
        }
    }

    /// The onion secrets that may open a create or a hello now, newest
    /// first, with their public keys.
    pub(super) fn secrets(&self) -> impl Iterator<Item = (&[u8; 32], &[u8; 32])> {
        self.keys.iter().flat_map(OnionKeyRing::keys)
    }

    /// Peels a create's header with whichever of the node's keys it was
    /// built for.
    fn process(&self, header: &[u8]) -> Option<Processed> {
        self.secrets().find_map(|(secret, public)| process(secret, public, header).ok())
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
/// Bytes of an attach's proof.
const PROOF_LEN: usize = 16;
/// Bytes of what a create carries before its segment.
const ATTACH_LEN: usize = STAMP_LEN + TOKEN_LEN + PROOF_LEN;

/// What a create carries for the exit besides a segment: when the source
/// sent it (the exit refuses creates replayed later), the stream's token
/// and the proof that the stream's source sent it.
struct Attach {
    stamp_us: u64,
    token: [u8; TOKEN_LEN],
    proof: [u8; PROOF_LEN],
}

/// Splits an opened cell's data by command: `(attach, segment)`.
fn attach_parts(cmd: u8, data: &[u8]) -> Result<(Option<Attach>, &[u8]), DropReason> {
    match cmd {
        CMD_STREAM => Ok((None, data)),
        CMD_ATTACH if data.len() >= ATTACH_LEN => {
            let mut stamp = [0u8; STAMP_LEN];
            stamp.copy_from_slice(&data[..STAMP_LEN]);
            let mut token = [0u8; TOKEN_LEN];
            token.copy_from_slice(&data[STAMP_LEN..STAMP_LEN + TOKEN_LEN]);
            let mut proof = [0u8; PROOF_LEN];
            proof.copy_from_slice(&data[STAMP_LEN + TOKEN_LEN..ATTACH_LEN]);
            Ok((Some(Attach { stamp_us: u64::from_be_bytes(stamp), token, proof }), &data[ATTACH_LEN..]))
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
                self.onion.attached = true;
                let seg = Segment::parse(&cell[range]).map_err(|_| DropReason::BadSegment)?;
                if let Some(e) = self.request.as_mut() {
                    e.on_segment(now, &seg);
                    self.stats.connect = e.times;
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
            f.on_segment(now, &seg);
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
        match self.onion.process(&cell[NONCE_LEN..]).ok_or(DropReason::BadMac)? {
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
                // A stream this exit already carries, on a new circuit: only
                // if its source proves it sent this create.
                let known = self.flows.iter().find_map(|(id, f)| {
                    f.attach
                        .as_ref()
                        .filter(|a| same(&a.token, &attach.token))
                        .map(|a| (*id, a.proof(attach.stamp_us, hop.keys())))
                });
                let opening = StreamAttach::new(attach.token, hop.keys());
                let proof = match known {
                    Some((_, p)) => p,
                    None => opening.proof(attach.stamp_us, hop.keys()),
                };
                if !same(&proof, &attach.proof) {
                    return Err(DropReason::BadMac);
                }
                self.handshakes.insert(tag, attach.stamp_us, wall);
                if let Some((flow, _)) = known {
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
                let mut f = Flow::new(stream, 0, Protocol::Onion, Some((i, circ)), now);
                f.attach = Some(opening);
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
    fn onion_build(&mut self, dst: NodeId, not_via: Option<usize>) -> Result<Source, NoCircuit> {
        let avoid = self.request.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
        let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
        let Some(Route::Circuit(path)) = self.routes.route(Protocol::Onion, dst, &mut ctx) else {
            return Err(NoCircuit::NoPath);
        };
        let port = self.port_to(path[1]).ok_or(NoCircuit::NoPath)?;
        // The edge host steers a request's frames by its flow id, and the
        // first relay knows that id on that link as the old circuit's.
        if Some(port) == not_via {
            return Err(NoCircuit::NoPath);
        }
        let mut hops = Vec::with_capacity(path.len() - 1);
        for &n in &path[1..] {
            hops.push(Hop { node: n, public: self.lsdb.onion_key(n).ok_or(NoCircuit::NoKey)? });
        }
        let circuit = SourceCircuit::new(&hops, &mut self.onion.rng).map_err(|_| NoCircuit::NoKey)?;
        if !self.onion.attached {
            // The circuit that opens the stream at the exit names it.
            let mut token = [0u8; TOKEN_LEN];
            self.onion.rng.fill(&mut token);
            self.onion.attach = Some(StreamAttach::new(token, circuit.exit_keys()));
        }
        let circ = self.control_flow;
        self.notice(Notice::CircuitBuilt { relays: path.len() - 2 });
        self.onion.ends.insert((port, circ), (End::Source, 0));
        Ok(Source { circuit, path, port, circ, established: false, replaces: false, attach_sent: 0 })
    }

    /// Builds a request VM's circuit to `dst` if it has none yet.
    pub(super) fn onion_prepare(&mut self, dst: NodeId) -> Result<(), NoCircuit> {
        if self.onion.source.is_none() {
            let s = self.onion_build(dst, None)?;
            self.onion.source = Some(s);
        }
        Ok(())
    }

    /// When [`Router::onion_check`] next re-sends the attach of a circuit
    /// that replaced a dead one, if it waits for one.
    pub(super) fn onion_attach_retry_at(&self) -> Option<u64> {
        let s = self.onion.source.as_ref()?;
        (s.replaces && !s.established).then_some(s.attach_sent + ATTACH_RETRY_US)
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
    /// in a create cell with its stamp, the stream's token and the attach
    /// proof until the exit answers, then in data cells.
    pub(super) fn onion_send_forward(&mut self, dst: NodeId, seg: &[u8], now: u64) -> Result<bool, DropReason> {
        self.onion_prepare(dst).map_err(|_| DropReason::NoRoute)?;
        let stamp = self.clock.at(now);
        let Some(attach) = self.onion.attach.as_ref() else { return Err(DropReason::NoRoute) };
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
            data.extend_from_slice(&attach.token);
            data.extend_from_slice(&attach.proof(stamp, src.circuit.exit_keys()));
            if ATTACH_LEN + seg.len() <= MAX_CREATE_DATA {
                data.extend_from_slice(seg);
            }
            src.circuit.seal(true, CMD_ATTACH, &data, &mut cell).map_err(|_| DropReason::BadCell)?;
        }
        Ok(self.send_cell(port, circ, &cell))
    }
}
