//! `redundant`: every packet on two node-disjoint paths; the destination
//! delivers the first copy of each and counts the second.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{disjoint_paths, NodeId, Profile, Route, RouteContext, RoutingProtocol, Topology};
use crate::wire::Protocol;

/// The two paths per destination (built on first use).
#[derive(Debug, Clone, Default)]
pub struct Redundant {
    topo: Topology,
    me: NodeId,
    paths: BTreeMap<NodeId, Vec<Vec<NodeId>>>,
}

impl RoutingProtocol for Redundant {
    const PROFILE: Profile = Profile {
        name: "redundant",
        wire: Protocol::Redundant,
        levels: [2, 0, 0, 3, 2],
        min_hops: 1,
        avoids_relays: true,
        summary: "every packet on two node-disjoint paths",
    };

    fn compute(topo: &Topology, me: NodeId) -> Self {
        Self { topo: topo.clone(), me, paths: BTreeMap::new() }
    }

    fn route(&mut self, dst: NodeId, ctx: &mut RouteContext<'_>) -> Option<Route<'_>> {
        let (topo, me) = (&self.topo, self.me);
        let paths =
            self.paths.entry(dst).or_insert_with(|| disjoint_paths(&topo.without(ctx.avoid, [me, dst]), me, dst, 2));
        (!paths.is_empty()).then_some(Route::Copies(paths.as_slice()))
    }
}
