//! The whole path, as an application sees it: curl through pathvm's SOCKS5
//! front door on A; a fresh VM for the request carries the stream through
//! relay B's VM to C's VM, whose host connects the HTTP server on C.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use guest_agent::socks;
use pathvm_tests::edge::*;
use pathvm_tests::events;
use pathvm_tests::*;

#[test]
fn curl_through_socks_fetches_twenty_mib_from_c_in_a_fresh_vm_per_request() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(20 << 20, 5);
    let port = http_server(&topo.netns("c"), body.clone());
    let edge = start_edge(&topo);

    // By host name and by address; each request in a VM of its own.
    let (code, got) = curl(&topo, &format!("http://c:{port}/file"), None);
    assert_eq!(code, Some(0));
    assert_eq!(sha256(&got), sha256(&body), "20 MiB through pathvm differ ({} bytes)", got.len());
    let (code, got) = curl(&topo, &format!("http://10.231.1.2:{port}/file"), Some("pathvm:latency=require"));
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));

    // Failures get SOCKS errors (curl: 97), not hangs.
    let (code, _) = curl(&topo, "http://c:1/", None);
    assert_eq!(code, Some(97), "service down");
    let (code, _) = curl(&topo, "http://nowhere:80/", None);
    assert_eq!(code, Some(97), "unknown destination");
    let (code, _) = curl(&topo, &format!("http://c:{port}/file"), Some("pathvm:anonymity=require,latency=require"));
    assert_eq!(code, Some(97), "criteria no protocol meets");

    edge.wait_vms_ended(3);
    let vms = edge.events.of("vm_ended").len();
    assert_eq!(vms, 3, "one VM per request that reached a VM, each destroyed after:\n{}", edge.events.dump());
    let refused: Vec<(u64, String)> = edge
        .events
        .of("refused")
        .iter()
        .map(|e| (e["reply"].as_u64().unwrap(), e["reply_name"].as_str().unwrap().to_string()))
        .collect();
    for (code, name) in [(5, "ConnectionRefused"), (4, "HostUnreachable"), (2, "NotAllowed")] {
        assert!(refused.contains(&(code, name.into())), "no {name} refusal: {}", edge.events.dump());
    }
    let left = edge.leftovers(&topo.netns("a"), "ln0");
    assert!(left.is_empty(), "request steering left behind: {left:?}");
    // Every connect says where its time went, host steps and the VM's own.
    for up in edge.events.of("stream_up") {
        let st = &up["stages"];
        for step in ["build_us", "boot_us", "agent_start_us", "keys_us", "open_us"] {
            assert!(st[step].as_u64().is_some_and(|v| v > 0), "{step} missing in {up}");
        }
        let (boot, agent) = (st["boot_us"].as_u64().unwrap(), st["agent_start_us"].as_u64().unwrap());
        assert!(agent < boot, "the agent's start is part of the boot: {up}");
        // Its link state came with it from the edge's floods, or it
        // pulled it.
        let (pulled, given) = (st["lsa_requests"].as_u64().unwrap(), st["lsas_given"].as_u64().unwrap());
        assert!(pulled > 0 || given > 0, "no link state: {up}");
        let sum: u64 = ["identify_us", "socks_us", "decide_us", "steer_us", "build_us", "boot_us"]
            .iter()
            .map(|k| st[k].as_u64().unwrap_or(0))
            .sum();
        assert!(sum <= up["since_accept_us"].as_u64().unwrap(), "the host's steps fit in the whole: {up}");
    }
    drop(edge.child);
    // The path: B's relay VM forwarded the streams both ways, C's VM ended them.
    b.terminate(Duration::from_secs(20));
    c.terminate(Duration::from_secs(20));
    let metrics = |h: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.0.join(format!("{h}.json"))).unwrap()).unwrap()
    };
    let forwarded = metrics("b")["node"]["forwarded"].as_u64().unwrap();
    assert!(forwarded > 2 * (20 << 20) / 1400, "B's relay VM forwarded only {forwarded} packets");
    assert!(metrics("c")["node"]["delivered"].as_u64().unwrap() > 0);
}

