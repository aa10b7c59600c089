//! Streams that end at this node (the destination side of an app's
//! connection): the transport, the host's service behind the console, and
//! how each routing protocol shapes a stream.
//!
//! A SYN opens a [`Flow`] and asks the host (a `RECORD_CONTROL` `OPEN`
//! record); the host answers `OPENED` or `REFUSED`, then bytes move as
//! `RECORD_STREAM` records both ways until `EOF` or `RESET`.

use alloc::vec::Vec;

use crate::node::{stream_op, Record, HOST_WINDOW, RECORD_CONTROL, RECORD_HDR, RECORD_STREAM};
use crate::routing::{NodeId, ReplyPaths, SourceRoute};
use crate::transport::e2e::{self, Binding, E2eSession};
use crate::transport::stream::MSS;
use crate::transport::{Segment, Stream, StreamState};
use crate::wire::{OverlayRepr, Protocol, FLAG_STREAM};

use super::drop::DropReason;
use super::forward::{new_packet_id, route_states};
use super::onion::{StreamAttach, ONION_MSS};
use super::{origin_repr, LinkPort, Router, MAX_DELIVER_BACKLOG};

/// A stream ending at this node: the transport, and who is at the other
/// end.
pub struct Flow {
    pub(super) stream: Stream,
    pub(super) peer: NodeId,
    pub(super) protocol: Protocol,
    /// The host connected the service (or the stream was refused).
    pub(super) answered: bool,
    pub(super) eof_sent: bool,
    /// Bytes from the host the stream's send buffer had no room for yet.
    pub(super) pending: Vec<u8>,
    /// The host's side ended: close the stream once `pending` is sent.
    pub(super) host_eof: bool,
    /// For a stream that came over an onion circuit: the circuit's port
    /// and id here (the source is unknown, by design).
    pub(super) circuit: Option<(usize, u32)>,
    /// For such a stream: how its source attaches new circuits to it.
    pub(super) attach: Option<StreamAttach>,
    /// For a source-routed stream: the paths its packets came on, to
    /// answer on.
    pub(super) reply: ReplyPaths,
    /// The end-to-end session with the request VM (every stream but an
    /// onion one, whose cells are sealed end to end already).
    pub(super) e2e: Option<E2eSession>,
    /// Stream bytes the host may still take ([`stream_op::CREDIT`] adds).
    pub(super) host_credit: u32,
    /// When a segment of the stream last arrived (its source's keepalives
    /// included), for the idle timeout.
    pub(super) last_heard: u64,
}

impl Flow {
    pub(super) fn new(
        stream: Stream,
        peer: NodeId,
        protocol: Protocol,
        circuit: Option<(usize, u32)>,
        now: u64,
    ) -> Self {
        Self {
            stream,
            peer,
            protocol,
            answered: false,
            eof_sent: false,
            pending: Vec::new(),
            host_eof: false,
            circuit,
            attach: None,
            reply: ReplyPaths::default(),
            e2e: None,
            host_credit: HOST_WINDOW,
            last_heard: now,
        }
    }

    /// A segment of this stream arrived.
    pub(super) fn on_segment(&mut self, now: u64, seg: &Segment<'_>) {
        self.stream.on_segment(now, seg);
        self.last_heard = now;
    }
}

/// Streams a node ends at once; further SYNs are refused with a reset.
pub const MAX_FLOWS: usize = 2048;
/// Streams one source (an edge host, for all its requests) may hold here
/// at once: one source cannot take every place.
pub const MAX_FLOWS_PER_SOURCE: usize = MAX_FLOWS * 3 / 4;

/// Most bytes held for streams' send buffers before the node stops reading
/// the console (backpressure to the host).
pub const MAX_STREAM_PENDING: usize = 1 << 20;

/// Most bytes a node's streams hold in their buffers together (send, receive
/// and out-of-order; `transport::stream::BUF` each way per stream at most):
/// past it, no stream takes more from the host and windows stay where they
/// are, so many bulk streams cannot exhaust the node's heap (64 MiB).
pub const MAX_STREAM_BUFFERED: usize = 24 << 20;

/// Duplicate acks a `multipath` stream takes as a loss: its paths differ
/// in delay, so segments overtake each other by several all the time.
pub const MULTIPATH_REORDER: u32 = 16;

