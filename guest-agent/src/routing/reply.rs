//! The paths a destination answers a source-routed stream on.
//!
//! With `multipath` and `redundant` the source picks whole paths, and so
//! can keep relays the application avoids out of them and move off a dead
//! one. The destination answers along the reverse of the paths the
//! source's packets actually took (as DSR replies on the route it
//! learned), so the answer avoids what the source avoided and follows the
//! source's failover; a path not seen for [`REPLY_PATH_TTL_US`], or with a
//! link the destination knows is down, is dropped.

use alloc::vec::Vec;

use super::{NodeId, SourceRoute, Topology};

/// A reply path unused by the source for this long is forgotten.
pub const REPLY_PATH_TTL_US: u64 = 1_000_000;
/// Most reply paths kept per stream.
pub const MAX_REPLY_PATHS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// This node first, the source last.
    path: Vec<NodeId>,
    seen: u64,
    /// Packets that came this way (the source's share for the path).
    hits: u32,
    credit: i64,
}

/// Reply paths of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyPaths {
    entries: Vec<Entry>,
}

impl ReplyPaths {
    /// Notes that a packet of the stream came along `route` (which ends
    /// here) at `now`.
    pub fn learn(&mut self, route: &SourceRoute, now: u64) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.path.len() == route.path.len() && e.path.iter().eq(route.path.iter().rev()))
        {
            e.seen = now;
            e.hits = e.hits.saturating_add(1);
            if e.hits > 1000 {
                // Keep the proportions, forget the distant past.
                self.entries.iter_mut().for_each(|e| e.hits = e.hits / 2 + 1);
            }
            return;
        }
        if self.entries.len() >= MAX_REPLY_PATHS {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.seen).map(|(i, _)| i).unwrap_or(0);
            self.entries.remove(oldest);
        }
        self.entries.push(Entry { path: route.path.iter().rev().copied().collect(), seen: now, hits: 1, credit: 0 });
    }

    /// Drops paths the source stopped using and paths through links
    /// `topo` no longer has.
    pub fn prune(&mut self, now: u64, topo: &Topology) {
        self.entries.retain(|e| {
            now.saturating_sub(e.seen) <= REPLY_PATH_TTL_US
                && e.path.windows(2).all(|w| topo.link(w[0], w[1]).is_some())
        });
    }

    /// Whether there is no path to answer on.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every path (a copy on each, for `redundant`).
    pub fn all(&self) -> impl Iterator<Item = &[NodeId]> {
        self.entries.iter().map(|e| e.path.as_slice())
    }

    /// The path for the next packet (`multipath`): in proportion to the
    /// source's own use of each (smooth weighted round robin).
    pub fn pick(&mut self) -> Option<&[NodeId]> {
        let total: i64 = self.entries.iter().map(|e| e.hits as i64).sum();
        for e in self.entries.iter_mut() {
            e.credit += e.hits as i64;
        }
        let best = self.entries.iter().enumerate().max_by_key(|(i, e)| (e.credit, -(*i as i64))).map(|(i, _)| i)?;
        self.entries[best].credit -= total;
        Some(&self.entries[best].path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Link;
    use alloc::vec;

    fn route(path: Vec<NodeId>) -> SourceRoute {
        SourceRoute { hop: (path.len() - 1) as u8, packet_id: 1, path }
    }

    fn topo() -> Topology {
        let l = |a, b| Link { a, b, latency_us: 1, bandwidth_mbps: 1 };
        Topology::new(vec![l(1, 11), l(11, 3), l(1, 13), l(13, 3)])
    }

    #[test]
    fn answers_go_back_the_way_packets_came_in_their_proportions() {
        let mut r = ReplyPaths::default();
        for i in 0..40 {
            let p = if i % 4 == 0 { vec![1, 11, 3] } else { vec![1, 13, 3] };
            r.learn(&route(p), i);
        }
        assert_eq!(r.all().count(), 2);
        let via11 = (0..40).filter(|_| r.pick().unwrap() == [3, 11, 1]).count();
        assert_eq!(via11, 10, "one in four, as the source sent");
    }

    #[test]
    fn stale_paths_and_paths_over_dead_links_go() {
        let mut r = ReplyPaths::default();
        r.learn(&route(vec![1, 11, 3]), 0);
        r.learn(&route(vec![1, 13, 3]), REPLY_PATH_TTL_US);
        r.prune(REPLY_PATH_TTL_US + 1, &topo());
        assert_eq!(r.all().collect::<Vec<_>>(), vec![&[3, 13, 1][..]], "the first went stale");
        let l = |a, b| Link { a, b, latency_us: 1, bandwidth_mbps: 1 };
        r.prune(REPLY_PATH_TTL_US + 2, &Topology::new(vec![l(1, 11), l(11, 3)]));
        assert!(r.is_empty(), "13 - 3 is down");
        assert_eq!(r.pick(), None);
    }

    #[test]
    fn at_most_two_paths_the_most_recent() {
        let mut r = ReplyPaths::default();
        r.learn(&route(vec![1, 11, 3]), 1);
        r.learn(&route(vec![1, 13, 3]), 2);
        r.learn(&route(vec![1, 14, 3]), 3);
        let paths: Vec<&[NodeId]> = r.all().collect();
        assert_eq!(paths, vec![&[3, 13, 1][..], &[3, 14, 1][..]]);
    }
}
