//! Per-link authentication of overlay packets.
//!
//! Every hop seals the packet it sends with the key of the link it sends
//! on, and opens what arrives with the key of the link it came in on. The
//! tag is ChaCha20-Poly1305 over the packet (as associated data, with no
//! ciphertext), so a relay learns nothing it could not read anyway, and
//! forwards nothing it cannot authenticate: header, protocol state and
//! every payload a node acts on. A stream's segment, which its two ends
//! seal themselves and no relay reads, is covered by its header and
//! state alone (`OverlayPacket::payload_sealed_end_to_end`): a hop that
//! changed it could only make the destination drop it, as a hop may drop
//! any packet.
//!
//! The key a packet is sealed with is derived from the link's key and the
//! packet's directed link id ([`LinkKey::derive`]): every sender on a link
//! (a node, or each request VM on an edge host) has an id of its own and so
//! a key of its own. The nonce is the link id and the sender's sequence
//! number, which never repeats within one sender's run. The link's own key
//! only ever derives keys, with nonces no packet uses (link id
//! `0xffff_ffff` is reserved).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use super::overlay::{OverlayPacket, TAG_LEN};
use super::WireError;

/// The key of one link.
#[derive(Clone)]
pub struct LinkKey {
    cipher: ChaCha20Poly1305,
}

impl core::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

fn nonce(link_id: u32, seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&link_id.to_be_bytes());
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::from(n)
}

/// A link id no sender may use: derivation nonces start with it.
pub const RESERVED_LINK_ID: u32 = u32::MAX;

