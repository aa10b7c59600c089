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
//! the data path pays nothing for it. A certificate is taken on the CA's
//! signature alone (checked with the revocation list the edge was started
//! with), never on the frame's link tag: what the CA signed is true
//! whoever replays it. Each serial is checked once; the name and
//! addresses of each valid one join the edge's hosts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use guest_agent::routing::linkstate::Lsa;
use guest_agent::routing::lsa_sign::VerifyBudget;
use guest_agent::routing::member::{Authority, MemberCert, SERIAL_LEN};
use guest_agent::wire::control::Control;
use guest_agent::wire::{OverlayPacket, OverlayRepr, ETHERTYPE, ETH_HDR_LEN, FLAG_CONTROL};
use netdev::packet_socket::RawSocket;

/// Most certificates an edge takes.
pub const MAX_TAKEN: usize = 4096;

/// The certificate an advertisement in `frame` carries, if `frame` is a
/// flooded advertisement that carries one (the filter's test, again, in
/// full): its origin and the certificate's wire form.
pub fn advertised_cert(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() < ETH_HDR_LEN || frame[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    let p = OverlayPacket::new_checked(&frame[ETH_HDR_LEN..]).ok()?;
    let repr = OverlayRepr::parse(&p).ok()?;
    if repr.flags & FLAG_CONTROL == 0 {
        return None;
    }
    match Control::decode(p.payload()).ok()? {
        Control::LinkState(Lsa { cert, .. }) if !cert.is_empty() => Some(cert),
        _ => None,
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

/// A classic BPF program passing only what [`advertised_cert`] looks at:
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
/// process, handing each new valid certificate to `learned`. An interface
/// that cannot be listened on is logged and left out.
pub fn listen(ifaces: &[String], mut learner: Learner, learned: Arc<dyn Fn(MemberCert) + Send + Sync>) {
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
                    let Some(cert) = advertised_cert(&buf[..n]) else { continue };
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    if let Some(c) = learner.take(&cert, now_us) {
                        learned(c);
                    }
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
        assert_eq!(advertised_cert(&frame), Some(wire.clone()));
        assert_eq!(advertised_cert(&flooded(wire.clone(), 0, 0)), None, "not control");
        assert_eq!(advertised_cert(&flooded(Vec::new(), FLAG_CONTROL, 0)), None, "no certificate");
        assert_eq!(advertised_cert(&frame[..40]), None);
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