/// A directory holding only `tc`, `ip` and `sysctl` stand-ins that record
/// their command line in `log` and fail: as a PATH, it makes any of them
/// run by name both visible and useless.
fn tripwire_path(dir: &std::path::Path, log: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["tc", "ip", "sysctl"] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n", log.display())).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn nodes_and_requests_set_up_their_taps_and_filters_without_spawning_tc_ip_or_sysctl() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // Setting the test hosts up may use iproute2; the daemons may not.
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let spawned = dir.0.join("spawned");
    let path = tripwire_path(&dir.0, &spawned);
    let node = |host: &str, id: u16| {
        let mut cmd = topo.node(host, &dir.0.join(format!("{host}.json")));
        cmd.env("PATH", &path);
        topo.start_node_from(cmd, id)
    };
    let c = node("c", 3);
    let b = node("b", 2);
    let body = random_bytes(1 << 20, 71);
    let port = http_server(&topo.netns("c"), body.clone());
    let mut cmd = edge_command(&topo, std::path::Path::new("/nonexistent"));
    cmd.env("PATH", &path);
    let edge = start_edge_from(cmd);

    // Requests one after another: each steers its VM's taps and unsteers
    // them; later ones get the taps of earlier ones, re-steered.
    for i in 0..5 {
        let (code, got) = curl(&topo, &format!("http://c:{port}/x"), None);
        assert_eq!(code, Some(0), "request {i}");
        assert!(sha256(&got) == sha256(&body), "request {i}: {} of {} bytes", got.len(), body.len());
    }
    let in_ns = |host: &str, args: &[&str]| -> String {
        let out = Command::new("ip").args(["netns", "exec", &topo.netns(host)]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    edge.wait_vms_ended(5);
    let left = edge.leftovers(&topo.netns("a"), "ln0");
    assert!(left.is_empty(), "steering left: {left:?}");
    let reused = edge.events.of("vm_up").iter().filter(|e| e["ports_reused"] == true).count();
    assert!(reused >= 1, "no request got an earlier request's taps: {}", edge.events.dump());
    let taps = pathvm_tests::request_taps(&topo.netns("a"));
    assert!(!taps.is_empty() && taps.len() <= 4, "the edge keeps its prepared and spare taps, no more: {taps:?}");
    drop(edge.child);
    let taps = pathvm_tests::request_taps(&topo.netns("a"));
    assert!(taps.is_empty(), "a stopped edge left request taps: {taps:?}");
    // A node that exits takes its taps and redirects with it.
    assert!(in_ns("b", &["ip", "-o", "link"]).contains("tap0"), "B's intake tap");
    b.terminate(Duration::from_secs(20));
    c.terminate(Duration::from_secs(20));
    assert!(!in_ns("b", &["ip", "-o", "link"]).contains("tap"), "B's taps left");
    assert!(!in_ns("b", &["tc", "qdisc", "show"]).contains("ingress"), "B's ingress qdiscs left");
    let ran = std::fs::read_to_string(&spawned).unwrap_or_default();
    assert!(ran.is_empty(), "the daemons ran iproute2 or sysctl:\n{ran}");
}

#[test]
fn fifty_concurrent_requests_each_complete_in_their_own_vm() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(256 << 10, 8);
    let port = http_server(&topo.netns("c"), body.clone());
    let edge = start_edge(&topo);
    let topo = std::sync::Arc::new(topo);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let topo = topo.clone();
            std::thread::spawn(move || curl(&topo, &format!("http://c:{port}/x"), None))
        })
        .collect();
    for h in handles {
        let (code, got) = h.join().unwrap();
        assert_eq!((code, got.len()), (Some(0), body.len()));
        assert_eq!(sha256(&got), sha256(&body));
    }
    let ended = edge.wait_vms_ended(50);
    let flows: std::collections::HashSet<&str> = ended.iter().filter_map(|e| e["flow"].as_str()).collect();
    assert_eq!(flows.len(), 50, "fifty VMs, fifty flows:\n{}", edge.events.dump());
    drop(edge.child);
}

