//! A node's onion keys over time: forward secrecy for circuits and stream
//! hellos.
//!
//! A node draws a fresh X25519 key at boot and every period after, and
//! advertises the public half in its signed link state
//! ([`Lsa::onion_key`](crate::routing::linkstate::Lsa)). The key before
//! stays for one more period, for creates and hellos built on the
//! advertisement a source held when the key changed; then it is wiped.
//! So a key opens what was sealed to it for at most two periods after
//! the node first advertised it, and a recording of a create or a hello
//! is of no use to whoever takes the node later: nothing in the node can
//! open it any more (the generator that drew the key erases itself as it
//! goes, [`Drbg`]).
//!
//! This is the medium-term key rotation of mix networks (Sphinx keys per
//! epoch), not a per-circuit handshake with a reply (Tor's ntor): a
//! create needs no round trip, and the period bounds what a node compromise
//! exposes.

use zeroize::Zeroizing;

use super::keys::{public_key, Drbg};

/// Default time between rotations, s: what a node compromise can open
/// reaches back at most two periods.
pub const DEFAULT_PERIOD_S: u32 = 600;

/// One onion key.
struct OnionKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl OnionKey {
    fn draw(rng: &mut Drbg) -> Self {
        let secret = Zeroizing::new(rng.bytes32());
        let public = public_key(&secret);
        Self { secret, public }
    }
}

/// The keys a node opens creates and hellos with: the current one and,
/// for one period after a rotation, the one before.
pub struct OnionKeyRing {
    current: OnionKey,
    previous: Option<OnionKey>,
    period_us: u64,
    rotated_at: u64,
}

impl OnionKeyRing {
    /// A first key at `now`, rotated every `period_s` seconds (at least 1).
    pub fn new(period_s: u32, now: u64, rng: &mut Drbg) -> Self {
        Self {
            current: OnionKey::draw(rng),
            previous: None,
            period_us: u64::from(period_s.max(1)) * 1_000_000,
            rotated_at: now,
        }
    }

    /// The public key sources should build with now.
    pub fn public(&self) -> [u8; 32] {
        self.current.public
    }

    /// Rotates when a period has passed since the last rotation (and
    /// drops the key before as well when two have: a node that was not
    /// scheduled for long keeps no key past its time). True when the
    /// public key changed, so the node advertises it at once.
    pub fn tick(&mut self, now: u64, rng: &mut Drbg) -> bool {
        let since = now.saturating_sub(self.rotated_at);
        if since < self.period_us {
            return false;
        }
        let old = core::mem::replace(&mut self.current, OnionKey::draw(rng));
        self.previous = (since < 2 * self.period_us).then_some(old);
        self.rotated_at = now;
        true
    }

    /// The keys that may open a create or a hello now, newest first:
    /// `(secret, public)`.
    pub fn keys(&self) -> impl Iterator<Item = (&[u8; 32], &[u8; 32])> {
        core::iter::once(&self.current).chain(self.previous.as_ref()).map(|k| (&*k.secret, &k.public))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const S: u64 = 1_000_000;

    fn publics(r: &OnionKeyRing) -> Vec<[u8; 32]> {
        r.keys().map(|(_, p)| *p).collect()
    }

    #[test]
    fn a_key_opens_for_two_periods_then_is_gone() {
        let mut rng = Drbg::new([1; 32]);
        let mut r = OnionKeyRing::new(10, 0, &mut rng);
        let first = r.public();
        assert!(!r.tick(9 * S, &mut rng));
        assert!(r.tick(10 * S, &mut rng), "a period passed");
        assert_ne!(r.public(), first);
        assert_eq!(publics(&r), [r.public(), first], "the key before still opens");
        assert!(r.tick(20 * S, &mut rng));
        assert!(!publics(&r).contains(&first), "two periods on, the first key is gone");
        assert_eq!(publics(&r).len(), 2);
    }

    #[test]
    fn a_node_that_slept_through_two_periods_keeps_only_a_fresh_key() {
        let mut rng = Drbg::new([2; 32]);
        let mut r = OnionKeyRing::new(10, 0, &mut rng);
        let first = r.public();
        assert!(r.tick(25 * S, &mut rng));
        assert_eq!(publics(&r), [r.public()]);
        assert_ne!(r.public(), first);
    }

    #[test]
    fn every_key_is_its_own_and_matches_its_secret() {
        let mut rng = Drbg::new([3; 32]);
        let mut r = OnionKeyRing::new(1, 0, &mut rng);
        let mut seen = Vec::new();
        for t in 1..6 {
            r.tick(t * S, &mut rng);
            for (s, p) in r.keys() {
                assert_eq!(public_key(s), *p);
            }
            assert!(!seen.contains(&r.public()));
            seen.push(r.public());
        }
    }
}
