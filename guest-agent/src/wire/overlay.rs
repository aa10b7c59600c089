//! The overlay header: a zero-copy view and a plain representation.
//!
//! ```text
//!  0       1       2       3       4               8
//! +-------+-------+-------+-------+---------------+
//! |version| proto | flags |hoplim |    flow id    |
//! +-------+-------+-------+-------+---------------+
//! 8               10              12              14              16
//! +---------------+---------------+---------------+---------------+
//! |   src node    |   dst node    |  payload len  |  state len    |
//! +---------------+---------------+---------------+---------------+
//! 16              20                              28
//! +---------------+-------------------------------+
//! |   link id     |        link sequence          |
//! +---------------+-------------------------------+
//! 28: protocol state (state len bytes), payload (payload len bytes),
//!     16-byte authentication tag over the header, the state and (unless
//!     the ends seal it themselves,
//!     [`OverlayPacket::payload_sealed_end_to_end`]) the payload.
//! ```
//! All fields are big-endian. Bytes after the tag (Ethernet padding) are
//! ignored.

use super::WireError;

/// The version this code speaks. 2: a stream's payload is left out of the
/// link tag ([`OverlayPacket::payload_sealed_end_to_end`]); a node of
/// version 1 would refuse every stream frame of version 2 as forged, so
/// it refuses the version instead, and says so.
pub const VERSION: u8 = 2;
/// Fixed header length.
pub const HEADER_LEN: usize = 28;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Most bytes of per-protocol state.
pub const MAX_STATE_LEN: usize = 256;
/// Most payload bytes (fits a 1500-byte MTU with header, state and tag).
pub const MAX_PAYLOAD_LEN: usize = 1500 - HEADER_LEN - TAG_LEN;
/// Flag: the payload is a transport segment of a stream (the flow id names
/// the stream), not a datagram for the destination's host.
pub const FLAG_STREAM: u8 = 0x01;
/// Flag: the payload is a link-local control message ([`super::control`])
/// for the node at the other end of the link; never forwarded.
pub const FLAG_CONTROL: u8 = 0x02;
/// Every flag this version defines.
const KNOWN_FLAGS: u8 = FLAG_STREAM | FLAG_CONTROL;

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const FLAGS: usize = 2;
    pub const HOP_LIMIT: usize = 3;
    pub const FLOW_ID: Range<usize> = 4..8;
    pub const SRC: Range<usize> = 8..10;
    pub const DST: Range<usize> = 10..12;
    pub const PAYLOAD_LEN: Range<usize> = 12..14;
    pub const STATE_LEN: Range<usize> = 14..16;
    pub const LINK_ID: Range<usize> = 16..20;
    pub const LINK_SEQ: Range<usize> = 20..28;
}

/// A routing protocol id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Link-state, hop-by-hop, lowest latency.
    Shortest,
    /// Maximum bottleneck bandwidth.
    Widest,
    /// Source-routed, layered encryption.
    Onion,
    /// Spread over disjoint paths.
    Multipath,
    /// Every packet on two disjoint paths.
    Redundant,
    /// An id this code does not know.
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Shortest,
            2 => Self::Widest,
            3 => Self::Onion,
            4 => Self::Multipath,
            5 => Self::Redundant,
            other => Self::Unknown(other),
        }
    }
}

