//! The overlay router: the code every packet crosses (claim step (e)).
//!
//! A sans-I/O state machine in the style of smoltcp's sockets. Its ports
//! are [`LinkPort`]s (a VM's virtio-net in the guest, an in-memory pipe in
//! host tests and benchmarks); its host side is a byte buffer of console
//! records each way; time is passed in (µs, any monotonic origin). It
//! never touches a device, a clock or the VMM itself: the guest image
//! drives it, host tests run networks of routers joined by
//! [`MemoryLink`]s, and `pathvm bench router` measures it alone.
//!
//! One module per concern:
//! - [`auth`]: link authentication and sealing, per sender id;
//! - [`link`]: the port trait and what the router keeps per port;
//! - [`forward`]: forwarding and originating by each protocol, delivery;
//! - [`control`]: probes, link-state advertisements, the topology;
//! - [`streams`]: streams that end at this node (the destination side);
//! - [`request`]: a request VM's one stream (the app's connection);
//! - [`onion`]: onion relaying, exits, and a request VM's circuit;
//! - [`drop`]: why something was dropped, counted.
//!
//! A frame in: EtherType, total parse, the sender's id, window and tag
//! ([`auth`]), then control, onion cell, delivery or forwarding. Every
//! refusal is a [`DropReason`] counted in [`NodeStats::drops`].

pub mod auth;
pub mod control;
pub mod drop;
pub mod forward;
pub mod hello;
pub mod link;
pub mod memory;
pub mod onion;
pub mod request;
pub mod sim;
pub mod streams;

#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

pub use auth::{SenderKind, WallClock};
pub use drop::{DropCounters, DropReason, DROP_NAMES};
pub use link::{Keying, LinkPort, Port, MAX_QUEUED};
pub use memory::MemoryLink;
pub use request::{RequestPhase, RequestStream};

use crate::node::{EdgeRequest, NodeConfig, NodeStats, Record, RECORD_CONTROL, RECORD_STREAM, STATS_MAGIC};
use crate::routing::linkstate::{LinkReport, LinkStateDb, Lsa};
use crate::routing::lsa_sign::{LsaKeys, LsaSigner};
use crate::routing::member::Authority;
use crate::routing::{NodeId, Routes, Topology};
use crate::wire::handshakes::HandshakeCache;
use crate::wire::{
    OverlayPacket, OverlayRepr, Protocol, ReplayWindow, ETHERTYPE, ETH_HDR_LEN, FLAG_CONTROL, RESERVED_LINK_ID,
};

use onion::Onion;
use streams::{Flow, MAX_STREAM_PENDING};

/// Below this many queued frames per port the router takes more records
/// from the host.
const ORIGINATE_BELOW: usize = 256;
/// Above this many queued frames on any port the router takes no frames
/// from its links: they wait in the receive rings and the taps' queues
/// (input buffering) instead of being dropped at the output.
const RECEIVE_BELOW: usize = 512;
/// Delivered bytes held for the host at most: beyond, datagrams are
/// dropped (counted) and streams wait, their windows closing.
pub const MAX_DELIVER_BACKLOG: usize = 4 << 20;
/// The part of [`MAX_DELIVER_BACKLOG`] datagrams may fill.
pub const MAX_DATAGRAM_BACKLOG: usize = MAX_DELIVER_BACKLOG * 3 / 4;
/// Host bytes the router takes in one go.
pub const MAX_HOST_INPUT: usize = 64 * 1024;

/// Why a router could not be made from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterError {
    /// The configuration names a different number of ports than there are
    /// links.
    PortCount {
        /// Ports configured.
        configured: usize,
        /// Links given.
        links: usize,
    },
}

impl core::fmt::Display for RouterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PortCount { configured, links } => {
                write!(f, "{links} link devices for {configured} configured ports")
            }
        }
    }
}

/// Something the router's driver may want to log; nothing depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The topology routing runs on lost or regained links.
    LinksUsable {
        /// Configured links usable now.
        now: usize,
        /// Before the change.
        before: usize,
    },
    /// A neighbour stopped answering probes.
    LinkDown {
        /// The neighbour.
        peer: NodeId,
    },
    /// A request VM built an onion circuit.
    CircuitBuilt {
        /// Relays in it.
        relays: usize,
    },
    /// A relay of the request VM's circuit is gone; the stream moved to a
    /// new circuit.
    CircuitMoved,
    /// A relay of the circuit is gone and no other circuit is possible.
    CircuitLost,
    /// A request VM could not build any circuit to its destination.
    NoCircuit,
    /// A link was keyed from the neighbour's certificate hello.
    LinkKeyed {
        /// The neighbour.
        peer: NodeId,
    },
}

