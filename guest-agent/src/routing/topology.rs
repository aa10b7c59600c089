//! The network as routing sees it.

use alloc::vec::Vec;

/// A node's id in the overlay.
pub type NodeId = u16;

/// An undirected link between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// One end.
    pub a: NodeId,
    /// The other end.
    pub b: NodeId,
    /// One-way latency in microseconds (the `shortest` metric).
    pub latency_us: u32,
    /// Capacity in Mbit/s (the `widest` metric).
    pub bandwidth_mbps: u32,
}

/// Nodes and links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    links: Vec<Link>,
}

impl Topology {
    /// A topology of `links`; self-links are dropped.
    pub fn new(links: Vec<Link>) -> Self {
        Self { links: links.into_iter().filter(|l| l.a != l.b).collect() }
    }

    /// All links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Neighbours of `n` with the link to each.
    pub fn neighbours(&self, n: NodeId) -> impl Iterator<Item = (NodeId, &Link)> {
        self.links.iter().filter_map(move |l| {
            if l.a == n {
                Some((l.b, l))
            } else if l.b == n {
                Some((l.a, l))
            } else {
                None
            }
        })
    }

    /// The link between `a` and `b`, either way round.
    pub fn link(&self, a: NodeId, b: NodeId) -> Option<&Link> {
        self.links.iter().find(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a))
    }

    /// The topology without the links of the `avoid` nodes, except those
    /// of `keep` (a source and its destination are never "avoided").
    pub fn without(&self, avoid: &[NodeId], keep: [NodeId; 2]) -> Topology {
        let out = |n: NodeId| avoid.contains(&n) && !keep.contains(&n);
        Topology { links: self.links.iter().filter(|l| !out(l.a) && !out(l.b)).copied().collect() }
    }

    /// Every node named by a link, sorted, without duplicates.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.links.iter().flat_map(|l| [l.a, l.b]).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Changes the latency of the link between `a` and `b`; false if none.
    pub fn set_latency(&mut self, a: NodeId, b: NodeId, latency_us: u32) -> bool {
        let mut found = false;
        for l in self.links.iter_mut().filter(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a)) {
            l.latency_us = latency_us;
            found = true;
        }
        found
    }
}

/// The path from `me` to `dst` in a shortest-path-style tree, walking
/// `prev` (each node's predecessor) back from `dst`; `None` if `dst` is not
/// in the tree or the walk does not end within `limit` steps.
pub fn walk_back(
    me: NodeId,
    dst: NodeId,
    limit: usize,
    prev: impl Fn(NodeId) -> Option<NodeId>,
) -> Option<Vec<NodeId>> {
    let mut path = Vec::new();
    let mut n = dst;
    while n != me {
        path.push(n);
        n = prev(n)?;
        if path.len() > limit {
            return None;
        }
    }
    path.push(me);
    path.reverse();
    Some(path)
}

/// A four-node test network: 1 - 2 - 3 (100 µs links, 500 Mbit/s) and
/// 1 - 4 - 3 (300 µs, 2000 and `slow_wide` Mbit/s).
#[cfg(test)]
pub(crate) fn test_mesh(slow_wide: u32) -> Topology {
    Topology::new(alloc::vec![
        Link { a: 1, b: 2, latency_us: 100, bandwidth_mbps: 500 },
        Link { a: 2, b: 3, latency_us: 100, bandwidth_mbps: 500 },
        Link { a: 1, b: 4, latency_us: 300, bandwidth_mbps: 2000 },
        Link { a: 4, b: 3, latency_us: 300, bandwidth_mbps: slow_wide },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn neighbours_and_nodes() {
        let t = Topology::new(vec![
            Link { a: 1, b: 2, latency_us: 10, bandwidth_mbps: 100 },
            Link { a: 2, b: 3, latency_us: 10, bandwidth_mbps: 100 },
            Link { a: 4, b: 4, latency_us: 1, bandwidth_mbps: 1 },
        ]);
        assert_eq!(t.nodes(), vec![1, 2, 3]);
        let n: Vec<NodeId> = t.neighbours(2).map(|(n, _)| n).collect();
        assert_eq!(n, vec![1, 3]);
    }

    #[test]
    fn avoided_nodes_lose_their_links_but_the_ends_stay() {
        let t = Topology::new(vec![
            Link { a: 1, b: 2, latency_us: 10, bandwidth_mbps: 100 },
            Link { a: 2, b: 3, latency_us: 10, bandwidth_mbps: 100 },
            Link { a: 1, b: 3, latency_us: 10, bandwidth_mbps: 100 },
        ]);
        assert_eq!(t.without(&[2], [1, 3]).links().len(), 1);
        assert_eq!(t.without(&[1, 2], [1, 3]).links().len(), 1, "the source is never avoided");
    }

    #[test]
    fn latency_updates_either_direction() {
        let mut t = Topology::new(vec![Link { a: 1, b: 2, latency_us: 10, bandwidth_mbps: 100 }]);
        assert!(t.set_latency(2, 1, 500));
        assert_eq!(t.links()[0].latency_us, 500);
        assert!(!t.set_latency(1, 3, 5));
    }
}
