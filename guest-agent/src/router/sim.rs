//! Simulated overlay networks: routers joined by [`MemoryLink`]s, driven
//! on a simulated clock. For host tests and `pathvm bench router`; the
//! configurations are the ones `pathvm topo up` would write (one key per
//! link, one span of link ids per side, link-state keys from a directory;
//! each node draws its own onion keys).

use alloc::vec::Vec;

use crate::node::{EdgeRequest, IdentityConfig, KeyScope, NodeConfig, PortConfig, Record};
use crate::routing::member::{MemberCert, SERIAL_LEN};
use crate::routing::{lsa_sign, Link, NodeId};
use crate::wire::{seal_frame, EthAddrs, LinkKey, OverlayRepr, Protocol};

use super::{MemoryLink, Router};

/// Seconds between a simulated node's onion key rotations (the default).
pub const ONION_PERIOD_S: u32 = crate::onion::rotation::DEFAULT_PERIOD_S;

/// Link ids each side of a link owns (its node, then request VMs).
pub const SPAN: u32 = 1 << 16;

/// The MAC of node `n`'s port towards `m`.
pub fn mac(n: NodeId, m: NodeId) -> [u8; 6] {
    [2, 0, (n >> 8) as u8, n as u8, (m >> 8) as u8, m as u8]
}

/// The key of the `k`-th link of a topology.
pub fn link_key(k: usize) -> [u8; 32] {
    let mut key = [0x40u8; 32];
    key[..8].copy_from_slice(&(k as u64 + 1).to_be_bytes());
    key
}

/// The first link id of `n`'s side of the `k`-th link `(a, b)`.
pub fn side_id(k: usize, link: &Link, n: NodeId) -> u32 {
    let side = u32::from(n != link.a);
    1 + (2 * k as u32 + side) * SPAN
}

/// Node `n`'s link-state signing secret in a simulation.
pub fn lsa_secret(n: NodeId) -> [u8; 32] {
    let mut s = [0x22u8; 32];
    s[..2].copy_from_slice(&n.to_be_bytes());
    s
}

/// The network CA's secret in simulations of a certified network.
pub const CA_SECRET: [u8; 32] = [0x33; 32];

/// Node `n`'s X25519 link secret in a simulation.
pub fn link_secret(n: NodeId) -> [u8; 32] {
    let mut s = [0x44u8; 32];
    s[..2].copy_from_slice(&n.to_be_bytes());
    s
}

/// Node `n`'s certificate from the simulation's CA (serial `serial`),
/// valid for the first hours of the simulated clock.
pub fn cert(n: NodeId, serial: u8) -> MemberCert {
    use ed25519_dalek::Signer;
    let ca = ed25519_dalek::SigningKey::from_bytes(&CA_SECRET);
    let mut c = MemberCert {
        node: n,
        serial: [serial; SERIAL_LEN],
        not_before: 0,
        not_after: 86_400,
        signing_public: lsa_sign::public_key(&lsa_secret(n)),
        link_public: crate::onion::keys::public_key(&link_secret(n)),
        name: alloc::format!("n{n}"),
        addrs: Vec::new(),
        signature: [0; 64],
    };
    c.signature = ca.sign(&c.signed_message(&ca.verifying_key().to_bytes())).to_bytes();
    c
}

/// Makes `cfg` a member of the simulation's certified network: the CA,
/// its own certificate and link secret, `revoked` serials.
pub fn certify(cfg: &mut NodeConfig, revoked: &[[u8; SERIAL_LEN]]) {
    let mut wire = Vec::new();
    cert(cfg.me, 1).encode(&mut wire);
    cfg.identity = IdentityConfig {
        ca_public: lsa_sign::public_key(&CA_SECRET),
        revoked: revoked.to_vec(),
        cert: wire,
        link_secret: link_secret(cfg.me),
    };
}

/// a(1) - b(2) - c(3), and d(4) on b's far side: a member joining.
pub fn join4() -> [Link; 3] {
    [link(1, 2, 100, 1000), link(2, 3, 100, 1000), link(2, 4, 100, 1000)]
}

/// [`join4`] as d joins: every node certified ([`certify`]); nobody but d
/// has d's key, nobody but b and d knows the b-d link, and b's and d's
/// ports between them wait for a hello (neither host was given the
/// other's certificate).
pub fn joined(cfg: &mut NodeConfig, revoked: &[[u8; SERIAL_LEN]]) {
    certify(cfg, revoked);
    let me = cfg.me;
    if me != 4 {
        cfg.lsa_keys.retain(|(n, _)| *n != 4);
    }
    if me == 1 || me == 3 {
        cfg.links.retain(|l| l.b != 4);
    }
    for p in cfg.ports.iter_mut().filter(|p| (me, p.peer) == (2, 4) || me == 4) {
        (p.scope, p.key) = (KeyScope::Certified, [0; 32]);
    }
}

