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
pub mod overlay;
pub mod replay;

pub use auth::LinkKey;
pub use overlay::{OverlayPacket, OverlayRepr, Protocol, HEADER_LEN, TAG_LEN};
pub use replay::ReplayWindow;

/// EtherType of overlay frames.
pub const ETHERTYPE: u16 = 0x88b5;
/// Length of an Ethernet header.
pub const ETH_HDR_LEN: usize = 14;

/// Why a packet was dropped.
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
}

/// One counter per drop reason, for a node's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters {
    /// [`WireError::Truncated`].
    pub truncated: u64,
    /// [`WireError::BadVersion`].
    pub bad_version: u64,
    /// [`WireError::BadLength`].
    pub bad_length: u64,
    /// [`WireError::BadMac`].
    pub bad_mac: u64,
    /// [`WireError::Replayed`].
    pub replayed: u64,
    /// [`WireError::HopLimitExceeded`].
    pub hop_limit: u64,
    /// [`WireError::NoRoute`].
    pub no_route: u64,
    /// [`WireError::UnknownLink`].
    pub unknown_link: u64,
    /// Frames that were not overlay frames at all.
    pub not_overlay: u64,
}

impl DropCounters {
    /// Counts one drop for `e`.
    pub fn count(&mut self, e: WireError) {
        let c = match e {
            WireError::Truncated => &mut self.truncated,
            WireError::BadVersion(_) => &mut self.bad_version,
            WireError::BadLength => &mut self.bad_length,
            WireError::BadMac => &mut self.bad_mac,
            WireError::Replayed => &mut self.replayed,
            WireError::HopLimitExceeded => &mut self.hop_limit,
            WireError::NoRoute => &mut self.no_route,
            WireError::UnknownLink => &mut self.unknown_link,
        };
        *c += 1;
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.truncated
            + self.bad_version
            + self.bad_length
            + self.bad_mac
            + self.replayed
            + self.hop_limit
            + self.no_route
            + self.unknown_link
            + self.not_overlay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_counter() {
        let mut c = DropCounters::default();
        for e in [
            WireError::Truncated,
            WireError::BadVersion(9),
            WireError::BadLength,
            WireError::BadMac,
            WireError::Replayed,
            WireError::HopLimitExceeded,
            WireError::NoRoute,
            WireError::UnknownLink,
        ] {
            c.count(e);
        }
        assert_eq!(c.total(), 8);
        assert_eq!((c.bad_mac, c.replayed, c.no_route), (1, 1, 1));
    }
}
