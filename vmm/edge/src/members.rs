//! Members an edge learns from the link state its neighbours flood: how
//! apps on an edge host can name a host that joined after the edge's
//! configuration was written, with no file copied to the edge.
//!
//! Every node sends its CA-signed certificate in each advertisement
//! ([`guest_agent::routing::member`]), and relays flood advertisements on
//! every link, the edge's included. The edge has no VM on its links
//! between requests, so it listens itself: a packet socket on each link
//! interface, with a kernel filter that passes only flooded link state
//! (overlay EtherType, the control flag, flow 0, an advertisement), so
//! the data path pays nothing for it. The advertisements themselves are
//! kept too, signatures checked ([`Floods`]): a request VM is given them
//! at boot. A certificate is taken on the CA's signature alone (checked with the revocation list the edge was started
//! with), never on the frame's link tag: what the CA signed is true
//! whoever replays it. Each serial is checked once; the name and
//! addresses of each valid one join the edge's hosts.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_agent::node::NodeConfig;
use guest_agent::routing::linkstate::{LinkStateDb, Lsa};
use guest_agent::routing::lsa_sign::{LsaKeys, VerifyBudget};
use guest_agent::routing::member::{Authority, MemberCert, SERIAL_LEN};
use guest_agent::routing::NodeId;
use guest_agent::wire::control::Control;
use guest_agent::wire::{OverlayPacket, OverlayRepr, ETHERTYPE, ETH_HDR_LEN, FLAG_CONTROL};
use netdev::packet_socket::RawSocket;

/// Most certificates an edge takes.
pub const MAX_TAKEN: usize = 4096;

