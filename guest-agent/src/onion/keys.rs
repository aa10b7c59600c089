//! Key agreement, key derivation, the keystream and the nonce permutation
//! every onion hop uses.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// The X25519 public key of a 32-byte onion secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// X25519 of `secret` and `public`; `None` for a low-order public key
/// (the result would not depend on the secret).
pub fn agree(secret: &[u8; 32], public: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*public));
    shared.was_contributory().then(|| shared.to_bytes())
}

/// Everything one hop of a circuit keys with.
#[derive(Clone, PartialEq, Eq)]
pub struct HopKeys {
    /// Authenticates the hop's create header.
    pub mac: [u8; 32],
    /// Keystream that unwraps the create header.
    pub prg: [u8; 32],
    /// Forward (source to exit) layer.
    pub fwd: [u8; 32],
    /// Permutes forward cell nonces.
    pub fwd_nonce: [u8; 32],
    /// Backward layer.
    pub bwd: [u8; 32],
    /// Permutes backward cell nonces.
    pub bwd_nonce: [u8; 32],
}

impl Drop for HopKeys {
    /// A circuit's keys leave no copy behind when it ends.
    fn drop(&mut self) {
        for k in [&mut self.mac, &mut self.prg, &mut self.fwd, &mut self.fwd_nonce, &mut self.bwd, &mut self.bwd_nonce]
        {
            k.zeroize();
        }
    }
}

impl core::fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HopKeys(..)")
    }
}

impl HopKeys {
    /// Keys from a hop's shared secret, bound to the ephemeral and onion
    /// public keys it came from: SHA-256 of all three (and a label), then
    /// expanded with ChaCha20.
    pub fn derive(shared: &[u8; 32], ephemeral: &[u8; 32], node: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"pathvm onion v1");
        h.update(shared);
        h.update(ephemeral);
        h.update(node);
        let seed: [u8; 32] = h.finalize().into();
        let mut out = [0u8; 192];
        xor_keystream(&seed, &[0; 12], &mut out);
        let k = |i: usize| -> [u8; 32] { out[32 * i..32 * (i + 1)].try_into().unwrap_or([0; 32]) };
        let keys = Self { mac: k(0), prg: k(1), fwd: k(2), fwd_nonce: k(3), bwd: k(4), bwd_nonce: k(5) };
        out.zeroize();
        keys
    }
}

impl HopKeys {
    /// What names this hop's create in a replay cache: one create, one
    /// tag (a share re-encoded into another point of the same class
    /// agrees the same keys, so the tag comes from them, not the share).
    pub fn replay_tag(&self) -> [u8; 16] {
        let d: [u8; 32] = Sha256::new().chain_update(b"pathvm create tag").chain_update(self.mac).finalize().into();
        let mut t = [0u8; 16];
        t.copy_from_slice(&d[..16]);
        t
    }

    /// A key for the stream this hop's circuit opens at its exit, known to
    /// the source and the exit alone: later circuits of the stream prove
    /// their source with it.
    pub fn stream_key(&self) -> [u8; 32] {
        Sha256::new().chain_update(b"pathvm onion stream").chain_update(self.fwd).finalize().into()
    }
}

/// XORs ChaCha20's keystream for `key` and `nonce` into `data`.
pub fn xor_keystream(key: &[u8; 32], nonce: &[u8; 12], data: &mut [u8]) {
    let mut c = ChaCha20::new(&(*key).into(), &(*nonce).into());
    c.apply_keystream(data);
}

/// A 16-byte MAC of `data` (Poly1305 keyed through ChaCha20, as the AEAD
/// with no plaintext). Each key authenticates one message only.
pub fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 16] {
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    let mut empty: [u8; 0] = [];
    let tag = aead.encrypt_inout_detached(&Nonce::from([0u8; 12]), data, (&mut empty[..]).into()).unwrap_or_default();
    let mut t = [0u8; 16];
    t.copy_from_slice(&tag[..16]);
    t
}

/// Compares without an early exit (so timing says nothing of where a
/// forged tag differs).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ROUNDS: u8 = 4;

fn round(key: &[u8; 32], r: u8, half: &[u8]) -> [u8; 6] {
    let mut n = [0u8; 12];
    n[0] = r;
    n[1..7].copy_from_slice(half);
    let mut out = [0u8; 6];
    xor_keystream(key, &n, &mut out);
    out
}

