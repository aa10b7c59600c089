//! What a node VM is told at boot, what it exchanges with its host over
//! the console, and what it reports back.
//!
//! - [`NodeConfig`]: the node's id, its ports (one per virtio-net, in
//!   device order: the neighbour, its MAC, the directed link ids and the
//!   link key) and the topology; encoded compactly into the boot block's
//!   argument area.
//! - Console records: the host hands the node datagrams to originate
//!   (`dst, flow, len, payload`) and receives the ones delivered to it
//!   (`src, flow, len, payload`), big-endian, back to back.
//! - [`NodeStats`]: counters the agent keeps in a fixed page the VMM reads
//!   after the VM stops (no exit needed to report them).

use alloc::vec::Vec;

use crate::router::DropCounters;
use crate::routing::{Link, NodeId, Topology};

/// First bytes of an encoded [`NodeConfig`].
const CONFIG_MAGIC: [u8; 4] = *b"PVN8";
const PORT_LEN: usize = 2 + 6 + 4 + 4 + 4 + 1 + 32;
const LINK_LEN: usize = 2 + 2 + 4 + 4;
const KEY_ENTRY_LEN: usize = 2 + 32;
const HEAD_LEN: usize = 4 + 8 + 8 + 32 + 4 + 4;
/// Most entries of a key list (link-state public keys).
pub const MAX_KEYS: usize = 255;
/// Most ports (virtio-net devices) a node has.
pub const MAX_PORTS: usize = 7;
/// Most revoked serials a config carries.
pub const MAX_REVOKED: usize = 64;

/// One link port of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// The neighbour at the other end.
    pub peer: NodeId,
    /// The neighbour's MAC on this link.
    pub peer_mac: [u8; 6],
    /// Link id this node sends under.
    pub tx_link_id: u32,
    /// First link id the neighbour's side sends under.
    pub rx_link_id: u32,
    /// How many consecutive ids from `rx_link_id` its side may use (its
    /// node, and each request VM on an edge host, send under one each).
    pub rx_link_span: u32,
    /// What `key` is: the link's key, or only this sender's own.
    pub scope: KeyScope,
    /// The link's key (packet keys are derived from it per link id), or,
    /// for a request VM, only its own id's key ([`KeyScope::Own`]).
    pub key: [u8; 32],
}

/// Which key a port holds: a node holds its links' keys, a request VM only
/// the key of its own link id on each link (least key: a compromised
/// request VM can seal frames as itself and nobody else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyScope {
    /// The link key, from which every id's key derives (node VMs).
    #[default]
    Link,
    /// The key of `tx_link_id` alone; the neighbour's node seals frames
    /// for this sender with the key's [`reply`](crate::wire::LinkKey::reply).
    Own,
    /// None yet: the host was not given the neighbour's certificate, so the
    /// node agrees the link key from the one the neighbour's hello carries
    /// ([`crate::routing::member`]); until then nothing on the link
    /// authenticates.
    Certified,
}

impl KeyScope {
    fn wire(self) -> u8 {
        match self {
            Self::Link => 0,
            Self::Own => 1,
            Self::Certified => 2,
        }
    }

    fn from_wire(b: u8) -> Result<Self, ConfigError> {
        match b {
            0 => Ok(Self::Link),
            1 => Ok(Self::Own),
            2 => Ok(Self::Certified),
            _ => Err(ConfigError::BadKeyScope),
        }
    }
}