impl LinkKey {
    /// A key from 32 secret bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(&Key::from(*key)) }
    }

    /// The key of directed link id `link_id` under this link key: 32 bytes
    /// of ChaCha20 keystream (ChaCha20 as a PRF) with a nonce of the
    /// reserved id followed by `link_id`.
    pub fn derive(&self, link_id: u32) -> LinkKey {
        LinkKey::new(&self.derive_bytes(link_id))
    }

    /// The secret bytes of [`LinkKey::derive`]: what the host hands a
    /// request VM for its own link id, instead of the link key.
    pub fn derive_bytes(&self, link_id: u32) -> [u8; 32] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&RESERVED_LINK_ID.to_be_bytes());
        n[4..8].copy_from_slice(&link_id.to_be_bytes());
        let mut k = [0u8; 32];
        // Encrypting zeros yields the keystream; the tag is not used.
        let _ = self.cipher.encrypt_inout_detached(&Nonce::from(n), b"pathvm link key", (&mut k[..]).into());
        k
    }

    /// The key the neighbour's node seals frames for a request VM with,
    /// derived from that VM's own id key (`self`), so the VM verifies its
    /// relay without holding the key of any other sender. Its derivation
    /// nonce (the reserved id twice) is one no packet and no id key uses.
    pub fn reply(&self) -> LinkKey {
        self.derive(RESERVED_LINK_ID)
    }

    /// Writes the tag of a packet whose header, state and payload are set.
    pub fn seal<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut OverlayPacket<T>) {
        let n = nonce(p.link_id(), p.link_seq());
        let (aad, tag_out) = p.authenticated_and_tag_mut();
        let mut empty: [u8; 0] = [];
        // With no plaintext the only possible error (length overflow)
        // cannot happen; a zero tag would simply fail to verify.
        let tag = self.cipher.encrypt_inout_detached(&n, aad, (&mut empty[..]).into()).unwrap_or_default();
        tag_out.copy_from_slice(&tag[..TAG_LEN]);
    }

    /// Checks a checked packet's tag.
    pub fn open<T: AsRef<[u8]>>(&self, p: &OverlayPacket<T>) -> Result<(), WireError> {
        let n = nonce(p.link_id(), p.link_seq());
        let tag = Tag::try_from(p.tag()).map_err(|_| WireError::BadMac)?;
        let mut empty: [u8; 0] = [];
        self.cipher
            .decrypt_inout_detached(&n, p.authenticated(), (&mut empty[..]).into(), &tag)
            .map_err(|_| WireError::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::super::overlay::{OverlayRepr, Protocol};
    use super::*;

    fn packet(seq: u64) -> [u8; 60] {
        packet_of(Protocol::Shortest, 0, seq)
    }

    fn packet_of(protocol: Protocol, flags: u8, seq: u64) -> [u8; 60] {
        let mut buf = [0u8; 60];
        let repr = OverlayRepr {
            protocol,
            flags,
            hop_limit: 4,
            flow_id: 1,
            src: 1,
            dst: 2,
            state_len: 0,
            payload_len: 16,
            link_id: 10,
            link_seq: seq,
        };
        let mut p = OverlayPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(b"sixteen bytes!!!");
        buf
    }

    #[test]
    fn sealed_packet_opens_with_the_same_key_only() {
        let k = LinkKey::new(&[7; 32]);
        let mut buf = packet(1);
        k.seal(&mut OverlayPacket::new_unchecked(&mut buf[..]));
        let p = OverlayPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(k.open(&p), Ok(()));
        assert_eq!(LinkKey::new(&[8; 32]).open(&p), Err(WireError::BadMac));
    }

    #[test]
    fn any_changed_byte_fails_authentication() {
        let k = LinkKey::new(&[7; 32]);
        let mut buf = packet(1);
        k.seal(&mut OverlayPacket::new_unchecked(&mut buf[..]));
        let len = OverlayPacket::new_checked(&buf[..]).unwrap().total_len();
        for i in 0..len {
            let mut b = buf;
            b[i] ^= 0x01;
            if let Ok(p) = OverlayPacket::new_checked(&b[..]) {
                assert_eq!(k.open(&p), Err(WireError::BadMac), "flip at {i} accepted");
            }
        }
    }

    /// Which bytes a flip of makes the link tag fail, for a packet sealed
    /// with `protocol` and `flags`.
    fn covered(protocol: Protocol, flags: u8) -> Vec<bool> {
        let k = LinkKey::new(&[7; 32]);
        let mut buf = packet_of(protocol, flags, 1);
        k.seal(&mut OverlayPacket::new_unchecked(&mut buf[..]));
        let len = OverlayPacket::new_checked(&buf[..]).unwrap().total_len();
        (0..len - TAG_LEN)
            .map(|i| {
                let mut b = buf;
                b[i] ^= 0x01;
                OverlayPacket::new_checked(&b[..]).map_or(true, |p| k.open(&p).is_err())
            })
            .collect()
    }

    #[test]
    fn a_streams_payload_is_left_to_its_ends_and_every_other_byte_is_covered() {
        use crate::wire::overlay::{FLAG_CONTROL, FLAG_STREAM, HEADER_LEN};
        let payload = HEADER_LEN..HEADER_LEN + 16;
        for protocol in [Protocol::Shortest, Protocol::Widest, Protocol::Multipath, Protocol::Redundant] {
            let c = covered(protocol, FLAG_STREAM);
            for (i, failed) in c.iter().enumerate() {
                assert_eq!(*failed, !payload.contains(&i), "{protocol:?} stream, byte {i}");
            }
        }
        // Payloads a node acts on stay covered: datagrams, control, and
        // onion cells, whose relays peel their layer.
        for (protocol, flags) in [
            (Protocol::Shortest, 0),
            (Protocol::Shortest, FLAG_CONTROL),
            (Protocol::Shortest, FLAG_STREAM | FLAG_CONTROL),
            (Protocol::Onion, FLAG_STREAM),
        ] {
            assert!(covered(protocol, flags).iter().all(|f| *f), "{protocol:?} flags {flags:#x}: a byte left out");
        }
    }

    #[test]
    fn derived_keys_differ_per_link_id_and_are_stable() {
        let parent = LinkKey::new(&[7; 32]);
        let mut buf = packet(1);
        parent.derive(10).seal(&mut OverlayPacket::new_unchecked(&mut buf[..]));
        let p = OverlayPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(parent.derive(10).open(&p), Ok(()), "same id, same key");
        assert_eq!(parent.derive(11).open(&p), Err(WireError::BadMac), "other id, other key");
        assert_eq!(parent.open(&p), Err(WireError::BadMac), "the link key itself does not seal");
        assert_eq!(LinkKey::new(&[8; 32]).derive(10).open(&p), Err(WireError::BadMac));
    }

    #[test]
    fn tag_depends_on_sequence() {
        let k = LinkKey::new(&[7; 32]);
        let (mut a, mut b) = (packet(1), packet(2));
        k.seal(&mut OverlayPacket::new_unchecked(&mut a[..]));
        k.seal(&mut OverlayPacket::new_unchecked(&mut b[..]));
        assert_ne!(a[44..60], b[44..60]);
    }
}