/// A keyed permutation of 96-bit nonces: a four-round Feistel network
/// with ChaCha20 as the round function (Luby-Rackoff). Hops re-permute a
/// cell's nonce so the same cell carries unrelated nonces on every link,
/// and the source can invert the chain of a backward cell.
pub fn permute(key: &[u8; 32], n: &[u8; 12]) -> [u8; 12] {
    let (mut l, mut r) = ([0u8; 6], [0u8; 6]);
    l.copy_from_slice(&n[..6]);
    r.copy_from_slice(&n[6..]);
    for i in 0..ROUNDS {
        let f = round(key, i, &r);
        for (a, b) in l.iter_mut().zip(f) {
            *a ^= b;
        }
        core::mem::swap(&mut l, &mut r);
    }
    let mut out = [0u8; 12];
    out[..6].copy_from_slice(&l);
    out[6..].copy_from_slice(&r);
    out
}

/// The inverse of [`permute`].
pub fn unpermute(key: &[u8; 32], n: &[u8; 12]) -> [u8; 12] {
    let (mut l, mut r) = ([0u8; 6], [0u8; 6]);
    l.copy_from_slice(&n[..6]);
    r.copy_from_slice(&n[6..]);
    for i in (0..ROUNDS).rev() {
        core::mem::swap(&mut l, &mut r);
        let f = round(key, i, &r);
        for (a, b) in l.iter_mut().zip(f) {
            *a ^= b;
        }
    }
    let mut out = [0u8; 12];
    out[..6].copy_from_slice(&l);
    out[6..].copy_from_slice(&r);
    out
}

/// A random generator from a seed the host hands the VM at boot; it draws
/// onion keys, ephemeral keys and circuit ids. It erases its key as it
/// goes (each call's ChaCha20 keystream begins with the next key, as in
/// Bernstein's fast-key-erasure generator): whoever reads the VM's memory
/// later learns nothing of what it drew before, so erased onion keys stay
/// erased.
#[derive(Clone)]
pub struct Drbg {
    key: Zeroizing<[u8; 32]>,
}

impl Drbg {
    /// A generator from 32 seed bytes (the caller wipes its own copy).
    pub fn new(seed: [u8; 32]) -> Self {
        Self { key: Zeroizing::new(seed) }
    }

    /// Fills `out` with fresh bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut c = ChaCha20::new(&(*self.key).into(), &[0u8; 12].into());
        let mut next = Zeroizing::new([0u8; 32]);
        c.apply_keystream(&mut *next);
        out.fill(0);
        c.apply_keystream(out);
        self.key = next;
    }

    /// 32 fresh bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }

    /// A fresh u32.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_be_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_same_keys() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (pa, pb) = (public_key(&a), public_key(&b));
        let s1 = agree(&a, &pb).unwrap();
        let s2 = agree(&b, &pa).unwrap();
        assert_eq!(s1, s2);
        assert!(HopKeys::derive(&s1, &pa, &pb) == HopKeys::derive(&s2, &pa, &pb));
        assert!(HopKeys::derive(&s1, &pb, &pa) != HopKeys::derive(&s1, &pa, &pb), "bound to the keys");
    }

    #[test]
    fn a_low_order_point_is_refused() {
        assert_eq!(agree(&[7; 32], &[0; 32]), None);
    }

    #[test]
    fn the_nonce_permutation_inverts_and_scatters() {
        let k = [9u8; 32];
        let n = *b"abcdefghijkl";
        let p = permute(&k, &n);
        assert_ne!(p, n);
        assert_eq!(unpermute(&k, &p), n);
        let mut m = n;
        m[11] ^= 1;
        let q = permute(&k, &m);
        assert!(p.iter().zip(q).filter(|(a, b)| **a != *b).count() > 6, "one bit in, most bytes out");
    }

    #[test]
    fn the_generator_never_repeats_itself() {
        let mut d = Drbg::new([3; 32]);
        let (a, b) = (d.bytes32(), d.bytes32());
        assert_ne!(a, b);
        assert_ne!(Drbg::new([4; 32]).bytes32(), Drbg::new([3; 32]).bytes32());
    }

    #[test]
    fn the_generator_keeps_nothing_that_recomputes_what_it_drew() {
        let mut d = Drbg::new([3; 32]);
        let first = d.bytes32();
        let later = d.clone();
        // A generator seeded with what `later` holds is `later`: it never
        // yields `first` again.
        let mut again = Drbg::new(*later.key);
        for _ in 0..4 {
            assert_ne!(again.bytes32(), first);
        }
        assert_ne!(*later.key, [3; 32], "the seed is gone from the generator");
    }

    #[test]
    fn macs_differ_by_key_and_data() {
        assert_ne!(mac(&[1; 32], b"x"), mac(&[2; 32], b"x"));
        assert_ne!(mac(&[1; 32], b"x"), mac(&[1; 32], b"y"));
        assert!(same(&mac(&[1; 32], b"x"), &mac(&[1; 32], b"x")));
    }
}
