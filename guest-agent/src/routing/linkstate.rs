//! Measured link metrics and link-state flooding.
//!
//! Each node probes each of its links ([`LinkMonitor`]): a probe carries
//! the sender's clock, the neighbour echoes it, so the sender measures the
//! round trip without synchronised clocks. From the acks it keeps the
//! minimum RTT over a short window (queueing and vCPU scheduling only ever
//! add delay, so the minimum is the link's own), the share of probes lost,
//! and whether the neighbour is alive. A link whose neighbour answered
//! once and then went silent for [`DEAD_AFTER_US`] is down; a neighbour
//! that never answered (an edge host without a node VM) keeps the
//! configured metrics.
//!
//! Nodes flood what they measure as link-state advertisements ([`Lsa`]),
//! as OSPF does: every node keeps the newest advertisement per origin,
//! re-floods new ones, and forgets those not refreshed within
//! [`LSA_MAX_AGE_US`]. [`LinkStateDb::effective`] turns the configured
//! topology plus what is measured into the topology routing runs on.
//!
//! Every advertisement is signed by its origin ([`super::lsa_sign`]) and
//! numbered by the origin's wall clock, so what a node takes in
//! ([`LinkStateDb::offer`]) is the origin's own word, newer than what it
//! holds, recent by its own clock, and no more frequent than an origin
//! advertises: a forged, replayed or invented advertisement changes
//! nothing.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::lsa_sign::{LsaKeys, VerifyBudget};
use super::member::MAX_CERT_LEN;
use super::{Link, NodeId, Topology};

/// How often a node probes each link.
pub const PROBE_INTERVAL_US: u64 = 50_000;
/// Silence after which an answering neighbour is declared dead.
pub const DEAD_AFTER_US: u64 = 600_000;
/// Window over which the minimum RTT is taken.
pub const RTT_WINDOW_US: u64 = 1_000_000;
/// A probe unanswered this long is lost.
pub const PROBE_LOST_AFTER_US: u64 = 1_000_000;
/// Measurements within this of the configured latency do not override it.
/// Every probe also carries the nodes' own processing (vCPU wake-ups,
/// 0.1-1 ms on a nested host), which is no property of the link and would
/// otherwise drown sub-millisecond configured differences in noise.
pub const LATENCY_NOISE_US: u32 = 5_000;
/// Acks within the RTT window needed before a latency is reported: one
/// late ack (a VM still booting, a busy host) is no measurement.
pub const MIN_RTT_SAMPLES: usize = 4;
/// Advertisements not refreshed within this are forgotten.
pub const LSA_MAX_AGE_US: u64 = 3_000_000;
/// A node re-advertises at least this often.
pub const LSA_REFRESH_US: u64 = 1_000_000;
/// A node advertises at most this often, however its links flap.
pub const LSA_MIN_INTERVAL_US: u64 = 50_000;
/// Advertisements of one origin numbered closer together than this are
/// refused: an origin keeps [`LSA_MIN_INTERVAL_US`], so only a flapping or
/// hostile origin would, and each would cost a verification and a route
/// computation.
pub const LSA_MIN_GAP_US: u64 = 25_000;
/// How far the hosts' wall clocks may disagree. An advertisement numbered
/// more than this ahead of the receiver's clock, or older than
/// [`LSA_MAX_AGE_US`] plus this, is stale: a node that restarted (and so
/// holds no newest number) cannot be fed an advertisement recorded long
/// ago.
pub const LSA_CLOCK_SKEW_US: u64 = 10_000_000;

const PROBES_KEPT: usize = 32;
const RTTS_KEPT: usize = 32;

/// What a node knows about one of its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkStatus {
    /// The neighbour never answered a probe: configured metrics apply.
    #[default]
    Unknown,
    /// Answering.
    Up,
    /// Answered before, silent now.
    Down,
}

impl LinkStatus {
    fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Up => 1,
            Self::Down => 2,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::Up,
            2 => Self::Down,
            _ => return None,
        })
    }
}

/// One link as its end node measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkReport {
    /// The neighbour at the other end.
    pub peer: NodeId,
    /// Alive or not.
    pub status: LinkStatus,
    /// Measured one-way latency (half the minimum RTT), 0 if unmeasured.
    pub latency_us: u32,
    /// Probes lost, per thousand.
    pub loss_permille: u16,
}

