//! The create header: one fixed-size routing block per circuit, built at
//! the source, peeled by one hop at a time (after Sphinx, Danezis and
//! Goldberg 2009, with a fresh ephemeral key per hop instead of blinding).
//!
//! ```text
//! header = α (32, this hop's ephemeral public key)
//!        | γ (16, MAC of β under this hop's key)
//!        | β (MAX_HOPS slots of 50 bytes, encrypted routing info)
//! slot   = next node (2) | α of the next hop (32) | γ of the next hop (16)
//! ```
//!
//! A hop derives its keys from α and its onion secret, checks γ, XORs
//! `β ‖ 0^50` with its keystream and reads the first slot: the next node
//! (or [`EXIT`]) and the next hop's α and γ. The remaining slots, with the
//! 50 keystream bytes that came out of the zeros, are the next β — the same
//! length as before, so no hop can tell how far it is from either end. The
//! source precomputes those keystream tails (the filler) so every hop's γ
//! verifies.

use alloc::vec::Vec;

use super::keys::{agree, mac, public_key, same, xor_keystream, HopKeys};
use crate::routing::NodeId;

/// Most hops (relays plus the exit) a circuit has.
pub const MAX_HOPS: usize = 8;
const SLOT: usize = 2 + 32 + 16;
const BETA_LEN: usize = MAX_HOPS * SLOT;
/// Bytes of a create header.
pub const HEADER_LEN: usize = 32 + 16 + BETA_LEN;
/// The "next node" of the last hop: the circuit ends here.
pub const EXIT: NodeId = 0xffff;

/// One hop the source routes through: its node and onion public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The node.
    pub node: NodeId,
    /// Its current onion key (from its link state).
    pub public: [u8; 32],
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// No hops, or more than [`MAX_HOPS`].
    BadPath,
    /// A public key of low order.
    BadKey,
    /// The MAC did not verify: not for this node, or altered.
    BadMac,
    /// Shorter than [`HEADER_LEN`].
    Truncated,
}

/// What a hop learns from a header.
#[derive(Debug)]
pub enum Processed {
    /// Pass the circuit on to `next` with `header`.
    Forward {
        /// The next node.
        next: NodeId,
        /// The header for it.
        header: alloc::boxed::Box<[u8; HEADER_LEN]>,
        /// This hop's keys.
        keys: HopKeys,
    },
    /// This hop is the circuit's end.
    Exit {
        /// This hop's keys.
        keys: HopKeys,
    },
}

fn prg(keys: &HopKeys) -> [u8; BETA_LEN + SLOT] {
    let mut s = [0u8; BETA_LEN + SLOT];
    xor_keystream(&keys.prg, &[0; 12], &mut s);
    s
}

/// Builds the header for `hops` (the last one is the exit) with one
/// ephemeral secret per hop; returns it and every hop's keys.
pub fn build(hops: &[Hop], ephemeral: &[[u8; 32]]) -> Result<([u8; HEADER_LEN], Vec<HopKeys>), HeaderError> {
    let n = hops.len();
    if n == 0 || n > MAX_HOPS || ephemeral.len() != n {
        return Err(HeaderError::BadPath);
    }
    let mut alphas = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for (h, e) in hops.iter().zip(ephemeral) {
        let alpha = public_key(e);
        let shared = agree(e, &h.public).ok_or(HeaderError::BadKey)?;
        keys.push(HopKeys::derive(&shared, &alpha, &h.public));
        alphas.push(alpha);
    }
    let streams: Vec<[u8; BETA_LEN + SLOT]> = keys.iter().map(prg).collect();
    // The filler: what hops 0..n-2 append, as hop n-1 will see it.
    let mut filler: Vec<u8> = Vec::new();
    for (i, s) in streams.iter().enumerate().take(n - 1) {
        filler.resize(filler.len() + SLOT, 0);
        let from = (MAX_HOPS - i) * SLOT;
        for (f, k) in filler.iter_mut().zip(&s[from..]) {
            *f ^= k;
        }
    }
    // The exit's β: its slot (EXIT, then zeros), encrypted, then the filler.
    let mut beta = [0u8; BETA_LEN];
    beta[..2].copy_from_slice(&EXIT.to_be_bytes());
    let own = BETA_LEN - filler.len();
    for (b, k) in beta[..own].iter_mut().zip(&streams[n - 1][..own]) {
        *b ^= k;
    }
    beta[own..].copy_from_slice(&filler);
    let mut gamma = mac(&keys[n - 1].mac, &beta);
    for i in (0..n - 1).rev() {
        let mut next = [0u8; BETA_LEN];
        next[..2].copy_from_slice(&hops[i + 1].node.to_be_bytes());
        next[2..34].copy_from_slice(&alphas[i + 1]);
        next[34..50].copy_from_slice(&gamma);
        next[SLOT..].copy_from_slice(&beta[..BETA_LEN - SLOT]);
        for (b, k) in next.iter_mut().zip(&streams[i][..BETA_LEN]) {
            *b ^= k;
        }
        beta = next;
        gamma = mac(&keys[i].mac, &beta);
    }
    let mut header = [0u8; HEADER_LEN];
    header[..32].copy_from_slice(&alphas[0]);
    header[32..48].copy_from_slice(&gamma);
    header[48..].copy_from_slice(&beta);
    Ok((header, keys))
}

