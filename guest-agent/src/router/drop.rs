//! Why the router dropped something, and how often.
//!
//! Every frame, record or cell the router cannot use ends as exactly one
//! [`DropReason`], counted in [`DropCounters`] (the node's stats page and
//! `pathvm node --metrics` report them). Nothing from outside is an error
//! the router propagates: a relay stays silent to bad input and goes on.

use crate::wire::WireError;

/// Why the router dropped a frame, record or cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not an overlay frame (another EtherType, or too short for Ethernet).
    NotOverlay,
    /// Shorter than its header says.
    Truncated,
    /// An overlay version this node does not speak.
    BadVersion,
    /// Header length fields that contradict each other or the limits.
    BadLength,
    /// The tag did not verify: forged, corrupted, or another link's key.
    BadMac,
    /// A link sequence number already seen, or too old for the window.
    Replayed,
    /// A sender link id outside the neighbour side's span, or refused.
    UnknownLink,
    /// The hop limit ran out.
    HopLimit,
    /// No next node towards the destination (or no such circuit).
    NoRoute,
    /// A routing protocol this node does not forward.
    UnsupportedProtocol,
    /// A control message (probe, ack, link state) that does not decode.
    BadControl,
    /// A stream segment that does not parse, or a source reusing a live
    /// stream's flow id.
    BadSegment,
    /// An onion cell of the wrong size, or one a circuit's keys refuse.
    BadCell,
    /// A source route in the packet's state that does not decode.
    BadSourceRoute,
    /// A record from the host too large for one packet.
    Oversized,
    /// A packet whose source is a console record id (no node has one).
    ReservedSource,
    /// A request VM's packet naming a source other than its host's node.
    SpoofedSource,
    /// A request VM's control message other than a probe or a link-state
    /// request (link state and acks come from nodes only).
    RequestControl,
    /// A link sequence number from before this node booted: a frame
    /// recorded before a restart (senders number from their clock).
    Stale,
    /// A link-state advertisement from an origin without a configured key.
    UnknownOrigin,
    /// A link-state advertisement its origin did not sign.
    BadSignature,
    /// A link-state advertisement older than its origin's newest, or
    /// outside the clock window (recorded long ago).
    StaleLsa,
    /// A link-state advertisement too soon after its origin's last, or
    /// beyond the sending port's verification budget.
    LsaRate,
    /// A stream packet its end-to-end key did not open: altered on the
    /// way, or not this stream's.
    BadE2e,
    /// The first packet of a stream or an onion create seen before, or
    /// stamped outside the clock window: a recording played again.
    ReplayedHandshake,
    /// A stream's first packet when this node ends its most streams, or
    /// its source holds its share of them: refused with a reset.
    FlowsFull,
    /// A datagram for the host while the host's backlog is at its share
    /// for datagrams (the rest is kept for streams' acknowledged bytes).
    HostBacklog,
    /// A certificate (in a hello or an advertisement) that does not hold:
    /// another CA's, expired, revoked, another node's, or malformed.
    BadCertificate,
}

impl From<crate::transport::e2e::E2eError> for DropReason {
    fn from(e: crate::transport::e2e::E2eError) -> Self {
        use crate::transport::e2e::E2eError;
        match e {
            E2eError::Malformed => Self::BadSegment,
            E2eError::Forged => Self::BadE2e,
            E2eError::Replayed => Self::Replayed,
        }
    }
}

impl From<crate::wire::handshakes::HandshakeRefusal> for DropReason {
    fn from(_: crate::wire::handshakes::HandshakeRefusal) -> Self {
        Self::ReplayedHandshake
    }
}

