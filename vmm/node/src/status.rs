//! `pathvm status`: a live view of this host's daemons, read from their
//! metrics pages (never their memory): links, each protocol's route to
//! every node, VMs and flows, and rates between two reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use guest_agent::routing::{NodeId, Topology};
use guest_agent::wire::Protocol;
use serde::Serialize;

use crate::metrics;
use crate::paths;

/// One read of every page: sample key (`name{labels}`) → value, and the
/// routing topology if a node page had one.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    samples: BTreeMap<String, f64>,
    topology: Option<Topology>,
}

/// One link of this host's node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkRow {
    /// The neighbour.
    pub peer: NodeId,
    /// Answering probes.
    pub up: bool,
    /// One-way latency, µs (0: not measured yet).
    pub latency_us: u64,
    /// Share of probes lost.
    pub loss: f64,
}

/// One destination: each protocol's path to it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteRow {
    /// The destination node.
    pub dst: NodeId,
    /// Protocol → its paths (node ids, this node first).
    pub paths: BTreeMap<&'static str, Vec<Vec<NodeId>>>,
}

/// What `pathvm status` shows, one frame.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Frame {
    /// This host's node's links.
    pub links: Vec<LinkRow>,
    /// Routes from `me` to every other node of the topology, when known.
    pub routes: Vec<RouteRow>,
    /// Request VMs running (edge).
    pub vms_running: Option<f64>,
    /// Streams ending at this node now.
    pub flows_open: Option<f64>,
    /// Members this node knows from certificates in their link state, and
    /// links it keyed from a neighbour's certificate hello (members that
    /// joined after its configuration was written).
    pub joined: Option<(f64, f64)>,
    /// Per second since the last read: requests (edge), packets forwarded
    /// and delivered (node), bytes to apps (edge).
    pub rates: BTreeMap<&'static str, f64>,
    /// Totals: requests by outcome.
    pub requests: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads pages (any mix of edge and node pages).
    pub fn from_pages(pages: &[String]) -> Self {
        let mut s = Self::default();
        for page in pages {
            for (name, labels, value) in metrics::parse(page) {
                let key = if labels.is_empty() {
                    name
                } else {
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{name}{{{}}}", l.join(","))
                };
                *s.samples.entry(key).or_default() += value;
            }
            if s.topology.is_none() {
                s.topology = paths::topology_from_metrics(page).ok();
            }
        }
        s
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }

    /// Sum of every sample of family `name`.
    fn total(&self, name: &str) -> f64 {
        self.samples.iter().filter(|(k, _)| k.split('{').next() == Some(name)).map(|(_, v)| v).sum()
    }

    /// The frame for node `me` (routes need it), with rates against
    /// `before`, read `seconds` earlier.
    pub fn frame(&self, me: Option<NodeId>, before: Option<(&Snapshot, f64)>) -> Frame {
        let mut links: BTreeMap<NodeId, LinkRow> = BTreeMap::new();
        for (k, v) in &self.samples {
            let Some((name, rest)) = k.split_once("{peer=") else { continue };
            let Ok(peer) = rest.trim_end_matches('}').parse::<NodeId>() else { continue };
            let row = links.entry(peer).or_insert(LinkRow { peer, up: false, latency_us: 0, loss: 0.0 });
            match name {
                "pathvm_link_up" => row.up = *v == 1.0,
                "pathvm_link_latency_seconds" => row.latency_us = (v * 1e6).round() as u64,
                "pathvm_link_loss_ratio" => row.loss = *v,
                _ => {}
            }
        }
        let mut routes = Vec::new();
        if let (Some(me), Some(topo)) = (me, &self.topology) {
            let mut nodes: Vec<NodeId> = topo.links().iter().flat_map(|l| [l.a, l.b]).filter(|n| *n != me).collect();
            nodes.sort_unstable();
            nodes.dedup();
            for dst in nodes {
                let paths = [
                    ("shortest", Protocol::Shortest),
                    ("widest", Protocol::Widest),
                    ("multipath", Protocol::Multipath),
                    ("redundant", Protocol::Redundant),
                ]
                .into_iter()
                .map(|(name, p)| (name, paths::paths(topo, p, me, dst)))
                .collect();
                routes.push(RouteRow { dst, paths });
            }
        }
        let mut rates = BTreeMap::new();
        if let Some((b, secs)) = before.filter(|(_, s)| *s > 0.0) {
            for (label, family) in [
                ("requests_per_s", "pathvm_requests_total"),
                ("forwarded_per_s", "pathvm_node_forwarded_total"),
                ("delivered_per_s", "pathvm_node_delivered_total"),
                ("app_bytes_per_s", "pathvm_app_bytes_total"),
            ] {
                if self.samples.keys().any(|k| k.split('{').next() == Some(family)) {
                    rates.insert(label, ((self.total(family) - b.total(family)) / secs).max(0.0));
                }
            }
        }
        let requests = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("pathvm_requests_total{")?;
                Some((rest.trim_end_matches('}').to_string(), *v))
            })
            .collect();
        Frame {
            links: links.into_values().collect(),
            routes,
            vms_running: self.get("pathvm_vms_running"),
            flows_open: self.get("pathvm_node_flows_open"),
            joined: self
                .get("pathvm_node_members_learned")
                .map(|m| (m, self.get("pathvm_node_links_keyed_total").unwrap_or(0.0))),
            rates,
            requests,
        }
    }
}