/// The advertisement in `frame`, if `frame` is a flooded one (the
/// filter's test, again, in full).
pub fn advertised(frame: &[u8]) -> Option<Lsa> {
    if frame.len() < ETH_HDR_LEN || frame[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    let p = OverlayPacket::new_checked(&frame[ETH_HDR_LEN..]).ok()?;
    let repr = OverlayRepr::parse(&p).ok()?;
    if repr.flags & FLAG_CONTROL == 0 {
        return None;
    }
    match Control::decode(p.payload()).ok()? {
        Control::LinkState(lsa) => Some(lsa),
        _ => None,
    }
}

/// The newest link state of every origin whose signature checked, as
/// flooded on the edge's links: what a request VM is given at boot, so it
/// routes and seals at once instead of pulling it from its neighbours
/// first (the pull, and its signature checks in the guest, were about a
/// millisecond of a connect).
pub struct Floods {
    me: NodeId,
    db: Mutex<(LinkStateDb, VerifyBudget)>,
}

fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Floods {
    /// Checking advertisements with the keys and CA of the edge's agent
    /// configuration `cfg`.
    pub fn new(cfg: &NodeConfig) -> Self {
        Self { me: cfg.me, db: Mutex::new(Self::db(cfg)) }
    }

    fn db(cfg: &NodeConfig) -> (LinkStateDb, VerifyBudget) {
        let authority = Authority::new(&cfg.identity.ca_public, &cfg.identity.revoked);
        let keys = LsaKeys::new(&cfg.lsa_keys).with_authority(authority);
        (LinkStateDb::new(&cfg.topology(), keys), VerifyBudget::new(wall_us()))
    }

    /// Starts again from `cfg` (another membership, a new revocation
    /// list): what was held is forgotten, the next floods refill it.
    pub fn rekey(&self, cfg: &NodeConfig) {
        *self.db.lock().unwrap_or_else(|p| p.into_inner()) = Self::db(cfg);
    }

    /// Offers a flooded advertisement (checked, kept if newer).
    pub fn offer(&self, lsa: Lsa) {
        let now = wall_us();
        let mut held = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let (db, budget) = &mut *held;
        let _ = db.offer(self.me, now, now, lsa, budget);
    }

    /// What is held now, younger than the link state's maximum age.
    pub fn current(&self) -> Vec<Lsa> {
        let mut held = self.db.lock().unwrap_or_else(|p| p.into_inner());
        held.0.expire(wall_us());
        held.0.lsas().map(|l| Lsa { cert: Vec::new(), ..l.clone() }).collect()
    }
}

/// What the edge checks certificates with, the ones it took, and how
/// many checks it may still spend.
pub struct Learner {
    authority: Authority,
    taken: BTreeSet<[u8; SERIAL_LEN]>,
    budget: VerifyBudget,
}

impl Learner {
    /// Checks against the CA and revocation list of `authority`.
    pub fn new(authority: Authority) -> Self {
        Self { authority, taken: BTreeSet::new(), budget: VerifyBudget::new(0) }
    }

    /// The certificate `cert` (wire form) if it is new here and holds at
    /// `now_us` (µs since the Unix epoch). A certificate taken is never
    /// checked again; one refused costs a check out of a budget
    /// ([`VerifyBudget`]: a neighbour sending forgeries at line rate gets a
    /// few hundred checks a second, and no memory).
    pub fn take(&mut self, cert: &[u8], now_us: u64) -> Option<MemberCert> {
        let c = MemberCert::decode(cert).ok()?;
        if self.taken.contains(&c.serial) || self.taken.len() >= MAX_TAKEN || !self.budget.take(now_us) {
            return None;
        }
        let c = self.authority.check(cert, c.node, now_us / 1_000_000).ok()?;
        self.taken.insert(c.serial);
        Some(c)
    }
}

/// A classic BPF program passing only what [`advertised`] looks at:
/// overlay frames with the control flag, flow 0 (floods) and an
/// advertisement as their first payload byte (control frames carry no
/// protocol state).
fn flood_filter() -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let (ld_h, ld_b, ld_w) = (
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
    );
    let (jeq, jset, ret) = (
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let eth = ETH_HDR_LEN as u32;
    vec![
        op(ld_h, 0, 0, 12),
        op(jeq, 0, 7, u32::from(ETHERTYPE)),
        op(ld_b, 0, 0, eth + 2),
        op(jset, 0, 5, u32::from(FLAG_CONTROL)),
        op(ld_w, 0, 0, eth + 4),
        op(jeq, 0, 3, 0),
        op(ld_b, 0, 0, eth + guest_agent::wire::HEADER_LEN as u32),
        op(jeq, 0, 1, u32::from(guest_agent::wire::control::LSA_KIND)),
        op(ret, 0, 0, 0xffff),
        op(ret, 0, 0, 0),
    ]
}

/// Listens on `ifaces` (the edge's link interfaces) for the rest of the
/// process: each advertisement goes to `floods`, each new valid
/// certificate to `learned`. An interface that cannot be listened on is
/// logged and left out.
pub fn listen(
    ifaces: &[String],
    mut learner: Learner,
    floods: Arc<Floods>,
    learned: Arc<dyn Fn(MemberCert) + Send + Sync>,
) {
    let filter = flood_filter();
    let socks: Vec<RawSocket> = ifaces
        .iter()
        .filter_map(|i| match RawSocket::open(i).and_then(|s| s.attach_filter(&filter).map(|()| s)) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("edge: cannot listen for members' link state on {i}: {e}");
                None
            }
        })
        .collect();
    if socks.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new().name("pathvm-edge-members".into()).spawn(move || {
        let mut buf = vec![0u8; 2048];
        loop {
            for s in &socks {
                // Waits a moment on each in turn: floods come once a second.
                while let Ok(Some(n)) = s.recv_incoming(&mut buf, 50) {
                    let Some(lsa) = advertised(&buf[..n]) else { continue };
                    if !lsa.cert.is_empty() {
                        if let Some(c) = learner.take(&lsa.cert, wall_us()) {
                            learned(c);
                        }
                    }
                    floods.offer(lsa);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("edge: cannot start the thread that learns members: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_agent::router::sim;
    use guest_agent::routing::linkstate::{LinkReport, LinkStatus};
    use guest_agent::wire::{build_frame, EthAddrs, Protocol};

    fn flooded(cert: Vec<u8>, flags: u8, flow: u32) -> Vec<u8> {
        let lsa = Lsa {
            origin: 4,
            seq: 1,
            onion_key: [0; 32],
            links: vec![LinkReport { peer: 2, status: LinkStatus::Up, latency_us: 1, loss_permille: 0 }],
            sig: [0; 64],
            cert,
        };
        let mut payload = Vec::new();
        Control::LinkState(lsa).encode(&mut payload);
        let mut r = sim::repr(Protocol::Shortest, flags, 1, flow, 2, 1);
        r.payload_len = payload.len() as u16;
        let mut f = Vec::new();
        build_frame(&mut f, EthAddrs { dst: [0xff; 6], src: [2; 6] }, &r, &[], &payload).unwrap();
        f
    }

    #[test]
    fn a_flooded_certificate_is_taken_once_if_the_ca_signed_it() {
        let mut wire = Vec::new();
        sim::cert(4, 1).encode(&mut wire);
        let frame = flooded(wire.clone(), FLAG_CONTROL, 0);
        assert_eq!(advertised(&frame).map(|l| l.cert), Some(wire.clone()));
        assert_eq!(advertised(&flooded(wire.clone(), 0, 0)), None, "not control");
        assert_eq!(advertised(&frame[..40]), None);
        let ca = guest_agent::routing::lsa_sign::public_key(&sim::CA_SECRET);
        let mut l = Learner::new(Authority::new(&ca, &[]));
        let t = 10_000_000;
        assert_eq!(l.take(&wire, t).map(|c| c.node), Some(4));
        assert_eq!(l.take(&wire, t), None, "once");
        let mut other = sim::cert(5, 2);
        other.name = "forged".into();
        let mut forged = Vec::new();
        other.encode(&mut forged);
        assert_eq!(l.take(&forged, t), None, "a changed name breaks the CA's signature");
        let mut revoked = Learner::new(Authority::new(&ca, &[[1; SERIAL_LEN]]));
        assert_eq!(revoked.take(&wire, t), None);
        // Forgeries at line rate spend the budget, not memory; the genuine
        // certificate is taken once the budget refills.
        let mut flooded = Learner::new(Authority::new(&ca, &[]));
        let mut refused = 0;
        let base = sim::cert(5, 2);
        for k in 0..300u32 {
            let mut c = base.clone();
            c.serial[..4].copy_from_slice(&k.to_be_bytes());
            let mut w = Vec::new();
            c.encode(&mut w);
            refused += usize::from(flooded.take(&w, t).is_none());
        }
        assert_eq!((refused, flooded.taken.len()), (300, 0));
        assert_eq!(flooded.take(&wire, t), None, "the budget is spent for now");
        assert_eq!(flooded.take(&wire, t + 1_000_000).map(|c| c.node), Some(4));
    }

    #[test]
    fn the_kernel_filter_passes_floods_only() {
        // Run the program as the kernel would (a tiny interpreter for the
        // instructions it uses).
        fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
            let (mut a, mut pc) = (0u32, 0usize);
            loop {
                let i = prog[pc];
                let k = i.k as usize;
                let code = u32::from(i.code);
                match code {
                    c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => {
                        a = pkt.get(k..k + 2).map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])))
                    }
                    c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => a = pkt.get(k).map_or(0, |&b| b.into()),
                    c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                        a = pkt.get(k..k + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    }
                    c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                        pc += if a == i.k { i.jt as usize } else { i.jf as usize }
                    }
                    c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => {
                        pc += if a & i.k != 0 { i.jt as usize } else { i.jf as usize }
                    }
                    c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                    c => panic!("instruction {c:#x}"),
                }
                pc += 1;
            }
        }
        let prog = flood_filter();
        let mut wire = Vec::new();
        sim::cert(4, 1).encode(&mut wire);
        assert_eq!(run(&prog, &flooded(wire.clone(), FLAG_CONTROL, 0)), 0xffff);
        assert_eq!(run(&prog, &flooded(wire.clone(), 0, 0)), 0, "data");
        assert_eq!(run(&prog, &flooded(wire.clone(), FLAG_CONTROL, 7)), 0, "a request's flow");
        let mut probe = Vec::new();
        Control::Probe { seq: 1, sent_us: 2 }.encode(&mut probe);
        let mut r = sim::repr(Protocol::Shortest, FLAG_CONTROL, 1, 0, 2, 1);
        r.payload_len = probe.len() as u16;
        let mut f = Vec::new();
        build_frame(&mut f, EthAddrs { dst: [0xff; 6], src: [2; 6] }, &r, &[], &probe).unwrap();
        assert_eq!(run(&prog, &f), 0, "a probe");
        let mut ip = f.clone();
        ip[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(run(&prog, &ip), 0, "another EtherType");
    }
}