/// Everything a node VM needs to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node.
    pub me: NodeId,
    /// Hop limit of packets this node originates.
    pub hop_limit: u8,
    /// Routing protocol (wire id) of packets this node originates.
    pub protocol: u8,
    /// Ports, in virtio-net device order.
    pub ports: Vec<PortConfig>,
    /// The topology routing runs on.
    pub links: Vec<Link>,
    /// The host's wall clock at boot, µs since the Unix epoch. Link
    /// sequence numbers start there, so a restarted node's packets are
    /// newer than any its neighbours saw from it before (their replay
    /// windows would refuse a count restarting at 1).
    pub epoch_us: u64,
    /// Fresh random bytes from the host for this boot: the seed of the
    /// generator that draws onion keys, ephemeral keys and circuit ids
    /// (the agent wipes every copy once the generator has it).
    pub seed: [u8; 32],
    /// Seconds between this node's onion key rotations
    /// ([`crate::onion::rotation`]); 0: it has no onion key (request VMs,
    /// which only build circuits and hellos to other nodes' keys).
    pub onion_period_s: u32,
    /// Seconds a stream ending here may go unheard before it is reset and
    /// its service connection closed (its source keeps it alive at a third
    /// of this); 0: never.
    pub idle_timeout_s: u32,
    /// This node's Ed25519 secret for signing its link-state
    /// advertisements; all zero: it advertises nothing (request VMs).
    pub lsa_secret: [u8; 32],
    /// Every node's link-state public key: the origins whose
    /// advertisements this node accepts.
    pub lsa_keys: Vec<(NodeId, [u8; 32])>,
    /// What a node of a certified network checks and shows members it was
    /// not given by ([`crate::routing::member`]); empty without a CA.
    pub identity: IdentityConfig,
}

/// A certified network's part of a [`NodeConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The network CA's Ed25519 public key; all zero: none (only
    /// configured keys are taken).
    pub ca_public: [u8; 32],
    /// Serials of revoked certificates.
    pub revoked: Vec<[u8; crate::routing::member::SERIAL_LEN]>,
    /// This node's certificate, wire form (sent in its hellos and
    /// advertisements); empty: none (request VMs).
    pub cert: Vec<u8>,
    /// This node's X25519 link secret, for [`KeyScope::Certified`] ports;
    /// all zero: none.
    pub link_secret: [u8; 32],
}

impl IdentityConfig {
    fn encoded_len(&self) -> usize {
        32 + 32 + 2 + self.cert.len() + 1 + self.revoked.len().min(MAX_REVOKED) * crate::routing::member::SERIAL_LEN
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ca_public);
        out.extend_from_slice(&self.link_secret);
        out.extend_from_slice(&(self.cert.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.cert);
        out.push(self.revoked.len().min(MAX_REVOKED) as u8);
        for r in self.revoked.iter().take(MAX_REVOKED) {
            out.extend_from_slice(r);
        }
    }

    fn decode(b: &mut &[u8]) -> Result<Self, ConfigError> {
        let mut ca_public = [0u8; 32];
        ca_public.copy_from_slice(take(b, 32)?);
        let mut link_secret = [0u8; 32];
        link_secret.copy_from_slice(take(b, 32)?);
        let n = be16(take(b, 2)?) as usize;
        if n > crate::routing::member::MAX_CERT_LEN {
            return Err(ConfigError::Truncated);
        }
        let cert = take(b, n)?.to_vec();
        let nrev = take(b, 1)?[0] as usize;
        if nrev > MAX_REVOKED {
            return Err(ConfigError::Truncated);
        }
        let mut revoked = Vec::with_capacity(nrev.min(MAX_REVOKED));
        for _ in 0..nrev {
            let mut r = [0u8; crate::routing::member::SERIAL_LEN];
            r.copy_from_slice(take(b, crate::routing::member::SERIAL_LEN)?);
            revoked.push(r);
        }
        Ok(Self { ca_public, revoked, cert, link_secret })
    }
}