#[test]
fn pathvm_run_carries_an_unmodified_curl_through_the_edge() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(1 << 20, 21);
    let port = http_server(&topo.netns("c"), body.clone());
    let edge = start_edge(&topo);
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.netns("a")])
        .arg(pathvm_bin())
        .args(["run", "--mode", "preload", "--criteria", "latency=require", "--", "curl", "-s", "--max-time", "60"])
        .arg(format!("http://10.231.1.2:{port}/file"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256(&out.stdout), sha256(&body));
    let accepted = edge.events.wait(Duration::from_secs(10), |e| {
        events::is(e, "request_accepted") && e["target"].as_str().is_some_and(|t| t.starts_with("10.231.1.2:"))
    });
    assert_eq!(accepted["app"], "/usr/bin/curl", "{accepted}");
    assert_eq!(accepted["criteria"], "latency=require", "{accepted}");
    drop(edge.child);
}

#[test]
fn connect_benchmark_prints_its_fields_beside_kernel_routing() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let out = Command::new(pathvm_bin()).args(["bench", "connect", "--json", "--image"]).arg(image()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for f in [
        "connect_p50_ms",
        "connect_p99_ms",
        "direct_connect_p50_ms",
        "throughput_mbps",
        "kernel_throughput_mbps",
        "ssh_connect_p50_ms",
        "ssh_throughput_mbps",
        "microsocks_connect_p50_ms",
        "microsocks_throughput_mbps",
        "optimistic_connect_p50_ms",
        "optimistic_early_bytes_p50",
    ] {
        assert!(r[f].as_f64().is_some_and(|v| v > 0.0), "{f} missing or zero: {r}");
    }
    // The opening's legs come from the edge's and C's events on one clock.
    let st = &r["stages_p50_us"];
    for f in ["forward_us", "back_us", "service_connect_us", "agent_start_us"] {
        assert!(st[f].as_f64().is_some_and(|v| v > 0.0), "stage {f} missing or zero: {r}");
    }
    let legs = st["forward_us"].as_f64().unwrap() + st["back_us"].as_f64().unwrap();
    assert!(legs < st["since_accept_us"].as_f64().unwrap(), "the opening's legs fit in the whole: {r}");
}

/// Optimistic data (Tor's): an app that sends right behind its CONNECT
/// request, before the reply, has those bytes carried behind the stream's
/// opening (the edge's `stream_up` says how many) and echoed back intact;
/// to a closed port it gets the refusal and the bytes go nowhere.
#[test]
fn an_optimistic_apps_first_bytes_ride_behind_the_opening_and_come_back_intact() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge, target) = line3_with_echo(&dir, &[]);
    let first = random_bytes(3000, 7);
    let (mut s, reply) = socks_connect_early(&topo, target, &first);
    assert_eq!(reply, socks::Reply::Succeeded, "{}", edge.events.dump());
    let mut back = vec![0u8; first.len()];
    s.read_exact(&mut back).expect("the early bytes echoed");
    assert_eq!(sha256(&back), sha256(&first));
    let more = random_bytes(50_000, 8);
    assert_eq!(sha256(&echo_round(&mut s, &more)), sha256(&more), "the stream goes on intact");
    let up = edge.events.wait(Duration::from_secs(10), |e| events::is(e, "stream_up"));
    assert_eq!(up["stages"]["early_bytes"].as_u64(), Some(first.len() as u64), "{up}");
    drop(s);

    let closed = std::net::SocketAddr::from(([10, 231, 1, 2], 1));
    let (_s, reply) = socks_connect_early(&topo, closed, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(reply, socks::Reply::ConnectionRefused, "{}", edge.events.dump());
    edge.wait_vms_ended(2);
    drop(edge.child);
}