/// Notices held for the driver at most; older ones are dropped.
const MAX_NOTICES: usize = 64;

/// Flows whose redundant copies are tracked at once.
const MAX_SEEN_FLOWS: usize = 4096;

/// An overlay router and endpoint: a relay, a destination, or the one
/// stream of a request VM.
pub struct Router<L> {
    me: NodeId,
    hop_limit: u8,
    /// Every protocol's routes over `topology`.
    routes: Routes,
    protocol: Protocol,
    ports: Vec<Port<L>>,
    stats: NodeStats,
    /// Console records for the host, encoded.
    deliver: Vec<u8>,
    /// Streams ending here.
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
    /// Signs this node's advertisements (none: it advertises nothing).
    signer: Option<LsaSigner>,
    /// Its certificate and link secret, in a certified network (none on
    /// request VMs).
    identity: Option<hello::OwnIdentity>,
    /// This node's last advertisement, signed (for link-state requests).
    own_lsa: Option<Lsa>,
    /// The wall clock, which numbers advertisements.
    clock: WallClock,
    /// What this node last advertised, and when.
    advertised: Vec<LinkReport>,
    advertised_at: Option<u64>,
    next_maintenance: u64,
    next_expiry: u64,
    /// On a request VM: when to ask the neighbours for link state again.
    next_lsa_request: u64,
    /// Onion circuits through, ending at, or starting at this node.
    onion: Onion,
    /// Streams' first packets taken lately, so none is taken twice.
    handshakes: HandshakeCache,
    /// Packet ids seen per (source, flow), to deliver redundant copies once.
    seen: BTreeMap<(NodeId, u32), ReplayWindow>,
    /// On a request VM: its stream.
    request: Option<RequestStream>,
    /// Silence after which a stream ending here is reset, µs (0: never);
    /// a request VM keeps its stream alive at a third of it.
    idle_timeout_us: u64,
    /// Most bytes the streams ending here hold together
    /// ([`streams::MAX_STREAM_BUFFERED`]; smaller in tests).
    stream_budget: usize,
    notices: VecDeque<Notice>,
    /// Frames taken from the links, waiting to be handled (reused).
    rx_frames: Vec<(usize, Vec<u8>)>,
}

impl<L: LinkPort> Router<L> {
    /// A node's router over `links` (one per configured port, in order,
    /// each with this side's MAC), at time `now`.
    pub fn new(cfg: &NodeConfig, links: Vec<(L, [u8; 6])>, now: u64) -> Result<Self, RouterError> {
        if links.len() != cfg.ports.len() {
            return Err(RouterError::PortCount { configured: cfg.ports.len(), links: links.len() });
        }
        let ports = links
            .into_iter()
            .zip(cfg.ports.iter())
            .map(|((link, mac), pc)| Port::new(link, mac, pc, cfg.epoch_us, now))
            .collect();
        let topology = cfg.topology();
        let mut stats = NodeStats { magic: STATS_MAGIC, ..Default::default() };
        stats.publish_topology(&topology);
        Ok(Self {
            me: cfg.me,
            hop_limit: cfg.hop_limit,
            routes: Routes::compute(&topology, cfg.me),
            protocol: Protocol::from(cfg.protocol),
            ports,
            stats,
            deliver: Vec::new(),
            flows: BTreeMap::new(),
            lsdb: LinkStateDb::new(
                &topology,
                LsaKeys::new(&cfg.lsa_keys)
                    .with_authority(Authority::new(&cfg.identity.ca_public, &cfg.identity.revoked)),
            ),
            topology,
            next_packet_id: 0,
            floods: true,
            control_flow: auth::NODE_CONTROL_FLOW,
            signer: (cfg.lsa_secret != [0; 32]).then(|| LsaSigner::new(&cfg.lsa_secret)),
            identity: (!cfg.identity.cert.is_empty()).then(|| hello::OwnIdentity {
                cert: cfg.identity.cert.clone(),
                link_secret: zeroize::Zeroizing::new(cfg.identity.link_secret),
            }),
            own_lsa: None,
            clock: WallClock::new(cfg.epoch_us, now),
            advertised: Vec::new(),
            advertised_at: None,
            next_maintenance: 0,
            next_expiry: 0,
            next_lsa_request: 0,
            onion: Onion::new(cfg.onion_period_s, cfg.seed, now),
            handshakes: HandshakeCache::new(),
            seen: BTreeMap::new(),
            request: None,
            idle_timeout_us: cfg.idle_timeout_s as u64 * 1_000_000,
            stream_budget: streams::MAX_STREAM_BUFFERED,
            notices: VecDeque::new(),
            rx_frames: Vec::new(),
        })
    }

