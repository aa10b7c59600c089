//! Node-disjoint paths, for `multipath` and `redundant`.
//!
//! Greedy: the lowest-latency path, then the lowest-latency path avoiding
//! the intermediate nodes already used, and so on. Not always the maximum
//! number of disjoint paths a max-flow would find, but each path is as
//! fast as the ones before allow, and the topologies pathvm runs on are
//! small.

use alloc::vec::Vec;

use super::shortest::Shortest;
use super::topology::{Link, NodeId, Topology};

/// Up to `k` node-disjoint paths from `src` to `dst`, fastest first.
pub fn disjoint_paths(topo: &Topology, src: NodeId, dst: NodeId, k: usize) -> Vec<Vec<NodeId>> {
    let mut used: Vec<NodeId> = Vec::new();
    let mut paths = Vec::new();
    while paths.len() < k {
        let links: Vec<Link> =
            topo.links().iter().filter(|l| !used.contains(&l.a) && !used.contains(&l.b)).copied().collect();
        let Some(path) = Shortest::compute(&Topology::new(links), src).path(dst) else { break };
        if path.len() == 2 && paths.iter().any(|p: &Vec<NodeId>| p.len() == 2) {
            break; // the direct link can only be used once
        }
        used.extend(path[1..path.len() - 1].iter().copied());
        paths.push(path);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn l(a: NodeId, b: NodeId, latency_us: u32) -> Link {
        Link { a, b, latency_us, bandwidth_mbps: 100 }
    }

    #[test]
    fn mesh6_has_two_disjoint_paths_fastest_first() {
        let t = Topology::new(vec![
            l(1, 11, 100),
            l(11, 12, 100),
            l(12, 3, 100),
            l(1, 13, 300),
            l(13, 14, 300),
            l(14, 3, 300),
            l(12, 13, 1000),
        ]);
        assert_eq!(disjoint_paths(&t, 1, 3, 3), vec![vec![1, 11, 12, 3], vec![1, 13, 14, 3]]);
    }

    #[test]
    fn a_line_has_one() {
        let t = Topology::new(vec![l(1, 2, 1), l(2, 3, 1)]);
        assert_eq!(disjoint_paths(&t, 1, 3, 2), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn unreachable_has_none() {
        let t = Topology::new(vec![l(1, 2, 1), l(3, 4, 1)]);
        assert!(disjoint_paths(&t, 1, 4, 2).is_empty());
    }
}
