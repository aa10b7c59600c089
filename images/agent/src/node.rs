//! The `node` role: an overlay router and endpoint.
//!
//! Each virtio-net is one link port. A frame that arrives is checked
//! (overlay EtherType, total parse, link id, replay window, link key),
//! then handled as a link-local control message (probes, link state), an
//! onion cell ([`onion`]), delivered to the console if it is for this
//! node, or re-sealed for the next node's link and sent on as the packet's
//! protocol decides. Records read from the console are originated the same
//! way; streams ending here are served through the console too.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use guest_agent::boot::BootParams;
use guest_agent::node::{
    stream_op, EdgeRequest, NodeConfig, NodeStats, Record, RECORD_CONTROL, RECORD_HDR, RECORD_STREAM, STATS_ADDR,
    STATS_MAGIC,
};
use guest_agent::ports;
use guest_agent::routing::linkstate::{significant_change, LinkMonitor, LinkReport, LinkStateDb, Lsa, LSA_REFRESH_US};
use guest_agent::routing::{NodeId, Route, RouteContext, Routes, SourceRoute, Topology};
use guest_agent::transport::{Segment, Stream, StreamState};
use guest_agent::virtio::console::{ConsoleEvent, VirtioConsole};
use guest_agent::virtio::net::VirtioNet;
use guest_agent::wire::control::Control;
use guest_agent::wire::{
    build_frame, overlay::MAX_PAYLOAD_LEN, seal_built, EthAddrs, LinkKey, OverlayPacket, OverlayRepr, Protocol, ReplayWindow,
    WireError, ETHERTYPE, ETH_HDR_LEN, FLAG_CONTROL, FLAG_STREAM, RESERVED_LINK_ID,
};

use crate::roles::{console, nets, Pacer};
use crate::{clock, io, log};

mod onion;
use onion::{Onion, ONION_MSS};

/// Sender ids per port whose replay windows are kept; beyond, the lowest
/// is forgotten and every id below it refused from then on.
const MAX_RX_SENDERS: usize = 1024;

/// Frames queued per port before new ones are dropped.
const MAX_QUEUED: usize = 4096;
/// Below this many queued frames per port the node reads more records.
const ORIGINATE_BELOW: usize = 256;
/// Above this many queued frames on any port the node stops taking frames
/// from its links: they wait in the receive rings and the taps' queues
/// (input buffering) instead of being dropped at the output.
const RECEIVE_BELOW: usize = 512;
/// Delivered bytes held for the console before deliveries are dropped.
const MAX_DELIVER_BACKLOG: usize = 4 << 20;

struct Port {
    dev: VirtioNet,
    mac: [u8; 6],
    peer: NodeId,
    peer_mac: [u8; 6],
    tx_link_id: u32,
    rx_link_id: u32,
    rx_link_span: u32,
    /// The link's key: derives one key per link id.
    link_key: LinkKey,
    /// The key this node seals with (its own link id's).
    tx_key: LinkKey,
    next_seq: u64,
    /// Per sender id on the other side: its key and replay window.
    rx: BTreeMap<u32, (LinkKey, ReplayWindow)>,
    /// Ids below this are refused (their windows were forgotten).
    rx_low_water: u32,
    queue: VecDeque<Vec<u8>>,
    /// Probing of this link.
    monitor: LinkMonitor,
}

/// A stream ending at this node (the destination side of an app's
/// connection): the transport, and who is at the other end.
struct Flow {
    stream: Stream,
    peer: NodeId,
    protocol: Protocol,
    /// The host connected the service (or the stream was refused).
    answered: bool,
    eof_sent: bool,
    /// Bytes from the host the stream's send buffer had no room for yet.
    pending: Vec<u8>,
    /// The host's side ended: close the stream once `pending` is sent.
    host_eof: bool,
    /// For a stream that came over an onion circuit: the circuit's port
    /// and id here (the source is unknown, by design).
    circuit: Option<(usize, u32)>,
    /// For such a stream: the token its source attaches new circuits with.
    token: Option<[u8; guest_agent::onion::cell::TOKEN_LEN]>,
}

impl Flow {
    fn new(stream: Stream, peer: NodeId, protocol: Protocol, circuit: Option<(usize, u32)>) -> Self {
        Self {
            stream,
            peer,
            protocol,
            answered: false,
            eof_sent: false,
            pending: Vec::new(),
            host_eof: false,
            circuit,
            token: None,
        }
    }
}

/// Streams a node ends at once; further SYNs are refused with a reset.
const MAX_FLOWS: usize = 1024;

/// How often a request VM asks its neighbours for the link state.
const LSA_REQUEST_US: u64 = 500_000;

/// How often a node runs its link maintenance ([`Node::maintain`]).
const MAINTENANCE_US: u64 = 5_000;

