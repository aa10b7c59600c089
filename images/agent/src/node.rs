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
use guest_agent::routing::{NodeId, ReplyPaths, Route, RouteContext, Routes, SourceRoute, Topology};
use guest_agent::transport::{Segment, Stream, StreamState};
use guest_agent::virtio::console::{ConsoleEvent, VirtioConsole};
use guest_agent::virtio::net::VirtioNet;
use guest_agent::wire::control::Control;
use guest_agent::wire::{
    build_frame, overlay::MAX_PAYLOAD_LEN, seal_built, EthAddrs, LinkKey, OverlayPacket, OverlayRepr, Protocol,
    ReplayWindow, WireError, ETHERTYPE, ETH_HDR_LEN, FLAG_CONTROL, FLAG_STREAM, RESERVED_LINK_ID,
};

use crate::roles::{console, nets, Pacer};
use crate::{clock, io, log};

mod control;
mod edge;
mod onion;
mod streams;

pub use edge::run_edge;
use edge::EdgeStream;
use onion::Onion;
use streams::{fit_stream, Flow, MAX_FLOWS, MAX_STREAM_PENDING};

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

/// Flows whose redundant copies are tracked at once.
const MAX_SEEN_FLOWS: usize = 4096;

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
    fn send_from_here(&mut self, repr: OverlayRepr, payload: &[u8]) -> Result<bool, WireError> {
        let avoid = self.edge.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
        let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
        let states = match self.routes.route(repr.protocol, repr.dst, &mut ctx) {
            None => return Err(WireError::NoRoute),
            Some(Route::NextHop(next)) => {
                let j = self.port_to(next).ok_or(WireError::NoRoute)?;
                return Ok(self.send(j, repr, &[], payload));
            }
            Some(Route::Path(path)) => route_states(new_packet_id(&mut self.next_packet_id), [path]),
            Some(Route::Copies(paths)) => {
                route_states(new_packet_id(&mut self.next_packet_id), paths.iter().map(Vec::as_slice))
            }
            Some(Route::Circuit(_)) => return Err(WireError::UnsupportedProtocol),
        };
        self.send_routed(repr, &states, payload)
    }

    /// Sends a packet this node originates along each source route in
    /// `states` (one copy per non-empty state).
    fn send_routed(&mut self, mut repr: OverlayRepr, states: &[Vec<u8>; 2], payload: &[u8]) -> Result<bool, WireError> {
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
            if repr.flags & FLAG_STREAM != 0 {
                self.learn_reply_path(&repr, p.state());
            }
            if !self.first_copy(&repr, p.state()) {
                return Ok(());
            }
            if repr.flags & FLAG_STREAM != 0 {
                self.stream_segment(&repr, p.payload())?;
                // A SYN made the flow just now: its path counts too.
                self.learn_reply_path(&repr, p.state());
                return Ok(());
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

    fn publish_stats(&self) {
        // SAFETY: STATS_ADDR is a page the VMM reserves for this struct
        // (below the page tables, above the boot block); only the agent
        // writes it, the VMM reads it after the vCPU stopped.
        unsafe { core::ptr::write_volatile(STATS_ADDR as *mut NodeStats, self.stats) };
    }
}

/// The next packet id of an origin (the copies of one packet share it,
/// so the destination delivers it once).
fn new_packet_id(next: &mut u32) -> u32 {
    *next = next.wrapping_add(1).max(1);
    *next
}

/// Source-route states, from this node, for up to two `paths`, all under
/// `packet_id`.
fn route_states<'p>(packet_id: u32, paths: impl IntoIterator<Item = &'p [NodeId]>) -> [Vec<u8>; 2] {
    let mut states = [Vec::new(), Vec::new()];
    for (st, path) in states.iter_mut().zip(paths) {
        SourceRoute::encode_parts(0, packet_id, path, st);
    }
    states
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
                // Sealing numbers the frame: only for one that goes now.
                if !p.dev.can_send() {
                    break;
                }
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
