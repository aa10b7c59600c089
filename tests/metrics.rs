//! Prometheus metrics on line3: the edge and both nodes serve
//! `--metrics-listen`; curl scrapes them as a Prometheus server would, and
//! the text is parsed as the exposition format says.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use pathvm_tests::edge::*;
use pathvm_tests::*;

const PORT: u16 = 9464;

/// One scrape of `ns`'s metrics with curl: sample (`name{labels}`) →
/// value. Checks the format on the way: every sample belongs to a family
/// typed before it, every value is a number.
fn scrape(ns: &str) -> BTreeMap<String, f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sf", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{PORT}/metrics"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scrape of {ns} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, kind) = (p.next().unwrap(), p.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = key.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(typed.contains(name) || typed.contains(family), "{name} has no # TYPE before it");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        samples.insert(key.to_string(), v);
    }
    samples
}

/// Scrapes `ns` until `key` satisfies `ok` (10 s at most).
fn scrape_until(ns: &str, key: &str, ok: impl Fn(f64) -> bool) -> BTreeMap<String, f64> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(ns);
        if s.get(key).copied().is_some_and(&ok) {
            return s;
        }
        assert!(Instant::now() < until, "{ns}: {key} never right: {:?}", s.get(key));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_edge_and_nodes_serve_prometheus_metrics_a_real_scraper_reads() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let listen = format!("127.0.0.1:{PORT}");
    let mut nodes = Vec::new();
    for (h, id) in [("c", 3), ("b", 2)] {
        let mut cmd = topo.node(h, &dir.0.join(format!("{h}.json")));
        cmd.args(["--metrics-listen", &listen]);
        nodes.push(topo.start_node_from(cmd, id));
    }
    let body = random_bytes(2 << 20, 41);
    let port = http_server(&topo.netns("c"), body.clone());
    let mut cmd = edge_command(&topo, std::path::Path::new("/nonexistent"));
    cmd.args(["--metrics-listen", &listen]);
    let edge = start_edge_from(cmd);

    let (code, got) = curl(&topo, &format!("http://c:{port}/file"), Some("pathvm:latency=require"));
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    let (code, _) = curl(&topo, "http://c:1/", None);
    assert_eq!(code, Some(97));
    edge.wait_vms_ended(2);

    let a = scrape(&topo.netns("a"));
    assert_eq!(a.get("pathvm_requests_total{protocol=\"shortest\",outcome=\"up\"}"), Some(&1.0), "{a:?}");
    assert_eq!(a.get("pathvm_requests_total{protocol=\"shortest\",outcome=\"connectionrefused\"}"), Some(&1.0));
    assert_eq!(a.get("pathvm_connect_seconds_count"), Some(&1.0));
    assert_eq!(a.get("pathvm_connect_seconds_bucket{le=\"+Inf\"}"), Some(&1.0));
    assert_eq!(a.get("pathvm_spawn_seconds_count"), Some(&2.0));
    assert_eq!(a.get("pathvm_vms_running"), Some(&0.0));
    let to_app = a.get("pathvm_app_bytes_total{direction=\"to_app\"}").copied().unwrap_or(0.0);
    assert!(to_app >= body.len() as f64, "bytes carried to the app: {to_app}");

    // B measures its link to C (a node VM answers probes) and relayed.
    let b = scrape_until(&topo.netns("b"), "pathvm_link_latency_seconds{peer=\"3\"}", |v| v > 0.0);
    assert_eq!(b.get("pathvm_link_up{peer=\"3\"}"), Some(&1.0), "{b:?}");
    assert!(b.contains_key("pathvm_link_loss_ratio{peer=\"1\"}"), "A's link is listed too: {b:?}");
    assert!(b["pathvm_node_forwarded_total"] > 0.0, "{b:?}");
    assert!(b.contains_key("pathvm_node_drops_total{reason=\"bad_mac\"}"));
    let c = scrape(&topo.netns("c"));
    assert_eq!(c.get("pathvm_service_connects_total{outcome=\"ok\"}"), Some(&1.0), "{c:?}");
    assert_eq!(c.get("pathvm_service_connects_total{outcome=\"refused\"}"), Some(&1.0));
    assert!(c["pathvm_node_delivered_total"] > 0.0);

    // `pathvm status` reads the same pages: B's links and routes, A's
    // requests, rates between two reads.
    let status = |host: &str| -> Vec<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &topo.netns(host)])
            .arg(pathvm_bin())
            .args(["status", "--metrics", &format!("http://127.0.0.1:{PORT}/metrics"), "--count", "2"])
            .args(["--interval", "0.3", "--json", "--config"])
            .arg(topo.node_config(host))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let frames = status("b");
    assert_eq!(frames.len(), 2);
    let last = &frames[1];
    let to_c = last["links"].as_array().unwrap().iter().find(|l| l["peer"] == 3).expect("B's link to C");
    assert_eq!(to_c["up"], true, "{last}");
    let route = last["routes"].as_array().unwrap().iter().find(|r| r["dst"] == 3).expect("a route to C");
    assert_eq!(route["paths"]["shortest"], serde_json::json!([[2, 3]]), "{last}");
    assert!(last["rates"]["forwarded_per_s"].is_number() && frames[0]["rates"].as_object().unwrap().is_empty());
    let frames = status("a");
    assert_eq!(frames[1]["vms_running"], 0.0);
    assert_eq!(frames[1]["requests"]["outcome=up,protocol=shortest"], 1.0, "{}", frames[1]);

    // Anything else is an HTTP error, and the daemons refuse to serve
    // metrics beyond loopback.
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.netns("b"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{PORT}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let out = Command::new(pathvm_bin())
        .args(["node", "--config", "/nonexistent.toml", "--metrics-listen", "0.0.0.0:9464"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("loopback only"), "{err}");
    drop(nodes);
}