impl From<crate::routing::linkstate::LsaRefusal> for DropReason {
    fn from(r: crate::routing::linkstate::LsaRefusal) -> Self {
        use crate::routing::linkstate::LsaRefusal;
        match r {
            LsaRefusal::UnknownOrigin => Self::UnknownOrigin,
            LsaRefusal::BadSignature => Self::BadSignature,
            LsaRefusal::Stale => Self::StaleLsa,
            LsaRefusal::RateLimited => Self::LsaRate,
            LsaRefusal::BadCertificate => Self::BadCertificate,
        }
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => Self::Truncated,
            WireError::BadVersion(_) => Self::BadVersion,
            WireError::BadLength => Self::BadLength,
            WireError::BadMac => Self::BadMac,
            WireError::Replayed => Self::Replayed,
            WireError::HopLimitExceeded => Self::HopLimit,
            WireError::NoRoute => Self::NoRoute,
            WireError::UnknownLink => Self::UnknownLink,
            WireError::UnsupportedProtocol => Self::UnsupportedProtocol,
        }
    }
}

/// Names of the counters, in [`DropCounters::values`] order: the one list
/// the VMM's reports use.
pub const DROP_NAMES: [&str; 28] = [
    "not_overlay",
    "truncated",
    "bad_version",
    "bad_length",
    "bad_mac",
    "replayed",
    "unknown_link",
    "hop_limit",
    "no_route",
    "unsupported_protocol",
    "bad_control",
    "bad_segment",
    "bad_cell",
    "bad_source_route",
    "oversized",
    "reserved_source",
    "spoofed_source",
    "request_control",
    "stale",
    "unknown_origin",
    "bad_signature",
    "stale_lsa",
    "lsa_rate",
    "bad_e2e",
    "replayed_handshake",
    "flows_full",
    "host_backlog",
    "bad_certificate",
];

/// One counter per [`DropReason`]; `repr(C)` u64s, so it can sit in the
/// stats page the VMM reads.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters {
    /// [`DropReason::NotOverlay`].
    pub not_overlay: u64,
    /// [`DropReason::Truncated`].
    pub truncated: u64,
    /// [`DropReason::BadVersion`].
    pub bad_version: u64,
    /// [`DropReason::BadLength`].
    pub bad_length: u64,
    /// [`DropReason::BadMac`].
    pub bad_mac: u64,
    /// [`DropReason::Replayed`].
    pub replayed: u64,
    /// [`DropReason::UnknownLink`].
    pub unknown_link: u64,
    /// [`DropReason::HopLimit`].
    pub hop_limit: u64,
    /// [`DropReason::NoRoute`].
    pub no_route: u64,
    /// [`DropReason::UnsupportedProtocol`].
    pub unsupported_protocol: u64,
    /// [`DropReason::BadControl`].
    pub bad_control: u64,
    /// [`DropReason::BadSegment`].
    pub bad_segment: u64,
    /// [`DropReason::BadCell`].
    pub bad_cell: u64,
    /// [`DropReason::BadSourceRoute`].
    pub bad_source_route: u64,
    /// [`DropReason::Oversized`].
    pub oversized: u64,
    /// [`DropReason::ReservedSource`].
    pub reserved_source: u64,
    /// [`DropReason::SpoofedSource`].
    pub spoofed_source: u64,
    /// [`DropReason::RequestControl`].
    pub request_control: u64,
    /// [`DropReason::Stale`].
    pub stale: u64,
    /// [`DropReason::UnknownOrigin`].
    pub unknown_origin: u64,
    /// [`DropReason::BadSignature`].
    pub bad_signature: u64,
    /// [`DropReason::StaleLsa`].
    pub stale_lsa: u64,
    /// [`DropReason::LsaRate`].
    pub lsa_rate: u64,
    /// [`DropReason::BadE2e`].
    pub bad_e2e: u64,
    /// [`DropReason::ReplayedHandshake`].
    pub replayed_handshake: u64,
    /// [`DropReason::FlowsFull`].
    pub flows_full: u64,
    /// [`DropReason::HostBacklog`].
    pub host_backlog: u64,
    /// [`DropReason::BadCertificate`].
    pub bad_certificate: u64,
}