/// Probing state of one link.
#[derive(Debug, Clone)]
pub struct LinkMonitor {
    peer: NodeId,
    next_probe_at: u64,
    next_seq: u32,
    /// (seq, sent at, acked) of recent probes.
    probes: Vec<(u32, u64, bool)>,
    /// (measured at, rtt) of recent acks.
    rtts: Vec<(u64, u64)>,
    last_ack_at: Option<u64>,
    status: LinkStatus,
}

impl LinkMonitor {
    /// A monitor of the link to `peer`, first probing at `now`.
    pub fn new(peer: NodeId, now: u64) -> Self {
        Self {
            peer,
            next_probe_at: now,
            next_seq: 1,
            probes: Vec::with_capacity(PROBES_KEPT),
            rtts: Vec::with_capacity(RTTS_KEPT),
            last_ack_at: None,
            status: LinkStatus::Unknown,
        }
    }

    /// The probe to send now, if one is due: `(seq, sent_us)`.
    pub fn poll_probe(&mut self, now: u64) -> Option<(u32, u64)> {
        if now < self.next_probe_at {
            return None;
        }
        self.next_probe_at = now + PROBE_INTERVAL_US;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.probes.len() == PROBES_KEPT {
            self.probes.remove(0);
        }
        self.probes.push((seq, now, false));
        Some((seq, now))
    }

    /// An ack for probe `seq` sent at `sent_us` came back at `now`. Acks
    /// for probes this monitor does not remember (forged, or very late)
    /// are ignored.
    pub fn on_ack(&mut self, now: u64, seq: u32, sent_us: u64) {
        let Some(p) = self.probes.iter_mut().find(|p| p.0 == seq && p.1 == sent_us && !p.2) else { return };
        p.2 = true;
        if self.rtts.len() == RTTS_KEPT {
            self.rtts.remove(0);
        }
        self.rtts.push((now, now.saturating_sub(sent_us)));
        self.last_ack_at = Some(now);
        self.status = LinkStatus::Up;
    }

    /// Updates the status at `now`; true if it changed.
    pub fn tick(&mut self, now: u64) -> bool {
        let silent = self.last_ack_at.is_some_and(|t| now.saturating_sub(t) > DEAD_AFTER_US);
        if self.status == LinkStatus::Up && silent {
            self.status = LinkStatus::Down;
            return true;
        }
        false
    }

    /// The link as measured at `now`.
    pub fn report(&self, now: u64) -> LinkReport {
        let recent: Vec<u64> =
            self.rtts.iter().filter(|(at, _)| now.saturating_sub(*at) <= RTT_WINDOW_US).map(|(_, r)| *r).collect();
        let min_rtt = if recent.len() >= MIN_RTT_SAMPLES { recent.iter().min().copied() } else { None };
        let old: Vec<&(u32, u64, bool)> =
            self.probes.iter().filter(|p| now.saturating_sub(p.1) > PROBE_LOST_AFTER_US).collect();
        let lost = old.iter().filter(|p| !p.2).count();
        // A neighbour that never answers (no node VM there) has no loss
        // to speak of: its probes go nowhere by design.
        let loss_permille =
            if old.is_empty() || self.status == LinkStatus::Unknown { 0 } else { (lost * 1000 / old.len()) as u16 };
        LinkReport {
            peer: self.peer,
            status: self.status,
            latency_us: min_rtt.map_or(0, |r| (r / 2).clamp(1, u32::MAX as u64) as u32),
            loss_permille,
        }
    }

    /// The neighbour this monitor probes.
    pub fn peer(&self) -> NodeId {
        self.peer
    }
}

/// A link-state advertisement: what `origin` measures on its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lsa {
    /// The advertising node.
    pub origin: NodeId,
    /// The origin's wall clock when it advertised (µs since the Unix
    /// epoch), raised past its last number: increases across restarts.
    pub seq: u64,
    /// The origin's current onion public key (sources build circuits and
    /// stream hellos to it; [`crate::onion::rotation`]), all zero if it has
    /// none.
    pub onion_key: [u8; 32],
    /// Its links.
    pub links: Vec<LinkReport>,
    /// The origin's Ed25519 signature over the rest.
    pub sig: [u8; 64],
    /// The origin's certificate, wire form ([`super::member`]), or empty.
    /// Not under the origin's signature: the CA's covers it, and the
    /// origin's key it names is what checks the signature above.
    pub cert: Vec<u8>,
}

/// Why an advertisement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedLsa;

/// Why [`LinkStateDb::offer`] refused a well-formed advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsaRefusal {
    /// No key is configured for its origin.
    UnknownOrigin,
    /// The signature is not the origin's.
    BadSignature,
    /// Older than the origin's newest, or outside the clock window.
    Stale,
    /// Too soon after the origin's last, or the port's verification
    /// budget is spent.
    RateLimited,
    /// The certificate it carries for an origin without a key here does
    /// not hold (another CA, expired, revoked, another node's).
    BadCertificate,
}