    /// A request VM's router: probes its own links but floods nothing,
    /// carries the one stream `req` asks for. The stream waits for the
    /// first link state it pulls, which signs the destination's (and the
    /// relays') current onion keys ([`Router::poll`] then seals it end to
    /// end or builds its circuit).
    pub fn new_request(
        cfg: &NodeConfig,
        req: &EdgeRequest,
        links: Vec<(L, [u8; 6])>,
        now: u64,
    ) -> Result<Self, RouterError> {
        let mut r = Self::new(cfg, links, now)?;
        r.floods = false;
        r.control_flow = req.flow;
        // What the edge host holds: routed and sealed on at once.
        for lsa in &req.link_state {
            if r.lsdb.trust(r.me, now, lsa.clone()) {
                r.stats.lsas_accepted += 1;
            }
        }
        if !req.link_state.is_empty() {
            r.refresh_topology(now);
        }
        r.request = Some(RequestStream::new(req, r.protocol, now));
        // An onion request no circuit can carry is refused before anything
        // is sent.
        r.request_keyed(now);
        Ok(r)
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The protocol packets this node originates use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The counters, as the stats page carries them.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The ports, in configuration order.
    pub fn ports(&mut self) -> &mut [Port<L>] {
        &mut self.ports
    }

    /// The topology routing runs on now.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The next notice for the driver's log.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    fn notice(&mut self, n: Notice) {
        if self.notices.len() >= MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(n);
    }

    fn port_to(&self, next: NodeId) -> Option<usize> {
        self.ports.iter().position(|p| p.peer == next)
    }

    /// Queues a packet for port `j`; false (and counted) if it could not.
    fn send(&mut self, j: usize, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> bool {
        self.enqueue(j, repr, state, payload, false)
    }

    /// Queues a packet for port `j`, at the front if `urgent` (probes, so
    /// they measure the link rather than this node's queue).
    fn enqueue(&mut self, j: usize, repr: OverlayRepr, state: &[u8], payload: &[u8], urgent: bool) -> bool {
        match self.ports[j].enqueue(repr, state, payload, urgent) {
            Ok(true) => true,
            Ok(false) => {
                self.stats.tx_full += 1;
                false
            }
            Err(e) => {
                self.stats.drops.count(e);
                false
            }
        }
    }

    /// Takes frames from the links (while the outputs keep up) and handles
    /// them. Returns whether any came.
    pub fn poll_links(&mut self, now: u64) -> bool {
        let mut frames = core::mem::take(&mut self.rx_frames);
        if self.ports.iter().all(|p| p.queue.len() < RECEIVE_BELOW) {
            for (i, p) in self.ports.iter_mut().enumerate() {
                p.link.receive(&mut |f| frames.push((i, f.to_vec())));
            }
        }
        let worked = !frames.is_empty();
        for (i, f) in frames.drain(..) {
            if let Err(e) = self.receive(i, &f, now) {
                self.stats.drops.count(e);
            }
        }
        self.rx_frames = frames;
        worked
    }

    /// Handles one frame that arrived on port `i`.
    pub fn receive(&mut self, i: usize, frame: &[u8], now: u64) -> Result<(), DropReason> {
        if i >= self.ports.len() || !is_overlay(frame) {
            return Err(DropReason::NotOverlay);
        }
        let p = OverlayPacket::new_checked(&frame[ETH_HDR_LEN..])?;
        let repr = OverlayRepr::parse(&p)?;
        // A hello is the one thing that comes unsealed: it may be what
        // keys the link.
        if repr.link_id == RESERVED_LINK_ID && repr.flags & FLAG_CONTROL != 0 {
            return self.hello(i, p.payload(), now);
        }
        let sender = self.ports[i].auth.open(&p, &repr)?;
        // The console's record ids name no node: a packet from one would
        // reach the host as stream bytes or an OPEN.
        if is_reserved_source(repr.src) {
            return Err(DropReason::ReservedSource);
        }
        // A request VM speaks for its own host's node, nobody else.
        if sender == SenderKind::Request && repr.src != self.ports[i].peer {
            return Err(DropReason::SpoofedSource);
        }
        if repr.flags & FLAG_CONTROL != 0 {
            return self.control(i, sender, &repr, p.payload(), now);
        }
        if repr.protocol == Protocol::Onion {
            return self.onion_cell(i, repr.flow_id, p.payload(), now);
        }
        if repr.dst == self.me {
            return self.arrive(&repr, p.state(), p.payload(), now);
        }
        if repr.hop_limit <= 1 {
            return Err(DropReason::HopLimit);
        }
        let fwd = OverlayRepr { hop_limit: repr.hop_limit - 1, ..repr };
        if self.forward(fwd, p.state(), p.payload())? {
            self.stats.forwarded += 1;
        }
        Ok(())
    }

    /// Hands queued frames to the links at time `now` (their numbers are
    /// stamped from it). Returns whether any went.
    pub fn flush_links(&mut self, now: u64) -> bool {
        let mut worked = false;
        for p in self.ports.iter_mut() {
            worked |= p.flush(now);
        }
        worked
    }

    /// Whether nothing waits to go out on any link.
    pub fn links_idle(&self) -> bool {
        self.ports.iter().all(|p| p.queue.is_empty())
    }

    /// Whether the router takes host records now (its queues keep up).
    pub fn wants_host_input(&self) -> bool {
        self.ports.iter().all(|p| p.queue.len() < ORIGINATE_BELOW) && self.stream_pending() < MAX_STREAM_PENDING
    }

    /// Handles the complete console records at the start of `input` (from
    /// the host); returns the bytes used (a partial record stays).
    pub fn host_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while let Some((r, n)) = Record::decode(&input[used..]) {
            if r.node == RECORD_STREAM || r.node == RECORD_CONTROL {
                self.host_stream_record(r);
            } else {
                self.originate(r);
            }
            used += n;
        }
        used
    }

