//! `widest`: the path with the largest bottleneck bandwidth.
//!
//! A modified Dijkstra: a path's width is its narrowest link, and each node
//! keeps, per destination, the first hop of a widest path; among equally
//! wide paths the one with lower total latency wins, then the lower node
//! id, so every node computes the same paths and their hop-by-hop choices
//! agree.

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;
use core::cmp::Reverse;

use super::topology::{walk_back, NodeId, Topology};
use super::{Profile, Route, RouteContext, RoutingProtocol};
use crate::wire::Protocol;

/// Next hops of one node.
#[derive(Debug, Clone, Default)]
pub struct Widest {
    me: NodeId,
    /// destination -> (bottleneck Mbit/s, latency µs, first hop, previous)
    table: BTreeMap<NodeId, (u32, u64, NodeId, NodeId)>,
}

impl Widest {
    /// Computes the table of node `me`.
    pub fn compute(topo: &Topology, me: NodeId) -> Self {
        let mut table = BTreeMap::new();
        let mut heap = BinaryHeap::new();
        // Max-heap on width, then min latency, then min node id.
        heap.push((u32::MAX, Reverse(0u64), Reverse(me), me, me));
        while let Some((width, Reverse(lat), Reverse(n), first, prev)) = heap.pop() {
            if table.contains_key(&n) {
                continue;
            }
            table.insert(n, (width, lat, first, prev));
            for (m, link) in topo.neighbours(n) {
                if table.contains_key(&m) {
                    continue;
                }
                let first_hop = if n == me { m } else { first };
                heap.push((
                    width.min(link.bandwidth_mbps),
                    Reverse(lat + link.latency_us as u64),
                    Reverse(m),
                    first_hop,
                    n,
                ));
            }
        }
        table.remove(&me);
        Self { me, table }
    }

    /// The bottleneck bandwidth to `dst`, Mbit/s.
    pub fn width_to(&self, dst: NodeId) -> Option<u32> {
        self.table.get(&dst).map(|e| e.0)
    }

    /// The whole path from this node to `dst`.
    pub fn path(&self, dst: NodeId) -> Option<Vec<NodeId>> {
        walk_back(self.me, dst, self.table.len(), |n| self.table.get(&n).map(|e| e.3))
    }
}

impl Widest {
    /// The next node towards `dst`, or `None` if there is no route. A
    /// packet for the node itself is delivered, never routed.
    pub fn next_hop(&self, dst: NodeId) -> Option<NodeId> {
        self.table.get(&dst).map(|e| e.2)
    }
}

impl RoutingProtocol for Widest {
    const PROFILE: Profile = Profile {
        name: "widest",
        wire: Protocol::Widest,
        levels: [1, 3, 0, 1, 2],
        min_hops: 1,
        avoids_relays: false,
        summary: "the path with the largest bottleneck bandwidth",
    };

    fn compute(topo: &Topology, me: NodeId) -> Self {
        Widest::compute(topo, me)
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

    fn l(a: NodeId, b: NodeId, latency_us: u32, bandwidth_mbps: u32) -> Link {
        Link { a, b, latency_us, bandwidth_mbps }
    }

    /// mesh6's shape: 1-11-12-3 fast but narrow, 1-13-14-3 slow but wide.
    fn mesh() -> Topology {
        Topology::new(vec![
            l(1, 11, 100, 500),
            l(11, 12, 100, 500),
            l(12, 3, 100, 500),
            l(1, 13, 300, 2000),
            l(13, 14, 300, 2000),
            l(14, 3, 300, 2000),
            l(12, 13, 1000, 100),
        ])
    }

    #[test]
    fn picks_the_widest_path_not_the_fastest() {
        let w = Widest::compute(&mesh(), 1);
        assert_eq!(w.path(3), Some(vec![1, 13, 14, 3]));
        assert_eq!(w.width_to(3), Some(2000));
        // Relays agree hop by hop.
        assert_eq!(Widest::compute(&mesh(), 13).next_hop(3), Some(14));
    }

    #[test]
    fn equal_width_prefers_lower_latency() {
        let t = Topology::new(vec![l(1, 2, 500, 100), l(2, 9, 500, 100), l(1, 3, 10, 100), l(3, 9, 10, 100)]);
        assert_eq!(Widest::compute(&t, 1).path(9), Some(vec![1, 3, 9]));
    }

    #[test]
    fn a_narrow_link_anywhere_narrows_the_path() {
        let t = Topology::new(vec![l(1, 2, 1, 1000), l(2, 3, 1, 10), l(1, 4, 5, 100), l(4, 3, 5, 100)]);
        let w = Widest::compute(&t, 1);
        assert_eq!(w.next_hop(3), Some(4));
        assert_eq!(w.width_to(3), Some(100));
    }

    #[test]
    fn unreachable_has_no_route() {
        let t = Topology::new(vec![l(1, 2, 1, 1), l(3, 4, 1, 1)]);
        assert_eq!(Widest::compute(&t, 1).next_hop(4), None);
    }
}