/// Why an encoded config was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a node config.
    BadMagic,
    /// Shorter than its counts say.
    Truncated,
    /// More ports than a node can have.
    TooManyPorts,
    /// A port's key scope that is neither link nor own.
    BadKeyScope,
    /// A request's link state that does not decode (or carries a
    /// certificate: the host sends none).
    BadLsa,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], ConfigError> {
    if b.len() < n {
        return Err(ConfigError::Truncated);
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn encode_keys(keys: &[(NodeId, [u8; 32])], out: &mut Vec<u8>) {
    for (n, k) in keys.iter().take(MAX_KEYS) {
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(k);
    }
}

fn decode_keys(b: &mut &[u8], n: usize) -> Result<Vec<(NodeId, [u8; 32])>, ConfigError> {
    let mut keys = Vec::with_capacity(n.min(b.len() / KEY_ENTRY_LEN));
    for _ in 0..n {
        let e = take(b, KEY_ENTRY_LEN)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&e[2..]);
        keys.push((be16(e), k));
    }
    Ok(keys)
}

impl NodeConfig {
    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&CONFIG_MAGIC);
        out.extend_from_slice(&self.me.to_be_bytes());
        out.push(self.hop_limit);
        out.push(self.ports.len() as u8);
        out.extend_from_slice(&(self.links.len() as u16).to_be_bytes());
        out.extend_from_slice(&[self.protocol, 0]);
        out.extend_from_slice(&self.epoch_us.to_be_bytes());
        out.extend_from_slice(&self.seed);
        out.extend_from_slice(&self.onion_period_s.to_be_bytes());
        out.extend_from_slice(&self.idle_timeout_s.to_be_bytes());
        for p in &self.ports {
            out.extend_from_slice(&p.peer.to_be_bytes());
            out.extend_from_slice(&p.peer_mac);
            out.extend_from_slice(&p.tx_link_id.to_be_bytes());
            out.extend_from_slice(&p.rx_link_id.to_be_bytes());
            out.extend_from_slice(&p.rx_link_span.to_be_bytes());
            out.push(p.scope.wire());
            out.extend_from_slice(&p.key);
        }
        for l in &self.links {
            out.extend_from_slice(&l.a.to_be_bytes());
            out.extend_from_slice(&l.b.to_be_bytes());
            out.extend_from_slice(&l.latency_us.to_be_bytes());
            out.extend_from_slice(&l.bandwidth_mbps.to_be_bytes());
        }
        out.extend_from_slice(&self.lsa_secret);
        out.push(self.lsa_keys.len().min(MAX_KEYS) as u8);
        encode_keys(&self.lsa_keys, out);
        self.identity.encode(out);
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        HEAD_LEN
            + self.ports.len() * PORT_LEN
            + self.links.len() * LINK_LEN
            + 32
            + 1
            + self.lsa_keys.len().min(MAX_KEYS) * KEY_ENTRY_LEN
            + self.identity.encoded_len()
    }

    /// Decodes what `encode` wrote.
    pub fn decode(mut b: &[u8]) -> Result<Self, ConfigError> {
        if take(&mut b, 4)? != CONFIG_MAGIC {
            return Err(ConfigError::BadMagic);
        }
        let h = take(&mut b, 8)?;
        let (me, hop_limit, nports, nlinks, protocol) = (be16(h), h[2], h[3] as usize, be16(&h[4..]) as usize, h[6]);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(take(&mut b, 8)?);
        let epoch_us = u64::from_be_bytes(epoch);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(take(&mut b, 32)?);
        let onion_period_s = be32(take(&mut b, 4)?);
        let idle_timeout_s = be32(take(&mut b, 4)?);
        if nports > MAX_PORTS {
            return Err(ConfigError::TooManyPorts);
        }
        let mut ports = Vec::with_capacity(nports);
        for _ in 0..nports {
            let p = take(&mut b, PORT_LEN)?;
            let mut peer_mac = [0u8; 6];
            peer_mac.copy_from_slice(&p[2..8]);
            let mut key = [0u8; 32];
            key.copy_from_slice(&p[21..53]);
            ports.push(PortConfig {
                peer: be16(p),
                peer_mac,
                tx_link_id: be32(&p[8..]),
                rx_link_id: be32(&p[12..]),
                rx_link_span: be32(&p[16..]),
                scope: KeyScope::from_wire(p[20])?,
                key,
            });
        }
        let mut links = Vec::with_capacity(nlinks.min(b.len() / LINK_LEN));
        for _ in 0..nlinks {
            let l = take(&mut b, LINK_LEN)?;
            links.push(Link { a: be16(l), b: be16(&l[2..]), latency_us: be32(&l[4..]), bandwidth_mbps: be32(&l[8..]) });
        }
        let mut lsa_secret = [0u8; 32];
        lsa_secret.copy_from_slice(take(&mut b, 32)?);
        let nkeys = take(&mut b, 1)?[0] as usize;
        let lsa_keys = decode_keys(&mut b, nkeys)?;
        let identity = IdentityConfig::decode(&mut b)?;
        Ok(Self {
            me,
            hop_limit,
            protocol,
            ports,
            links,
            epoch_us,
            seed,
            onion_period_s,
            idle_timeout_s,
            lsa_secret,
            lsa_keys,
            identity,
        })
    }

    /// What a request VM of this (edge) node gets for request slot
    /// `slot`: per port, its own link id in the edge side's span (which
    /// holds `tx_spans[port]` ids) and only that id's key; no onion key
    /// (a request VM's circuits and hellos use keys of its boot alone) and
    /// no link-state secret (it advertises nothing). The one rule
    /// for the edge host and the simulations.
    pub fn request_view(&self, tx_spans: &[u32], slot: u32) -> NodeConfig {
        let ports = self
            .ports
            .iter()
            .zip(tx_spans)
            .map(|(p, &span)| {
                let id = crate::router::auth::request_link_id(p.tx_link_id, span, slot);
                let own = match p.scope {
                    KeyScope::Link => crate::wire::LinkKey::new(&p.key).derive_bytes(id),
                    // Already narrowed: nothing further can be derived.
                    KeyScope::Own => p.key,
                    // No key: the VM's frames on this port authenticate
                    // nowhere (an edge has its neighbours' certificates).
                    KeyScope::Certified => [0; 32],
                };
                PortConfig { tx_link_id: id, scope: KeyScope::Own, key: own, ..*p }
            })
            .collect();
        // It checks certificates in the link state it pulls (members the
        // edge was not given), but has none of its own and keys no link.
        let identity = IdentityConfig { cert: Vec::new(), link_secret: [0; 32], ..self.identity.clone() };
        NodeConfig { ports, onion_period_s: 0, lsa_secret: [0; 32], identity, ..self.clone() }
    }

    /// Wipes the seed and the secrets once the router holds what it needs
    /// of them: the generator erases its key as it draws, and this copy
    /// must not outlive it.
    pub fn wipe_secrets(&mut self) {
        use zeroize::Zeroize;
        self.seed.zeroize();
        self.lsa_secret.zeroize();
        self.identity.link_secret.zeroize();
        for p in &mut self.ports {
            p.key.zeroize();
        }
    }

    /// The topology of the config.
    pub fn topology(&self) -> Topology {
        Topology::new(self.links.clone())
    }
}