/// Flows whose redundant copies are tracked at once.
const MAX_SEEN_FLOWS: usize = 4096;

/// Most bytes held for streams' send buffers before the node stops reading
/// the console (backpressure to the host).
const MAX_STREAM_PENDING: usize = 1 << 20;

impl Port {
    /// Checks a packet from this port's neighbour side: a sender id in its
    /// span, not replayed, sealed with that id's key. Records the sequence
    /// number only after the tag checks, so forgeries move nothing.
    fn authenticate(&mut self, p: &OverlayPacket<&[u8]>, repr: &OverlayRepr) -> Result<(), WireError> {
        let id = repr.link_id;
        let offset = id.wrapping_sub(self.rx_link_id);
        if offset >= self.rx_link_span || id < self.rx_low_water || id == RESERVED_LINK_ID {
            return Err(WireError::UnknownLink);
        }
        if !self.rx.contains_key(&id) && self.rx.len() >= MAX_RX_SENDERS {
            if let Some((oldest, _)) = self.rx.pop_first() {
                self.rx_low_water = self.rx_low_water.max(oldest.wrapping_add(1));
            }
            if id < self.rx_low_water {
                return Err(WireError::UnknownLink);
            }
        }
        let link_key = &self.link_key;
        let (key, window) = self.rx.entry(id).or_insert_with(|| (link_key.derive(id), ReplayWindow::new()));
        if !window.check(repr.link_seq) {
            return Err(WireError::Replayed);
        }
        key.open(p)?;
        window.accept(repr.link_seq);
        Ok(())
    }
}

/// The one stream of a request VM on an edge host: the app's connection.
struct EdgeStream {
    flow: u32,
    dst: NodeId,
    stream: Stream,
    /// The SOCKS reply has been written to the app.
    replied: bool,
    /// The app closed its side.
    app_closed: bool,
    /// App bytes the stream had no room for yet.
    pending: Vec<u8>,
    /// Stream bytes the console had no room for yet.
    backlog: Vec<u8>,
    /// When the stream started closing, to bound the goodbye.
    closing_since: Option<u64>,
    /// Nodes the app asked not to relay through.
    avoid: Vec<NodeId>,
}

struct Node {
    me: NodeId,
    hop_limit: u8,
    /// Every protocol's routes over `topology`.
    routes: Routes,
    protocol: Protocol,
    ports: Vec<Port>,
    stats: NodeStats,
    deliver: Vec<u8>,
    flows: BTreeMap<u32, Flow>,
    /// The topology routing runs on now (configured, as measured).
    topology: Topology,
    next_packet_id: u32,
    /// What other nodes advertise.
    lsdb: LinkStateDb,
    /// Whether this node takes part in flooding (node VMs; a request VM
    /// only probes its own links).
    floods: bool,
    /// Flow id of this node's control packets: 0 for a node VM, the
    /// request's flow on a request VM (so the edge host steers the acks to
    /// it).
    control_flow: u32,
    lsa_seq: u32,
    /// What this node last advertised, and when.
    advertised: Vec<LinkReport>,
    advertised_at: u64,
    next_maintenance: u64,
    next_expiry: u64,
    /// On a request VM: when to ask the neighbours for link state again.
    next_lsa_request: u64,
    /// Onion circuits through, ending at, or starting at this node.
    onion: Onion,
    /// Packet ids seen per (source, flow), to deliver redundant copies once.
    seen: BTreeMap<(NodeId, u32), ReplayWindow>,
    /// On a request VM: its stream.
    edge: Option<EdgeStream>,
}

impl Node {
    fn port_to(&self, next: NodeId) -> Option<usize> {
        self.ports.iter().position(|p| p.peer == next)
    }

