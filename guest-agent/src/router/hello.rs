//! Certificate hellos: how a node keys a link to a neighbour its host was
//! not given a certificate for (a member that joined later).
//!
//! A node with a certificate tells each neighbour it does not hear yet
//! who it is: every [`HELLO_US`], on every port whose link is not up, it
//! sends its certificate unsealed under the reserved link id (no key is
//! needed to check what the CA signed). A node whose port to that
//! neighbour waits for a key ([`KeyScope::Certified`]) checks the
//! certificate (the CA's signature, the neighbour's id, its validity, the
//! revocation list) out of the port's verification budget, and agrees the
//! link's key from it and its own link secret ([`link_key`]); the other
//! end computes the same key from this node's certificate, so the link
//! comes up with nothing but certificates exchanged. A hello changes
//! nothing on a port keyed from the configuration, and keys a port keyed
//! from a hello again only for a newer certificate of the same node (a
//! member re-certified with new keys): a recorded hello cannot take a link
//! back to an older key.

use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::node::{KeyScope, PortConfig};
use crate::routing::linkstate::LinkStatus;
use crate::routing::member::{link_key, MemberCert};
use crate::wire::control::Control;
use crate::wire::{build_frame, EthAddrs, Protocol, FLAG_CONTROL, RESERVED_LINK_ID};

use super::auth::LinkAuth;
use super::drop::DropReason;
use super::link::Keying;
use super::{origin_repr, LinkPort, Notice, Router};

/// How often a node tells a neighbour it does not hear its certificate.
pub const HELLO_US: u64 = 250_000;

/// What a node of a certified network holds to key links from hellos.
pub(super) struct OwnIdentity {
    /// Its certificate, wire form.
    pub(super) cert: Vec<u8>,
    /// Its X25519 link secret.
    pub(super) link_secret: Zeroizing<[u8; 32]>,
}

impl<L: LinkPort> Router<L> {
    /// Sends this node's certificate on each port whose link is not up,
    /// at most every [`HELLO_US`].
    pub(super) fn send_hellos(&mut self, now: u64) {
        let Some(id) = &self.identity else { return };
        let mut payload = Vec::with_capacity(1 + id.cert.len());
        Control::Hello(id.cert.clone()).encode(&mut payload);
        let mut repr = origin_repr(Protocol::Shortest, FLAG_CONTROL, 1, self.control_flow, self.me, 0, payload.len());
        repr.link_id = RESERVED_LINK_ID;
        let mut frame = Vec::new();
        for p in self.ports.iter_mut() {
            if now < p.next_hello || (p.keying != Keying::Pending && p.monitor.report(now).status == LinkStatus::Up) {
                continue;
            }
            p.next_hello = now + HELLO_US;
            repr.dst = p.peer;
            if build_frame(&mut frame, EthAddrs { dst: p.peer_mac, src: p.mac }, &repr, &[], &payload).is_ok()
                && p.link.can_send()
                && p.link.send(&frame)
            {
                self.stats.hellos_sent += 1;
            }
        }
    }

