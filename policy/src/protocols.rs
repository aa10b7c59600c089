//! What each routing protocol offers, for scoring.
//!
//! Levels run 0 (does not provide) to 3 (provides strongly); a requirement
//! is met at level 2 or more, a prohibition only at 0.

use guest_agent::routing::{Profile, PROFILES};

use crate::criteria::Property;

/// One routing protocol as policy sees it: the [`Profile`] its routing
/// module declares (`guest_agent::routing`), so what policy scores is what
/// the data path runs.
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
    /// Whether it can keep relays the app names out of its paths.
    pub avoids_relays: bool,
    /// One line on what it does.
    pub summary: &'static str,
}

impl ProtocolProfile {
    /// The level of `p`.
    pub fn level(&self, p: Property) -> u8 {
        let i = Property::ALL.iter().position(|q| *q == p).unwrap_or(0);
        self.levels[i]
    }

    const fn of(p: Profile) -> Self {
        Self {
            name: p.name,
            wire_id: p.wire.id(),
            levels: p.levels,
            min_hops: p.min_hops,
            avoids_relays: p.avoids_relays,
            summary: p.summary,
        }
    }
}

/// Every protocol, in tie-break order.
pub const PROTOCOLS: [ProtocolProfile; 5] = [
    ProtocolProfile::of(PROFILES[0]),
    ProtocolProfile::of(PROFILES[1]),
    ProtocolProfile::of(PROFILES[2]),
    ProtocolProfile::of(PROFILES[3]),
    ProtocolProfile::of(PROFILES[4]),
];

/// The profile called `name`.
pub fn by_name(name: &str) -> Option<&'static ProtocolProfile> {
    PROTOCOLS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_agent::wire::Protocol;

    #[test]
    fn levels_line_up_with_properties() {
        let onion = by_name("onion").unwrap();
        assert_eq!(onion.level(Property::Anonymity), 3);
        assert_eq!(onion.level(Property::Latency), 0);
        assert_eq!(by_name("shortest").unwrap().level(Property::Latency), 3);
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn wire_ids_match_the_overlay() {
        for p in PROTOCOLS {
            assert_eq!(u8::from(Protocol::from(p.wire_id)), p.wire_id);
            assert_eq!(format!("{:?}", Protocol::from(p.wire_id)).to_lowercase(), p.name);
        }
    }

    #[test]
    fn wire_ids_are_distinct() {
        for (i, a) in PROTOCOLS.iter().enumerate() {
            assert!(PROTOCOLS[i + 1..].iter().all(|b| b.wire_id != a.wire_id));
        }
    }
}
