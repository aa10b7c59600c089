//! Each routing protocol's current path between two nodes, drawn over the
//! topology (`pathvm paths`).
//!
//! The topology is the one a running node routes on, read from its
//! metrics ([`crate::metrics`]: `pathvm_topology_link_*`, down links left
//! out, measured latency applied), never from a daemon's memory. Paths
//! are computed with the routing protocols' own code over it: hop by hop
//! for shortest and widest (every relay decides on the same flooded
//! view), the source's choice for multipath, redundant and onion (onion's
//! relays are drawn at random, so its path is one draw). The drawing is
//! Graphviz DOT: every link in grey (dashed red when configured but not
//! in the live topology), each protocol's path in a colour of its own,
//! each path edge with the id `PROTOCOL_A_B`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use guest_agent::onion::Drbg;
use guest_agent::routing::{Link, NodeId, Route, RouteContext, Routes, Topology};
use guest_agent::wire::Protocol;

/// The protocols drawn, with their colours.
const DRAWN: [(Protocol, &str, &str); 5] = [
    (Protocol::Shortest, "shortest", "#1f77b4"),
    (Protocol::Widest, "widest", "#2ca02c"),
    (Protocol::Multipath, "multipath", "#ff7f0e"),
    (Protocol::Redundant, "redundant", "#9467bd"),
    (Protocol::Onion, "onion", "#d62728"),
];

/// Most hops a hop-by-hop path is followed (a loop in a stale view ends).
const MAX_HOPS: usize = 32;

/// The routing topology in a metrics page (`pathvm_topology_link_*`).
pub fn topology_from_metrics(page: &str) -> Result<Topology, String> {
    let mut links: BTreeMap<(NodeId, NodeId), Link> = BTreeMap::new();
    for (name, labels, value) in crate::metrics::parse(page) {
        let field = match name.as_str() {
            "pathvm_topology_link_latency_seconds" => 0,
            "pathvm_topology_link_bandwidth_mbps" => 1,
            _ => continue,
        };
        let id = |k: &str| labels.get(k).and_then(|v| v.parse::<NodeId>().ok());
        let (Some(a), Some(b)) = (id("a"), id("b")) else { continue };
        let l = links.entry((a, b)).or_insert(Link { a, b, latency_us: 0, bandwidth_mbps: 0 });
        if field == 0 {
            l.latency_us = (value * 1e6).round() as u32;
        } else {
            l.bandwidth_mbps = value as u32;
        }
    }
    if links.is_empty() {
        return Err("the metrics hold no routing topology (pathvm_topology_link_*): is it a node's page, \
                    and has its VM booted?"
            .into());
    }
    Ok(Topology::new(links.into_values().collect()))
}

/// The path(s) `protocol` takes from `src` to `dst` over `topo`; empty
/// if it has none.
pub fn paths(topo: &Topology, protocol: Protocol, src: NodeId, dst: NodeId) -> Vec<Vec<NodeId>> {
    let mut rng = Drbg::new(vmm::random::bytes::<32>());
    let mut routes = Routes::compute(topo, src);
    let mut ctx = RouteContext { avoid: &[], rng: &mut rng };
    match routes.route(protocol, dst, &mut ctx) {
        Some(Route::NextHop(first)) => {
            let mut path = vec![src, first];
            while *path.last().expect("not empty") != dst && path.len() <= MAX_HOPS {
                let here = *path.last().expect("not empty");
                let mut at = Routes::compute(topo, here);
                match at.route(protocol, dst, &mut ctx) {
                    Some(Route::NextHop(n)) if !path.contains(&n) => path.push(n),
                    _ => return Vec::new(),
                }
            }
            if path.last() == Some(&dst) {
                vec![path]
            } else {
                Vec::new()
            }
        }
        Some(Route::Path(p)) => {
            // Multipath spreads packets over its paths: ask for a few.
            let mut all = vec![p.to_vec()];
            for _ in 0..8 {
                if let Some(Route::Path(p)) = routes.route(protocol, dst, &mut ctx) {
                    if !all.iter().any(|q| q == p) {
                        all.push(p.to_vec());
                    }
                }
            }
            all
        }
        Some(Route::Copies(c)) => c.to_vec(),
        Some(Route::Circuit(p)) => vec![p],
        None => Vec::new(),
    }
}

