//! End-to-end protection of a stream between the request VM and the
//! destination's node VM, whatever protocol carries it.
//!
//! Link authentication is hop by hop: every relay on the way can alter a
//! packet and seal it again for its next link. So the two ends agree a
//! key per request and seal every segment with ChaCha20-Poly1305; a relay
//! that flips a byte makes a packet the destination drops (and the
//! stream's retransmission recovers), and relays see no stream bytes.
//!
//! The request VM (initiator) makes a fresh X25519 key for its one stream
//! and agrees with the destination node's static onion key (the
//! directory's). Until it hears back, each of its packets is a hello that
//! carries its public share and its wall-clock stamp (the destination
//! refuses a hello replayed later: [`crate::wire::handshakes`]); after,
//! plain data packets.
//!
//! ```text
//! hello: kind=1 | share (32) | stamp (8) | counter (8) | sealed segment | tag (16)
//! data:  kind=2 | counter (8) | sealed segment | tag (16)
//! ```
//! The header up to the segment is the associated data; the nonce is the
//! counter, one per packet and direction (each direction has its own key),
//! checked against a replay window. The keys are bound to the stream's
//! flow id and both node ids.

use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use sha2::{Digest, Sha256};

use crate::onion::keys::{agree, public_key};
use crate::routing::NodeId;
use crate::wire::handshakes::HandshakeTag;
use crate::wire::ReplayWindow;

const HELLO: u8 = 1;
const DATA: u8 = 2;
const TAG_LEN: usize = 16;
const DATA_HDR: usize = 1 + 8;
const HELLO_HDR: usize = 1 + 32 + 8 + 8;
/// Bytes a data packet adds to its segment.
pub const OVERHEAD: usize = DATA_HDR + TAG_LEN;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2eError {
    /// Not a packet of this layer, or cut short.
    Malformed,
    /// The tag did not verify (altered, or another stream's), or a hello
    /// with another share than this stream's.
    Forged,
    /// A counter already seen.
    Replayed,
}

/// What identifies a stream's packets on the way: its keys are bound to
/// them, so a relay cannot move one stream's packets into another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The stream's flow id.
    pub flow: u32,
    /// The request VM's node (the stream's source).
    pub src: NodeId,
    /// The destination node.
    pub dst: NodeId,
}

/// A hello's clear fields, for the destination to find (or refuse) the
/// stream before it opens anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The initiator's X25519 public share.
    pub share: [u8; 32],
    /// The initiator's wall clock when it started the stream, µs.
    pub stamp_us: u64,
}

/// Whether `packet` is a hello, and its clear fields.
pub fn parse_hello(packet: &[u8]) -> Option<Hello> {
    if packet.len() < HELLO_HDR + TAG_LEN || packet[0] != HELLO {
        return None;
    }
    let mut share = [0u8; 32];
    share.copy_from_slice(&packet[1..33]);
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&packet[33..41]);
    Some(Hello { share, stamp_us: u64::from_be_bytes(stamp) })
}

/// One end of a stream's end-to-end session.
pub struct E2eSession {
    tx: ChaCha20Poly1305,
    rx: ChaCha20Poly1305,
    next_ctr: u64,
    window: ReplayWindow,
    /// The initiator's share and stamp, repeated in its hellos.
    hello: Hello,
    /// The initiator sends hellos until the responder is heard.
    initiator: bool,
    heard: bool,
    tag: HandshakeTag,
}

struct Keys {
    i2r: [u8; 32],
    r2i: [u8; 32],
    tag: HandshakeTag,
}

fn derive(shared: &[u8; 32], share: &[u8; 32], responder: &[u8; 32], b: Binding) -> Keys {
    let mut h = Sha256::new();
    h.update(b"pathvm e2e v1");
    h.update(shared);
    h.update(share);
    h.update(responder);
    h.update(b.flow.to_be_bytes());
    h.update(b.src.to_be_bytes());
    h.update(b.dst.to_be_bytes());
    let seed: [u8; 32] = h.finalize().into();
    let sub = |label: u8| -> [u8; 32] { Sha256::new().chain_update(seed).chain_update([label]).finalize().into() };
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&sub(3)[..16]);
    Keys { i2r: sub(1), r2i: sub(2), tag }
}

fn nonce(ctr: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&ctr.to_be_bytes());
    Nonce::from(n)
}

impl E2eSession {
    /// The request VM's side: `ephemeral` is a fresh secret for this
    /// stream alone, `responder` the destination's onion public key;
    /// `None` if the key is unusable (low order).
    pub fn initiate(ephemeral: &[u8; 32], responder: &[u8; 32], binding: Binding, stamp_us: u64) -> Option<Self> {
        let share = public_key(ephemeral);
        let shared = agree(ephemeral, responder)?;
        let k = derive(&shared, &share, responder, binding);
        Some(Self::with(k.i2r, k.r2i, Hello { share, stamp_us }, true, k.tag))
    }

    /// The destination's side of `hello`, with the node's onion `secret`
    /// and its `public` key (the node holds both: no key is derived per
    /// stream); `None` for a low-order share. Nothing is authenticated
    /// yet: open the hello before keeping the session.
    pub fn respond(secret: &[u8; 32], public: &[u8; 32], hello: Hello, binding: Binding) -> Option<Self> {
        let shared = agree(secret, &hello.share)?;
        let k = derive(&shared, &hello.share, public, binding);
        Some(Self::with(k.r2i, k.i2r, hello, false, k.tag))
    }

    fn with(tx: [u8; 32], rx: [u8; 32], hello: Hello, initiator: bool, tag: HandshakeTag) -> Self {
        Self {
            tx: ChaCha20Poly1305::new(&Key::from(tx)),
            rx: ChaCha20Poly1305::new(&Key::from(rx)),
            next_ctr: 1,
            window: ReplayWindow::new(),
            hello,
            initiator,
            heard: false,
            tag,
        }
    }

