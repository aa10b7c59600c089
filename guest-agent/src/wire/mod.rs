//! The overlay wire format: what travels between pathvm nodes.
//!
//! An overlay packet rides directly in an Ethernet frame with EtherType
//! [`ETHERTYPE`] (IEEE 802 "local experimental"): every overlay link is a
//! point-to-point L2 link between two nodes, and each node's VM owns its
//! link ports, so no IP layer is needed between hops.
//!
//! Parsing follows smoltcp's contract: [`OverlayPacket::new_checked`]
//! checks every length field against the buffer and against each other;
//! after it succeeds no accessor panics. Anything else is a [`WireError`],
//! which the caller counts as a drop. Each hop authenticates the whole
//! packet with the key of the link it arrived on ([`auth`]) and rejects
//! replays ([`replay`]): a relay is silent to anything unauthenticated.

pub mod auth;
pub mod control;
pub mod handshakes;
pub mod overlay;
pub mod replay;

use alloc::vec::Vec;

pub use auth::{LinkKey, RESERVED_LINK_ID};
pub use overlay::{OverlayPacket, OverlayRepr, Protocol, FLAG_CONTROL, FLAG_STREAM, HEADER_LEN, TAG_LEN};
pub use replay::ReplayWindow;

/// EtherType of overlay frames.
pub const ETHERTYPE: u16 = 0x88b5;
/// Length of an Ethernet header.
pub const ETH_HDR_LEN: usize = 14;

/// The MACs of one overlay link hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthAddrs {
    /// The next node's port.
    pub dst: [u8; 6],
    /// This node's port.
    pub src: [u8; 6],
}

/// Builds a whole Ethernet frame carrying `repr`, `state` and `payload`,
/// sealed with `key`, into `out` (cleared first). `repr`'s lengths must
/// match `state` and `payload`.
pub fn seal_frame(
    out: &mut Vec<u8>,
    eth: EthAddrs,
    repr: &OverlayRepr,
    state: &[u8],
    payload: &[u8],
    key: &LinkKey,
) -> Result<(), WireError> {
    build_frame(out, eth, repr, state, payload)?;
    key.seal(&mut OverlayPacket::new_unchecked(&mut out[ETH_HDR_LEN..]));
    Ok(())
}

/// Seals a frame [`build_frame`] made, under link sequence number `seq`:
/// a sender that queues frames numbers them as they leave, so frames sent
/// ahead of the queue (probes) keep the sequence in order.
pub fn seal_built(frame: &mut [u8], seq: u64, key: &LinkKey) {
    if frame.len() <= ETH_HDR_LEN {
        return;
    }
    let mut p = OverlayPacket::new_unchecked(&mut frame[ETH_HDR_LEN..]);
    p.set_link_seq(seq);
    key.seal(&mut p);
}

/// [`seal_frame`] without the sealing.
pub fn build_frame(
    out: &mut Vec<u8>,
    eth: EthAddrs,
    repr: &OverlayRepr,
    state: &[u8],
    payload: &[u8],
) -> Result<(), WireError> {
    if state.len() != repr.state_len as usize || payload.len() != repr.payload_len as usize {
        return Err(WireError::BadLength);
    }
    out.clear();
    out.resize(ETH_HDR_LEN + repr.buffer_len(), 0);
    out[0..6].copy_from_slice(&eth.dst);
    out[6..12].copy_from_slice(&eth.src);
    out[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let mut p = OverlayPacket::new_unchecked(&mut out[ETH_HDR_LEN..]);
    repr.emit(&mut p)?;
    p.state_mut().copy_from_slice(state);
    p.payload_mut().copy_from_slice(payload);
    Ok(())
}

/// Why a packet could not be parsed, opened or routed (the router counts
/// each as a [`crate::router::DropReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header says.
    Truncated,
    /// A version this node does not speak.
    BadVersion(u8),
    /// Length fields that contradict each other or the limits.
    BadLength,
    /// Authentication failed (wrong key, forged or corrupted).
    BadMac,
    /// Sequence number already seen or too old.
    Replayed,
    /// The hop limit ran out.
    HopLimitExceeded,
    /// No next node towards the destination.
    NoRoute,
    /// Arrived on a link the node does not have.
    UnknownLink,
    /// A routing protocol this node does not run.
    UnsupportedProtocol,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_frame_parses_and_opens() {
        let key = LinkKey::new(&[3; 32]);
        let repr = OverlayRepr {
            protocol: Protocol::Shortest,
            flags: 0,
            hop_limit: 5,
            flow_id: 9,
            src: 1,
            dst: 2,
            state_len: 1,
            payload_len: 4,
            link_id: 7,
            link_seq: 1,
        };
        let mut f = Vec::new();
        let eth = EthAddrs { dst: [1; 6], src: [2; 6] };
        seal_frame(&mut f, eth, &repr, &[0xee], b"data", &key).unwrap();
        assert_eq!(&f[12..14], &ETHERTYPE.to_be_bytes());
        let p = OverlayPacket::new_checked(&f[ETH_HDR_LEN..]).unwrap();
        assert_eq!(OverlayRepr::parse(&p), Ok(repr));
        assert_eq!(key.open(&p), Ok(()));
        assert_eq!(p.payload(), b"data");
        assert_eq!(seal_frame(&mut f, eth, &repr, &[], b"data", &key), Err(WireError::BadLength));
        // Built now, numbered and sealed when it leaves: the same frame.
        let mut g = Vec::new();
        build_frame(&mut g, eth, &OverlayRepr { link_seq: 0, ..repr }, &[0xee], b"data").unwrap();
        seal_built(&mut g, 1, &key);
        seal_frame(&mut f, eth, &repr, &[0xee], b"data", &key).unwrap();
        assert_eq!(f, g);
    }
}