/// Each protocol drawn and the paths it takes.
pub type Drawn = Vec<(&'static str, Vec<Vec<NodeId>>)>;

/// The drawing: `configured` links (all of the topology's, from a node
/// config; empty to draw only the live ones), the live `topo`, and every
/// protocol's paths from `src` to `dst`; `name` labels node ids.
pub fn dot(
    configured: &[Link],
    topo: &Topology,
    src: NodeId,
    dst: NodeId,
    name: impl Fn(NodeId) -> String,
) -> (String, Drawn) {
    let mut out = String::from("graph pathvm {\n  rankdir=LR;\n  node [shape=circle, fontname=\"sans\"];\n");
    let _ = writeln!(out, "  edge [fontname=\"sans\", fontsize=9];");
    let mut nodes: Vec<NodeId> = configured.iter().chain(topo.links()).flat_map(|l| [l.a, l.b]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for n in &nodes {
        let style = if *n == src || *n == dst { ", style=bold" } else { "" };
        let _ = writeln!(out, "  \"{}\" [label=\"{}\\n{n}\"{style}];", name(*n), name(*n));
    }
    let live = |a: NodeId, b: NodeId| topo.links().iter().any(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a));
    for l in topo.links() {
        let _ =
            writeln!(out, "  \"{}\" -- \"{}\" [color=gray70, label=\"{} µs\"];", name(l.a), name(l.b), l.latency_us);
    }
    for l in configured.iter().filter(|l| !live(l.a, l.b)) {
        let _ = writeln!(
            out,
            "  \"{}\" -- \"{}\" [id=\"down_{}_{}\", color=red, style=dashed, label=\"down\"];",
            name(l.a),
            name(l.b),
            name(l.a),
            name(l.b)
        );
    }
    let mut found = Vec::new();
    for (protocol, label, colour) in DRAWN {
        let ps = paths(topo, protocol, src, dst);
        for p in &ps {
            for w in p.windows(2) {
                let (a, b) = (name(w[0]), name(w[1]));
                let _ = writeln!(
                    out,
                    "  \"{a}\" -- \"{b}\" [id=\"{label}_{a}_{b}\", color=\"{colour}\", penwidth=2.5, label=\"{label}\", fontcolor=\"{colour}\"];"
                );
            }
        }
        found.push((label, ps));
    }
    out.push_str("}\n");
    (out, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mesh6: a(1) - r1(11) - r2(12) - c(3) fast; a - r3(13) - r4(14) - c wide; r2 - r3.
    fn mesh6() -> Vec<Link> {
        let l = |a, b, latency_us, bandwidth_mbps| Link { a, b, latency_us, bandwidth_mbps };
        vec![
            l(1, 11, 100, 500),
            l(11, 12, 100, 500),
            l(12, 3, 100, 500),
            l(1, 13, 300, 1000),
            l(13, 14, 300, 1000),
            l(14, 3, 300, 1000),
            l(12, 13, 100, 500),
        ]
    }

    #[test]
    fn each_protocol_takes_its_own_way_and_a_down_link_is_drawn_dashed() {
        let topo = Topology::new(mesh6());
        assert_eq!(paths(&topo, Protocol::Shortest, 1, 3), vec![vec![1, 11, 12, 3]]);
        assert_eq!(paths(&topo, Protocol::Widest, 1, 3), vec![vec![1, 13, 14, 3]]);
        let copies = paths(&topo, Protocol::Redundant, 1, 3);
        assert_eq!(copies.len(), 2, "{copies:?}");
        let onion = paths(&topo, Protocol::Onion, 1, 3);
        assert!(onion.len() == 1 && onion[0].len() >= 5, "three relays at least: {onion:?}");
        let without_r1 = Topology::new(mesh6().into_iter().filter(|l| l.a != 11 && l.b != 11).collect());
        let (text, found) = dot(&mesh6(), &without_r1, 1, 3, |n| format!("n{n}"));
        assert_eq!(found[0], ("shortest", vec![vec![1, 13, 12, 3]]));
        assert!(text.contains("id=\"down_n1_n11\"") && text.contains("id=\"shortest_n1_n13\""), "{text}");
    }

    #[test]
    fn the_topology_is_read_back_from_a_metrics_page() {
        let mut s = guest_agent::node::NodeStats { topology_links: 2, ..Default::default() };
        s.topology.0[0] = guest_agent::node::TopologyLinkStats { a: 1, b: 11, latency_us: 150, bandwidth_mbps: 500 };
        s.topology.0[1] = guest_agent::node::TopologyLinkStats { a: 11, b: 3, latency_us: 100, bandwidth_mbps: 40 };
        let mut e = crate::metrics::Exposition::default();
        crate::metrics::write_node_stats(&mut e, &s);
        let topo = topology_from_metrics(&e.finish()).unwrap();
        assert_eq!(
            topo.links(),
            &[
                Link { a: 1, b: 11, latency_us: 150, bandwidth_mbps: 500 },
                Link { a: 11, b: 3, latency_us: 100, bandwidth_mbps: 40 }
            ]
        );
        assert!(topology_from_metrics("pathvm_requests_total 1\n").is_err());
    }
}
