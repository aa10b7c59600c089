//! Origin signatures on link-state advertisements.
//!
//! Link authentication only says which neighbour handed a frame over; an
//! advertisement is a claim about the origin's links that every node
//! acts on. So each node signs its own advertisements (Ed25519) and every
//! node checks them against the origin keys the topology distributes
//! ([`LsaKeys`]): a neighbour can drop or delay link state, never forge
//! it, and an origin nobody configured is never stored.
//!
//! A signature costs the receiver a verification, which a hostile
//! neighbour could ask for at line rate; [`VerifyBudget`] caps how many
//! a port gets per second, and [`LinkStateDb::offer`](super::linkstate::LinkStateDb::offer)
//! runs every cheap check (known origin, newer, within the clock window)
//! before it spends one.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::linkstate::{Lsa, LsaRefusal};
use super::member::{Authority, MemberCert, SERIAL_LEN};
use super::NodeId;

/// What a signature covers before the advertisement's own bytes: no
/// signature made for another purpose (or another version) verifies here.
const DOMAIN: &[u8] = b"pathvm lsa v1\0";

/// Verifications one port may ask for at once.
pub const VERIFY_BURST: u32 = 256;
/// Verifications per second one port earns back: well above what
/// flooding needs (one advertisement per origin per second, and a pull's
/// worth for a request VM), far below what a flood of forgeries would
/// cost.
pub const VERIFIES_PER_SEC: u32 = 256;

/// The Ed25519 public key of the 32-byte `secret`, as the topology
/// distributes it.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// Whether `public` is a usable public key (a point on the curve).
pub fn is_public_key(public: &[u8; 32]) -> bool {
    VerifyingKey::from_bytes(public).is_ok()
}

/// Signs this node's advertisements.
pub struct LsaSigner {
    key: SigningKey,
}

impl LsaSigner {
    /// A signer for the 32-byte Ed25519 `secret`.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(secret) }
    }

    /// Fills in `lsa.sig`.
    pub fn sign(&self, lsa: &mut Lsa) {
        lsa.sig = self.key.sign(&signed_message(lsa)).to_bytes();
    }
}

fn signed_message(lsa: &Lsa) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 16 + lsa.links.len() * 9);
    m.extend_from_slice(DOMAIN);
    lsa.encode_signed_part(&mut m);
    m
}

/// Most origins a node learns from certificates (beside those configured):
/// bounds what a flood of valid but unneeded certificates can hold.
pub const MAX_LEARNED: usize = 1024;

/// The origins whose advertisements a node accepts, with their keys:
/// those configured at boot, and those learnt from certificates the
/// network CA signed ([`super::member`]), carried in the advertisements
/// themselves.
#[derive(Debug, Clone, Default)]
pub struct LsaKeys {
    keys: BTreeMap<NodeId, VerifyingKey>,
    /// Origins learnt from certificates: the serial and start of the
    /// certificate their key came from (a newer one replaces it).
    learned: BTreeMap<NodeId, ([u8; SERIAL_LEN], u64)>,
    authority: Authority,
}

impl LsaKeys {
    /// The keys of `(node, public key)` entries; an entry whose key is no
    /// curve point is left out (the host refuses such configs first).
    pub fn new(entries: &[(NodeId, [u8; 32])]) -> Self {
        let keys = entries.iter().filter_map(|(n, k)| Some((*n, VerifyingKey::from_bytes(k).ok()?))).collect();
        Self { keys, learned: BTreeMap::new(), authority: Authority::default() }
    }

    /// Also takes origins whose advertisements carry a certificate
    /// `authority` holds valid.
    pub fn with_authority(mut self, authority: Authority) -> Self {
        self.authority = authority;
        self
    }

    /// The authority certificates are checked against.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether `origin` has a key here.
    pub fn knows(&self, origin: NodeId) -> bool {
        self.keys.contains_key(&origin)
    }

    /// Origins learnt from certificates so far.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// Whether `cert` (wire form, from `origin`'s advertisement) should be
    /// checked before the advertisement: its origin has no key here, or
    /// was learnt from an older certificate than this one claims to be
    /// (a node re-certified with new keys). Decoding is cheap; the check
    /// that follows costs a verification.
    pub fn wants_cert(&self, origin: NodeId, cert: &[u8]) -> bool {
        if !self.authority.has_ca() || cert.is_empty() {
            return false;
        }
        match (self.keys.contains_key(&origin), self.learned.get(&origin)) {
            (false, _) => self.learned.len() < MAX_LEARNED,
            (true, None) => false,
            (true, Some((serial, start))) => {
                MemberCert::decode(cert).is_ok_and(|c| c.node == origin && c.serial != *serial && c.not_before > *start)
            }
        }
    }