/// An unsealed hello frame from `from` to its neighbour `to` carrying
/// `payload` (a control message, or anything a hostile neighbour sends
/// under the reserved link id).
pub fn hello_frame(from: NodeId, to: NodeId, payload: &[u8]) -> Vec<u8> {
    let mut r = repr(Protocol::Shortest, crate::wire::FLAG_CONTROL, 1, 0, from, to);
    r.link_id = crate::wire::RESERVED_LINK_ID;
    r.payload_len = payload.len() as u16;
    let mut f = Vec::new();
    crate::wire::build_frame(&mut f, EthAddrs { dst: mac(to, from), src: mac(from, to) }, &r, &[], payload)
        .expect("lengths match");
    f
}

/// Streams' idle timeout in simulated nets, s.
pub const IDLE_TIMEOUT_S: u32 = 30;

/// The configuration of node `me` in the topology `links`, originating
/// with `protocol` (wire id).
pub fn config(links: &[Link], me: NodeId, protocol: u8) -> NodeConfig {
    let mut nodes: Vec<NodeId> = links.iter().flat_map(|l| [l.a, l.b]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let ports = links
        .iter()
        .enumerate()
        .filter(|(_, l)| l.a == me || l.b == me)
        .map(|(k, l)| {
            let peer = if l.a == me { l.b } else { l.a };
            PortConfig {
                peer,
                peer_mac: mac(peer, me),
                tx_link_id: side_id(k, l, me),
                rx_link_id: side_id(k, l, peer),
                rx_link_span: SPAN,
                scope: KeyScope::Link,
                key: link_key(k),
            }
        })
        .collect();
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&me.to_be_bytes());
    NodeConfig {
        me,
        hop_limit: 16,
        protocol,
        ports,
        links: links.to_vec(),
        epoch_us: 1_000,
        seed,
        onion_period_s: ONION_PERIOD_S,
        idle_timeout_s: IDLE_TIMEOUT_S,
        lsa_secret: lsa_secret(me),
        lsa_keys: nodes.iter().map(|&n| (n, lsa_sign::public_key(&lsa_secret(n)))).collect(),
        identity: Default::default(),
    }
}

/// A link of `latency_us` and `mbps` between `a` and `b`.
pub fn link(a: NodeId, b: NodeId, latency_us: u32, mbps: u32) -> Link {
    Link { a, b, latency_us, bandwidth_mbps: mbps }
}

/// One simulated host: its router and its host side's buffers.
pub struct Host {
    /// The router.
    pub router: Router<MemoryLink>,
    /// Console bytes for the router, not yet taken.
    pub to_router: Vec<u8>,
    /// Console bytes the router gave its host.
    pub from_router: Vec<u8>,
    /// The host stopped reading its console (a slow or stuck service).
    pub stalled: bool,
}

/// Routers joined by in-memory links, on one clock.
pub struct Net {
    /// The hosts, in the order they were added.
    pub hosts: Vec<Host>,
    /// Hosts that are switched off (not driven).
    pub down: Vec<NodeId>,
    /// The clock, µs.
    pub now: u64,
}

/// A node's link ends, each with its MAC, in `config`'s port order.
type Ends = Vec<(MemoryLink, [u8; 6])>;

/// The two ends of every link in `links`, per node.
fn wire_up(links: &[Link]) -> Vec<(NodeId, Ends)> {
    let mut ends: Vec<(NodeId, Ends)> = Vec::new();
    for l in links {
        let (ea, eb) = MemoryLink::pair();
        for (n, m, e) in [(l.a, l.b, ea), (l.b, l.a, eb)] {
            match ends.iter_mut().find(|(x, _)| *x == n) {
                Some((_, v)) => v.push((e, mac(n, m))),
                None => ends.push((n, alloc::vec![(e, mac(n, m))])),
            }
        }
    }
    ends
}

impl Net {
    /// A node router on every node of `links`, originating with
    /// `protocol`; node `request` (if any) is instead a request VM for
    /// `req`.
    pub fn new(links: &[Link], protocol: u8, request: Option<(NodeId, &EdgeRequest)>) -> Self {
        Self::new_with(links, protocol, request, |_| {})
    }