    /// Console records for the host, encoded; call [`Router::host_took`]
    /// with what was written.
    pub fn host_output(&self) -> &[u8] {
        &self.deliver
    }

    /// The host took the first `n` bytes of [`Router::host_output`].
    pub fn host_took(&mut self, n: usize) {
        self.deliver.drain(..n.min(self.deliver.len()));
    }

    /// Queues a datagram for the host; false (counted) if datagrams hold
    /// their share of the backlog already. A flood of datagrams thus never
    /// takes the room streams' acknowledged bytes need.
    fn queue_for_host(&mut self, node: NodeId, flow: u32, payload: &[u8]) -> bool {
        if self.deliver.len() + crate::node::RECORD_HDR + payload.len() > MAX_DATAGRAM_BACKLOG {
            self.stats.drops.count(DropReason::HostBacklog);
            return false;
        }
        Record { node, flow, payload }.encode(&mut self.deliver);
        true
    }

    /// Queues a stream or control record for the host, always: stream
    /// bytes are read from their streams only as far as
    /// [`MAX_DELIVER_BACKLOG`] has room, and control records are a few
    /// bytes per stream.
    fn push_for_host(&mut self, node: NodeId, flow: u32, payload: &[u8]) {
        Record { node, flow, payload }.encode(&mut self.deliver);
    }

    /// Everything a driver's loop does besides its devices' own work: link
    /// maintenance, streams ending here, a request VM's stream. Returns
    /// whether anything happened.
    pub fn poll(&mut self, now: u64) -> bool {
        let maintained = self.maintain(now);
        let mut worked = false;
        if !self.flows.is_empty() {
            worked |= self.pump_streams(now);
        }
        if self.request.is_some() {
            worked |= self.poll_request(now, maintained);
        }
        worked
    }
}

impl<L: LinkPort> Router<L> {
    /// The earliest moment [`Router::poll`] has timed work: a node's next
    /// maintenance; on a request VM, only its stream's own timers
    /// ([`Router::request_poll_at`]), `None` when nothing but a frame or
    /// the app can give it work. A driver may sleep until then (and
    /// until a device wakes it); frames still queued for a full link are
    /// the devices' to wake it for.
    pub fn poll_at(&self) -> Option<u64> {
        if self.request.is_some() {
            return self.request_poll_at();
        }
        Some(self.next_maintenance)
    }
}

/// Whether `src` is one of the console's record ids, which no node has
/// (`topo` and node configs refuse them as ids).
pub fn is_reserved_source(src: NodeId) -> bool {
    src == RECORD_STREAM || src == RECORD_CONTROL
}

/// Whether a frame claims to be overlay; whether it is a valid one is the
/// wire parser's call (and a counted drop if not).
fn is_overlay(frame: &[u8]) -> bool {
    frame.len() >= ETH_HDR_LEN && frame[12..14] == ETHERTYPE.to_be_bytes()
}

/// Header of a packet this node originates (link id and number are set
/// as it leaves).
fn origin_repr(
    protocol: Protocol,
    flags: u8,
    hop_limit: u8,
    flow_id: u32,
    src: NodeId,
    dst: NodeId,
    len: usize,
) -> OverlayRepr {
    OverlayRepr {
        protocol,
        flags,
        hop_limit,
        flow_id,
        src,
        dst,
        state_len: 0,
        payload_len: len as u16,
        link_id: 0,
        link_seq: 0,
    }
}