/// What a request VM on an edge host is for: one stream, to `target` on
/// node `dst`, under flow id `flow`. Encoded after the [`NodeConfig`] in the
/// boot arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRequest {
    /// The destination node.
    pub dst: NodeId,
    /// The stream's flow id.
    pub flow: u32,
    /// `host:port` as the destination node will connect it.
    pub target: Vec<u8>,
    /// Nodes the app asked not to relay through (onion honours it).
    pub avoid: Vec<NodeId>,
    /// The link state the edge host holds now (advertisements flooded on
    /// its links, their signatures checked by the host; sent without
    /// certificates): the VM routes and seals on it from its first
    /// instruction instead of pulling it from its neighbours first.
    pub link_state: Vec<crate::routing::linkstate::Lsa>,
}

impl EdgeRequest {
    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst.to_be_bytes());
        out.extend_from_slice(&self.flow.to_be_bytes());
        out.extend_from_slice(&(self.target.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.target);
        out.push(self.avoid.len().min(255) as u8);
        for n in self.avoid.iter().take(255) {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.push(self.link_state.len().min(255) as u8);
        for l in self.link_state.iter().take(255) {
            let mut b = Vec::new();
            crate::routing::linkstate::Lsa { cert: Vec::new(), ..l.clone() }.encode(&mut b);
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(&b);
        }
    }

    /// Decodes what `encode` wrote.
    pub fn decode(b: &[u8]) -> Result<Self, ConfigError> {
        let h = b.get(..8).ok_or(ConfigError::Truncated)?;
        let n = be16(&h[6..]) as usize;
        let target = b.get(8..8 + n).ok_or(ConfigError::Truncated)?.to_vec();
        let navoid = *b.get(8 + n).ok_or(ConfigError::Truncated)? as usize;
        let list = b.get(9 + n..9 + n + 2 * navoid).ok_or(ConfigError::Truncated)?;
        let avoid = list.chunks_exact(2).map(be16).collect();
        let mut rest = &b[9 + n + 2 * navoid..];
        let nlsas = take(&mut rest, 1)?[0] as usize;
        let mut link_state = Vec::with_capacity(nlsas.min(rest.len() / 2));
        for _ in 0..nlsas {
            let len = be16(take(&mut rest, 2)?) as usize;
            let lsa = crate::routing::linkstate::Lsa::decode(take(&mut rest, len)?).map_err(|_| ConfigError::BadLsa)?;
            if !lsa.cert.is_empty() {
                return Err(ConfigError::BadLsa);
            }
            link_state.push(lsa);
        }
        Ok(Self { dst: be16(h), flow: be32(&h[2..]), target, avoid, link_state })
    }
}