    /// Seals `repr` + `payload` for port `j` and queues the frame; false
    /// (and counted) if the port's queue is full.
    fn send(&mut self, j: usize, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> bool {
        self.enqueue(j, repr, state, payload, false)
    }

    /// Queues a frame for port `j`, at the front if `urgent` (probes, so
    /// they measure the link rather than this node's queue). Frames are
    /// numbered and sealed as they leave ([`Node::flush_links`]), so the
    /// link sequence stays in order either way.
    fn enqueue(&mut self, j: usize, mut repr: OverlayRepr, state: &[u8], payload: &[u8], urgent: bool) -> bool {
        let port = &mut self.ports[j];
        if port.queue.len() >= MAX_QUEUED {
            self.stats.tx_full += 1;
            return false;
        }
        repr.link_id = port.tx_link_id;
        let mut frame = Vec::new();
        let eth = EthAddrs { dst: port.peer_mac, src: port.mac };
        if let Err(e) = build_frame(&mut frame, eth, &repr, state, payload) {
            self.stats.drops.count(e);
            return false;
        }
        if urgent {
            port.queue.push_front(frame);
        } else {
            port.queue.push_back(frame);
        }
        true
    }

    /// Forwards a packet a relay received: hop by hop (`shortest`,
    /// `widest`) or along the path in its state (`multipath`,
    /// `redundant`). Ok(false) if the port's queue was full.
    fn route(&mut self, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> Result<bool, WireError> {
        let next = match repr.protocol {
            Protocol::Shortest => self.routes.shortest.next_hop(repr.dst),
            Protocol::Widest => self.routes.widest.next_hop(repr.dst),
            Protocol::Multipath | Protocol::Redundant => return self.follow_source_route(repr, state, payload),
            _ => return Err(WireError::UnsupportedProtocol),
        };
        let j = self.port_to(next.ok_or(WireError::NoRoute)?).ok_or(WireError::NoRoute)?;
        Ok(self.send(j, repr, state, payload))
    }

    /// Forwards along the path the origin chose (in the packet's state).
    fn follow_source_route(&mut self, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> Result<bool, WireError> {
        let route = SourceRoute::decode(state).map_err(|_| WireError::BadLength)?;
        let Ok(Some((next, advanced))) = route.advance(self.me) else { return Err(WireError::NoRoute) };
        let j = self.port_to(next).ok_or(WireError::NoRoute)?;
        let mut st = Vec::with_capacity(advanced.encoded_len());
        advanced.encode(&mut st);
        Ok(self.send(j, repr, &st, payload))
    }

    /// Sends a packet this node originates (a datagram or a stream's
    /// segment) the way its protocol routes it: to a next hop, or along
    /// source routes chosen here (one weighted path for `multipath`, a copy
    /// on each of two for `redundant`). Onion circuits carry streams only
    /// ([`Node::onion_send_forward`]).
    fn send_from_here(&mut self, mut repr: OverlayRepr, payload: &[u8]) -> Result<bool, WireError> {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        let packet_id = self.next_packet_id;
        let mut states: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let avoid = self.edge.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
        let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
        match self.routes.route(repr.protocol, repr.dst, &mut ctx) {
            None => return Err(WireError::NoRoute),
            Some(Route::NextHop(next)) => {
                let j = self.port_to(next).ok_or(WireError::NoRoute)?;
                return Ok(self.send(j, repr, &[], payload));
            }
            Some(Route::Path(path)) => SourceRoute::encode_parts(0, packet_id, path, &mut states[0]),
            Some(Route::Copies(paths)) => {
                for (st, path) in states.iter_mut().zip(paths) {
                    SourceRoute::encode_parts(0, packet_id, path, st);
                }
            }
            Some(Route::Circuit(_)) => return Err(WireError::UnsupportedProtocol),
        }
        let mut sent = false;
        for st in states.iter().filter(|s| !s.is_empty()) {
            repr.state_len = st.len() as u16;
            sent |= self.follow_source_route(repr, st, payload)?;
        }
        Ok(sent)
    }

    /// Whether a source-routed packet for this node is new (copies of a
    /// `redundant` packet arrive twice; deliver once).
    fn first_copy(&mut self, repr: &OverlayRepr, state: &[u8]) -> bool {
        if !matches!(repr.protocol, Protocol::Multipath | Protocol::Redundant) {
            return true;
        }
        let Ok(route) = SourceRoute::decode(state) else { return false };
        if self.seen.len() >= MAX_SEEN_FLOWS && !self.seen.contains_key(&(repr.src, repr.flow_id)) {
            // Forget the oldest-keyed flow; its late copies may then be
            // delivered twice, never lost.
            self.seen.pop_first();
        }
        let seen = self.seen.entry((repr.src, repr.flow_id)).or_default();
        if seen.accept(route.packet_id as u64) {
            true
        } else {
            self.stats.duplicates += 1;
            false
        }
    }

    fn deliver(&mut self, src: NodeId, flow: u32, payload: &[u8]) {
        if self.queue_for_host(src, flow, payload) {
            self.stats.delivered += 1;
        }
    }

    /// Queues a record for the host; false (counted) if the backlog is full.
    fn queue_for_host(&mut self, node: NodeId, flow: u32, payload: &[u8]) -> bool {
        if self.deliver.len() + RECORD_HDR + payload.len() > MAX_DELIVER_BACKLOG {
            self.stats.tx_full += 1;
            return false;
        }
        Record { node, flow, payload }.encode(&mut self.deliver);
        true
    }

    /// A transport segment of stream `repr.flow_id` arrived for this node.
    fn stream_segment(&mut self, repr: &OverlayRepr, payload: &[u8]) -> Result<(), WireError> {
        let seg = Segment::parse(payload).map_err(|_| WireError::BadLength)?;
        let now = clock::now_us();
        if let Some(e) = self.edge.as_mut() {
            // A request VM has exactly one stream and accepts no others.
            if e.flow == repr.flow_id && e.dst == repr.src {
                e.stream.on_segment(now, &seg);
                self.stats.delivered += 1;
                return Ok(());
            }
            return Err(WireError::NoRoute);
        }
        match self.flows.get_mut(&repr.flow_id) {
            Some(f) if f.peer == repr.src => f.stream.on_segment(now, &seg),
            // Another source reusing a live flow id: not this stream's.
            Some(_) => return Err(WireError::UnknownLink),
            None => {
                let Some((mut stream, info)) = Stream::accept(&seg) else { return Ok(()) };
                if self.flows.len() >= MAX_FLOWS {
                    // Full: refuse at once rather than hold state for it.
                    stream.refuse();
                    let mut rst = Vec::new();
                    if stream.poll_transmit(now, &mut rst) {
                        let reply = OverlayRepr {
                            hop_limit: self.hop_limit,
                            src: self.me,
                            dst: repr.src,
                            state_len: 0,
                            payload_len: rst.len() as u16,
                            ..*repr
                        };
                        self.send_from_here(reply, &rst)?;
                    }
                    return Ok(());
                }
                fit_stream(&mut stream, repr.protocol);
                self.open_flow(repr.flow_id, Flow::new(stream, repr.src, repr.protocol, None), &info);
            }
        }
        self.stats.delivered += 1;
        Ok(())
    }

    /// Starts a stream ending here and asks the host to connect it to
    /// `info` (`host:port`).
    fn open_flow(&mut self, id: u32, flow: Flow, info: &[u8]) {
        self.flows.insert(id, flow);
        let mut open = alloc::vec![stream_op::OPEN];
        open.extend_from_slice(info);
        self.queue_for_host(RECORD_CONTROL, id, &open);
    }

    /// A record from the host about stream `flow`.
    fn host_stream_record(&mut self, r: Record<'_>) {
        let Some(f) = self.flows.get_mut(&r.flow) else { return };
        if r.node == RECORD_STREAM {
            f.pending.extend_from_slice(r.payload);
            return;
        }
        match r.payload.first().copied() {
            Some(stream_op::OPENED) => {
                f.answered = true;
                f.stream.confirm();
            }
            Some(stream_op::REFUSED) | Some(stream_op::RESET) => {
                f.answered = true;
                f.stream.refuse();
            }
            Some(stream_op::EOF) => f.host_eof = true,
            _ => {}
        }
    }

    fn stream_pending(&self) -> usize {
        self.flows.values().map(|f| f.pending.len()).sum()
    }

    /// Moves data between streams and the host, and sends what the
    /// streams want sent. Returns whether anything happened.
    fn pump_streams(&mut self) -> bool {
        let now = clock::now_us();
        let mut worked = false;
        let mut segments: Vec<(OverlayRepr, Vec<u8>)> = Vec::new();
        let mut to_host: Vec<(NodeId, u32, Vec<u8>)> = Vec::new();
        let mut gone: Vec<u32> = Vec::new();
        for (&id, f) in self.flows.iter_mut() {
            if !f.pending.is_empty() {
                let n = f.stream.write(&f.pending);
                f.pending.drain(..n);
                if f.stream.state() == StreamState::Reset {
                    f.pending.clear();
                }
            }
            if f.host_eof && f.pending.is_empty() {
                f.stream.close();
            }
            let mut data = Vec::new();
            if f.stream.read(&mut data, 16 * 1024) > 0 {
                to_host.push((RECORD_STREAM, id, data));
            }
            if f.stream.peer_finished() && !f.eof_sent {
                f.eof_sent = true;
                to_host.push((RECORD_CONTROL, id, alloc::vec![stream_op::EOF]));
            }
            let mut seg = Vec::new();
            while f.stream.poll_transmit(now, &mut seg) {
                let repr = OverlayRepr {
                    protocol: f.protocol,
                    flags: FLAG_STREAM,
                    hop_limit: self.hop_limit,
                    flow_id: id,
                    src: self.me,
                    dst: f.peer,
                    state_len: 0,
                    payload_len: seg.len() as u16,
                    link_id: 0,
                    link_seq: 0,
                };
                segments.push((repr, core::mem::take(&mut seg)));
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
        for (node, flow, payload) in to_host {
            worked = true;
            self.queue_for_host(node, flow, &payload);
        }
        for (repr, seg) in segments {
            worked = true;
            let circuit = self.flows.get(&repr.flow_id).and_then(|f| f.circuit);
            let sent = match circuit {
                Some((port, circ)) => self.onion_send_backward(port, circ, &seg),
                None => self.send_from_here(repr, &seg),
            };
            if let Err(e) = sent {
                self.stats.drops.count(e);
            }
        }
        for id in gone {
            self.flows.remove(&id);
        }
        worked
    }

    /// Handles one frame that arrived on port `i`.
    fn receive(&mut self, i: usize, frame: &[u8]) -> Result<(), WireError> {
        let p = OverlayPacket::new_checked(&frame[ETH_HDR_LEN..])?;
        let repr = OverlayRepr::parse(&p)?;
        self.ports[i].authenticate(&p, &repr)?;
        if repr.flags & FLAG_CONTROL != 0 {
            return self.control(i, &repr, p.payload());
        }
        if repr.protocol == Protocol::Onion {
            return self.onion_cell(i, repr.flow_id, p.payload());
        }
        if repr.dst == self.me {
            if !self.first_copy(&repr, p.state()) {
                return Ok(());
            }
            if repr.flags & FLAG_STREAM != 0 {
                return self.stream_segment(&repr, p.payload());
            }
            self.deliver(repr.src, repr.flow_id, p.payload());
            return Ok(());
        }
        if repr.hop_limit <= 1 {
            return Err(WireError::HopLimitExceeded);
        }
        let fwd = OverlayRepr { hop_limit: repr.hop_limit - 1, ..repr };
        if self.route(fwd, p.state(), p.payload())? {
            self.stats.forwarded += 1;
        }
        Ok(())
    }

    /// Originates one record from the host.
    fn originate(&mut self, r: Record<'_>) {
        if r.node == self.me {
            self.deliver(self.me, r.flow, r.payload);
            return;
        }
        if r.payload.len() > MAX_PAYLOAD_LEN {
            self.stats.drops.count(WireError::BadLength);
            return;
        }
        let repr = OverlayRepr {
            protocol: self.protocol,
            flags: 0,
            hop_limit: self.hop_limit,
            flow_id: r.flow,
            src: self.me,
            dst: r.node,
            state_len: 0,
            payload_len: r.payload.len() as u16,
            link_id: 0,
            link_seq: 0,
        };
        match self.send_from_here(repr, r.payload) {
            Ok(true) => self.stats.originated += 1,
            Ok(false) => {}
            Err(e) => self.stats.drops.count(e),
        }
    }

    /// Sends a control message to the neighbour on port `j`.
    fn send_control(&mut self, j: usize, flow_id: u32, dst: NodeId, msg: &Control) {
        let mut payload = Vec::with_capacity(32);
        msg.encode(&mut payload);
        let repr = OverlayRepr {
            protocol: Protocol::Shortest,
            flags: FLAG_CONTROL,
            hop_limit: 1,
            flow_id,
            src: self.me,
            dst,
            state_len: 0,
            payload_len: payload.len() as u16,
            link_id: 0,
            link_seq: 0,
        };
        // Probes and acks jump the queue; floods wait their turn.
        let urgent = matches!(msg, Control::Probe { .. } | Control::ProbeAck { .. });
        self.enqueue(j, repr, &[], &payload, urgent);
    }

    /// A control message from the neighbour on port `i`.
    fn control(&mut self, i: usize, repr: &OverlayRepr, payload: &[u8]) -> Result<(), WireError> {
        let msg = Control::decode(payload).map_err(|_| WireError::BadLength)?;
        let now = clock::now_us();
        match msg {
            // Echo under the probe's flow id, so an edge host steers the
            // ack to the request VM that probed.
            Control::Probe { seq, sent_us } => {
                self.send_control(i, repr.flow_id, repr.src, &Control::ProbeAck { seq, sent_us })
            }
            Control::ProbeAck { seq, sent_us } => {
                if repr.flow_id == self.control_flow {
                    self.ports[i].monitor.on_ack(now, seq, sent_us);
                    self.stats.probe_acks += 1;
                }
            }
            Control::LsaRequest => {
                let mut all: Vec<Lsa> = self.lsdb.lsas().cloned().collect();
                if self.floods {
                    all.push(Lsa { origin: self.me, seq: self.lsa_seq, links: self.advertised.clone() });
                }
                for lsa in all {
                    self.send_control(i, repr.flow_id, repr.src, &Control::LinkState(lsa));
                }
            }
            Control::LinkState(lsa) => {
                if self.lsdb.accept(self.me, now, lsa.clone()) {
                    self.stats.lsas_accepted += 1;
                    if self.floods {
                        self.flood(&lsa, Some(i));
                    }
                    self.refresh_topology(now);
                }
            }
        }
        Ok(())
    }

    /// Sends `lsa` to every neighbour but the one on port `except`.
    fn flood(&mut self, lsa: &Lsa, except: Option<usize>) {
        let msg = Control::LinkState(lsa.clone());
        for j in 0..self.ports.len() {
            if Some(j) != except {
                let peer = self.ports[j].peer;
                self.send_control(j, 0, peer, &msg);
            }
        }
    }

    /// This node's links as measured now.
    fn own_reports(&self, now: u64) -> Vec<LinkReport> {
        self.ports.iter().map(|p| p.monitor.report(now)).collect()
    }

    /// Recomputes the topology routing runs on; on a change, the routers
    /// and the source paths follow.
    fn refresh_topology(&mut self, now: u64) {
        // A flooding node routes on what it advertised, as every other node
        // does, so hop-by-hop choices agree; a request VM on what it sees.
        let own = if self.floods { self.advertised.clone() } else { self.own_reports(now) };
        let topology = self.lsdb.effective(self.me, &own);
        if topology == self.topology {
            return;
        }
        let (before, after) = (self.topology.links().len(), topology.links().len());
        if before != after {
            log!("node {}: {} of the configured links usable now (was {})", self.me, after, before);
        }
        self.routes = Routes::compute(&topology, self.me);
        self.topology = topology;
        self.stats.topology_changes += 1;
    }

    /// Probes links, notices dead neighbours, advertises what changed and
    /// ages out what others advertised. Runs every few milliseconds.
    fn maintain(&mut self, now: u64) {
        if now < self.next_maintenance {
            return;
        }
        self.next_maintenance = now + MAINTENANCE_US;
        for j in 0..self.ports.len() {
            if let Some((seq, sent_us)) = self.ports[j].monitor.poll_probe(now) {
                let (flow, peer) = (self.control_flow, self.ports[j].peer);
                self.send_control(j, flow, peer, &Control::Probe { seq, sent_us });
                self.stats.probes_sent += 1;
            }
            if self.ports[j].monitor.tick(now) {
                log!("node {}: link to {} is down (no answer to probes)", self.me, self.ports[j].peer);
            }
        }
        let expired = self.lsdb.expire(now);
        if now >= self.next_expiry {
            self.next_expiry = now + 1_000_000;
            self.onion.expire(now);
        }
        if self.floods {
            let own = self.own_reports(now);
            let due = now.saturating_sub(self.advertised_at) >= LSA_REFRESH_US;
            if due || significant_change(&self.advertised, &own) {
                self.lsa_seq = self.lsa_seq.wrapping_add(1);
                let lsa = Lsa { origin: self.me, seq: self.lsa_seq, links: own.clone() };
                self.flood(&lsa, None);
                self.advertised = own;
                self.advertised_at = now;
                self.refresh_topology(now);
                return;
            }
        }
        if !self.floods && now >= self.next_lsa_request {
            // A request VM hears no floods: it asks its neighbours.
            self.next_lsa_request = now + LSA_REQUEST_US;
            for j in 0..self.ports.len() {
                let (flow, peer) = (self.control_flow, self.ports[j].peer);
                self.send_control(j, flow, peer, &Control::LsaRequest);
            }
        }
        if expired || !self.floods {
            self.refresh_topology(now);
        }
    }

    fn publish_stats(&self) {
        // SAFETY: STATS_ADDR is a page the VMM reserves for this struct
        // (below the page tables, above the boot block); only the agent
        // writes it, the VMM reads it after the vCPU stopped.
        unsafe { core::ptr::write_volatile(STATS_ADDR as *mut NodeStats, self.stats) };
    }
}

/// Duplicate acks a `multipath` stream takes as a loss: its paths differ
/// in delay, so segments overtake each other by several all the time.
const MULTIPATH_REORDER: u32 = 16;

/// Shapes a stream for the protocol carrying it: smaller segments in onion
/// cells, tolerance of reordering over several paths.
fn fit_stream(stream: &mut Stream, protocol: Protocol) {
    match protocol {
        Protocol::Onion => stream.set_mss(ONION_MSS),
        Protocol::Multipath => stream.set_reorder_tolerance(MULTIPATH_REORDER),
        _ => {}
    }
}

/// Whether a frame claims to be overlay; whether it is a valid one is the
/// wire parser's call (and a counted drop if not).
fn is_overlay(frame: &[u8]) -> bool {
    frame.len() >= ETH_HDR_LEN && frame[12..14] == ETHERTYPE.to_be_bytes()
}

/// Runs the node until the VM is stopped.
/// Decodes the node configuration and brings up ports and console.
fn build(params: &BootParams, cfg: &NodeConfig) -> (Node, VirtioConsole) {
    let devs = nets(params);
    if devs.len() != cfg.ports.len() {
        log!("node: {} virtio-net devices for {} configured ports", devs.len(), cfg.ports.len());
        io::exit(ports::EXIT_BAD_BOOT);
    }
    let con = console(params);
    let ports: Vec<Port> = devs
        .into_iter()
        .zip(cfg.ports.iter())
        .map(|(dev, pc)| Port {
            mac: dev.mac().unwrap_or([0x02, 0, 0, 0, 0, 1]),
            dev,
            peer: pc.peer,
            peer_mac: pc.peer_mac,
            tx_link_id: pc.tx_link_id,
            rx_link_id: pc.rx_link_id,
            rx_link_span: pc.rx_link_span.max(1),
            tx_key: LinkKey::new(&pc.key).derive(pc.tx_link_id),
            link_key: LinkKey::new(&pc.key),
            next_seq: cfg.epoch_us.max(1),
            rx: BTreeMap::new(),
            rx_low_water: 0,
            queue: VecDeque::new(),
            monitor: LinkMonitor::new(pc.peer, clock::now_us()),
        })
        .collect();
    let node = Node {
        me: cfg.me,
        hop_limit: cfg.hop_limit,
        routes: Routes::compute(&cfg.topology(), cfg.me),
        protocol: Protocol::from(cfg.protocol),
        ports,
        stats: NodeStats { magic: STATS_MAGIC, ..Default::default() },
        deliver: Vec::new(),
        flows: BTreeMap::new(),
        topology: cfg.topology(),
        next_packet_id: 0,
        lsdb: LinkStateDb::new(&cfg.topology()),
        floods: true,
        control_flow: 0,
        lsa_seq: 0,
        advertised: Vec::new(),
        advertised_at: 0,
        next_maintenance: 0,
        next_expiry: 0,
        next_lsa_request: 0,
        onion: Onion::new(cfg.onion_secret, cfg.directory.clone(), cfg.seed),
        seen: BTreeMap::new(),
        edge: None,
    };
    node.publish_stats();
    (node, con)
}

fn decode_config(params: &BootParams) -> NodeConfig {
    match NodeConfig::decode(params.args()) {
        Ok(c) => c,
        Err(e) => {
            log!("node: unusable node configuration: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    }
}

impl Node {
    /// Takes frames from the links (while the outputs keep up) and handles
    /// them. Returns whether any came.
    fn poll_links(&mut self, frames: &mut Vec<(usize, Vec<u8>)>) -> bool {
        if self.ports.iter().all(|p| p.queue.len() < RECEIVE_BELOW) {
            for i in 0..self.ports.len() {
                self.ports[i].dev.receive(|f| frames.push((i, f.to_vec())));
            }
        }
        let worked = !frames.is_empty();
        for (i, f) in frames.drain(..) {
            if !is_overlay(&f) {
                self.stats.drops.not_overlay += 1;
                continue;
            }
            if let Err(e) = self.receive(i, &f) {
                self.stats.drops.count(e);
            }
        }
        worked
    }

    /// Hands queued frames to the ports' devices. Returns whether any went.
    fn flush_links(&mut self) -> bool {
        let mut worked = false;
        for p in self.ports.iter_mut() {
            while let Some(f) = p.queue.front_mut() {
                seal_built(f, p.next_seq, &p.tx_key);
                if p.dev.send(f).is_err() {
                    break;
                }
                p.next_seq += 1;
                p.queue.pop_front();
                worked = true;
            }
            p.dev.flush();
        }
        worked
    }
}

/// Runs the node until the VM is stopped.
pub fn run(params: &BootParams) -> ! {
    let cfg = decode_config(params);
    let (mut node, mut con) = build(params, &cfg);
    log!("node {} up: {} ports, originating with {:?}", node.me, node.ports.len(), node.protocol);
    io::ready();

    let mut inbuf: Vec<u8> = Vec::new();
    let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = node.poll_links(&mut frames);
        node.maintain(clock::now_us());
        // Records from the host, while the ports keep up.
        if node.ports.iter().all(|p| p.queue.len() < ORIGINATE_BELOW) && node.stream_pending() < MAX_STREAM_PENDING {
            while con.receive_one(|ev| {
                if let ConsoleEvent::Data(d) = ev {
                    inbuf.extend_from_slice(d)
                }
            }) {
                worked = true;
                if inbuf.len() > 64 * 1024 {
                    break;
                }
            }
            let mut used = 0;
            while let Some((r, n)) = Record::decode(&inbuf[used..]) {
                if r.node == RECORD_STREAM || r.node == RECORD_CONTROL {
                    node.host_stream_record(r);
                } else {
                    node.originate(r);
                }
                used += n;
            }
            inbuf.drain(..used);
        }
        // Streams ending here.
        if !node.flows.is_empty() {
            worked |= node.pump_streams();
        }
        worked |= node.flush_links();
        // Deliveries to the host.
        if !node.deliver.is_empty() {
            let n = con.send(&node.deliver);
            node.deliver.drain(..n);
            worked |= n > 0;
        }
        con.flush();
        if worked {
            node.publish_stats();
        }
        pacer.tick(worked);
    }
}

/// SOCKS5 replies the request VM writes to the app (RFC 1928: version,
/// code, reserved, IPv4, 0.0.0.0:0).
const SOCKS_OK: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
const SOCKS_REFUSED: [u8; 10] = [5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
/// How long a closing stream may wait for its peer before the VM leaves.
const GOODBYE_US: u64 = 1_000_000;

/// A request VM: carries one app connection (the console, after the edge
/// daemon's SOCKS handshake) as a stream to the service on the
/// destination node, answers the SOCKS request when the stream is up or
/// refused, and exits when the connection is over.
pub fn run_edge(params: &BootParams) -> ! {
    let cfg = decode_config(params);
    let req = match EdgeRequest::decode(params.args().get(cfg.encoded_len()..).unwrap_or(&[])) {
        Ok(r) => r,
        Err(e) => {
            log!("edge: unusable request: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    };
    let (mut node, mut con) = build(params, &cfg);
    // A request VM probes its own links (a dead first relay is noticed
    // here) but takes no part in flooding.
    node.floods = false;
    node.control_flow = req.flow;
    let mut stream = Stream::connect(&req.target);
    fit_stream(&mut stream, node.protocol);
    node.edge = Some(EdgeStream {
        flow: req.flow,
        dst: req.dst,
        stream,
        replied: false,
        app_closed: false,
        pending: Vec::new(),
        backlog: Vec::new(),
        closing_since: None,
        avoid: req.avoid.clone(),
    });
    if node.protocol == Protocol::Onion {
        // No circuit, no stream: the app gets its refusal at once.
        if let Err(e) = node.onion_prepare(req.dst) {
            log!("edge: no onion circuit to node {}: {e:?}", req.dst);
            if let Some(e) = node.edge.as_mut() {
                e.stream.refuse();
            }
        }
    }
    io::ready();
    let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = node.poll_links(&mut frames);
        let now = clock::now_us();
        node.maintain(now);
        if node.protocol == Protocol::Onion && !node.onion_check(req.dst, now) {
            if let Some(e) = node.edge.as_mut() {
                e.stream.refuse();
            }
        }
        let (protocol, hop_limit, me) = (node.protocol, node.hop_limit, node.me);
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let Some(e) = node.edge.as_mut() else { io::exit(0) };
        let state = e.stream.state();
        // The SOCKS answer, once the stream is up or refused.
        if !e.replied && matches!(state, StreamState::Established | StreamState::Reset | StreamState::Closed) {
            let reply = if state == StreamState::Reset { &SOCKS_REFUSED } else { &SOCKS_OK };
            if con.send(reply) == reply.len() {
                e.replied = true;
                worked = true;
            }
        }
        // App to stream.
        if e.replied && state == StreamState::Established {
            while e.pending.len() < 64 * 1024 && !e.app_closed {
                let got = con.receive_one(|ev| match ev {
                    ConsoleEvent::Data(d) => e.pending.extend_from_slice(d),
                    ConsoleEvent::Closed => e.app_closed = true,
                });
                if !got {
                    break;
                }
                worked = true;
            }
            if !e.pending.is_empty() {
                let n = e.stream.write(&e.pending);
                e.pending.drain(..n);
                worked |= n > 0;
            }
        }
        // Stream to app.
        if e.replied {
            let mut data = Vec::new();
            if e.stream.read(&mut data, 64 * 1024) > 0 {
                e.backlog.extend_from_slice(&data);
            }
            if !e.backlog.is_empty() {
                let n = con.send(&e.backlog);
                e.backlog.drain(..n);
                worked |= n > 0;
            }
        }
        // Either side done: close ours (the app sees its end when the VM
        // exits and the VMM closes the connection).
        let service_done = e.stream.peer_finished() && e.backlog.is_empty();
        if (e.app_closed && e.pending.is_empty()) || service_done {
            e.stream.close();
            e.closing_since.get_or_insert(now);
        }
        let mut seg = Vec::new();
        while e.stream.poll_transmit(now, &mut seg) {
            segments.push(core::mem::take(&mut seg));
        }
        let (flow, dst) = (e.flow, e.dst);
        let finished = match e.stream.state() {
            StreamState::Closed => true,
            StreamState::Reset => e.replied,
            _ => e.closing_since.is_some_and(|t| now.saturating_sub(t) > GOODBYE_US),
        };
        for seg in segments {
            worked = true;
            let repr = OverlayRepr {
                protocol,
                flags: FLAG_STREAM,
                hop_limit,
                flow_id: flow,
                src: me,
                dst,
                state_len: 0,
                payload_len: seg.len() as u16,
                link_id: 0,
                link_seq: 0,
            };
            let sent = if protocol == Protocol::Onion {
                node.onion_send_forward(dst, &seg)
            } else {
                node.send_from_here(repr, &seg)
            };
            if let Err(err) = sent {
                node.stats.drops.count(err);
            }
        }
        worked |= node.flush_links();
        con.flush();
        if finished && con.tx_drained() && node.ports.iter().all(|p| p.queue.is_empty()) {
            node.publish_stats();
            io::exit(0);
        }
        if worked {
            node.publish_stats();
        }
        pacer.tick(worked);
    }
}