/// Stream bytes handed to the host per stream and pass.
const HOST_READ: usize = 16 * 1024;
const _: () = assert!(HOST_READ <= crate::node::Record::MAX_PAYLOAD);

/// Shapes a stream for the protocol carrying it: smaller segments in onion
/// cells, tolerance of reordering over several paths.
pub fn fit_stream(stream: &mut Stream, protocol: Protocol) {
    match protocol {
        Protocol::Onion => stream.set_mss(ONION_MSS),
        _ => stream.set_mss(MSS - e2e::OVERHEAD),
    }
    if protocol == Protocol::Multipath {
        stream.set_reorder_tolerance(MULTIPATH_REORDER);
    }
}

impl<L: LinkPort> Router<L> {
    /// Streams ending here now.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// A transport segment of stream `repr.flow_id` arrived for this node,
    /// sealed end to end.
    pub(super) fn stream_segment(&mut self, repr: &OverlayRepr, payload: &[u8], now: u64) -> Result<(), DropReason> {
        let mut plain = Vec::new();
        if let Some(e) = self.request.as_mut() {
            // A request VM has exactly one stream and accepts no others.
            if e.flow != repr.flow_id || e.dst != repr.src {
                return Err(DropReason::NoRoute);
            }
            let Some(session) = e.e2e.as_mut() else { return Err(DropReason::BadSegment) };
            session.open(payload, &mut plain)?;
            let seg = Segment::parse(&plain).map_err(|_| DropReason::BadSegment)?;
            e.on_segment(now, &seg);
            self.stats.connect = e.times;
            self.stats.delivered += 1;
            return Ok(());
        }
        match self.flows.get_mut(&repr.flow_id) {
            Some(f) if f.peer == repr.src && f.circuit.is_none() => {
                let Some(session) = f.e2e.as_mut() else { return Err(DropReason::BadSegment) };
                session.open(payload, &mut plain)?;
                let seg = Segment::parse(&plain).map_err(|_| DropReason::BadSegment)?;
                f.on_segment(now, &seg);
            }
            // Another source reusing a live flow id: not this stream's.
            Some(_) => return Err(DropReason::BadSegment),
            None => return self.stream_open(repr, payload, now),
        }
        self.stats.delivered += 1;
        Ok(())
    }

    /// The first packet of a stream: a hello whose key share agrees with
    /// this node's onion key, stamped recently, never seen before, that
    /// opens to a SYN. Anything else opens nothing (a late packet of a
    /// stream already gone is no error).
    fn stream_open(&mut self, repr: &OverlayRepr, payload: &[u8], now: u64) -> Result<(), DropReason> {
        let Some(hello) = e2e::parse_hello(payload) else { return Ok(()) };
        let binding = Binding { flow: repr.flow_id, src: repr.src, dst: self.me };
        // Sealed to this node's current onion key or, for a source that
        // still held the advertisement before the last rotation, the one
        // before.
        let mut plain = Vec::new();
        let mut session = self
            .onion
            .secrets()
            .find_map(|(secret, public)| {
                let mut s = E2eSession::respond(secret, public, hello, binding)?;
                plain.clear();
                s.open(payload, &mut plain).is_ok().then_some(s)
            })
            .ok_or(DropReason::BadE2e)?;
        let wall = self.clock.at(now);
        self.handshakes.check(&session.tag(), hello.stamp_us, wall)?;
        let seg = Segment::parse(&plain).map_err(|_| DropReason::BadSegment)?;
        let Some((mut stream, info)) = Stream::accept(&seg) else { return Ok(()) };
        self.handshakes.insert(session.tag(), hello.stamp_us, wall);
        let from_source = self.flows.values().filter(|f| f.peer == repr.src && f.circuit.is_none()).count();
        if self.flows.len() >= MAX_FLOWS || from_source >= MAX_FLOWS_PER_SOURCE {
            // Full: refuse at once rather than hold state for it.
            self.stats.drops.count(DropReason::FlowsFull);
            stream.refuse();
            let mut rst = Vec::new();
            if stream.poll_transmit(now, &mut rst) {
                let sealed = session.sealed(&rst);
                let reply = OverlayRepr {
                    hop_limit: self.hop_limit,
                    src: self.me,
                    dst: repr.src,
                    state_len: 0,
                    payload_len: sealed.len() as u16,
                    ..*repr
                };
                self.send_from_here(reply, &sealed)?;
            }
            return Ok(());
        }
        fit_stream(&mut stream, repr.protocol);
        let mut flow = Flow::new(stream, repr.src, repr.protocol, None, now);
        flow.e2e = Some(session);
        self.open_flow(repr.flow_id, flow, &info);
        self.stats.delivered += 1;
        Ok(())
    }