    /// A hello from the neighbour on port `i` (unsealed, under the
    /// reserved link id).
    pub(super) fn hello(&mut self, i: usize, payload: &[u8], now: u64) -> Result<(), DropReason> {
        let Ok(Control::Hello(cert)) = Control::decode(payload) else { return Err(DropReason::BadControl) };
        let Some(id) = &self.identity else { return Ok(()) };
        let keying = self.ports[i].keying;
        if keying == Keying::Configured {
            return Ok(());
        }
        let c = MemberCert::decode(&cert).map_err(|_| DropReason::BadCertificate)?;
        if let Keying::Hello { serial, not_before } = keying {
            if c.serial == serial || c.not_before <= not_before {
                return Ok(());
            }
        }
        if !self.ports[i].lsa_budget.take(now) {
            return Err(DropReason::LsaRate);
        }
        let peer = self.ports[i].peer;
        let wall_s = self.clock.at(now) / 1_000_000;
        self.lsdb.keys().authority().check_cert(&c, peer, wall_s).map_err(|_| DropReason::BadCertificate)?;
        let key =
            Zeroizing::new(link_key(&id.link_secret, &c.link_public, self.me, peer).ok_or(DropReason::BadCertificate)?);
        let p = &mut self.ports[i];
        let pc = PortConfig { scope: KeyScope::Link, key: *key, ..p.config };
        p.auth = LinkAuth::new(&pc, self.clock.at(now), now);
        p.keying = Keying::Hello { serial: c.serial, not_before: c.not_before };
        self.stats.links_keyed += 1;
        self.notice(Notice::LinkKeyed { peer });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::node::Record;
    use crate::router::sim::{self, hello_frame, records, Net};
    use crate::routing::member::SERIAL_LEN;
    use crate::routing::Link;

    const STEP: u64 = 500;

    /// a(1) - b(2) - c(3), and d(4) on b's far side.
    fn join4() -> Vec<Link> {
        sim::join4().to_vec()
    }

    fn hello_of(cert: &MemberCert) -> Vec<u8> {
        let mut wire = Vec::new();
        cert.encode(&mut wire);
        let mut payload = Vec::new();
        Control::Hello(wire).encode(&mut payload);
        payload
    }

    #[test]
    fn a_member_nobody_was_given_is_linked_from_its_hello_and_routed_to_from_its_link_state() {
        let mut net = Net::new_with(&join4(), Protocol::Shortest.id(), None, |c| sim::joined(c, &[]));
        net.run_until(3_000_000, STEP, |n| n.host(1).router.topology().link(2, 4).is_some());
        let b = &mut net.host(2).router;
        assert!(matches!(b.ports()[2].keying(), Keying::Hello { .. }), "b keyed its port to d from d's hello");
        assert_eq!(b.stats().links_keyed, 1);
        assert!(matches!(net.host(4).router.ports()[0].keying(), Keying::Hello { .. }), "and d its port to b");
        for n in [1, 3] {
            let r = &net.host(n).router;
            assert_eq!(r.stats().members_learned, 1, "node {n} learnt d from its advertisement");
            assert!(r.topology().link(2, 4).is_some(), "node {n} routes on the link b and d both sign");
            assert_eq!(r.stats().drops.bad_certificate, 0);
        }
        Record { node: 4, flow: 5, payload: b"to the member that joined" }.encode(&mut net.host(1).to_router);
        Record { node: 1, flow: 6, payload: b"and back" }.encode(&mut net.host(4).to_router);
        net.run_for(20_000, 100);
        assert_eq!(records(&net.host(4).from_router), vec![(1, 5, b"to the member that joined".to_vec())]);
        assert_eq!(records(&net.host(1).from_router), vec![(4, 6, b"and back".to_vec())]);
    }

    #[test]
    fn a_revoked_member_stays_unlinked_and_unknown() {
        let revoked = [[1; SERIAL_LEN]];
        // Everyone's serial is 1, so b refuses d's and d refuses b's; the
        // others would refuse d's advertisements too.
        let mut net = Net::new_with(&join4(), Protocol::Shortest.id(), None, |c| {
            sim::joined(c, if c.me == 2 || c.me == 4 { &revoked } else { &[] })
        });
        net.run_for(2_000_000, STEP);
        let b = &mut net.host(2).router;
        assert_eq!(b.ports()[2].keying(), Keying::Pending);
        assert!(b.stats().drops.bad_certificate > 0, "d's hellos were refused and counted");
        assert_eq!((b.stats().links_keyed, b.stats().members_learned), (0, 0));
        let a = &net.host(1).router;
        assert!(a.topology().link(2, 4).is_none() && a.stats().members_learned == 0);
    }

    #[test]
    fn forged_foreign_garbage_or_older_hellos_change_nothing() {
        let mut net = Net::new_with(&join4(), Protocol::Shortest.id(), None, |c| {
            sim::joined(c, &[[9; SERIAL_LEN]]);
            // 100 s after the epoch: certificates may start later than 0.
            c.epoch_us = 100_000_000;
        });
        // d is switched off: only what the test sends reaches b.
        net.down.push(4);
        net.run_for(100_000, STEP);
        let now = net.now;
        let b = &mut net.host(2).router;
        let other_ca = {
            let mut c = sim::cert(4, 3);
            crate::routing::member::tests::sign(&[0x77; 32], &mut c);
            c
        };
        let mut forged = sim::cert(4, 4);
        forged.link_public[0] ^= 1;
        // The simulated wall clock is near 100 s: this one is not valid yet.
        let mut expired = sim::cert(4, 5);
        (expired.not_before, expired.not_after) = (150, 200);
        crate::routing::member::tests::sign(&sim::CA_SECRET, &mut expired);
        let hostile: [(Vec<u8>, &str); 6] = [
            (hello_of(&sim::cert(3, 2)), "another node's certificate"),
            (hello_of(&other_ca), "another CA's"),
            (hello_of(&forged), "a changed key"),
            (hello_of(&expired), "one outside its validity"),
            (hello_of(&sim::cert(4, 9)), "a revoked one"),
            (vec![5, 1, 2, 3], "garbage"),
        ];
        for (payload, what) in &hostile {
            let before = b.stats().drops.total();
            assert!(b.receive(2, &hello_frame(4, 2, payload), now).is_err(), "{what}");
            assert_eq!(b.stats().drops.total(), before, "receive leaves counting to poll_links");
            assert_eq!(b.ports()[2].keying(), Keying::Pending, "{what} keyed nothing");
        }
        // On a port keyed from the configuration a hello changes nothing.
        let to_a = b.ports()[0].keying();
        assert_eq!(b.receive(0, &hello_frame(1, 2, &hello_of(&sim::cert(1, 1))), now), Ok(()));
        assert_eq!((to_a, b.ports()[0].keying()), (Keying::Configured, Keying::Configured));
        // The genuine one keys it; an older certificate never keys it back.
        let mut newer = sim::cert(4, 6);
        newer.not_before = 10;
        crate::routing::member::tests::sign(&sim::CA_SECRET, &mut newer);
        assert_eq!(b.receive(2, &hello_frame(4, 2, &hello_of(&newer)), now), Ok(()));
        let keyed = b.ports()[2].keying();
        assert_eq!(keyed, Keying::Hello { serial: [6; SERIAL_LEN], not_before: 10 });
        assert_eq!(b.receive(2, &hello_frame(4, 2, &hello_of(&sim::cert(4, 1))), now), Ok(()));
        assert_eq!(b.ports()[2].keying(), keyed, "a recorded older hello is ignored");
        assert_eq!(b.stats().links_keyed, 1);
    }

    #[test]
    fn a_hello_flood_is_held_to_the_ports_verification_budget() {
        let mut net = Net::new_with(&join4(), Protocol::Shortest.id(), None, |c| sim::joined(c, &[]));
        net.down.push(4);
        net.run_for(10_000, STEP);
        let now = net.now;
        let b = &mut net.host(2).router;
        let bad = hello_of(&sim::cert(3, 2));
        let mut refused = [0usize; 2];
        for _ in 0..1_000 {
            match b.receive(2, &hello_frame(4, 2, &bad), now) {
                Err(DropReason::BadCertificate) => refused[0] += 1,
                Err(DropReason::LsaRate) => refused[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        let burst = crate::routing::lsa_sign::VERIFY_BURST as usize;
        assert_eq!(refused, [burst, 1_000 - burst], "one verification per budget token, the rest refused cheaply");
    }
}