/// Header length of a console record.
pub const RECORD_HDR: usize = 8;
/// A record with this node id carries data of stream `flow` (both ways).
pub const RECORD_STREAM: NodeId = 0xfffe;
/// A record with this node id controls stream `flow`; the first payload
/// byte is a [`stream_op`].
pub const RECORD_CONTROL: NodeId = 0xffff;

/// Operations of [`RECORD_CONTROL`] records.
pub mod stream_op {
    /// Node to host: a stream asks to be connected; the rest of the
    /// payload is its open info (`host:port`).
    pub const OPEN: u8 = 1;
    /// Host to node: the service is connected; accept the stream.
    pub const OPENED: u8 = 2;
    /// Host to node: the service could not be reached; refuse the stream.
    /// An optional second byte says why
    /// ([`crate::transport::stream::reset_reason`]).
    pub const REFUSED: u8 = 3;
    /// Either way: no more data will come.
    pub const EOF: u8 = 4;
    /// Either way: the stream is gone.
    pub const RESET: u8 = 5;
    /// Host to node: the host wrote this many more of the stream's bytes
    /// to its service (u32, big-endian, after the op): the node may hand
    /// it that many more. A slow service thus closes its own stream's
    /// window and holds up nothing else.
    pub const CREDIT: u8 = 6;
}

/// Stream bytes a node hands the host per stream before the host grants
/// more ([`stream_op::CREDIT`]).
pub const HOST_WINDOW: u32 = 1 << 20;

/// One datagram crossing the console: to originate (`node` = destination)
/// or delivered (`node` = source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Destination (host to node) or source (node to host).
    pub node: NodeId,
    /// Flow id.
    pub flow: u32,
    /// The datagram.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Most payload one record carries (its length is 16 bits on the
    /// wire); whoever cuts a byte stream into records cuts at most this.
    pub const MAX_PAYLOAD: usize = u16::MAX as usize;

    /// Appends the encoding to `out`. A payload longer than
    /// [`Record::MAX_PAYLOAD`] is a bug of the caller: it is cut there (in
    /// debug builds, a panic), so the records behind it still parse.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.payload.len() <= Self::MAX_PAYLOAD, "record payload of {} bytes", self.payload.len());
        let payload = &self.payload[..self.payload.len().min(Self::MAX_PAYLOAD)];
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.flow.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// The first complete record in `b` and its encoded length, or `None`
    /// if `b` holds only part of one.
    pub fn decode(b: &[u8]) -> Option<(Record<'_>, usize)> {
        let h = b.get(..RECORD_HDR)?;
        let len = be16(&h[6..]) as usize;
        let payload = b.get(RECORD_HDR..RECORD_HDR + len)?;
        Some((Record { node: be16(h), flow: be32(&h[2..]), payload }, RECORD_HDR + len))
    }
}