#[test]
fn two_apps_with_different_manifests_get_different_protocols() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let manifests = dir.0.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("curl.toml"), "[criteria]\nlatency = \"require\"\n").unwrap();
    std::fs::write(manifests.join("fetcher.toml"), "[criteria]\nbandwidth = \"prefer\"\n").unwrap();
    // A second app: curl under another name.
    let fetcher = dir.0.join("fetcher");
    std::fs::copy("/usr/bin/curl", &fetcher).unwrap();
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(256 << 10, 3);
    let port = http_server(&topo.netns("c"), body.clone());
    let edge = start_edge_with(&topo, &manifests);
    let url = format!("http://c:{port}/x");
    let (code, got) = curl(&topo, &url, None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    let (code, got) = curl_as(&topo, fetcher.to_str().unwrap(), &url, None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    let all = edge.events.dump();
    assert_eq!(edge.protocol_of("/usr/bin/curl", "c:").as_deref(), Some("shortest"), "{all}");
    assert_eq!(edge.protocol_of("fetcher", "c:").as_deref(), Some("widest"), "{all}");
    drop(edge.child);
}

#[test]
fn an_app_hanging_up_mid_transfer_ends_its_vm_and_leaves_nothing_behind() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let port = http_server(&topo.netns("c"), random_bytes(20 << 20, 4));
    let edge = start_edge(&topo);
    // Garbage on the SOCKS port first: refused, and the edge keeps serving.
    let ns = topo.netns("a");
    in_netns(&ns, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:1080").unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    // An app that reads 1 MiB of a 20 MiB answer and hangs up.
    in_netns(&ns, move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:1080").unwrap();
        let mut buf = [0u8; socks::MAX_REQUEST_LEN];
        let n = socks::Greeting { methods: &[socks::Method::None.code()] }.encode(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut m = [0u8; socks::MethodChoice::LEN];
        s.read_exact(&mut m).unwrap();
        let target = socks::Addr::Ip(std::net::SocketAddr::from(([10, 231, 1, 2], port)));
        let n = socks::Request::connect(target).encode(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut rep = [0u8; socks::ReplyMsg::LEN_V4];
        s.read_exact(&mut rep).unwrap();
        let Ok(socks::Decoded::Ready(rep, _)) = socks::ReplyMsg::decode(&rep) else { panic!("not a reply: {rep:?}") };
        assert_eq!(rep.reply, socks::Reply::Succeeded, "SOCKS success");
        s.write_all(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
        let mut got = vec![0u8; 1 << 20];
        s.read_exact(&mut got).unwrap();
    });
    // Panics (with every event) if the request VM did not end after the
    // app hung up.
    edge.events.wait(Duration::from_secs(15), |e| events::is(e, "vm_ended"));
    let left = edge.leftovers(&ns, "ln0");
    assert!(left.is_empty(), "steering left: {left:?}");
    let (code, _) = curl(&topo, &format!("http://c:{port}/x"), None);
    assert_eq!(code, Some(0), "edge still serves");
    drop(edge.child);
}

/// mesh6 with every node up and the edge on A: (topo, nodes by host, edge).
fn mesh6_with_edge(dir: &std::path::Path) -> (TopoGuard, std::collections::HashMap<&'static str, Daemon>, Edge) {
    let topo = TopoGuard::up("mesh6.toml");
    let mut nodes = std::collections::HashMap::new();
    for (h, id) in [("c", 3), ("r1", 11), ("r2", 12), ("r3", 13), ("r4", 14)] {
        nodes.insert(h, topo.start_node(h, id, &dir.join(format!("{h}.json"))));
    }
    let edge = start_edge(&topo);
    (topo, nodes, edge)
}

#[test]
fn every_protocol_carries_a_ten_mib_stream_across_mesh6() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge) = mesh6_with_edge(&dir.0);
    let body = random_bytes(10 << 20, 61);
    let port = http_server(&topo.netns("c"), body.clone());
    // Criteria that select each protocol (see `pathvm explain`).
    for (criteria, protocol) in [
        ("latency=require", "shortest"),
        ("bandwidth=prefer", "widest"),
        ("reliability=require,bandwidth=prefer", "multipath"),
        ("reliability=prefer", "redundant"),
        ("anonymity=require", "onion"),
    ] {
        let (code, got) = curl(&topo, &format!("http://c:{port}/x"), Some(&format!("pathvm:{criteria}")));
        assert_eq!(code, Some(0), "{protocol}");
        assert!(sha256(&got) == sha256(&body), "{protocol}: stream corrupted ({} bytes)", got.len());
        let chosen = edge.events.of("protocol_chosen");
        assert!(
            chosen.iter().any(|e| e["protocol"] == protocol),
            "{criteria} did not select {protocol}:\n{}",
            edge.events.dump()
        );
    }
    drop(edge.child);
}

/// Downloads 20 MiB across mesh6 under `criteria` and kills `relay` (on
/// the fast path) mid-transfer: every byte must still arrive.
fn survives_relay_death(criteria: &str, protocol: &str, relay: &str, seed: u64) {
    let dir = TempDir::new();
    let (topo, mut nodes, edge) = mesh6_with_edge(&dir.0);
    let body = random_bytes(20 << 20, seed);
    let port = http_server(&topo.netns("c"), body.clone());
    let topo = std::sync::Arc::new(topo);
    let t2 = topo.clone();
    let user = format!("pathvm:{criteria}");
    let fetch = std::thread::spawn(move || curl(&t2, &format!("http://c:{port}/x"), Some(&user)));
    // Once the stream is up (the app's bytes flow from here on), kill a
    // relay on one of the two paths.
    edge.events.wait(Duration::from_secs(20), |e| events::is(e, "stream_up"));
    nodes.remove(relay).unwrap().terminate(Duration::from_secs(10));
    let (code, got) = fetch.join().unwrap();
    assert_eq!(code, Some(0), "{protocol}");
    assert!(sha256(&got) == sha256(&body), "{protocol} lost bytes: {} of {}", got.len(), body.len());
    let all = || edge.events.dump();
    let chosen = edge.events.of("protocol_chosen");
    assert!(chosen.iter().any(|e| e["protocol"] == protocol), "{criteria} did not select {protocol}:\n{}", all());
    // The request VM saw r1 stop answering its probes and moved off it.
    let ended = edge.events.wait(Duration::from_secs(15), |e| events::is(e, "vm_ended"));
    let changes = ended["counters"]["route_changes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no route change count in the edge's events:\n{}", all()));
    assert!(changes >= 1, "{protocol}: the request VM never rerouted:\n{}", all());
    drop(edge.child);
}