    /// The tag the destination's replay cache keeps for this stream.
    pub fn tag(&self) -> HandshakeTag {
        self.tag
    }

    /// The hello this session answers (or sends).
    pub fn hello(&self) -> Hello {
        self.hello
    }

    /// Appends `segment`, sealed, to `out` (a hello while the initiator
    /// has not heard back).
    pub fn seal(&mut self, segment: &[u8], out: &mut Vec<u8>) {
        let ctr = self.next_ctr;
        self.next_ctr += 1;
        let start = out.len();
        if self.initiator && !self.heard {
            out.push(HELLO);
            out.extend_from_slice(&self.hello.share);
            out.extend_from_slice(&self.hello.stamp_us.to_be_bytes());
        } else {
            out.push(DATA);
        }
        out.extend_from_slice(&ctr.to_be_bytes());
        let body = out.len();
        out.extend_from_slice(segment);
        let (aad, data) = out[start..].split_at_mut(body - start);
        // ChaCha20-Poly1305 fails only past 256 GiB in one message.
        let tag = self.tx.encrypt_inout_detached(&nonce(ctr), aad, data.into()).unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// `segment`, sealed, as a packet of its own.
    pub fn sealed(&mut self, segment: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_HDR + segment.len() + TAG_LEN);
        self.seal(segment, &mut out);
        out
    }

    /// Opens `packet` into `out` (the segment). A refused packet changes
    /// nothing.
    pub fn open(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), E2eError> {
        let hdr = match packet.first() {
            Some(&DATA) => DATA_HDR,
            Some(&HELLO) if !self.initiator => {
                let h = parse_hello(packet).ok_or(E2eError::Malformed)?;
                if h != self.hello {
                    return Err(E2eError::Forged);
                }
                HELLO_HDR
            }
            _ => return Err(E2eError::Malformed),
        };
        if packet.len() < hdr + TAG_LEN {
            return Err(E2eError::Malformed);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&packet[hdr - 8..hdr]);
        let ctr = u64::from_be_bytes(c);
        if !self.window.check(ctr) {
            return Err(E2eError::Replayed);
        }
        let (aad, rest) = packet.split_at(hdr);
        let (sealed, tag) = rest.split_at(rest.len() - TAG_LEN);
        let start = out.len();
        out.extend_from_slice(sealed);
        let tag = Tag::try_from(tag).map_err(|_| E2eError::Malformed)?;
        if self.rx.decrypt_inout_detached(&nonce(ctr), aad, (&mut out[start..]).into(), &tag).is_err() {
            out.truncate(start);
            return Err(E2eError::Forged);
        }
        self.window.accept(ctr);
        self.heard = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Binding = Binding { flow: 7, src: 1, dst: 3 };

    fn pair() -> (E2eSession, E2eSession, Vec<u8>) {
        let node_secret = [9u8; 32];
        let mut a = E2eSession::initiate(&[4; 32], &public_key(&node_secret), B, 1_000).unwrap();
        let mut hello = Vec::new();
        a.seal(b"syn", &mut hello);
        let h = parse_hello(&hello).unwrap();
        assert_eq!(h.stamp_us, 1_000);
        let mut b = E2eSession::respond(&node_secret, &public_key(&node_secret), h, B).unwrap();
        assert_eq!(a.tag(), b.tag());
        let mut got = Vec::new();
        b.open(&hello, &mut got).unwrap();
        assert_eq!(got, b"syn");
        (a, b, hello)
    }

    #[test]
    fn both_ways_sealed_and_a_hello_until_the_initiator_hears_back() {
        let (mut a, mut b, _) = pair();
        let mut p = Vec::new();
        a.seal(b"again", &mut p);
        assert!(parse_hello(&p).is_some(), "still a hello");
        let mut back = Vec::new();
        b.seal(b"synack", &mut back);
        assert!(parse_hello(&back).is_none());
        let mut got = Vec::new();
        a.open(&back, &mut got).unwrap();
        assert_eq!(got, b"synack");
        let mut d = Vec::new();
        a.seal(b"data", &mut d);
        assert_eq!(d.len(), 4 + OVERHEAD);
        assert!(!contains(&d, b"data"), "relays see no stream bytes");
        got.clear();
        b.open(&d, &mut got).unwrap();
        assert_eq!(got, b"data");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_flipped_byte_a_replay_or_another_streams_packet_is_refused_and_changes_nothing() {
        let (mut a, mut b, hello) = pair();
        let mut d = Vec::new();
        a.seal(b"payload bytes", &mut d);
        let mut got = Vec::new();
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x10;
            assert!(b.open(&bad, &mut got).is_err(), "byte {i} flipped");
            assert!(got.is_empty());
        }
        assert_eq!(b.open(&hello, &mut got), Err(E2eError::Replayed));
        b.open(&d, &mut got).unwrap();
        assert_eq!(b.open(&d, &mut got), Err(E2eError::Replayed));
        // The same keys under another flow id do not open it.
        let other = parse_hello(&hello).unwrap();
        let mut c = E2eSession::respond(&[9; 32], &public_key(&[9; 32]), other, Binding { flow: 8, ..B }).unwrap();
        got.clear();
        assert_eq!(c.open(&hello, &mut got), Err(E2eError::Forged));
        // A hello with a share not this stream's.
        let mut swapped = hello.clone();
        swapped[1] ^= 1;
        assert_eq!(b.open(&swapped, &mut got), Err(E2eError::Forged));
        assert_eq!(b.open(&[DATA, 0, 0], &mut got), Err(E2eError::Malformed));
    }
}