    /// Starts a stream ending here and asks the host to connect it to
    /// `info` (`host:port`).
    pub(super) fn open_flow(&mut self, id: u32, flow: Flow, info: &[u8]) {
        self.flows.insert(id, flow);
        let mut open = alloc::vec![stream_op::OPEN];
        open.extend_from_slice(info);
        self.push_for_host(RECORD_CONTROL, id, &open);
    }

    /// A record from the host about stream `flow`.
    pub(super) fn host_stream_record(&mut self, r: Record<'_>) {
        let Some(f) = self.flows.get_mut(&r.flow) else {
            // The host connected a stream that is gone meanwhile (reset
            // while it was connecting): tell it to let go of the service.
            if r.node == RECORD_CONTROL && r.payload.first() == Some(&stream_op::OPENED) {
                self.push_for_host(RECORD_CONTROL, r.flow, &[stream_op::RESET]);
            }
            return;
        };
        if r.node == RECORD_STREAM {
            f.pending.extend_from_slice(r.payload);
            return;
        }
        match r.payload.first().copied() {
            Some(stream_op::OPENED) => {
                f.answered = true;
                f.stream.confirm();
            }
            Some(stream_op::REFUSED) => {
                f.answered = true;
                let reason = r.payload.get(1).copied().unwrap_or(crate::transport::stream::reset_reason::REFUSED);
                f.stream.refuse_because(reason);
            }
            Some(stream_op::RESET) => {
                f.answered = true;
                f.stream.refuse();
            }
            Some(stream_op::EOF) => f.host_eof = true,
            Some(stream_op::CREDIT) => {
                if let Some(b) = r.payload.get(1..5) {
                    let more = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    // A host granting past the window is mistaken: cap it.
                    f.host_credit = f.host_credit.saturating_add(more).min(HOST_WINDOW);
                }
            }
            _ => {}
        }
    }

    /// Notes the path a source-routed packet of a stream ending here came
    /// on (copies too: each `redundant` path must be known).
    pub(super) fn learn_reply_path(&mut self, repr: &OverlayRepr, state: &[u8], now: u64) {
        if !matches!(repr.protocol, Protocol::Multipath | Protocol::Redundant) {
            return;
        }
        let Ok(route) = SourceRoute::decode(state) else { return };
        if route.path.first() != Some(&repr.src) || route.path.last() != Some(&self.me) {
            return;
        }
        if let Some(f) = self.flows.get_mut(&repr.flow_id).filter(|f| f.peer == repr.src) {
            f.reply.learn(&route, now);
        }
    }

    /// Sends a segment of a stream ending here: a source-routed stream
    /// answers along the paths its source's packets took (so it avoids
    /// what the source avoids and follows its failover), others as their
    /// protocol routes.
    fn send_reply(&mut self, repr: OverlayRepr, seg: &[u8], now: u64) -> Result<bool, DropReason> {
        let Some(f) = self.flows.get_mut(&repr.flow_id) else { return self.send_from_here(repr, seg) };
        f.reply.prune(now, &self.topology);
        let states = match repr.protocol {
            Protocol::Redundant if !f.reply.is_empty() => {
                route_states(new_packet_id(&mut self.next_packet_id), f.reply.all())
            }
            Protocol::Multipath => match f.reply.pick() {
                Some(path) => route_states(new_packet_id(&mut self.next_packet_id), [path]),
                None => return self.send_from_here(repr, seg),
            },
            _ => return self.send_from_here(repr, seg),
        };
        self.send_routed(repr, &states, seg)
    }