/// Guest-physical address of the [`NodeStats`] page.
pub const STATS_ADDR: u64 = 0x8000;
/// `NodeStats::magic` once the agent has written the page.
pub const STATS_MAGIC: u64 = u64::from_le_bytes(*b"PVSTATS1");

/// A node's counters, as the agent keeps them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// [`STATS_MAGIC`].
    pub magic: u64,
    /// Packets forwarded to a next node.
    pub forwarded: u64,
    /// Packets delivered to this node's host.
    pub delivered: u64,
    /// Packets originated from the host's records.
    pub originated: u64,
    /// Packets dropped because a port's transmit ring stayed full.
    pub tx_full: u64,
    /// Second copies of packets (redundant paths) not delivered again.
    pub duplicates: u64,
    /// Link probes sent.
    pub probes_sent: u64,
    /// Acks of this node's probes received.
    pub probe_acks: u64,
    /// Link-state advertisements accepted from other nodes.
    pub lsas_accepted: u64,
    /// Onion circuits this node relayed or ended.
    pub circuits: u64,
    /// Times the topology routing runs on changed (links down or up,
    /// measured metrics moved).
    pub topology_changes: u64,
    /// Streams ending here now.
    pub flows_open: u64,
    /// Streams ending here reset because their source went silent for the
    /// idle timeout (an edge that died, a source that left).
    pub flows_expired: u64,
    /// Certificate hellos this node sent (on links it did not hear).
    pub hellos_sent: u64,
    /// Links keyed from a neighbour's certificate hello.
    pub links_keyed: u64,
    /// Members whose keys this node learnt from certificates in their
    /// advertisements (not given at boot).
    pub members_learned: u64,
    /// A request VM's way to its stream's answer (zeros on node VMs).
    pub connect: ConnectTimes,
    /// Drops by reason.
    pub drops: DropCounters,
    /// Bytes a request VM took from its app (zeros on node VMs).
    pub app_bytes_in: u64,
    /// Bytes a request VM gave its app.
    pub app_bytes_out: u64,
    /// Each port's link as this node measures it (node VMs; what it
    /// advertises), in port order; `peer` 0 for no port.
    pub links: [LinkStats; MAX_PORTS],
    /// Links of the topology this node routes on now (down links left
    /// out, measured latency and loss applied), all of them; the first
    /// [`STATS_TOPOLOGY_LINKS`] are in `topology`.
    pub topology_links: u64,
    /// Those links.
    pub topology: TopologyTable,
}

/// The routing topology's links on the stats page (a type of its own: an
/// array this long has no derived `Default`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyTable(pub [TopologyLinkStats; STATS_TOPOLOGY_LINKS]);

impl NodeStats {
    /// Puts the topology routing runs on now into the page.
    pub fn publish_topology(&mut self, topology: &crate::routing::Topology) {
        self.topology_links = topology.links().len() as u64;
        let links = topology.links().iter().map(Some).chain(core::iter::repeat(None));
        for (slot, l) in self.topology.0.iter_mut().zip(links) {
            *slot = l.map_or_else(Default::default, |l| TopologyLinkStats {
                a: u64::from(l.a),
                b: u64::from(l.b),
                latency_us: u64::from(l.latency_us),
                bandwidth_mbps: u64::from(l.bandwidth_mbps),
            });
        }
    }
}

impl Default for TopologyTable {
    fn default() -> Self {
        Self([TopologyLinkStats::default(); STATS_TOPOLOGY_LINKS])
    }
}

/// Links of the routing topology the stats page holds at most.
pub const STATS_TOPOLOGY_LINKS: usize = 64;

/// One link of the topology a node routes on, for the host's metrics
/// (what `pathvm paths` draws routes over).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyLinkStats {
    /// One end.
    pub a: u64,
    /// The other end.
    pub b: u64,
    /// One-way latency routing uses, µs.
    pub latency_us: u64,
    /// Capacity routing uses, Mbit/s.
    pub bandwidth_mbps: u64,
}