const LSA_HDR: usize = 43;
const REPORT_LEN: usize = 9;
const SIG_LEN: usize = 64;
/// Most links one advertisement carries.
pub const MAX_LSA_LINKS: usize = 32;

impl Lsa {
    /// Appends what the signature covers: origin, seq, onion key, count,
    /// then per link: peer, latency, loss, status (big-endian).
    pub fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.onion_key);
        out.push(self.links.len().min(MAX_LSA_LINKS) as u8);
        for r in self.links.iter().take(MAX_LSA_LINKS) {
            out.extend_from_slice(&r.peer.to_be_bytes());
            out.extend_from_slice(&r.latency_us.to_be_bytes());
            out.extend_from_slice(&r.loss_permille.to_be_bytes());
            out.push(r.status.to_u8());
        }
    }

    /// Appends the encoding: the signed part, the signature, then, if
    /// it carries one, the certificate's length (2 bytes) and bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_signed_part(out);
        out.extend_from_slice(&self.sig);
        if !self.cert.is_empty() && self.cert.len() <= MAX_CERT_LEN {
            out.extend_from_slice(&(self.cert.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.cert);
        }
    }

    /// Decodes what `encode` wrote; any inconsistency is an error.
    pub fn decode(b: &[u8]) -> Result<Self, MalformedLsa> {
        let h = b.get(..LSA_HDR).ok_or(MalformedLsa)?;
        let n = h[42] as usize;
        let signed_end = LSA_HDR + n * REPORT_LEN + SIG_LEN;
        if n > MAX_LSA_LINKS || b.len() < signed_end {
            return Err(MalformedLsa);
        }
        let cert = match &b[signed_end..] {
            [] => Vec::new(),
            [hi, lo, rest @ ..]
                if !rest.is_empty()
                    && rest.len() <= MAX_CERT_LEN
                    && rest.len() == usize::from(u16::from_be_bytes([*hi, *lo])) =>
            {
                rest.to_vec()
            }
            _ => return Err(MalformedLsa),
        };
        let (reports, sig) = b[LSA_HDR..signed_end].split_at(n * REPORT_LEN);
        let mut links = Vec::with_capacity(n);
        for r in reports.chunks_exact(REPORT_LEN) {
            // Loss is taken as sent (the signature covers the bytes);
            // `effective` clamps it.
            links.push(LinkReport {
                peer: u16::from_be_bytes([r[0], r[1]]),
                latency_us: u32::from_be_bytes([r[2], r[3], r[4], r[5]]),
                loss_permille: u16::from_be_bytes([r[6], r[7]]),
                status: LinkStatus::from_u8(r[8]).ok_or(MalformedLsa)?,
            });
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&h[2..10]);
        let mut onion_key = [0u8; 32];
        onion_key.copy_from_slice(&h[10..42]);
        let mut s = [0u8; SIG_LEN];
        s.copy_from_slice(sig);
        let origin = u16::from_be_bytes([h[0], h[1]]);
        Ok(Self { origin, seq: u64::from_be_bytes(seq), onion_key, links, sig: s, cert })
    }
}

/// The newest advertisement of every origin, and the configured links.
#[derive(Debug, Clone, Default)]
pub struct LinkStateDb {
    base: Vec<Link>,
    keys: LsaKeys,
    /// Held advertisements, with when they were received.
    lsas: BTreeMap<NodeId, (u64, Lsa)>,
    /// The newest number taken in per origin, kept after its
    /// advertisement ages out (so a replay of it is still refused); one
    /// entry per origin with a key at most.
    newest: BTreeMap<NodeId, u64>,
}

impl LinkStateDb {
    /// A database over the configured topology, taking advertisements
    /// from the origins of `keys`.
    pub fn new(base: &Topology, keys: LsaKeys) -> Self {
        Self { base: base.links().to_vec(), keys, lsas: BTreeMap::new(), newest: BTreeMap::new() }
    }

