//! Routing protocols: how a packet leaves a node.
//!
//! Every protocol sees the same [`Topology`] (nodes, links, their latency
//! and bandwidth, as configured and as measured: [`linkstate`]) and is one
//! module behind one trait, [`RoutingProtocol`]: its [`Profile`] (what it
//! offers, which policy scores) and its decision for a packet this node
//! sends to a destination ([`Route`]).
//!
//! - [`shortest`] (lowest latency) and [`widest`] (largest bottleneck
//!   bandwidth) decide hop by hop: every relay asks them again.
//! - [`multipath`] and [`redundant`] choose whole node-disjoint paths
//!   ([`disjoint`]) at the source and carry them in the packet
//!   ([`source`]); relays follow.
//! - [`onion`] chooses the relays of a circuit; the circuit itself (keys,
//!   cells) is [`crate::onion`].

pub mod disjoint;
pub mod linkstate;
pub mod lsa_sign;
pub mod member;
pub mod multipath;
pub mod onion;
pub mod pathset;
pub mod redundant;
pub mod reply;
pub mod shortest;
pub mod source;
pub mod topology;
pub mod widest;

use alloc::vec::Vec;

pub use disjoint::disjoint_paths;
pub use multipath::Multipath;
pub use onion::{onion_path, OnionPaths};
pub use pathset::PathSet;
pub use redundant::Redundant;
pub use reply::ReplyPaths;
pub use shortest::Shortest;
pub use source::{RouteError, SourceRoute};
pub use topology::{Link, NodeId, Topology};
pub use widest::Widest;

use crate::onion::Drbg;
use crate::wire::Protocol;

/// A routing protocol as applications choose it: what it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Its name, as users write it.
    pub name: &'static str,
    /// Its id in the overlay header.
    pub wire: Protocol,
    /// How well it serves latency, bandwidth, anonymity, reliability and
    /// encryption, each 0 (not at all) to 3 (strongly).
    pub levels: [u8; 5],
    /// Fewest hops its paths have.
    pub min_hops: u8,
    /// Whether the source chooses the whole path, and so can keep relays
    /// the application names out of it (hop-by-hop protocols cannot).
    pub avoids_relays: bool,
    /// One line on what it does.
    pub summary: &'static str,
}

/// How a packet this node sends leaves it.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// To this neighbour; each relay decides again.
    NextHop(NodeId),
    /// Along this whole path (origin first), carried in the packet.
    Path(&'a [NodeId]),
    /// One copy along each of these paths.
    Copies(&'a [Vec<NodeId>]),
    /// Through an onion circuit over this path (origin first).
    Circuit(Vec<NodeId>),
}

/// What a decision may draw on besides the topology.
pub struct RouteContext<'a> {
    /// Nodes the application asked not to relay through.
    pub avoid: &'a [NodeId],
    /// Randomness (onion relays are drawn at random).
    pub rng: &'a mut Drbg,
}

/// One routing protocol.
pub trait RoutingProtocol {
    /// What it is and offers.
    const PROFILE: Profile;
    /// Its state at node `me` for `topo` (recomputed when `topo` changes).
    fn compute(topo: &Topology, me: NodeId) -> Self
    where
        Self: Sized;
    /// How a packet for `dst` leaves this node; `None`: no route.
    fn route(&mut self, dst: NodeId, ctx: &mut RouteContext<'_>) -> Option<Route<'_>>;
}

/// Every protocol, in the order policy breaks ties.
pub const PROFILES: [Profile; 5] =
    [Shortest::PROFILE, Widest::PROFILE, OnionPaths::PROFILE, Multipath::PROFILE, Redundant::PROFILE];

/// Every protocol's state at one node.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// `shortest`.
    pub shortest: Shortest,
    /// `widest`.
    pub widest: Widest,
    /// `multipath`.
    pub multipath: Multipath,
    /// `redundant`.
    pub redundant: Redundant,
    /// `onion`.
    pub onion: OnionPaths,
}

impl Routes {
    /// All protocols at `me` over `topo`.
    pub fn compute(topo: &Topology, me: NodeId) -> Self {
        Self {
            shortest: Shortest::compute(topo, me),
            widest: Widest::compute(topo, me),
            multipath: Multipath::compute(topo, me),
            redundant: Redundant::compute(topo, me),
            onion: OnionPaths::compute(topo, me),
        }
    }

    /// How a packet of `protocol` for `dst` leaves this node; `None` if
    /// the protocol has no route or this code does not know it.
    pub fn route(&mut self, protocol: Protocol, dst: NodeId, ctx: &mut RouteContext<'_>) -> Option<Route<'_>> {
        match protocol {
            Protocol::Shortest => self.shortest.route(dst, ctx),
            Protocol::Widest => self.widest.route(dst, ctx),
            Protocol::Multipath => self.multipath.route(dst, ctx),
            Protocol::Redundant => self.redundant.route(dst, ctx),
            Protocol::Onion => self.onion.route(dst, ctx),
            Protocol::Unknown(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_distinct_names_and_wire_ids() {
        for (i, a) in PROFILES.iter().enumerate() {
            for b in &PROFILES[i + 1..] {
                assert!(a.name != b.name && a.wire != b.wire, "{a:?} / {b:?}");
            }
            assert_eq!(Protocol::from(u8::from(a.wire)), a.wire);
            assert!(a.levels.iter().all(|l| *l <= 3));
        }
    }
}