/// One link as its node measures it, for the host's metrics.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// The neighbour's node id (0: no port here).
    pub peer: u64,
    /// 0 never answered, 1 up, 2 down (answered before, silent now).
    pub status: u64,
    /// One-way latency (half the lowest recent probe RTT), µs; 0 unknown.
    pub latency_us: u64,
    /// Probes lost, per mille.
    pub loss_permille: u64,
}

/// When a request VM reached each step of opening its stream, in µs since
/// its router started (0: not reached). The host reads them beside its own
/// steps to say where a connect's time goes (`pathvm bench connect`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectTimes {
    /// The first link-state request went to the neighbours.
    pub lsa_requested_us: u64,
    /// The stream had its keys (the destination's onion key from signed
    /// link state, or an onion circuit) and could send its opening.
    pub keyed_us: u64,
    /// The stream's answer came: established, or refused.
    pub answered_us: u64,
    /// Link-state requests sent before the keys came.
    pub lsa_requests: u64,
    /// App bytes sent behind the opening before its answer (optimistic
    /// data).
    pub early_bytes: u64,
    /// The agent's start (its clock set, right after it copied its boot
    /// parameters) to its router's start, µs (its request decoded, its
    /// links brought up): the part of the boot before the opening can go.
    pub booted_us: u64,
}

