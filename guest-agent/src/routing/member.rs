//! Member certificates as the network carries them: in a node's
//! link-state advertisements and in the hello a node sends on a link whose
//! far end does not know it yet.
//!
//! A certificate is the network CA's signature over a node's id, name,
//! addresses and public keys (`pathvm cert issue` makes it; the host's
//! `node::identity` reads and writes its TOML form). It speaks for itself:
//! anyone holding the CA's public key checks it, so it can travel over
//! links no one has keyed yet and through relays no one trusts. That is
//! what lets a node join without its certificate being copied to every
//! member: its neighbours take it from its hello (and agree the link's key
//! from it, [`link_key`]), everyone else from its advertisements.
//!
//! The bytes the CA signs ([`MemberCert::signed_message`]) are defined
//! here once, for the host and the agent alike: a domain tag, then every
//! field length-prefixed, keys and serial in lowercase hex as the TOML
//! form writes them.
//!
//! ```text
//! cert: version=1 | node (2) | serial (16) | not_before (8) | not_after (8)
//!       | signing public (32) | link public (32) | name len (1) | name
//!       | addr count (1) | per addr: len (1) | addr | CA signature (64)
//! ```

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::NodeId;

const VERSION: u8 = 1;
const CERT_DOMAIN: &[u8] = b"pathvm node certificate v1\0";
const LINK_KEY_DOMAIN: &[u8] = b"pathvm link key v1\0";
/// Bytes of a certificate serial.
pub const SERIAL_LEN: usize = 16;
/// Longest host name a certificate carries.
pub const MAX_NAME: usize = 63;
/// Most addresses a certificate carries.
pub const MAX_ADDRS: usize = 8;
/// Longest address (text) a certificate carries.
pub const MAX_ADDR: usize = 45;
/// Longest encoded certificate.
pub const MAX_CERT_LEN: usize = 1 + 2 + SERIAL_LEN + 16 + 64 + 1 + MAX_NAME + 1 + MAX_ADDRS * (1 + MAX_ADDR) + 64;

/// A node's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCert {
    /// The node it names.
    pub node: NodeId,
    /// Random; what revocation lists name.
    pub serial: [u8; SERIAL_LEN],
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
    /// Ed25519 key that verifies its advertisements.
    pub signing_public: [u8; 32],
    /// X25519 key its links are agreed with.
    pub link_public: [u8; 32],
    /// Its host name.
    pub name: String,
    /// Its addresses (text).
    pub addrs: Vec<String>,
    /// The CA's Ed25519 signature over [`MemberCert::signed_message`].
    pub signature: [u8; 64],
}

/// Why a certificate was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRefusal {
    /// Not a certificate (bad length, version or text).
    Malformed,
    /// No CA is configured here, so no certificate can be checked.
    NoCa,
    /// The CA did not sign it.
    BadSignature,
    /// Outside its validity period.
    Expired,
    /// Its serial is on the revocation list.
    Revoked,
    /// It names another node than the one it came for.
    WrongNode,
}