    /// Offers `lsa`, received at `now` (router time) when the wall clock
    /// reads `wall_us`. `Ok(true)`: stored, so it should be flooded on;
    /// `Ok(false)`: a copy of what is held, or this node's own. A refusal
    /// changes nothing. Cheap checks come first; the signature is checked
    /// last, out of the sending port's `budget`.
    pub fn offer(
        &mut self,
        me: NodeId,
        now: u64,
        wall_us: u64,
        lsa: Lsa,
        budget: &mut VerifyBudget,
    ) -> Result<bool, LsaRefusal> {
        if lsa.origin == me {
            return Ok(false);
        }
        let learn = self.keys.wants_cert(lsa.origin, &lsa.cert);
        if !learn && !self.keys.knows(lsa.origin) {
            return Err(LsaRefusal::UnknownOrigin);
        }
        let oldest = wall_us.saturating_sub(LSA_MAX_AGE_US + LSA_CLOCK_SKEW_US);
        if lsa.seq < oldest || lsa.seq > wall_us.saturating_add(LSA_CLOCK_SKEW_US) {
            return Err(LsaRefusal::Stale);
        }
        if let Some(&newest) = self.newest.get(&lsa.origin) {
            if lsa.seq == newest && self.lsas.get(&lsa.origin).is_some_and(|(_, held)| *held == lsa) {
                return Ok(false);
            }
            // An origin never signs two advertisements under one number.
            if lsa.seq <= newest {
                return Err(LsaRefusal::Stale);
            }
            if lsa.seq < newest.saturating_add(LSA_MIN_GAP_US) {
                return Err(LsaRefusal::RateLimited);
            }
        }
        if !budget.take(now) {
            return Err(LsaRefusal::RateLimited);
        }
        if learn {
            // The certificate costs a verification of its own.
            if !budget.take(now) {
                return Err(LsaRefusal::RateLimited);
            }
            self.keys.learn(&lsa, wall_us / 1_000_000)?;
        } else if !self.keys.verify(&lsa) {
            return Err(LsaRefusal::BadSignature);
        }
        self.newest.insert(lsa.origin, lsa.seq);
        self.lsas.insert(lsa.origin, (now, lsa));
        Ok(true)
    }

    /// Takes `lsa`, received at `now`, without checking its signature:
    /// for link state this node's host checked and hands over at boot (a
    /// request VM's edge). Older than what is held, or this node's own:
    /// left out. Whether it was taken.
    pub fn trust(&mut self, me: NodeId, now: u64, lsa: Lsa) -> bool {
        if lsa.origin == me || self.newest.get(&lsa.origin).is_some_and(|&n| n >= lsa.seq) {
            return false;
        }
        self.newest.insert(lsa.origin, lsa.seq);
        self.lsas.insert(lsa.origin, (now, lsa));
        true
    }

    /// The origins' keys and the authority they are learnt under.
    pub fn keys(&self) -> &LsaKeys {
        &self.keys
    }

    /// Every advertisement held.
    pub fn lsas(&self) -> impl Iterator<Item = &Lsa> {
        self.lsas.values().map(|(_, l)| l)
    }

    /// Node `n`'s onion key as its newest advertisement signs it: what a
    /// source seals creates and stream hellos to.
    pub fn onion_key(&self, n: NodeId) -> Option<[u8; 32]> {
        self.lsas.get(&n).map(|(_, l)| l.onion_key).filter(|k| *k != [0; 32])
    }

