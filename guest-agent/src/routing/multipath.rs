//! `multipath`: a destination's packets spread over node-disjoint paths,
//! each path's share following its bottleneck bandwidth ([`PathSet`]); the
//! destination's transport puts them back in order.

use alloc::collections::BTreeMap;

use super::{NodeId, PathSet, Profile, Route, RouteContext, RoutingProtocol, Topology};
use crate::wire::Protocol;

/// Paths per destination it spreads over.
pub const PATHS: usize = 2;

/// Path sets of one source, per destination (built on first use).
#[derive(Debug, Clone, Default)]
pub struct Multipath {
    topo: Topology,
    me: NodeId,
    sets: BTreeMap<NodeId, PathSet>,
}

impl RoutingProtocol for Multipath {
    const PROFILE: Profile = Profile {
        name: "multipath",
        wire: Protocol::Multipath,
        levels: [1, 3, 0, 2, 2],
        min_hops: 1,
        avoids_relays: true,
        summary: "packets spread over node-disjoint paths, weighted by bandwidth",
    };

    fn compute(topo: &Topology, me: NodeId) -> Self {
        Self { topo: topo.clone(), me, sets: BTreeMap::new() }
    }

    fn route(&mut self, dst: NodeId, ctx: &mut RouteContext<'_>) -> Option<Route<'_>> {
        let (topo, me) = (&self.topo, self.me);
        let set =
            self.sets.entry(dst).or_insert_with(|| PathSet::new(&topo.without(ctx.avoid, [me, dst]), me, dst, PATHS));
        set.pick().map(Route::Path)
    }
}
