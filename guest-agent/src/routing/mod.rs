//! Routing protocols: how a node picks the next node for a packet.
//!
//! Every protocol sees the same [`Topology`] (nodes, links, their latency
//! and bandwidth) and answers one question per packet at each node:
//! [`shortest`] (lowest latency) and [`widest`] (largest bottleneck
//! bandwidth) decide hop by hop; `multipath` and `redundant` choose whole
//! node-disjoint paths ([`disjoint`]) at the source and carry them in the
//! packet ([`source`]); onion follows. Link metrics are measured and
//! flooded ([`linkstate`]), so every protocol runs on the network as it is.

pub mod disjoint;
pub mod linkstate;
pub mod pathset;
pub mod shortest;
pub mod source;
pub mod topology;
pub mod widest;

pub use disjoint::disjoint_paths;
pub use pathset::PathSet;
pub use shortest::Shortest;
pub use source::{RouteError, SourceRoute};
pub use topology::{Link, NodeId, Topology};
pub use widest::Widest;

use crate::wire::Protocol;

/// A routing protocol's per-node decision.
pub trait Router {
    /// The protocol id it serves.
    fn protocol(&self) -> Protocol;
    /// The next node towards `dst`, or `None` if there is no route. A
    /// packet for the node itself is delivered, never routed.
    fn next_hop(&self, dst: NodeId) -> Option<NodeId>;
}