/// Lowercase hex, as the TOML form writes keys and serials.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], CertRefusal> {
    if b.len() < n {
        return Err(CertRefusal::Malformed);
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn take_text(b: &mut &[u8], max: usize) -> Result<String, CertRefusal> {
    let n = take(b, 1)?[0] as usize;
    if n > max {
        return Err(CertRefusal::Malformed);
    }
    let t = take(b, n)?;
    core::str::from_utf8(t).map(String::from).map_err(|_| CertRefusal::Malformed)
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

impl MemberCert {
    /// The bytes the CA signs, for a CA whose public key is `ca_public`.
    pub fn signed_message(&self, ca_public: &[u8; 32]) -> Vec<u8> {
        let mut out = CERT_DOMAIN.to_vec();
        for f in
            [hex(&self.serial), hex(ca_public), self.name.clone(), hex(&self.signing_public), hex(&self.link_public)]
        {
            field(&mut out, f.as_bytes());
        }
        field(&mut out, &self.node.to_be_bytes());
        field(&mut out, &(self.addrs.len() as u32).to_be_bytes());
        for a in &self.addrs {
            field(&mut out, a.as_bytes());
        }
        field(&mut out, &self.not_before.to_be_bytes());
        field(&mut out, &self.not_after.to_be_bytes());
        out
    }

    /// Whether it fits the wire form's bounds (the CA refuses to sign one
    /// that does not, so every certificate can travel).
    pub fn fits(&self) -> bool {
        self.name.len() <= MAX_NAME && self.addrs.len() <= MAX_ADDRS && self.addrs.iter().all(|a| a.len() <= MAX_ADDR)
    }

    /// Appends the wire form (see the module docs); nothing if it does not
    /// [`fit`](Self::fits).
    pub fn encode(&self, out: &mut Vec<u8>) {
        if !self.fits() {
            return;
        }
        out.push(VERSION);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.serial);
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.extend_from_slice(&self.signing_public);
        out.extend_from_slice(&self.link_public);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.addrs.len() as u8);
        for a in &self.addrs {
            out.push(a.len() as u8);
            out.extend_from_slice(a.as_bytes());
        }
        out.extend_from_slice(&self.signature);
    }

    /// Decodes exactly one wire form.
    pub fn decode(mut b: &[u8]) -> Result<Self, CertRefusal> {
        if b.len() > MAX_CERT_LEN || take(&mut b, 1)?[0] != VERSION {
            return Err(CertRefusal::Malformed);
        }
        let node = u16::from_be_bytes(array(take(&mut b, 2)?));
        let serial = array(take(&mut b, SERIAL_LEN)?);
        let not_before = u64::from_be_bytes(array(take(&mut b, 8)?));
        let not_after = u64::from_be_bytes(array(take(&mut b, 8)?));
        let signing_public = array(take(&mut b, 32)?);
        let link_public = array(take(&mut b, 32)?);
        let name = take_text(&mut b, MAX_NAME)?;
        let n = take(&mut b, 1)?[0] as usize;
        if n > MAX_ADDRS {
            return Err(CertRefusal::Malformed);
        }
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(take_text(&mut b, MAX_ADDR)?);
        }
        let signature = array(take(&mut b, 64)?);
        if !b.is_empty() {
            return Err(CertRefusal::Malformed);
        }
        Ok(Self { node, serial, not_before, not_after, signing_public, link_public, name, addrs, signature })
    }
}

/// What a node checks certificates against: the network CA's key and its
/// revocation list (both from the host at boot; a changed list restarts
/// the node).
#[derive(Debug, Clone, Default)]
pub struct Authority {
    ca: Option<([u8; 32], VerifyingKey)>,
    revoked: BTreeSet<[u8; SERIAL_LEN]>,
}

impl Authority {
    /// The CA `ca_public` (all zero: none, every certificate is refused)
    /// and the revoked serials.
    pub fn new(ca_public: &[u8; 32], revoked: &[[u8; SERIAL_LEN]]) -> Self {
        let ca = (*ca_public != [0; 32]).then(|| VerifyingKey::from_bytes(ca_public).ok().map(|k| (*ca_public, k)));
        Self { ca: ca.flatten(), revoked: revoked.iter().copied().collect() }
    }

    /// Whether a CA is configured.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// Checks wire certificate `bytes` for node `node` at `now_s` (Unix
    /// seconds): signed by the CA, valid now, not revoked. Costs one
    /// signature verification, so callers budget it.
    pub fn check(&self, bytes: &[u8], node: NodeId, now_s: u64) -> Result<MemberCert, CertRefusal> {
        if self.ca.is_none() {
            return Err(CertRefusal::NoCa);
        }
        let cert = MemberCert::decode(bytes)?;
        self.check_cert(&cert, node, now_s)?;
        Ok(cert)
    }

    /// [`Authority::check`] of a certificate already decoded.
    pub fn check_cert(&self, cert: &MemberCert, node: NodeId, now_s: u64) -> Result<(), CertRefusal> {
        let (public, key) = self.ca.as_ref().ok_or(CertRefusal::NoCa)?;
        if cert.node != node {
            return Err(CertRefusal::WrongNode);
        }
        if now_s < cert.not_before || now_s > cert.not_after {
            return Err(CertRefusal::Expired);
        }
        if self.revoked.contains(&cert.serial) {
            return Err(CertRefusal::Revoked);
        }
        key.verify_strict(&cert.signed_message(public), &Signature::from_bytes(&cert.signature))
            .map_err(|_| CertRefusal::BadSignature)
    }
}

