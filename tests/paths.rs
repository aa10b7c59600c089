//! `pathvm paths` on mesh6: each protocol's path drawn from a running
//! node's metrics, rendered to SVG by Graphviz, and redrawn when a relay
//! dies.

use std::process::Command;
use std::time::{Duration, Instant};

use pathvm_tests::*;

/// `pathvm paths --format svg` from r4's namespace, over r4's metrics
/// (empty while r4 has not published its topology yet).
fn svg(topo: &TopoGuard) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.netns("r4")])
        .arg(pathvm_bin())
        .args(["paths", "--metrics", "http://127.0.0.1:9464/metrics", "--from", "a", "--to", "c", "--format", "svg"])
        .arg("--config")
        .arg(topo.node_config("r4"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("no routing topology") {
        return String::new();
    }
    assert!(text.contains("<svg"), "not SVG ({:?}): {err}", out.status);
    text
}

/// Whether the drawing has the edge with id `id` (`PROTOCOL_A_B`).
fn has(svg: &str, id: &str) -> bool {
    svg.contains(&format!("id=\"{id}\""))
}

#[test]
fn each_protocols_path_is_drawn_and_moves_when_a_relay_dies() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    let dir = TempDir::new();
    let mut nodes: Vec<(String, Daemon)> = Vec::new();
    for (h, id) in [("c", 3), ("r1", 11), ("r2", 12), ("r3", 13), ("r4", 14)] {
        let mut cmd = topo.node(h, &dir.0.join(format!("{h}.json")));
        cmd.args(["--metrics-listen", "127.0.0.1:9464"]);
        nodes.push((h.to_string(), topo.start_node_from(cmd, id)));
    }
    // Link state settles within a flood or two.
    let until = Instant::now() + Duration::from_secs(15);
    let mut drawn = svg(&topo);
    while !(has(&drawn, "shortest_r2_c") && has(&drawn, "widest_r4_c")) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(300));
        drawn = svg(&topo);
    }
    for edge in ["shortest_a_r1", "shortest_r1_r2", "shortest_r2_c", "widest_a_r3", "widest_r3_r4", "widest_r4_c"] {
        assert!(has(&drawn, edge), "no {edge} in the drawing:\n{drawn}");
    }
    assert!(has(&drawn, "redundant_a_r1") && has(&drawn, "redundant_a_r3"), "two disjoint copies");
    assert!(has(&drawn, "onion_r4_c") || has(&drawn, "onion_r2_c"), "an onion path");
    assert!(!drawn.contains("id=\"down_"), "no link is down yet");

    // r1 dies: its neighbours flood it, r4's view changes, the drawing too.
    let r1 = nodes.iter().position(|(h, _)| h == "r1").unwrap();
    nodes.remove(r1).1.kill();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        drawn = svg(&topo);
        if !has(&drawn, "shortest_r1_r2") {
            break;
        }
        assert!(Instant::now() < until, "the shortest path still runs through dead r1:\n{drawn}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(has(&drawn, "down_r1_r2"), "the dead link is drawn as down:\n{drawn}");
    assert!(has(&drawn, "shortest_r4_c"), "shortest moved to the r3-r4 side:\n{drawn}");
}