    /// As [`Net::new`], each node's configuration changed by `edit` first
    /// (another membership, other keys, a topology it was not told of).
    pub fn new_with(
        links: &[Link],
        protocol: u8,
        request: Option<(NodeId, &EdgeRequest)>,
        edit: impl Fn(&mut NodeConfig),
    ) -> Self {
        let now = 1_000;
        let hosts = wire_up(links)
            .into_iter()
            .map(|(n, ends)| {
                let mut cfg = config(links, n, protocol);
                edit(&mut cfg);
                let router = match request {
                    Some((r, req)) if r == n => {
                        // As the edge host does it: an id of its own in
                        // the edge side's span, that id's key alone.
                        let spans = alloc::vec![SPAN; cfg.ports.len()];
                        Router::new_request(&cfg.request_view(&spans, 0), req, ends, now)
                    }
                    _ => Router::new(&cfg, ends, now),
                };
                let router = router.unwrap_or_else(|e| panic!("node {n}: {e}"));
                Host { router, to_router: Vec::new(), from_router: Vec::new(), stalled: false }
            })
            .collect();
        Self { hosts, down: Vec::new(), now }
    }

    /// The host of node `n`.
    pub fn host(&mut self, n: NodeId) -> &mut Host {
        self.hosts.iter_mut().find(|h| h.router.me() == n).unwrap_or_else(|| panic!("no node {n}"))
    }

    /// One pass of every running router's loop, then `step_us` later.
    pub fn step(&mut self, step_us: u64) -> bool {
        let now = self.now;
        let mut worked = false;
        for h in self.hosts.iter_mut().filter(|h| !self.down.contains(&h.router.me())) {
            let r = &mut h.router;
            worked |= r.poll_links(now);
            if r.wants_host_input() && !h.to_router.is_empty() {
                let used = r.host_input(&h.to_router);
                h.to_router.drain(..used);
                worked |= used > 0;
            }
            worked |= r.poll(now);
            worked |= r.flush_links(now);
            if !r.host_output().is_empty() && !h.stalled {
                h.from_router.extend_from_slice(r.host_output());
                let n = r.host_output().len();
                r.host_took(n);
                worked = true;
            }
        }
        self.now += step_us;
        worked
    }

    /// Runs for `us` of simulated time in steps of `step_us`.
    pub fn run_for(&mut self, us: u64, step_us: u64) {
        let end = self.now + us;
        while self.now < end {
            self.step(step_us);
        }
    }

    /// Runs until `done` holds or `us` pass; whether it held.
    pub fn run_until(&mut self, us: u64, step_us: u64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now + us;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step(step_us);
        }
        done(self)
    }
}

/// The records in console bytes (complete ones).
pub fn records(b: &[u8]) -> Vec<(NodeId, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((r, n)) = Record::decode(&b[at..]) {
        out.push((r.node, r.flow, r.payload.to_vec()));
        at += n;
    }
    out
}

/// The header of a packet `src` originates for `dst` (lengths, link id and
/// number are set as it is sealed), for tests, fuzzing and benchmarks that
/// play a neighbour.
pub fn repr(protocol: Protocol, flags: u8, hop_limit: u8, flow_id: u32, src: NodeId, dst: NodeId) -> OverlayRepr {
    super::origin_repr(protocol, flags, hop_limit, flow_id, src, dst, 0)
}

/// A whole overlay frame as node `from` would send it on the `k`-th link
/// of `links` under link sequence number `seq` (for tests and benchmarks
/// that play a neighbour).
pub fn neighbour_frame(
    links: &[Link],
    k: usize,
    from: NodeId,
    repr: OverlayRepr,
    state: &[u8],
    payload: &[u8],
    seq: u64,
) -> Vec<u8> {
    let id = side_id(k, &links[k], from);
    sender_frame(links, k, from, id, repr, state, payload, seq)
}

/// A whole overlay frame as a sender on `from`'s side of the `k`-th link
/// would send it under link id `link_id` (the node's own, or a request
/// VM's) and sequence number `seq`.
#[allow(clippy::too_many_arguments)]
pub fn sender_frame(
    links: &[Link],
    k: usize,
    from: NodeId,
    link_id: u32,
    mut repr: OverlayRepr,
    state: &[u8],
    payload: &[u8],
    seq: u64,
) -> Vec<u8> {
    let l = &links[k];
    let to = if l.a == from { l.b } else { l.a };
    repr.link_id = link_id;
    repr.link_seq = seq;
    repr.state_len = state.len() as u16;
    repr.payload_len = payload.len() as u16;
    let key = LinkKey::new(&link_key(k)).derive(repr.link_id);
    let mut f = Vec::new();
    let eth = EthAddrs { dst: mac(to, from), src: mac(from, to) };
    // The lengths are set from the slices just above.
    let _ = seal_frame(&mut f, eth, &repr, state, payload, &key);
    f
}