/// Peels this node's layer off `header` with its onion `secret` (and
/// public key, which the keys are bound to).
pub fn process(secret: &[u8; 32], public: &[u8; 32], header: &[u8]) -> Result<Processed, HeaderError> {
    let header = header.get(..HEADER_LEN).ok_or(HeaderError::Truncated)?;
    let mut alpha = [0u8; 32];
    alpha.copy_from_slice(&header[..32]);
    let shared = agree(secret, &alpha).ok_or(HeaderError::BadKey)?;
    let keys = HopKeys::derive(&shared, &alpha, public);
    let beta = &header[48..];
    if !same(&mac(&keys.mac, beta), &header[32..48]) {
        return Err(HeaderError::BadMac);
    }
    let mut b = prg(&keys);
    for (k, x) in b.iter_mut().zip(beta) {
        *k ^= x;
    }
    let next = u16::from_be_bytes([b[0], b[1]]);
    if next == EXIT {
        return Ok(Processed::Exit { keys });
    }
    let mut out = alloc::boxed::Box::new([0u8; HEADER_LEN]);
    out[..48].copy_from_slice(&b[2..50]);
    out[48..].copy_from_slice(&b[SLOT..]);
    Ok(Processed::Forward { next, header: out, keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn hops(n: usize) -> (Vec<Hop>, Vec<[u8; 32]>, Vec<[u8; 32]>) {
        let secrets: Vec<[u8; 32]> = (0..n).map(|i| [10 + i as u8; 32]).collect();
        let hops =
            secrets.iter().enumerate().map(|(i, s)| Hop { node: 100 + i as u16, public: public_key(s) }).collect();
        let eph = (0..n).map(|i| [200 - i as u8; 32]).collect();
        (hops, secrets, eph)
    }

    #[test]
    fn every_hop_learns_only_the_next_and_the_last_learns_it_is_the_exit() {
        for n in 1..=MAX_HOPS {
            let (hops, secrets, eph) = hops(n);
            let (mut header, keys) = build(&hops, &eph).unwrap();
            for i in 0..n {
                match process(&secrets[i], &hops[i].public, &header).unwrap() {
                    Processed::Forward { next, header: h, keys: k } => {
                        assert!(i < n - 1, "hop {i} of {n} forwarded");
                        assert_eq!(next, hops[i + 1].node);
                        assert!(k == keys[i]);
                        assert_eq!(h.len(), HEADER_LEN, "the header keeps its length");
                        header = *h;
                    }
                    Processed::Exit { keys: k } => {
                        assert_eq!(i, n - 1, "{n} hops");
                        assert!(k == keys[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_wrong_node_or_an_altered_header_is_refused() {
        let (hops, secrets, eph) = hops(3);
        let (header, _) = build(&hops, &eph).unwrap();
        assert!(matches!(process(&secrets[1], &hops[1].public, &header), Err(HeaderError::BadMac)));
        for at in [40, 100, HEADER_LEN - 1] {
            let mut h = header;
            h[at] ^= 1;
            assert!(matches!(process(&secrets[0], &hops[0].public, &h), Err(HeaderError::BadMac)), "byte {at}");
        }
        assert!(matches!(process(&secrets[0], &hops[0].public, &header[..10]), Err(HeaderError::Truncated)));
        let mut low = header;
        low[..32].fill(0);
        assert!(matches!(process(&secrets[0], &hops[0].public, &low), Err(HeaderError::BadKey)));
    }

    #[test]
    fn paths_outside_the_limits_are_refused() {
        assert_eq!(build(&[], &[]).unwrap_err(), HeaderError::BadPath);
        let (hops, _, eph) = hops(MAX_HOPS);
        let mut more = hops.clone();
        more.push(hops[0]);
        let mut e = eph.clone();
        e.push(eph[0]);
        assert_eq!(build(&more, &e).unwrap_err(), HeaderError::BadPath);
        assert_eq!(build(&hops, &eph[..1]).unwrap_err(), HeaderError::BadPath);
        let _ = vec![0];
    }
}
