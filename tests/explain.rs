//! `pathvm explain`: the application interface and protocol selection as a
//! user sees them.

use std::process::Command;

use pathvm_tests::*;

fn explain(args: &[&str], manifests: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(pathvm_bin()).arg("explain").args(args).arg("--manifests").arg(manifests).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sent_criteria_override_the_manifest_and_the_table_says_why() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("curl.toml"), "[criteria]\nlatency = \"avoid\"\nencryption = \"prefer\"\n").unwrap();
    let (code, out, err) = explain(&["--app", "/usr/bin/curl", "--criteria", "pathvm:latency=require"], &dir.0);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("criteria: latency=require,encryption=prefer"), "{out}");
    assert!(out.contains("curl.toml"), "manifest not named: {out}");
    let chosen = out.lines().find(|l| l.contains("CHOSEN")).expect("a chosen row");
    assert!(chosen.starts_with("shortest"), "{out}");
}

#[test]
fn an_unmet_requirement_refuses_with_reasons() {
    let dir = TempDir::new();
    let (code, out, _) = explain(&["--app", "x", "--criteria", "anonymity=require,latency=require"], &dir.0);
    assert_eq!(code, Some(2));
    assert!(out.contains("no routing protocol meets the criteria"), "{out}");
    assert!(out.contains("shortest: anonymity is required, it offers none"), "{out}");
}

#[test]
fn a_broken_manifest_is_an_error_naming_file_and_line_for_its_app_only() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("bad.toml"), "[criteria]\n\nbandwidth = \"often\"\n").unwrap();
    let (code, _, err) = explain(&["--app", "bad"], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.toml, line 3"), "{err}");
    let (code, out, _) = explain(&["--app", "good"], &dir.0);
    assert_eq!(code, Some(0), "another app's broken manifest must not matter: {out}");
}

#[test]
fn malformed_criteria_are_a_clear_error() {
    let dir = TempDir::new();
    let (code, _, err) = explain(&["--app", "x", "--criteria", "speed=fast"], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown criterion \"speed\""), "{err}");
}

/// `pathvm node` with a broken configuration: one clear line, exit 1, and
/// no VM, tap or namespace left behind.
fn node_error(config: &str) -> String {
    let dir = TempDir::new();
    let path = dir.0.join("node.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(pathvm_bin()).args(["node", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NODE_OK: &str = r#"id = 2
hop_limit = 16
mem_mib = 64
[[port]]
iface = "ln0"
tap = "tap0"
mac = "02:50:00:00:00:02"
peer = 1
peer_mac = "02:50:00:00:00:01"
tx_link_id = 2
rx_link_id = 1
key = "0101010101010101010101010101010101010101010101010101010101010101"
[[link]]
a = 1
b = 2
latency_us = 100
bandwidth_mbps = 1000
"#;

#[test]
fn node_configuration_errors_are_clear() {
    let e = node_error(&NODE_OK.replace("key = \"01", "key = \"zz"));
    assert!(e.contains("a link key must be 64 hex digits"), "{e}");
    let e = node_error(&NODE_OK.replace("hop_limit = 16", "hop_limit = 16\nprotocol = \"onion\""));
    assert!(e.contains("protocol \"onion\" carries streams from an edge"), "{e}");
    let e = node_error(&NODE_OK.replace("hop_limit = 16", "hop_limit = 16\nprotocol = \"fastest\""));
    assert!(e.contains("unknown protocol \"fastest\""), "{e}");
    let e = node_error(&NODE_OK.replace("peer_mac = \"02:50:00:00:00:01\"", "peer_mac = \"02:50\""));
    assert!(e.contains("is not a MAC address"), "{e}");
    let e = node_error(&NODE_OK.replace("mem_mib = 64", "mem_mib = 64\ncolour = 3"));
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = node_error(&NODE_OK.replace("rx_link_id = 1", "rx_link_id = 4294967290\nrx_link_span = 10"));
    assert!(e.contains("link ids must be given or left to their defaults"), "{e}");
}

#[test]
fn a_destination_outside_the_topology_is_explained_with_its_exit() {
    let dir = TempDir::new();
    let topo = topo::Topo::load(&workspace().join("tests/topologies/exit6.toml"), Some("xp")).unwrap();
    let (_, a) = topo.node_files().into_iter().find(|(h, _)| h == "a").unwrap();
    let config = dir.0.join("a.toml");
    std::fs::write(&config, toml::to_string(&a).unwrap()).unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = explain(&["--app", "curl", "--to", "svc.test:8080", "--config", cfg], &dir.0);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("exit node 3, the nearest of 2"), "{out}");
    assert!(out.contains("node 4: accepts"), "{out}");
    let avoid = ["--app", "curl", "--criteria", "avoid=3+4", "--to", "[fd00:232::2]:8080", "--config", cfg];
    let (code, out, _) = explain(&avoid, &dir.0);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("node 3: the app avoids it") && out.contains("node 4: the app avoids it"), "{out}");
    let (code, out, _) = explain(&["--app", "curl", "--to", "10.232.0.2:22", "--config", cfg], &dir.0);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("reject *:22"), "{out}");
    let (code, out, _) = explain(&["--app", "curl", "--to", "c:80", "--config", cfg], &dir.0);
    assert_eq!(code, Some(0));
    assert!(out.contains("a host of the topology, node 3"), "{out}");
    let (code, _, err) = explain(&["--app", "curl", "--to", "svc.test"], &dir.0);
    assert_eq!(code, Some(2), "clap refuses --to without --config: {err}");
    assert!(err.contains("--config"), "{err}");
}