impl DropCounters {
    /// Counts one drop for `why`.
    pub fn count(&mut self, why: impl Into<DropReason>) {
        let c = match why.into() {
            DropReason::NotOverlay => &mut self.not_overlay,
            DropReason::Truncated => &mut self.truncated,
            DropReason::BadVersion => &mut self.bad_version,
            DropReason::BadLength => &mut self.bad_length,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::Replayed => &mut self.replayed,
            DropReason::UnknownLink => &mut self.unknown_link,
            DropReason::HopLimit => &mut self.hop_limit,
            DropReason::NoRoute => &mut self.no_route,
            DropReason::UnsupportedProtocol => &mut self.unsupported_protocol,
            DropReason::BadControl => &mut self.bad_control,
            DropReason::BadSegment => &mut self.bad_segment,
            DropReason::BadCell => &mut self.bad_cell,
            DropReason::BadSourceRoute => &mut self.bad_source_route,
            DropReason::Oversized => &mut self.oversized,
            DropReason::ReservedSource => &mut self.reserved_source,
            DropReason::SpoofedSource => &mut self.spoofed_source,
            DropReason::RequestControl => &mut self.request_control,
            DropReason::Stale => &mut self.stale,
            DropReason::UnknownOrigin => &mut self.unknown_origin,
            DropReason::BadSignature => &mut self.bad_signature,
            DropReason::StaleLsa => &mut self.stale_lsa,
            DropReason::LsaRate => &mut self.lsa_rate,
            DropReason::BadE2e => &mut self.bad_e2e,
            DropReason::ReplayedHandshake => &mut self.replayed_handshake,
            DropReason::FlowsFull => &mut self.flows_full,
            DropReason::HostBacklog => &mut self.host_backlog,
            DropReason::BadCertificate => &mut self.bad_certificate,
        };
        *c += 1;
    }

    /// The counters in [`DROP_NAMES`] order.
    pub fn values(&self) -> [u64; 28] {
        [
            self.not_overlay,
            self.truncated,
            self.bad_version,
            self.bad_length,
            self.bad_mac,
            self.replayed,
            self.unknown_link,
            self.hop_limit,
            self.no_route,
            self.unsupported_protocol,
            self.bad_control,
            self.bad_segment,
            self.bad_cell,
            self.bad_source_route,
            self.oversized,
            self.reserved_source,
            self.spoofed_source,
            self.request_control,
            self.stale,
            self.unknown_origin,
            self.bad_signature,
            self.stale_lsa,
            self.lsa_rate,
            self.bad_e2e,
            self.replayed_handshake,
            self.flows_full,
            self.host_backlog,
            self.bad_certificate,
        ]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.values().iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_in_name_order() {
        let all = [
            DropReason::NotOverlay,
            DropReason::Truncated,
            DropReason::BadVersion,
            DropReason::BadLength,
            DropReason::BadMac,
            DropReason::Replayed,
            DropReason::UnknownLink,
            DropReason::HopLimit,
            DropReason::NoRoute,
            DropReason::UnsupportedProtocol,
            DropReason::BadControl,
            DropReason::BadSegment,
            DropReason::BadCell,
            DropReason::BadSourceRoute,
            DropReason::Oversized,
            DropReason::ReservedSource,
            DropReason::SpoofedSource,
            DropReason::RequestControl,
            DropReason::Stale,
            DropReason::UnknownOrigin,
            DropReason::BadSignature,
            DropReason::StaleLsa,
            DropReason::LsaRate,
            DropReason::BadE2e,
            DropReason::ReplayedHandshake,
            DropReason::FlowsFull,
            DropReason::HostBacklog,
            DropReason::BadCertificate,
        ];
        for (i, r) in all.iter().enumerate() {
            let mut c = DropCounters::default();
            c.count(*r);
            let v = c.values();
            assert_eq!(v[i], 1, "{r:?} counted as {}", DROP_NAMES[v.iter().position(|&x| x == 1).unwrap()]);
            assert_eq!(c.total(), 1);
        }
        assert_eq!(core::mem::size_of::<DropCounters>(), 8 * DROP_NAMES.len());
    }

    #[test]
    fn wire_errors_map_to_their_reasons() {
        let mut c = DropCounters::default();
        c.count(WireError::BadVersion(9));
        c.count(WireError::HopLimitExceeded);
        assert_eq!((c.bad_version, c.hop_limit, c.total()), (1, 1, 2));
    }
}