    /// Forgets advertisements older than [`LSA_MAX_AGE_US`]; true if any
    /// went (the effective topology may have changed).
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.lsas.len();
        self.lsas.retain(|_, (at, _)| now.saturating_sub(*at) <= LSA_MAX_AGE_US);
        self.lsas.len() != before
    }

    /// The topology routing should use at node `me`, whose own links
    /// measure `own`: configured links minus those either end reports
    /// down; latency is the configured (the floor) unless a measurement
    /// exceeds it by more than [`LATENCY_NOISE_US`]; bandwidth the
    /// configured, discounted by measured loss.
    pub fn effective(&self, me: NodeId, own: &[LinkReport]) -> Topology {
        let mut links = Vec::with_capacity(self.base.len());
        'link: for l in &self.base {
            let (mut latency, mut loss) = (l.latency_us, 0u16);
            for (end, other) in [(l.a, l.b), (l.b, l.a)] {
                let reports: &[LinkReport] = if end == me {
                    own
                } else {
                    match self.lsas.get(&end) {
                        Some((_, lsa)) => &lsa.links,
                        None => continue,
                    }
                };
                for r in reports.iter().filter(|r| r.peer == other) {
                    if r.status == LinkStatus::Down {
                        continue 'link;
                    }
                    if r.latency_us > l.latency_us.saturating_add(LATENCY_NOISE_US) {
                        latency = latency.max(r.latency_us);
                    }
                    loss = loss.max(r.loss_permille);
                }
            }
            let bandwidth = (l.bandwidth_mbps as u64 * (1000 - loss.min(999)) as u64 / 1000).max(1) as u32;
            links.push(Link { latency_us: latency, bandwidth_mbps: bandwidth, ..*l });
        }
        // Links no configuration lists, which both ends advertise up
        // under their signatures (a member that joined): routed on with
        // what they measure and a nominal capacity. One end's word is not
        // enough: a member could claim links to anyone.
        let configured = |a: NodeId, b: NodeId| self.base.iter().any(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a));
        let reports_of = |n: NodeId| -> Option<&[LinkReport]> {
            if n == me {
                Some(own)
            } else {
                self.lsas.get(&n).map(|(_, lsa)| lsa.links.as_slice())
            }
        };
        let up_to = |from: NodeId, to: NodeId| {
            reports_of(from).and_then(|rs| rs.iter().find(|r| r.peer == to && r.status == LinkStatus::Up)).copied()
        };
        for (&origin, (_, lsa)) in &self.lsas {
            for r in lsa.links.iter().filter(|r| r.status == LinkStatus::Up && r.peer != origin) {
                let (a, b) = (origin.min(r.peer), origin.max(r.peer));
                if configured(a, b) || links.iter().any(|l: &Link| (l.a, l.b) == (a, b)) {
                    continue;
                }
                let Some(back) = up_to(r.peer, origin) else { continue };
                let latency = r.latency_us.max(back.latency_us).max(1);
                let loss = r.loss_permille.max(back.loss_permille);
                let bandwidth = (JOINED_LINK_MBPS as u64 * (1000 - loss.min(999)) as u64 / 1000).max(1) as u32;
                links.push(Link { a, b, latency_us: latency, bandwidth_mbps: bandwidth });
            }
        }
        Topology::new(links)
    }
}

/// Capacity assumed for a link no configuration lists (routing has no
/// measurement of capacity, only of latency and loss).
pub const JOINED_LINK_MBPS: u32 = 100;

/// Whether `now` differs enough from what was last advertised to flood at
/// once rather than at the next refresh: a status change, latency moved by
/// half and by at least 500 µs, or loss by 10 points.
pub fn significant_change(last: &[LinkReport], now: &[LinkReport]) -> bool {
    if last.len() != now.len() {
        return true;
    }
    last.iter().zip(now).any(|(a, b)| {
        let (la, lb) = (a.latency_us as i64, b.latency_us as i64);
        let moved = (la - lb).abs();
        a.peer != b.peer
            || a.status != b.status
            || (moved >= 500 && moved * 2 >= la.max(lb))
            || (a.loss_permille as i32 - b.loss_permille as i32).abs() >= 100
    })
}

#[cfg(test)]
mod tests {
    use super::super::lsa_sign;
    use super::*;
    use alloc::vec;

    fn mesh() -> Topology {
        crate::routing::topology::test_mesh(2000)
    }

    #[test]
    fn probes_measure_minimum_rtt_and_loss() {
        let mut m = LinkMonitor::new(2, 0);
        let mut now = 0;
        for i in 0..20u64 {
            let (seq, sent) = m.poll_probe(now).unwrap();
            assert!(m.poll_probe(now).is_none(), "one probe per interval");
            // Every fourth probe is lost; RTTs vary, the minimum is 400.
            if i % 4 != 3 {
                m.on_ack(now + 400 + (i % 3) * 1000, seq, sent);
            }
            now += PROBE_INTERVAL_US;
        }
        let r = m.report(now);
        assert_eq!((r.peer, r.status, r.latency_us), (2, LinkStatus::Up, 200));
        assert_eq!(m.report(now + PROBE_LOST_AFTER_US).loss_permille, 250);
    }

    #[test]
    fn forged_or_repeated_acks_measure_nothing() {
        let mut m = LinkMonitor::new(2, 0);
        let (seq, sent) = m.poll_probe(0).unwrap();
        m.on_ack(10, seq + 1, sent);
        m.on_ack(10, seq, sent + 1);
        assert_eq!(m.report(10).status, LinkStatus::Unknown);
        m.on_ack(10, seq, sent);
        m.on_ack(5_000, seq, sent);
        assert_eq!(m.report(5_000).status, LinkStatus::Up);
        assert_eq!(m.report(5_000).latency_us, 0, "one ack is not a measurement");
        for t in [60_000, 120_000, 180_000] {
            let (seq, sent) = m.poll_probe(t).unwrap();
            m.on_ack(t + 10, seq, sent);
        }
        assert_eq!(m.report(200_000).latency_us, 5, "the minimum of four acks");
    }

