//! `pathvm run`'s transparent mode on exit6.toml: apps on A in a sandbox
//! whose only way out is pathvm — a statically linked client, the libc
//! resolver, a raw DNS query to a server of the app's choosing, IPv6, and
//! UDP — while a capture on A's only link checks that nothing but overlay
//! frames left A.

use std::process::{Command, Output};

use pathvm_tests::capture::Capture;
use pathvm_tests::edge::*;
use pathvm_tests::events::{is, Events};
use pathvm_tests::*;

/// `pathvm run --events EVENTS -- APP...` in A's namespace.
fn run_in_a(topo: &TopoGuard, events: &std::path::Path, app: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &topo.netns("a")])
        .arg(pathvm_bin())
        .args(["run", "--events"])
        .arg(events)
        .arg("--")
        .args(app)
        .output()
        .unwrap()
}

#[test]
fn an_app_in_the_sandbox_reaches_names_and_ipv6_through_exits_and_leaks_no_dns_or_udp() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("exit6.toml");
    let dir = TempDir::new();
    let _nodes: Vec<Daemon> = [("c", 3), ("d", 4), ("f", 6), ("e", 5), ("b", 2)]
        .iter()
        .map(|(h, id)| topo.start_node(h, *id, &dir.0.join(format!("{h}.json"))))
        .collect();
    let body = random_bytes(1 << 20, 31);
    let port = http_server_at(&topo.netns("s"), "[::]:0", body.clone());
    let edge = start_edge(&topo);
    let ln0 = Capture::start(&topo.netns("a"), "ln0");

    // A statically linked client with its own resolver, by name.
    let ev = dir.0.join("wget.jsonl");
    let url = format!("http://svc.test:{port}/file");
    let out = run_in_a(&topo, &ev, &["busybox", "wget", "-q", "-O", "-", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let ldd = Command::new("ldd").arg("/bin/busybox").output().unwrap();
    assert!(!ldd.status.success(), "busybox is dynamically linked: the test needs busybox-static");
    assert_eq!(sha256(&out.stdout), sha256(&body), "busybox wget through pathvm run");
    let wget = Events::new(ev);
    let dns = wget.of("run_dns");
    assert!(dns.iter().any(|e| e["name"] == "svc.test" && e["answer"].as_str().is_some()), "{}", wget.dump());
    let connect = &wget.of("run_connect")[0];
    assert_eq!((connect["name"].as_str(), connect["refused"].is_null()), (Some("svc.test"), true), "{connect}");

    // The libc resolver (getaddrinfo) gets pathvm's virtual answer.
    let out = run_in_a(&topo, &dir.0.join("getent.jsonl"), &["getent", "ahosts", "svc.test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && (text.contains("198.18.") || text.contains("fd70:7061:7468:766d:")), "{text}");
    // A raw DNS query to a server of the app's own choosing is answered
    // here too; nothing goes to that server.
    let ev = dir.0.join("dig.jsonl");
    let out = run_in_a(&topo, &ev, &["dig", "+short", "+tries=1", "+time=3", "@192.0.2.53", "svc.test", "A"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim().starts_with("198.18."), "dig got {text:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(Events::new(ev).of("run_ended")[0]["dns_answers"], 1);

    // IPv6 to a service outside the overlay, by address.
    let out = run_in_a(
        &topo,
        &dir.0.join("v6.jsonl"),
        &["curl", "-s", "--max-time", "60", &format!("http://[fd00:232:0::2]:{port}/file")],
    );
    assert_eq!((out.status.code(), sha256(&out.stdout)), (Some(0), sha256(&body)), "IPv6 through the exit");

    // UDP that is not DNS is refused and counted, never sent.
    let ev = dir.0.join("udp.jsonl");
    // The last datagram goes to port 53 but is no DNS query.
    let udp = "import socket\nfor a in [('10.232.0.2', 9999), ('192.0.2.1', 123), ('192.0.2.53', 53)]:\n    \
               socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak?', a)\n";
    let out = run_in_a(&topo, &ev, &["python3", "-c", udp]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended = &Events::new(ev).of("run_ended")[0];
    assert!(ended["refused_packets"].as_u64().unwrap() >= 2, "{ended}");
    assert_eq!(ended["dns_dropped"], 1, "garbage to the resolver is a counted drop: {ended}");

    // Anyone but the app reaching the relay's end of the link (here A's
    // own stack) is dropped, never carried to the edge.
    let ev = dir.0.join("stranger.jsonl");
    let mut app = Command::new("ip")
        .args(["netns", "exec", &topo.netns("a")])
        .arg(pathvm_bin())
        .args(["run", "--events"])
        .arg(&ev)
        .args(["--", "sleep", "2"])
        .spawn()
        .unwrap();
    let run = Events::new(ev.clone());
    let up = run.wait(std::time::Duration::from_secs(10), |e| is(e, "run_up"));
    let relay = format!("{}:{}", up["gateway_v4"].as_str().unwrap(), up["tcp_port"]);
    let accepted_before = edge.events.of("request_accepted").len();
    in_netns(&topo.netns("a"), move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&relay).expect("the relay's port is reachable from A");
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "a stranger got an answer");
    });
    assert!(app.wait().unwrap().success());
    let ended = &run.of("run_ended")[0];
    assert_eq!(ended["strangers"], 1, "{ended}");
    assert_eq!(edge.events.of("request_accepted").len(), accepted_before, "a stranger reached the edge");

    let frames = ln0.stop();
    assert!(!frames.is_empty(), "the overlay carried nothing over A's link");
    let foreign: Vec<String> = frames
        .iter()
        .filter(|f| f.len() < 14 || u16::from_be_bytes([f[12], f[13]]) != guest_agent::wire::ETHERTYPE)
        .map(|f| format!("{:02x?}", &f[..f.len().min(40)]))
        .collect();
    assert!(foreign.is_empty(), "{} frames on A's link were not overlay frames: {foreign:?}", foreign.len());
    // Names travelled as names: the edge was asked for svc.test, and the
    // exit resolved it.
    let accepted = edge.events.of("request_accepted");
    assert!(accepted.iter().any(|e| e["target"] == format!("svc.test:{port}")), "{}", edge.events.dump());
    assert!(edge.events.all().iter().filter(|e| is(e, "exit_chosen")).count() >= 2);
    // Each run removed its sandbox.
    let left = sh(&["ip", "netns", "list"]).stdout;
    assert!(!String::from_utf8_lossy(&left).contains("pvr"), "a sandbox namespace is left");
    let tables = sh(&["ip", "netns", "exec", &topo.netns("a"), "nft", "list", "tables"]).stdout;
    assert!(!String::from_utf8_lossy(&tables).contains("pathvm_run"), "a sandbox table is left");
}