#[test]
fn redundant_loses_no_byte_when_a_relay_dies_mid_transfer() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    survives_relay_death("reliability=prefer", "redundant", "r1", 62);
}

#[test]
fn multipath_loses_no_byte_when_a_relay_dies_mid_transfer() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    survives_relay_death("reliability=require,bandwidth=prefer", "multipath", "r1", 63);
}

#[test]
fn multipath_loses_no_byte_when_a_relay_two_hops_away_dies() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // r2 is not A's neighbour: the request VM learns of it from the link
    // state its neighbours hold (r1 floods that its link to r2 died).
    survives_relay_death("reliability=require,bandwidth=prefer", "multipath", "r2", 65);
}

#[test]
fn a_request_after_a_relay_died_routes_around_it_from_the_start() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, mut nodes, edge) = mesh6_with_edge(&dir.0);
    let body = random_bytes(4 << 20, 66);
    let port = http_server(&topo.netns("c"), body.clone());
    let marks: Vec<(&str, usize)> = ["r1", "r3"].into_iter().map(|h| (h, routes_changed(&nodes[h]))).collect();
    nodes.remove("r2").unwrap().terminate(Duration::from_secs(10));
    // Its neighbours notice within a second and flood it; A's neighbours
    // (whom a new request VM asks for link state) then route around it.
    std::thread::sleep(Duration::from_secs(2));
    for (h, mark) in marks {
        assert!(routes_changed(&nodes[h]) > mark, "{h} reported no route change:\n{}", nodes[h].events().dump());
    }
    for criteria in ["latency=require", "reliability=require,bandwidth=prefer"] {
        let (code, got) = curl(&topo, &format!("http://c:{port}/x"), Some(&format!("pathvm:{criteria}")));
        assert_eq!(code, Some(0), "{criteria}");
        assert!(sha256(&got) == sha256(&body), "{criteria}: {} of {} bytes", got.len(), body.len());
    }
    let ended = edge.events.wait_n(2, Duration::from_secs(15), |e| events::is(e, "vm_ended"));
    let all = edge.events.dump();
    assert_eq!(ended.iter().filter(|e| e["exit"] == "Exited(0)").count(), 2, "{all}");
    assert!(
        ended.iter().all(|e| e["counters"]["route_changes"].as_u64().is_some_and(|n| n > 0)),
        "a request VM never learned r2 is gone:\n{all}"
    );
    drop(edge.child);
}

#[test]
fn shortest_moves_a_stream_off_a_dead_relay_without_losing_a_byte() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    survives_relay_death("latency=require", "shortest", "r1", 64);
}
