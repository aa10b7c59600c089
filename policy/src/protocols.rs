//! What each routing protocol offers, for scoring.
//!
//! Levels run 0 (does not provide) to 3 (provides strongly); a requirement
//! is met at level 2 or more, a prohibition only at 0.

use crate::criteria::Property;

/// One routing protocol as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolProfile {
    /// Its name.
    pub name: &'static str,
    /// Its overlay protocol id (`guest_agent::wire::Protocol`).
    pub wire_id: u8,
    /// Levels of latency, bandwidth, anonymity, reliability, encryption.
    pub levels: [u8; 5],
    /// Fewest hops its paths have (onion needs three relays).
    pub min_hops: u8,
    /// Whether pathvm can run it yet.
    pub implemented: bool,
    /// One line on what it does.
    pub summary: &'static str,
}

impl ProtocolProfile {
    /// The level of `p`.
    pub fn level(&self, p: Property) -> u8 {
        let i = Property::ALL.iter().position(|q| *q == p).unwrap_or(0);
        self.levels[i]
    }
}

/// Every protocol, in tie-break order.
pub const PROTOCOLS: [ProtocolProfile; 5] = [
    ProtocolProfile {
        name: "shortest",
        wire_id: 1,
        levels: [3, 1, 0, 1, 0],
        min_hops: 1,
        implemented: true,
        summary: "link-state, hop by hop, lowest total latency",
    },
    ProtocolProfile {
        name: "widest",
        wire_id: 2,
        levels: [1, 3, 0, 1, 0],
        min_hops: 1,
        implemented: true,
        summary: "the path with the largest bottleneck bandwidth",
    },
    ProtocolProfile {
        name: "onion",
        wire_id: 3,
        levels: [0, 1, 3, 1, 3],
        min_hops: 4,
        implemented: true,
        summary: "source-chosen path of >= 3 relays, one encryption layer per hop",
    },
    ProtocolProfile {
        name: "multipath",
        wire_id: 4,
        levels: [1, 3, 0, 2, 0],
        min_hops: 1,
        implemented: true,
        summary: "packets spread over node-disjoint paths",
    },
    ProtocolProfile {
        name: "redundant",
        wire_id: 5,
        levels: [2, 0, 0, 3, 0],
        min_hops: 1,
        implemented: true,
        summary: "every packet on two node-disjoint paths",
    },
];

/// The profile called `name`.
pub fn by_name(name: &str) -> Option<&'static ProtocolProfile> {
    PROTOCOLS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_line_up_with_properties() {
        let onion = by_name("onion").unwrap();
        assert_eq!(onion.level(Property::Anonymity), 3);
        assert_eq!(onion.level(Property::Latency), 0);
        assert_eq!(by_name("shortest").unwrap().level(Property::Latency), 3);
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn wire_ids_are_distinct() {
        for (i, a) in PROTOCOLS.iter().enumerate() {
            assert!(PROTOCOLS[i + 1..].iter().all(|b| b.wire_id != a.wire_id));
        }
    }
}