impl Protocol {
    /// Its id in the header (a `const fn`, so profiles can be built at
    /// compile time from it).
    pub const fn id(self) -> u8 {
        match self {
            Protocol::Shortest => 1,
            Protocol::Widest => 2,
            Protocol::Onion => 3,
            Protocol::Multipath => 4,
            Protocol::Redundant => 5,
            Protocol::Unknown(v) => v,
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        p.id()
    }
}

/// A read/write view of an overlay packet in a buffer.
#[derive(Debug, Clone)]
pub struct OverlayPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> OverlayPacket<T> {
    /// Wraps a buffer without checks (for emitting into a sized buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header fits, the version is known, the length
    /// fields are within limits and the buffer holds all they announce.
    /// After success, no accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VERSION] != VERSION {
            return Err(WireError::BadVersion(b[field::VERSION]));
        }
        let state = be16(&b[field::STATE_LEN]) as usize;
        let payload = be16(&b[field::PAYLOAD_LEN]) as usize;
        if state > MAX_STATE_LEN || payload > MAX_PAYLOAD_LEN {
            return Err(WireError::BadLength);
        }
        if b.len() < HEADER_LEN + state + payload + TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The routing protocol.
    pub fn protocol(&self) -> Protocol {
        self.buffer.as_ref()[field::PROTOCOL].into()
    }
    /// Flags ([`FLAG_STREAM`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Hops left.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// The end-to-end flow this packet belongs to.
    pub fn flow_id(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::FLOW_ID])
    }
    /// Source node.
    pub fn src(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC])
    }
    /// Destination node.
    pub fn dst(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST])
    }
    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }
    /// Per-protocol state length.
    pub fn state_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::STATE_LEN])
    }
    /// The link the packet was sent on (selects the key).
    pub fn link_id(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::LINK_ID])
    }
    /// The sender's sequence number on that link.
    pub fn link_seq(&self) -> u64 {
        be64(&self.buffer.as_ref()[field::LINK_SEQ])
    }
    /// Per-protocol state.
    pub fn state(&self) -> &[u8] {
        let s = self.state_len() as usize;
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + s]
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        let start = HEADER_LEN + self.state_len() as usize;
        &self.buffer.as_ref()[start..start + self.payload_len() as usize]
    }
    /// Whether the payload is sealed end to end and left out of the link
    /// tag: a stream's segment (`FLAG_STREAM`, not control) on any protocol
    /// but onion, whose relays peel their layer of the payload. No relay
    /// reads such a payload, and the destination's end-to-end tag refuses
    /// any change to it (`transport::e2e`), so checking it on every hop
    /// too bought nothing but two Poly1305 passes per hop (leaving it out
    /// measured +13 % on one download, BENCHMARKS.md); as SCION's hop
    /// fields, the link tag covers what the hops act on: the header and
    /// the protocol state.
    pub fn payload_sealed_end_to_end(&self) -> bool {
        self.flags() & (FLAG_STREAM | FLAG_CONTROL) == FLAG_STREAM && self.protocol() != Protocol::Onion
    }
    /// Length of what the link tag covers: header and state, and the
    /// payload unless [`OverlayPacket::payload_sealed_end_to_end`].
    fn authenticated_len(&self) -> usize {
        let head = HEADER_LEN + self.state_len() as usize;
        if self.payload_sealed_end_to_end() {
            head
        } else {
            head + self.payload_len() as usize
        }
    }
    /// Everything the link tag covers.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.authenticated_len()]
    }
    /// The tag.
    pub fn tag(&self) -> &[u8] {
        let end = self.total_len();
        &self.buffer.as_ref()[end - TAG_LEN..end]
    }
    /// Length of header, state, payload and tag.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.state_len() as usize + self.payload_len() as usize + TAG_LEN
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OverlayPacket<T> {
    fn b(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.b()[field::HOP_LIMIT] = v;
    }
    /// Sets the link the packet goes out on.
    pub fn set_link_id(&mut self, v: u32) {
        self.b()[field::LINK_ID].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the sequence number on that link.
    pub fn set_link_seq(&mut self, v: u64) {
        self.b()[field::LINK_SEQ].copy_from_slice(&v.to_be_bytes());
    }
    /// Per-protocol state, writable.
    pub fn state_mut(&mut self) -> &mut [u8] {
        let s = self.state_len() as usize;
        &mut self.b()[HEADER_LEN..HEADER_LEN + s]
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = HEADER_LEN + self.state_len() as usize;
        let len = self.payload_len() as usize;
        &mut self.b()[start..start + len]
    }
    /// Splits into (authenticated bytes, tag), for sealing.
    pub fn authenticated_and_tag_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (end, covered) = (self.total_len(), self.authenticated_len());
        let (a, t) = self.b()[..end].split_at_mut(end - TAG_LEN);
        (&mut a[..covered], t)
    }
}

/// A parsed overlay header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayRepr {
    /// Routing protocol.
    pub protocol: Protocol,
    /// Flags ([`FLAG_STREAM`]).
    pub flags: u8,
    /// Hops left.
    pub hop_limit: u8,
    /// End-to-end flow.
    pub flow_id: u32,
    /// Source node.
    pub src: u16,
    /// Destination node.
    pub dst: u16,
    /// Per-protocol state length.
    pub state_len: u16,
    /// Payload length.
    pub payload_len: u16,
    /// Link sent on.
    pub link_id: u32,
    /// Sequence on that link.
    pub link_seq: u64,
}

impl OverlayRepr {
    /// Reads a checked packet's header. Unknown flags are refused (as a
    /// version mismatch) so a later version's meaning is never silently
    /// ignored.
    pub fn parse<T: AsRef<[u8]>>(p: &OverlayPacket<T>) -> Result<Self, WireError> {
        p.check_len()?;
        if p.flags() & !KNOWN_FLAGS != 0 {
            return Err(WireError::BadVersion(p.version()));
        }
        Ok(Self {
            protocol: p.protocol(),
            flags: p.flags(),
            hop_limit: p.hop_limit(),
            flow_id: p.flow_id(),
            src: p.src(),
            dst: p.dst(),
            state_len: p.state_len(),
            payload_len: p.payload_len(),
            link_id: p.link_id(),
            link_seq: p.link_seq(),
        })
    }

