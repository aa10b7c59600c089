//! Routing protocols: how a node picks the next node for a packet.
//!
//! Every protocol sees the same [`Topology`] (nodes, links, their latency
//! and bandwidth) and answers one question per packet at each node:
//! [`shortest`] (lowest latency) and [`widest`] (largest bottleneck
//! bandwidth) so far; onion, multipath and redundant follow behind the same
//! [`Router`] trait.

pub mod shortest;
pub mod topology;
pub mod widest;

pub use shortest::Shortest;
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