    /// Bytes all streams ending here hold in their buffers.
    pub(crate) fn streams_buffered(&self) -> usize {
        self.flows.values().map(|f| f.stream.buffered()).sum()
    }

    pub(super) fn stream_pending(&self) -> usize {
        self.flows.values().map(|f| f.pending.len()).sum()
    }

    /// Moves data between streams and the host, and sends what the
    /// streams want sent. Returns whether anything happened.
    pub(super) fn pump_streams(&mut self, now: u64) -> bool {
        let mut worked = false;
        let mut segments: Vec<(OverlayRepr, Vec<u8>)> = Vec::new();
        let mut to_host: Vec<(NodeId, u32, Vec<u8>)> = Vec::new();
        let mut gone: Vec<u32> = Vec::new();
        let (me, hop_limit, idle_us) = (self.me, self.hop_limit, self.idle_timeout_us);
        // Room in the host's backlog for stream bytes this pass: stream
        // bytes are acknowledged to their source, so they wait in the
        // stream (its window closes) rather than ever being dropped here.
        let mut room = MAX_DELIVER_BACKLOG.saturating_sub(self.deliver.len());
        let mut expired = 0;
        let budget = self.stream_budget;
        let mut buffered = self.streams_buffered();
        for (&id, f) in self.flows.iter_mut() {
            if idle_us > 0 && now.saturating_sub(f.last_heard) > idle_us && f.stream.state() != StreamState::Reset {
                // Its source went silent past every keepalive: an edge that
                // died, a source that left. Reset it, and the host closes
                // the service connection.
                f.stream.refuse();
                f.pending.clear();
                f.answered = true;
                expired += 1;
            }
            if !f.pending.is_empty() {
                let allowed = f.pending.len().min(budget.saturating_sub(buffered));
                let n = f.stream.write(&f.pending[..allowed]);
                f.pending.drain(..n);
                buffered += n;
                if f.stream.state() == StreamState::Reset {
                    f.pending.clear();
                }
            }
            // Over budget, a window may not grow past what it holds now.
            let cap = if buffered >= budget { f.stream.received_held() } else { crate::transport::stream::BUF };
            f.stream.set_window_cap(cap);
            if f.host_eof && f.pending.is_empty() {
                f.stream.close();
            }
            let mut data = Vec::new();
            let take = HOST_READ.min(f.host_credit as usize).min(room.saturating_sub(RECORD_HDR));
            if take > 0 && f.stream.read(&mut data, take) > 0 {
                f.host_credit -= data.len() as u32;
                room -= data.len() + RECORD_HDR;
                to_host.push((RECORD_STREAM, id, data));
            }
            if f.stream.peer_finished() && !f.eof_sent {
                f.eof_sent = true;
                to_host.push((RECORD_CONTROL, id, alloc::vec![stream_op::EOF]));
            }
            let mut seg = Vec::new();
            while f.stream.poll_transmit(now, &mut seg) {
                let packet = match f.e2e.as_mut() {
                    Some(session) => {
                        let sealed = session.sealed(&seg);
                        seg.clear();
                        sealed
                    }
                    None => core::mem::take(&mut seg),
                };
                let repr = origin_repr(f.protocol, FLAG_STREAM, hop_limit, id, me, f.peer, packet.len());
                segments.push((repr, packet));
            }
            match f.stream.state() {
                StreamState::Closed => gone.push(id),
                StreamState::Reset => {
                    if f.answered {
                        to_host.push((RECORD_CONTROL, id, alloc::vec![stream_op::RESET]));
                    }
                    gone.push(id);
                }
                _ => {}
            }
        }
        self.stats.flows_expired += expired;
        for (node, flow, payload) in to_host {
            worked = true;
            self.push_for_host(node, flow, &payload);
        }
        for (repr, seg) in segments {
            worked = true;
            let circuit = self.flows.get(&repr.flow_id).and_then(|f| f.circuit);
            let sent = match circuit {
                Some((port, circ)) => self.onion_send_backward(port, circ, &seg),
                None => self.send_reply(repr, &seg, now),
            };
            if let Err(e) = sent {
                self.stats.drops.count(e);
            }
        }
        for id in gone {
            self.flows.remove(&id);
        }
        self.stats.flows_open = self.flows.len() as u64;
        worked
    }
}
