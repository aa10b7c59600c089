//! `shortest`: link-state, hop by hop, lowest total latency.
//!
//! Each node runs Dijkstra from itself over the topology and keeps, per
//! destination, the first hop of a lowest-latency path. A packet's route is
//! then the sequence of every relay's own choice; all nodes share the same
//! topology, so the choices agree. Ties break towards the lower node id, so
//! every node computes the same paths.

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;
use core::cmp::Reverse;

use super::topology::{walk_back, NodeId, Topology};
use super::{Profile, Route, RouteContext, RoutingProtocol};
use crate::wire::Protocol;

/// Next hops of one node.
#[derive(Debug, Clone, Default)]
pub struct Shortest {
    me: NodeId,
    /// destination -> (total latency µs, first hop, previous node)
    table: BTreeMap<NodeId, (u64, NodeId, NodeId)>,
}

impl Shortest {
    /// Computes the table of node `me`.
    pub fn compute(topo: &Topology, me: NodeId) -> Self {
        let mut table: BTreeMap<NodeId, (u64, NodeId, NodeId)> = BTreeMap::new();
        let mut heap = BinaryHeap::new();
        // (distance, node, first hop, previous)
        heap.push(Reverse((0u64, me, me, me)));
        while let Some(Reverse((d, n, first, prev))) = heap.pop() {
            if n == me && d > 0 || table.contains_key(&n) {
                continue;
            }
            table.insert(n, (d, first, prev));
            for (m, link) in topo.neighbours(n) {
                if table.contains_key(&m) {
                    continue;
                }
                let first_hop = if n == me { m } else { first };
                heap.push(Reverse((d + link.latency_us as u64, m, first_hop, n)));
            }
        }
        table.remove(&me);
        Self { me, table }
    }

    /// Total latency to `dst` in microseconds, if reachable.
    pub fn latency_to(&self, dst: NodeId) -> Option<u64> {
        self.table.get(&dst).map(|e| e.0)
    }

    /// The whole path from this node to `dst` (both included).
    pub fn path(&self, dst: NodeId) -> Option<Vec<NodeId>> {
        walk_back(self.me, dst, self.table.len(), |n| self.table.get(&n).map(|e| e.2))
    }
}

impl Shortest {
    /// The next node towards `dst`, or `None` if there is no route. A
    /// packet for the node itself is delivered, never routed.
    pub fn next_hop(&self, dst: NodeId) -> Option<NodeId> {
        self.table.get(&dst).map(|e| e.1)
    }
}

impl RoutingProtocol for Shortest {
    const PROFILE: Profile = Profile {
        name: "shortest",
        wire: Protocol::Shortest,
        levels: [3, 1, 0, 1, 2],
        min_hops: 1,
        avoids_relays: false,
        summary: "link-state, hop by hop, lowest total latency",
    };

    fn compute(topo: &Topology, me: NodeId) -> Self {
        Shortest::compute(topo, me)
    }

    fn route(&mut self, dst: NodeId, _: &mut RouteContext<'_>) -> Option<Route<'_>> {
        self.next_hop(dst).map(Route::NextHop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::topology::Link;
    use super::*;
    use alloc::vec;

    fn l(a: NodeId, b: NodeId, latency_us: u32) -> Link {
        Link { a, b, latency_us, bandwidth_mbps: 1000 }
    }

    /// A and C joined through two disjoint relay pairs:
    /// 1 - 2 - 3 - 6 (fast) and 1 - 4 - 5 - 6 (slow).
    fn mesh() -> Topology {
        Topology::new(vec![l(1, 2, 100), l(2, 3, 100), l(3, 6, 100), l(1, 4, 150), l(4, 5, 150), l(5, 6, 150)])
    }

    #[test]
    fn line_routes_through_the_middle() {
        let t = Topology::new(vec![l(1, 2, 10), l(2, 3, 10)]);
        let a = Shortest::compute(&t, 1);
        assert_eq!(a.next_hop(3), Some(2));
        assert_eq!(a.path(3), Some(vec![1, 2, 3]));
        assert_eq!(Shortest::compute(&t, 2).next_hop(3), Some(3));
        assert_eq!(a.latency_to(3), Some(20));
    }

    #[test]
    fn picks_lowest_latency_path() {
        let s = Shortest::compute(&mesh(), 1);
        assert_eq!(s.path(6), Some(vec![1, 2, 3, 6]));
        assert_eq!(s.latency_to(6), Some(300));
    }

    #[test]
    fn moves_off_a_link_whose_delay_grows() {
        let mut t = mesh();
        t.set_latency(2, 3, 100_000);
        let s = Shortest::compute(&t, 1);
        assert_eq!(s.path(6), Some(vec![1, 4, 5, 6]));
        // Every relay agrees hop by hop.
        assert_eq!(Shortest::compute(&t, 4).next_hop(6), Some(5));
    }

    #[test]
    fn unreachable_and_self_have_no_route() {
        let t = Topology::new(vec![l(1, 2, 10), l(3, 4, 10)]);
        let s = Shortest::compute(&t, 1);
        assert_eq!(s.next_hop(3), None);
        assert_eq!(s.next_hop(1), None);
        assert_eq!(s.path(4), None);
    }

    #[test]
    fn ties_break_towards_the_lower_node_id() {
        let t = Topology::new(vec![l(1, 3, 10), l(3, 9, 10), l(1, 2, 10), l(2, 9, 10)]);
        assert_eq!(Shortest::compute(&t, 1).next_hop(9), Some(2));
    }
}