    #[test]
    fn a_silent_neighbour_is_down_only_if_it_ever_answered() {
        let mut never = LinkMonitor::new(2, 0);
        let mut was = LinkMonitor::new(3, 0);
        let (s, t) = was.poll_probe(0).unwrap();
        was.on_ack(100, s, t);
        for now in (0..2_000_000).step_by(50_000) {
            never.poll_probe(now);
            was.poll_probe(now);
            never.tick(now);
            was.tick(now);
        }
        assert_eq!(never.report(2_000_000).status, LinkStatus::Unknown);
        assert_eq!(never.report(2_000_000).loss_permille, 0, "no loss without an answering neighbour");
        assert_eq!(was.report(2_000_000).loss_permille, 1000);
        assert_eq!(was.report(2_000_000).status, LinkStatus::Down);
    }

    /// Wall clock of the tests (any recent time).
    const WALL: u64 = 1_700_000_000_000_000;

    fn secret(n: NodeId) -> [u8; 32] {
        [n as u8; 32]
    }

    #[test]
    fn an_origin_nobody_configured_is_taken_on_a_valid_certificate_alone() {
        use super::super::member::{tests::sign, tests::signed as cert_of, Authority};
        let ca = [0x51u8; 32];
        let authority = Authority::new(&lsa_sign::public_key(&ca), &[[9; 16]]);
        let mut db = LinkStateDb::new(&mesh(), LsaKeys::new(&[]).with_authority(authority));
        let mut budget = VerifyBudget::new(0);
        let wire = |mut c: crate::routing::member::MemberCert, secret: &[u8; 32]| {
            (c.not_before, c.not_after) = (WALL / 1_000_000 - 10, WALL / 1_000_000 + 10);
            sign(secret, &mut c);
            let mut b = Vec::new();
            c.encode(&mut b);
            b
        };
        let up = vec![LinkReport { peer: 1, status: LinkStatus::Up, latency_us: 100, loss_permille: 0 }];
        let with = |origin: NodeId, seq: u64, cert: Vec<u8>| Lsa { cert, ..signed(origin, seq, up.clone()) };
        let good = wire(cert_of(&ca, 4, &secret(4), 1), &ca);
        let refusals = [
            (with(4, WALL, Vec::new()), LsaRefusal::UnknownOrigin),
            (with(4, WALL, wire(cert_of(&ca, 5, &secret(4), 2), &ca)), LsaRefusal::BadCertificate),
            (with(4, WALL, wire(cert_of(&ca, 4, &secret(4), 9), &ca)), LsaRefusal::BadCertificate),
            (with(4, WALL, wire(cert_of(&[0x52; 32], 4, &secret(4), 3), &[0x52; 32])), LsaRefusal::BadCertificate),
            (with(4, WALL, wire(cert_of(&ca, 4, &secret(6), 4), &ca)), LsaRefusal::BadSignature),
        ];
        for (k, (lsa, why)) in refusals.into_iter().enumerate() {
            assert_eq!(db.offer(1, 0, WALL, lsa, &mut budget), Err(why), "case {k}");
        }
        assert!(db.lsas().next().is_none(), "nothing refused is held");
        assert_eq!(db.offer(1, 0, WALL, with(4, WALL, good.clone()), &mut budget), Ok(true));
        assert!(db.keys().knows(4));
        // Later advertisements are checked against the learnt key; one
        // signed by another key does not pass for it.
        let forged = Lsa {
            sig: signed(4, WALL + LSA_MIN_GAP_US, up.clone()).sig,
            ..signed(6, WALL + LSA_MIN_GAP_US, up.clone())
        };
        let forged = Lsa { origin: 4, cert: good, ..forged };
        assert_eq!(db.offer(1, 0, WALL, forged, &mut budget), Err(LsaRefusal::BadSignature));
        assert_eq!(
            db.offer(1, 0, WALL, signed(4, WALL + LSA_MIN_GAP_US, up), &mut budget),
            Ok(true),
            "no cert needed now"
        );
        assert_eq!(db.keys().learned(), 1);
    }

    /// A database at node 1 that knows nodes 2 and 3.
    fn db() -> LinkStateDb {
        let keys = LsaKeys::new(&[(2, lsa_sign::public_key(&secret(2))), (3, lsa_sign::public_key(&secret(3)))]);
        LinkStateDb::new(&mesh(), keys)
    }