/// The key of the link between node `me` (X25519 secret `my_secret`) and
/// node `peer` (certified link key `peer_public`): SHA-256 over a domain
/// tag, both node ids (lower first) and their X25519 shared secret, so
/// both ends compute the same key alone and no other pair can. `None` for
/// a public key that yields no secret (a low-order point).
///
/// Link keys only authenticate frames hop by hop (link sealing carries no
/// ciphertext: [`crate::wire::auth`]); what the app sends is sealed end to
/// end under per-stream ephemeral keys ([`crate::transport::e2e`], onion
/// layers), so this static agreement exposes no past traffic if a node's
/// secret leaks later.
pub fn link_key(my_secret: &[u8; 32], peer_public: &[u8; 32], me: NodeId, peer: NodeId) -> Option<[u8; 32]> {
    let shared = zeroize::Zeroizing::new(crate::onion::keys::agree(my_secret, peer_public)?);
    let (lo, hi) = (me.min(peer), me.max(peer));
    let mut h = Sha256::new();
    h.update(LINK_KEY_DOMAIN);
    h.update(lo.to_be_bytes());
    h.update(hi.to_be_bytes());
    h.update(&shared[..]);
    Some(h.finalize().into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use ed25519_dalek::{Signer, SigningKey};

    /// Signs `c` as the CA of secret `ca`.
    pub(crate) fn sign(ca: &[u8; 32], c: &mut MemberCert) {
        let ca = SigningKey::from_bytes(ca);
        c.signature = ca.sign(&c.signed_message(&ca.verifying_key().to_bytes())).to_bytes();
    }

    /// A certificate for `node` signed by the CA of secret `ca`.
    pub(crate) fn signed(ca: &[u8; 32], node: NodeId, signing_secret: &[u8; 32], serial: u8) -> MemberCert {
        let mut c = MemberCert {
            node,
            serial: [serial; SERIAL_LEN],
            not_before: 1_000,
            not_after: 2_000,
            signing_public: super::super::lsa_sign::public_key(signing_secret),
            link_public: crate::onion::keys::public_key(&[node as u8; 32]),
            name: "d".to_string(),
            addrs: vec!["10.0.0.4".to_string(), "fd00::4".to_string()],
            signature: [0; 64],
        };
        sign(ca, &mut c);
        c
    }

    fn wire(c: &MemberCert) -> Vec<u8> {
        let mut b = Vec::new();
        c.encode(&mut b);
        b
    }

    #[test]
    fn a_signed_certificate_round_trips_and_checks() {
        let c = signed(&[1; 32], 4, &[9; 32], 7);
        let b = wire(&c);
        assert_eq!(MemberCert::decode(&b), Ok(c.clone()));
        let ca = crate::routing::lsa_sign::public_key(&[1; 32]);
        let auth = Authority::new(&ca, &[]);
        assert_eq!(auth.check(&b, 4, 1_500), Ok(c));
        assert_eq!(auth.check(&b, 5, 1_500), Err(CertRefusal::WrongNode));
        assert_eq!(auth.check(&b, 4, 2_001), Err(CertRefusal::Expired));
        assert_eq!(auth.check(&b, 4, 999), Err(CertRefusal::Expired));
        assert_eq!(Authority::new(&ca, &[[7; SERIAL_LEN]]).check(&b, 4, 1_500), Err(CertRefusal::Revoked));
        assert_eq!(Authority::new(&[0; 32], &[]).check(&b, 4, 1_500), Err(CertRefusal::NoCa));
        let other = crate::routing::lsa_sign::public_key(&[2; 32]);
        assert_eq!(Authority::new(&other, &[]).check(&b, 4, 1_500), Err(CertRefusal::BadSignature));
    }

    #[test]
    fn any_changed_byte_or_length_is_refused() {
        let ca = crate::routing::lsa_sign::public_key(&[1; 32]);
        let auth = Authority::new(&ca, &[]);
        let b = wire(&signed(&[1; 32], 4, &[9; 32], 7));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(auth.check(&bad, 4, 1_500).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(MemberCert::decode(&b[..n]).is_err(), "cut at {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(MemberCert::decode(&long), Err(CertRefusal::Malformed));
    }

    #[test]
    fn both_ends_agree_a_link_key_bound_to_their_ids() {
        let (a, b) = ([3u8; 32], [4u8; 32]);
        let (pa, pb) = (crate::onion::keys::public_key(&a), crate::onion::keys::public_key(&b));
        let k = link_key(&a, &pb, 1, 2).unwrap();
        assert_eq!(link_key(&b, &pa, 2, 1), Some(k));
        assert_ne!(link_key(&a, &pb, 1, 3), Some(k));
        assert_eq!(link_key(&a, &[0; 32], 1, 2), None);
    }
}
