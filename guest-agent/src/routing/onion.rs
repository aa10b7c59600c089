//! `onion`: which relays a circuit goes through. The source draws a
//! random path of at least [`MIN_RELAYS`] relays, none the application
//! asked to avoid; the circuit over it (one key per hop, fixed-size cells)
//! is [`crate::onion`].

use alloc::vec::Vec;

use super::{NodeId, Profile, Route, RouteContext, RoutingProtocol, Topology};
use crate::onion::{Drbg, MAX_HOPS};
use crate::wire::Protocol;

/// Relays an onion circuit has at least.
pub const MIN_RELAYS: usize = 3;

/// Circuit paths of one source.
#[derive(Debug, Clone, Default)]
pub struct OnionPaths {
    topo: Topology,
    me: NodeId,
}

impl RoutingProtocol for OnionPaths {
    const PROFILE: Profile = Profile {
        name: "onion",
        wire: Protocol::Onion,
        levels: [0, 1, 3, 1, 3],
        min_hops: MIN_RELAYS as u8 + 1,
        avoids_relays: true,
        summary: "source-chosen path of >= 3 relays, one encryption layer per hop",
    };

    fn compute(topo: &Topology, me: NodeId) -> Self {
        Self { topo: topo.clone(), me }
    }

    fn route(&mut self, dst: NodeId, ctx: &mut RouteContext<'_>) -> Option<Route<'_>> {
        onion_path(&self.topo, self.me, dst, MIN_RELAYS, ctx.avoid, ctx.rng).map(Route::Circuit)
    }
}

/// Paths considered before one is drawn.
const MAX_CANDIDATES: usize = 256;

/// A random simple path from `src` to `dst` with at least `min_relays`
/// nodes in between, none of them in `avoid`, at most [`MAX_HOPS`] hops;
/// `None` if the topology has no such path. Each hop is a link, so each
/// relay is a neighbour of the one before it.
pub fn onion_path(
    topo: &Topology,
    src: NodeId,
    dst: NodeId,
    min_relays: usize,
    avoid: &[NodeId],
    rng: &mut Drbg,
) -> Option<Vec<NodeId>> {
    let mut found: Vec<Vec<NodeId>> = Vec::new();
    let mut path = alloc::vec![src];
    walk(topo, dst, min_relays, avoid, &mut path, &mut found);
    if found.is_empty() {
        return None;
    }
    let i = rng.u32() as usize % found.len();
    Some(found.swap_remove(i))
}

fn walk(
    topo: &Topology,
    dst: NodeId,
    min_relays: usize,
    avoid: &[NodeId],
    path: &mut Vec<NodeId>,
    found: &mut Vec<Vec<NodeId>>,
) {
    if found.len() >= MAX_CANDIDATES || path.len() > MAX_HOPS {
        return;
    }
    let here = path[path.len() - 1];
    let next: Vec<NodeId> = topo.neighbours(here).map(|(n, _)| n).collect();
    for n in next {
        if path.contains(&n) {
            continue;
        }
        if n == dst {
            if path.len() > min_relays {
                let mut p = path.clone();
                p.push(n);
                found.push(p);
            }
            continue;
        }
        if avoid.contains(&n) {
            continue;
        }
        path.push(n);
        walk(topo, dst, min_relays, avoid, path, found);
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Link;
    use alloc::vec;

    fn mesh6() -> Topology {
        let l = |a, b| Link { a, b, latency_us: 100, bandwidth_mbps: 100 };
        Topology::new(vec![l(1, 11), l(11, 12), l(12, 3), l(1, 13), l(13, 14), l(14, 3), l(12, 13)])
    }

    #[test]
    fn three_relays_on_mesh6_means_the_long_way_round() {
        let mut rng = Drbg::new([1; 32]);
        assert_eq!(onion_path(&mesh6(), 1, 3, 3, &[], &mut rng), Some(vec![1, 11, 12, 13, 14, 3]));
    }

    #[test]
    fn fewer_relays_give_a_choice_and_avoided_nodes_are_never_used() {
        let mut rng = Drbg::new([2; 32]);
        let mut seen = vec![];
        for _ in 0..50 {
            let p = onion_path(&mesh6(), 1, 3, 2, &[14], &mut rng).unwrap();
            assert!(!p.contains(&14) && p.len() >= 4, "{p:?}");
            seen.push(p);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() >= 2, "always the same path: {seen:?}");
        assert_eq!(onion_path(&mesh6(), 1, 3, 3, &[12], &mut rng), None);
    }
}
