//! `pathvm bench protocols`: every routing protocol across mesh6 through
//! the edge, with a relay on its path killed mid-download, beside kernel
//! routing on the same hosts.

use std::process::{Command, Stdio};

use pathvm_tests::*;

/// Protocols that move a stream off a dead relay (an onion circuit ends
/// with its relay, as in Tor).
const FAIL_OVER: [&str; 4] = ["shortest", "widest", "multipath", "redundant"];

#[test]
fn protocols_benchmark_prints_a_json_line_per_protocol_beside_kernel_routing() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let child = Command::new(pathvm_bin())
        .args(["bench", "protocols", "--json", "--bytes", "8388608", "--connects", "5", "--image"])
        .arg(image())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The benchmark names its hosts after its PID.
    let hosts = format!("pp{}-", child.id() % 100_000);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["protocol"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["shortest", "widest", "multipath", "redundant", "onion"], "{stderr}");
    let positive = |r: &serde_json::Value, f: &str| {
        assert!(r[f].as_f64().is_some_and(|v| v > 0.0), "{f} missing or not positive: {r}\n{stderr}");
    };
    for r in &rows {
        for f in ["kernel_connect_p50_ms", "kernel_connect_p99_ms", "kernel_throughput_mbps"] {
            positive(r, f);
        }
        assert_eq!(r["samples"], 5, "{r}");
        assert!(r["criteria"].as_str().is_some_and(|c| !c.is_empty()), "{r}");
        assert!(r["killed_relay"].as_str().is_some_and(|h| h.starts_with('r')), "{r}");
        assert!(r["machine"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        let protocol = r["protocol"].as_str().unwrap_or("?");
        assert!(r.get("error").is_none(), "{protocol} failed: {r}\n{stderr}");
        for f in ["connect_p50_ms", "connect_p99_ms", "throughput_mbps", "throughput_ratio"] {
            positive(r, f);
        }
        assert!(r["stall_after_relay_kill_ms"].as_f64().is_some_and(|v| v >= 0.0), "{r}");
        assert!(r["complete"].is_boolean(), "{r}");
        // A circuit through the killed relay may not survive it; every
        // other protocol must deliver every byte.
        if FAIL_OVER.contains(&protocol) {
            assert_eq!(r["complete"], true, "{protocol} lost bytes when {} died: {r}\n{stderr}", r["killed_relay"]);
        }
    }
    // The run took its hosts down.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let leftover: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&hosts))
        .map(str::to_string)
        .collect();
    assert!(leftover.is_empty(), "namespaces left behind: {leftover:?}");
}