    /// Checks the certificate `lsa` carries at `now_s` (Unix seconds) and
    /// the advertisement's signature under the key it names; only if both
    /// hold is the key taken for its origin (a configured key is never
    /// replaced). Costs two verifications.
    pub fn learn(&mut self, lsa: &Lsa, now_s: u64) -> Result<MemberCert, LsaRefusal> {
        let c = self.authority.check(&lsa.cert, lsa.origin, now_s).map_err(|_| LsaRefusal::BadCertificate)?;
        let key = VerifyingKey::from_bytes(&c.signing_public).map_err(|_| LsaRefusal::BadCertificate)?;
        if !signed_by(&key, lsa) {
            return Err(LsaRefusal::BadSignature);
        }
        if !self.keys.contains_key(&lsa.origin) || self.learned.contains_key(&lsa.origin) {
            self.keys.insert(lsa.origin, key);
            self.learned.insert(lsa.origin, (c.serial, c.not_before));
        }
        Ok(c)
    }

    /// Whether `lsa` carries its origin's signature. Strict verification:
    /// no malleable or small-order encodings.
    pub fn verify(&self, lsa: &Lsa) -> bool {
        self.keys.get(&lsa.origin).is_some_and(|k| signed_by(k, lsa))
    }
}

/// Whether `key` signed `lsa`. Strict verification: no malleable or
/// small-order encodings.
fn signed_by(key: &VerifyingKey, lsa: &Lsa) -> bool {
    key.verify_strict(&signed_message(lsa), &Signature::from_bytes(&lsa.sig)).is_ok()
}

/// A token bucket of signature verifications for one port.
#[derive(Debug, Clone)]
pub struct VerifyBudget {
    tokens: u32,
    refilled_at: u64,
}

impl VerifyBudget {
    /// A full bucket at `now` (µs).
    pub fn new(now: u64) -> Self {
        Self { tokens: VERIFY_BURST, refilled_at: now }
    }

    /// Takes one verification at `now`; false when the port spent its
    /// budget.
    pub fn take(&mut self, now: u64) -> bool {
        let earned = now.saturating_sub(self.refilled_at) * VERIFIES_PER_SEC as u64 / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens as u64 + earned).min(VERIFY_BURST as u64) as u32;
            self.refilled_at += earned * 1_000_000 / VERIFIES_PER_SEC as u64;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::linkstate::{LinkReport, LinkStatus};
    use alloc::vec;

    fn lsa(origin: NodeId) -> Lsa {
        let down = LinkReport { peer: 3, status: LinkStatus::Down, latency_us: 0, loss_permille: 1000 };
        Lsa {
            origin,
            seq: 1_700_000_000_000_000,
            onion_key: [5; 32],
            links: vec![down],
            sig: [0; 64],
            cert: Vec::new(),
        }
    }

    #[test]
    fn a_signed_advertisement_verifies_and_any_change_breaks_it() {
        let keys = LsaKeys::new(&[(2, public_key(&[7; 32]))]);
        let mut l = lsa(2);
        LsaSigner::new(&[7; 32]).sign(&mut l);
        assert!(keys.verify(&l));
        let mut up = l.clone();
        up.links[0].status = LinkStatus::Up;
        assert!(!keys.verify(&up), "a changed link");
        let mut later = l.clone();
        later.seq += 1;
        assert!(!keys.verify(&later), "a changed number");
        let mut sig = l.clone();
        sig.sig[5] ^= 1;
        assert!(!keys.verify(&sig), "a changed signature");
    }

    #[test]
    fn another_nodes_key_or_an_unknown_origin_is_refused() {
        let keys = LsaKeys::new(&[(2, public_key(&[7; 32])), (4, public_key(&[8; 32]))]);
        let mut l = lsa(2);
        LsaSigner::new(&[8; 32]).sign(&mut l);
        assert!(!keys.verify(&l), "node 4's key signing for node 2");
        let mut l = lsa(9);
        LsaSigner::new(&[7; 32]).sign(&mut l);
        assert!(!keys.knows(9) && !keys.verify(&l));
        assert!(is_public_key(&public_key(&[1; 32])));
    }

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let mut b = VerifyBudget::new(0);
        assert_eq!((0..1000).filter(|_| b.take(0)).count(), VERIFY_BURST as usize);
        assert!(!b.take(1_000), "nothing earned within a millisecond");
        assert_eq!((0..1000).filter(|_| b.take(500_000)).count(), VERIFIES_PER_SEC as usize / 2);
        assert_eq!((0..1000).filter(|_| b.take(100_000_000)).count(), VERIFY_BURST as usize, "capped at the burst");
    }
}