impl Frame {
    /// The frame for a terminal; `name` labels node ids.
    pub fn render(&self, name: impl Fn(NodeId) -> String) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "links");
        if self.links.is_empty() {
            let _ = writeln!(out, "  (no node page)");
        }
        for l in &self.links {
            let state = if l.up { "up" } else { "down/unanswered" };
            let _ = writeln!(
                out,
                "  {:<8} {state:<16} {:>7} µs  loss {:>5.1} %",
                name(l.peer),
                l.latency_us,
                l.loss * 100.0
            );
        }
        if !self.routes.is_empty() {
            let _ = writeln!(out, "routes");
            for r in &self.routes {
                let _ = writeln!(out, "  to {}", name(r.dst));
                for (p, ps) in &r.paths {
                    let shown: Vec<String> =
                        ps.iter().map(|p| p.iter().map(|n| name(*n)).collect::<Vec<_>>().join(">")).collect();
                    let shown = if shown.is_empty() { "no path".into() } else { shown.join(" | ") };
                    let _ = writeln!(out, "    {p:<10} {shown}");
                }
            }
        }
        if let Some(v) = self.vms_running {
            let _ = writeln!(out, "request VMs running  {v}");
        }
        if let Some(f) = self.flows_open {
            let _ = writeln!(out, "flows ending here    {f}");
        }
        if let Some((members, keyed)) = self.joined {
            let _ =
                writeln!(out, "joined members       {members} learnt from link state, {keyed} links keyed from hellos");
        }
        for (k, v) in &self.requests {
            let _ = writeln!(out, "requests {k:<40} {v}");
        }
        for (k, v) in &self.rates {
            let _ = writeln!(out, "{k:<20} {v:.1}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_has_links_routes_and_rates_from_two_reads() {
        let node = |fwd: u64| {
            let mut s = guest_agent::node::NodeStats {
                forwarded: fwd,
                topology_links: 2,
                members_learned: 1,
                links_keyed: 1,
                ..Default::default()
            };
            s.links[0] = guest_agent::node::LinkStats { peer: 3, status: 1, latency_us: 120, loss_permille: 0 };
            s.topology.0[0] = guest_agent::node::TopologyLinkStats { a: 1, b: 2, latency_us: 100, bandwidth_mbps: 10 };
            s.topology.0[1] = guest_agent::node::TopologyLinkStats { a: 2, b: 3, latency_us: 100, bandwidth_mbps: 10 };
            let mut e = metrics::Exposition::default();
            metrics::write_node_stats(&mut e, &s);
            e.finish()
        };
        let (before, now) = (Snapshot::from_pages(&[node(100)]), Snapshot::from_pages(&[node(300)]));
        let f = now.frame(Some(2), Some((&before, 2.0)));
        assert_eq!(f.links, vec![LinkRow { peer: 3, up: true, latency_us: 120, loss: 0.0 }]);
        assert_eq!(f.rates["forwarded_per_s"], 100.0);
        assert_eq!(f.routes.len(), 2);
        assert_eq!(f.routes[1].paths["shortest"], vec![vec![2, 3]]);
        let text = f.render(|n| format!("n{n}"));
        assert!(text.contains("n3") && text.contains("forwarded_per_s"), "{text}");
        assert_eq!(f.joined, Some((1.0, 1.0)));
        assert!(text.contains("1 learnt from link state, 1 links keyed from hellos"), "{text}");
    }
}