    fn signed(origin: NodeId, seq: u64, links: Vec<LinkReport>) -> Lsa {
        let mut l = Lsa { origin, seq, onion_key: [origin as u8; 32], links, sig: [0; 64], cert: Vec::new() };
        lsa_sign::LsaSigner::new(&secret(origin)).sign(&mut l);
        l
    }

    fn offer(db: &mut LinkStateDb, now: u64, lsa: Lsa) -> Result<bool, LsaRefusal> {
        db.offer(1, now, WALL + now, lsa, &mut VerifyBudget::new(now))
    }

    #[test]
    fn a_link_no_config_lists_is_routed_on_once_both_ends_sign_it_up() {
        let keys: Vec<(NodeId, [u8; 32])> = [2, 3, 5].iter().map(|&n| (n, lsa_sign::public_key(&secret(n)))).collect();
        let mut db = LinkStateDb::new(&mesh(), LsaKeys::new(&keys));
        let up = |peer, latency_us| LinkReport { peer, status: LinkStatus::Up, latency_us, loss_permille: 0 };
        // 3 claims a link to 5 that 5 does not: not taken.
        assert_eq!(offer(&mut db, 0, signed(3, WALL, vec![up(5, 90)])), Ok(true));
        assert_eq!(offer(&mut db, 0, signed(2, WALL, vec![up(5, 200)])), Ok(true));
        let before = db.effective(1, &[]);
        assert!(!before.links().iter().any(|l| l.b == 5 || l.a == 5), "one end's word is not enough");
        assert_eq!(offer(&mut db, 0, signed(5, WALL, vec![up(2, 250)])), Ok(true));
        let after = db.effective(1, &[]);
        let joined: Vec<&Link> = after.links().iter().filter(|l| l.a == 5 || l.b == 5).collect();
        assert_eq!(joined, vec![&Link { a: 2, b: 5, latency_us: 250, bandwidth_mbps: JOINED_LINK_MBPS }]);
        assert_eq!(after.links().len(), mesh().links().len() + 1, "the configured links are all still there");
    }

    #[test]
    fn lsa_round_trips_and_refuses_garbage() {
        let lsa = signed(
            12,
            WALL,
            vec![
                LinkReport { peer: 11, status: LinkStatus::Down, latency_us: 0, loss_permille: 1000 },
                LinkReport { peer: 3, status: LinkStatus::Up, latency_us: 150, loss_permille: 20 },
            ],
        );
        let mut b = Vec::new();
        lsa.encode(&mut b);
        assert_eq!(Lsa::decode(&b), Ok(lsa));
        for n in 0..b.len() {
            assert_eq!(Lsa::decode(&b[..n]), Err(MalformedLsa), "prefix {n}");
        }
        let mut bad = b.clone();
        bad[LSA_HDR + 2 * REPORT_LEN - 1] = 9;
        assert_eq!(Lsa::decode(&bad), Err(MalformedLsa), "no such status");
    }

    #[test]
    fn only_newer_advertisements_are_stored_and_a_replay_stays_refused_after_they_age_out() {
        let mut db = db();
        let ms = 1_000;
        let first = signed(2, WALL, vec![]);
        assert_eq!(offer(&mut db, 0, first.clone()), Ok(true));
        assert_eq!(offer(&mut db, 10, first.clone()), Ok(false), "a flooded copy is not re-flooded");
        assert_eq!(offer(&mut db, 10, signed(2, WALL - 100 * ms, vec![])), Err(LsaRefusal::Stale));
        assert_eq!(offer(&mut db, 10, signed(2, WALL + 10 * ms, vec![])), Err(LsaRefusal::RateLimited));
        assert_eq!(offer(&mut db, 10, signed(2, WALL + 60 * ms, vec![])), Ok(true));
        // Aged out, its number is still known: the old one stays refused.
        assert!(db.expire(10 + LSA_MAX_AGE_US + 1));
        assert_eq!(db.lsas().count(), 0);
        assert_eq!(offer(&mut db, LSA_MAX_AGE_US + 20, first), Err(LsaRefusal::Stale));
        assert_eq!(offer(&mut db, 0, signed(1, WALL, vec![])), Ok(false), "own origin");
    }