    /// Bytes a packet with this header occupies.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.state_len as usize + self.payload_len as usize + TAG_LEN
    }

    /// Writes the header into `p` (whose buffer holds `buffer_len()` bytes;
    /// state, payload and tag are filled separately).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut OverlayPacket<T>) -> Result<(), WireError> {
        if self.state_len as usize > MAX_STATE_LEN || self.payload_len as usize > MAX_PAYLOAD_LEN {
            return Err(WireError::BadLength);
        }
        let b = p.b();
        if b.len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        b[field::VERSION] = VERSION;
        b[field::PROTOCOL] = self.protocol.into();
        b[field::FLAGS] = self.flags;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::FLOW_ID].copy_from_slice(&self.flow_id.to_be_bytes());
        b[field::SRC].copy_from_slice(&self.src.to_be_bytes());
        b[field::DST].copy_from_slice(&self.dst.to_be_bytes());
        b[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        b[field::STATE_LEN].copy_from_slice(&self.state_len.to_be_bytes());
        b[field::LINK_ID].copy_from_slice(&self.link_id.to_be_bytes());
        b[field::LINK_SEQ].copy_from_slice(&self.link_seq.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet: shortest, hop limit 8, flow 0x01020304, 3 -> 7, 2 bytes of
    /// state (aa bb), 3 bytes of payload ("abc"), link 5 seq 9, zero tag.
    static GOLDEN: [u8; 49] = [
        0x02, 0x01, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x00, 0x03, 0x00, 0x07, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0xaa, 0xbb, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn golden_repr() -> OverlayRepr {
        OverlayRepr {
            protocol: Protocol::Shortest,
            flags: 0,
            hop_limit: 8,
            flow_id: 0x0102_0304,
            src: 3,
            dst: 7,
            state_len: 2,
            payload_len: 3,
            link_id: 5,
            link_seq: 9,
        }
    }

    #[test]
    fn deconstruct_golden_packet() {
        let p = OverlayPacket::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert_eq!(p.protocol(), Protocol::Shortest);
        assert_eq!((p.hop_limit(), p.flow_id(), p.src(), p.dst()), (8, 0x0102_0304, 3, 7));
        assert_eq!((p.link_id(), p.link_seq()), (5, 9));
        assert_eq!(p.state(), &[0xaa, 0xbb]);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.total_len(), 49);
        assert_eq!(p.authenticated().len(), 33);
    }

    #[test]
    fn construct_golden_packet() {
        let mut buf = [0u8; 49];
        let mut p = OverlayPacket::new_unchecked(&mut buf[..]);
        golden_repr().emit(&mut p).unwrap();
        p.state_mut().copy_from_slice(&[0xaa, 0xbb]);
        p.payload_mut().copy_from_slice(b"abc");
        assert_eq!(buf, GOLDEN);
    }

    #[test]
    fn parse_golden_packet() {
        let p = OverlayPacket::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(OverlayRepr::parse(&p), Ok(golden_repr()));
    }

    #[test]
    fn ethernet_padding_after_the_tag_is_ignored() {
        let mut padded = [0u8; 64];
        padded[..49].copy_from_slice(&GOLDEN);
        let p = OverlayPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.total_len(), 49);
    }

    #[test]
    fn test_truncated() {
        for n in 0..GOLDEN.len() {
            assert_eq!(OverlayPacket::new_checked(&GOLDEN[..n]).unwrap_err(), WireError::Truncated, "len {n}");
        }
    }

    #[test]
    fn test_wrong_version() {
        for v in [1, 3] {
            let mut b = GOLDEN;
            b[0] = v;
            assert_eq!(OverlayPacket::new_checked(&b[..]).unwrap_err(), WireError::BadVersion(v), "version {v}");
        }
    }

    #[test]
    fn test_impossible_lengths() {
        let mut b = [0u8; 2000];
        b[..49].copy_from_slice(&GOLDEN);
        b[12..14].copy_from_slice(&(MAX_PAYLOAD_LEN as u16 + 1).to_be_bytes());
        assert_eq!(OverlayPacket::new_checked(&b[..]).unwrap_err(), WireError::BadLength);
        let mut b = GOLDEN;
        b[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(OverlayPacket::new_checked(&b[..]).unwrap_err(), WireError::BadLength);
    }

    #[test]
    fn test_unknown_flags_refused() {
        let mut b = GOLDEN;
        b[2] = 0x80;
        let p = OverlayPacket::new_checked(&b[..]).unwrap();
        assert!(OverlayRepr::parse(&p).is_err());
        b[2] = FLAG_STREAM;
        let p = OverlayPacket::new_checked(&b[..]).unwrap();
        assert_eq!(OverlayRepr::parse(&p).map(|r| r.flags), Ok(FLAG_STREAM));
    }

    #[test]
    fn protocol_ids_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Protocol::from(v)), v);
        }
    }

    #[test]
    fn emit_refuses_short_buffer() {
        let mut buf = [0u8; 20];
        let mut p = OverlayPacket::new_unchecked(&mut buf[..]);
        assert_eq!(golden_repr().emit(&mut p), Err(WireError::Truncated));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap exhaustive-ish sweep: every single-byte corruption of the
        // golden packet, at every length, parses or errs.
        for i in 0..GOLDEN.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = GOLDEN;
                b[i] = v;
                for n in 0..=b.len() {
                    if let Ok(p) = OverlayPacket::new_checked(&b[..n]) {
                        let _ = OverlayRepr::parse(&p);
                        let _ = (p.state(), p.payload(), p.tag(), p.authenticated());
                    }
                }
            }
        }
    }
}
