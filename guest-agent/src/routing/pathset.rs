//! The paths a source spreads one destination's packets over.
//!
//! `multipath` sends each packet down one of k node-disjoint paths, in
//! proportion to each path's bottleneck bandwidth, so a wide path carries
//! more than a narrow one. The choice is smooth weighted round robin (as
//! nginx balances upstreams): deterministic, and the paths interleave
//! rather than take turns in bursts, which keeps reordering at the
//! destination shallow.

use alloc::vec::Vec;

use super::{disjoint_paths, NodeId, Topology};

/// Disjoint paths to one destination and their weights.
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    paths: Vec<Vec<NodeId>>,
    weights: Vec<i64>,
    credit: Vec<i64>,
}

impl PathSet {
    /// Up to `k` node-disjoint paths from `src` to `dst` in `topo`.
    pub fn new(topo: &Topology, src: NodeId, dst: NodeId, k: usize) -> Self {
        let paths = disjoint_paths(topo, src, dst, k);
        let weights: Vec<i64> = paths.iter().map(|p| bottleneck(topo, p).max(1) as i64).collect();
        let credit = alloc::vec![0; paths.len()];
        Self { paths, weights, credit }
    }

    /// Whether there is no path at all.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// All paths, fastest first.
    pub fn paths(&self) -> &[Vec<NodeId>] {
        &self.paths
    }

    /// The path for the next packet (`None` if there is none).
    pub fn pick(&mut self) -> Option<&[NodeId]> {
        let total: i64 = self.weights.iter().sum();
        for (c, w) in self.credit.iter_mut().zip(&self.weights) {
            *c += w;
        }
        let (best, _) = self.credit.iter().enumerate().max_by_key(|(i, c)| (**c, -(*i as i64)))?;
        self.credit[best] -= total;
        Some(&self.paths[best])
    }
}

/// The smallest link bandwidth along `path`, Mbit/s.
pub fn bottleneck(topo: &Topology, path: &[NodeId]) -> u32 {
    path.windows(2).map(|w| topo.link(w[0], w[1]).map_or(0, |l| l.bandwidth_mbps)).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn mesh() -> Topology {
        crate::routing::topology::test_mesh(1500)
    }

    #[test]
    fn packets_follow_the_bottleneck_bandwidths() {
        let mut s = PathSet::new(&mesh(), 1, 3, 2);
        assert_eq!(s.paths(), &[vec![1, 2, 3], vec![1, 4, 3]]);
        let mut fast = 0;
        for _ in 0..400 {
            if s.pick().unwrap() == [1, 2, 3] {
                fast += 1;
            }
        }
        // 500 : 1500.
        assert_eq!(fast, 100);
    }

    #[test]
    fn paths_interleave_rather_than_burst() {
        let mut s = PathSet::new(&mesh(), 1, 3, 2);
        let picks: Vec<NodeId> = (0..8).map(|_| s.pick().unwrap()[1]).collect();
        // 1 in 4 goes the narrow way, never two in a row either way.
        assert_eq!(picks.iter().filter(|&&n| n == 2).count(), 2, "{picks:?}");
        assert!(picks.windows(4).all(|w| w.contains(&4)), "{picks:?}");
    }

    #[test]
    fn no_path_is_none() {
        let mut s = PathSet::new(&mesh(), 1, 9, 2);
        assert!(s.is_empty());
        assert_eq!(s.pick(), None);
    }
}