impl NodeStats {
    /// The counters as bytes (for the VMM to parse back).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C), only u64 fields (DropCounters is u64s too), so
        // no padding and every byte initialised.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), core::mem::size_of::<Self>()) }
    }

    /// Reads counters from bytes; `None` if too short or never written.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < core::mem::size_of::<Self>() {
            return None;
        }
        let mut s = Self::default();
        // SAFETY: copies size_of::<Self>() bytes into a plain-integer struct;
        // every bit pattern is a valid value.
        unsafe {
            core::ptr::copy_nonoverlapping(b.as_ptr(), (&mut s as *mut Self).cast::<u8>(), core::mem::size_of::<Self>())
        };
        (s.magic == STATS_MAGIC).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn config() -> NodeConfig {
        NodeConfig {
            me: 2,
            hop_limit: 16,
            protocol: 2,
            ports: vec![
                PortConfig {
                    peer: 1,
                    peer_mac: [2, 0, 0, 0, 1, 1],
                    tx_link_id: 3,
                    rx_link_id: 2,
                    rx_link_span: 1,
                    scope: KeyScope::Link,
                    key: [9; 32],
                },
                PortConfig {
                    peer: 3,
                    peer_mac: [2, 0, 0, 0, 2, 3],
                    tx_link_id: 4,
                    rx_link_id: 5,
                    rx_link_span: 100,
                    scope: KeyScope::Own,
                    key: [8; 32],
                },
            ],
            links: vec![
                Link { a: 1, b: 2, latency_us: 100, bandwidth_mbps: 1000 },
                Link { a: 2, b: 3, latency_us: 200, bandwidth_mbps: 500 },
            ],
            epoch_us: 1_700_000_000_000_000,
            seed: [3; 32],
            onion_period_s: 600,
            idle_timeout_s: 300,
            lsa_secret: [7; 32],
            lsa_keys: vec![(1, [10; 32]), (3, [11; 32])],
            identity: IdentityConfig {
                ca_public: [12; 32],
                revoked: vec![[13; 16], [14; 16]],
                cert: vec![15; 200],
                link_secret: [16; 32],
            },
        }
    }

    #[test]
    fn config_round_trips() {
        let mut b = Vec::new();
        config().encode(&mut b);
        assert_eq!(b.len(), config().encoded_len());
        assert_eq!(NodeConfig::decode(&b), Ok(config()));
    }

    #[test]
    fn a_request_view_holds_its_own_ids_keys_and_no_secret_of_the_node() {
        let mut cfg = config();
        cfg.ports[1].scope = KeyScope::Link;
        let v = cfg.request_view(&[4, 4], 1);
        assert_eq!((v.ports[0].tx_link_id, v.ports[1].tx_link_id), (5, 6));
        for (p, link) in v.ports.iter().zip(&cfg.ports) {
            assert_eq!(p.scope, KeyScope::Own);
            assert_eq!(p.key, crate::wire::LinkKey::new(&link.key).derive_bytes(p.tx_link_id));
            assert_ne!(p.key, link.key);
        }
        assert_eq!((v.onion_period_s, v.lsa_secret), (0, [0; 32]), "no onion key, no secret of the host's node");
        assert_eq!((v.me, v.seed), (cfg.me, cfg.seed));
        assert_eq!(v.lsa_keys, cfg.lsa_keys, "it checks link state as nodes do");
        let id = &v.identity;
        assert_eq!((id.ca_public, &id.revoked), (cfg.identity.ca_public, &cfg.identity.revoked), "and certificates");
        assert!(id.cert.is_empty() && id.link_secret == [0; 32], "but holds no certificate or link secret");
    }

    #[test]
    fn config_truncations_and_garbage_are_errors() {
        let mut b = Vec::new();
        config().encode(&mut b);
        for n in 0..b.len() {
            assert!(NodeConfig::decode(&b[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(NodeConfig::decode(b"XXXX"), Err(ConfigError::BadMagic));
        let mut many = b.clone();
        many[7] = 200;
        assert_eq!(NodeConfig::decode(&many), Err(ConfigError::TooManyPorts));
        let mut scope = b.clone();
        scope[HEAD_LEN + 20] = 7;
        assert_eq!(NodeConfig::decode(&scope), Err(ConfigError::BadKeyScope));
    }

    #[test]
    fn edge_request_round_trips_after_a_config() {
        let mut b = Vec::new();
        config().encode(&mut b);
        let lsa = crate::routing::linkstate::Lsa {
            origin: 2,
            seq: 9,
            onion_key: [1; 32],
            links: Vec::new(),
            sig: [3; 64],
            cert: Vec::new(),
        };
        let req = EdgeRequest {
            dst: 3,
            flow: 0xabcd,
            target: b"10.0.0.3:80".to_vec(),
            avoid: vec![11, 12],
            link_state: vec![lsa.clone(), lsa],
        };
        req.encode(&mut b);
        let cfg = NodeConfig::decode(&b).unwrap();
        assert_eq!(EdgeRequest::decode(&b[cfg.encoded_len()..]), Ok(req));
        assert_eq!(EdgeRequest::decode(&b[cfg.encoded_len()..b.len() - 1]), Err(ConfigError::Truncated));
    }

    #[test]
    fn records_round_trip_and_wait_for_completion() {
        let mut b = Vec::new();
        Record { node: 3, flow: 7, payload: b"hello" }.encode(&mut b);
        Record { node: 4, flow: 8, payload: b"" }.encode(&mut b);
        let (r, n) = Record::decode(&b).unwrap();
        assert_eq!((r.node, r.flow, r.payload, n), (3, 7, &b"hello"[..], 13));
        let (r, n2) = Record::decode(&b[n..]).unwrap();
        assert_eq!((r.node, r.payload.len(), n2), (4, 0, 8));
        for cut in 0..13 {
            assert!(Record::decode(&b[..cut]).is_none());
        }
    }

    #[test]
    fn stats_round_trip_only_when_written() {
        let s = NodeStats { magic: STATS_MAGIC, forwarded: 5, ..Default::default() };
        assert_eq!(NodeStats::from_bytes(s.as_bytes()), Some(s));
        assert_eq!(NodeStats::from_bytes(NodeStats::default().as_bytes()), None);
        assert_eq!(NodeStats::from_bytes(&[0; 8]), None);
    }

    #[test]
    fn stats_page_fits_below_the_page_tables() {
        assert!(STATS_ADDR as usize + core::mem::size_of::<NodeStats>() <= 0x9000);
        assert!(
            crate::boot::BOOT_PARAMS_ADDR as usize + core::mem::size_of::<crate::boot::BootParams>()
                <= STATS_ADDR as usize
        );
    }
}