    #[test]
    fn forged_invented_or_long_recorded_advertisements_change_nothing() {
        let mut db = db();
        let down = LinkReport { peer: 3, status: LinkStatus::Down, ..Default::default() };
        // Node 3 signing for node 2, and a signature over other links.
        let mut forged = signed(3, WALL, vec![down]);
        forged.origin = 2;
        assert_eq!(offer(&mut db, 0, forged), Err(LsaRefusal::BadSignature));
        let mut altered = signed(2, WALL, vec![]);
        altered.links.push(down);
        assert_eq!(offer(&mut db, 0, altered), Err(LsaRefusal::BadSignature));
        assert_eq!(offer(&mut db, 0, signed(9, WALL, vec![down])), Err(LsaRefusal::UnknownOrigin));
        // Recorded long ago, or numbered far ahead to lock the origin out.
        let long_ago = WALL - LSA_MAX_AGE_US - LSA_CLOCK_SKEW_US - 1;
        assert_eq!(offer(&mut db, 0, signed(2, long_ago, vec![down])), Err(LsaRefusal::Stale));
        let ahead = WALL + LSA_CLOCK_SKEW_US + 1;
        assert_eq!(offer(&mut db, 0, signed(2, ahead, vec![down])), Err(LsaRefusal::Stale));
        assert_eq!(db.lsas().count(), 0);
        assert_eq!(db.effective(1, &[]).links(), mesh().links());
        // The origin's own word still gets in.
        assert_eq!(offer(&mut db, 0, signed(2, WALL, vec![down])), Ok(true));
        assert_eq!(db.effective(1, &[]).links().len(), 3);
    }

    #[test]
    fn a_port_that_spent_its_verifications_waits_and_nothing_is_stored_meanwhile() {
        let mut db = db();
        let mut budget = VerifyBudget::new(0);
        let mut forged = signed(2, WALL, vec![]);
        forged.sig[0] ^= 1;
        for k in 0..lsa_sign::VERIFY_BURST as u64 {
            let l = Lsa { seq: WALL + k * LSA_MIN_GAP_US, ..forged.clone() };
            assert_eq!(db.offer(1, 0, WALL, l, &mut budget), Err(LsaRefusal::BadSignature));
        }
        let good = signed(3, WALL, vec![]);
        assert_eq!(db.offer(1, 0, WALL, good.clone(), &mut budget), Err(LsaRefusal::RateLimited));
        assert_eq!(db.lsas().count(), 0);
        assert_eq!(db.offer(1, 100_000, WALL, good, &mut budget), Ok(true), "the budget refills");
    }

    #[test]
    fn a_link_either_end_reports_down_leaves_the_topology() {
        let mut db = db();
        let down = LinkReport { peer: 2, status: LinkStatus::Down, ..Default::default() };
        assert_eq!(offer(&mut db, 0, signed(3, WALL, vec![down])), Ok(true));
        let t = db.effective(1, &[]);
        assert_eq!(t.links().len(), 3);
        assert!(!t.links().iter().any(|l| (l.a, l.b) == (2, 3)));
        // Node 1's own view counts the same way.
        let t = db.effective(1, &[down]);
        assert_eq!(t.links().len(), 2);
        // Once the advertisement ages out the link is back.
        assert!(db.expire(LSA_MAX_AGE_US + 1));
        assert_eq!(db.effective(1, &[]).links().len(), 4);
    }

    #[test]
    fn measured_latency_raises_the_metric_and_loss_lowers_bandwidth() {
        let mut db = db();
        let slow = LinkReport { peer: 3, status: LinkStatus::Up, latency_us: 100_000, loss_permille: 500 };
        assert_eq!(offer(&mut db, 0, signed(2, WALL, vec![slow])), Ok(true));
        let t = db.effective(1, &[LinkReport { peer: 2, status: LinkStatus::Up, latency_us: 4_500, loss_permille: 0 }]);
        let l12 = t.links().iter().find(|l| (l.a, l.b) == (1, 2)).unwrap();
        assert_eq!(l12.latency_us, 100, "measurement noise does not move the configured latency");
        let l23 = t.links().iter().find(|l| (l.a, l.b) == (2, 3)).unwrap();
        assert_eq!((l23.latency_us, l23.bandwidth_mbps), (100_000, 250));
        assert_eq!(super::super::Shortest::compute(&t, 1).next_hop(3), Some(4));
    }

    #[test]
    fn small_jitter_is_not_worth_a_flood() {
        let r = |latency_us, status| LinkReport { peer: 2, status, latency_us, loss_permille: 0 };
        assert!(!significant_change(&[r(200, LinkStatus::Up)], &[r(350, LinkStatus::Up)]));
        assert!(significant_change(&[r(200, LinkStatus::Up)], &[r(100_000, LinkStatus::Up)]));
        assert!(significant_change(&[r(200, LinkStatus::Up)], &[r(200, LinkStatus::Down)]));
    }
}
