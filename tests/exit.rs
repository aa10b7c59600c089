//! Destinations outside the overlay, through exits (exit6.toml): service
//! hosts that run no pathvm hang off exits C and D; both answer to the
//! name svc.test, each on its own exit's resolver only, so which body
//! comes back says which exit resolved the name — A never could.

use pathvm_tests::edge::*;
use pathvm_tests::events::is;
use pathvm_tests::*;

#[test]
fn a_name_outside_the_overlay_is_resolved_and_connected_by_the_exit_the_app_may_use() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("exit6.toml");
    let dir = TempDir::new();
    let nodes: Vec<Daemon> = [("c", 3), ("d", 4), ("f", 6), ("e", 5), ("b", 2)]
        .iter()
        .map(|(h, id)| topo.start_node(h, *id, &dir.0.join(format!("{h}.json"))))
        .collect();
    let (body_s, body_t) = (random_bytes(1 << 20, 21), random_bytes(1 << 20, 22));
    // IPv4 and IPv6 on both service hosts, on one port (one URL reaches either).
    let port = http_server_at(&topo.netns("s"), "[::]:0", body_s.clone());
    http_server_at(&topo.netns("t"), &format!("[::]:{port}"), body_t.clone());
    let edge = start_edge(&topo);
    // The name means nothing on A: a success below was resolved elsewhere.
    let on_a = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.netns("a"), "getent", "hosts", "svc.test"])
        .output()
        .unwrap();
    assert!(!on_a.status.success(), "svc.test resolves on A: the test would prove nothing");

    // By name: the nearer exit, C, resolves it to S.
    let url = format!("http://svc.test:{port}/file");
    let (code, got) = curl(&topo, &url, None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body_s)), "through exit C to S");
    // The app avoids C: D resolves the same name to T.
    let (code, got) = curl(&topo, &url, Some("pathvm:avoid=3"));
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body_t)), "through exit D to T: {}", edge.events.dump());
    // An IPv6 destination: the exit connects it over IPv6.
    let (code, got) = curl(&topo, &format!("http://[fd00:232:0::2]:{port}/file"), None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body_s)), "to S over IPv6");
    // Port 22: C takes no low port, D rejects 22: SOCKS reply 2 (curl 97).
    let (code, _) = curl(&topo, "http://10.232.0.2:22/", None);
    assert_eq!(code, Some(97), "refused by every exit's policy");
    // A name that resolves to the exit's own loopback opens nothing there
    // (a service on C's loopback, which C's own streams may reach).
    let on_c = http_server(&topo.netns("c"), b"C's own service".to_vec());
    let (code, got) = curl(&topo, &format!("http://localhost:{on_c}/"), None);
    assert_eq!(code, Some(97), "reached the exit's loopback: {:?}", String::from_utf8_lossy(&got));
    let refusal = edge.events.wait(std::time::Duration::from_secs(10), |e| {
        is(e, "refused") && e["reason"].as_str().is_some_and(|r| r.contains("the name resolved to"))
    });
    assert_eq!(refusal["reply"], 2, "a policy refusal at the exit is SOCKS reply 2: {refusal}");
    nodes[0].events().wait(std::time::Duration::from_secs(10), |e| {
        is(e, "service_connect") && e["refused"].as_str().is_some_and(|r| r.contains("local address"))
    });
    // An onion request gets an exit too, drawn among those that accept.
    let (code, onion) = curl(&topo, &url, Some("pathvm:anonymity=require"));
    assert_eq!(code, Some(0), "onion through an exit");

    // Tor's RESOLVE and RESOLVE_PTR, answered by the exit's resolver.
    let (ok, v6) = (guest_agent::socks::Reply::Succeeded, guest_agent::socks::Reply::HostUnreachable);
    assert_eq!(socks_lookup(&topo, 0xF0, "svc.test".into(), None), (ok, "10.232.0.2".into()), "C's answer");
    assert_eq!(socks_lookup(&topo, 0xF0, "svc.test".into(), Some("avoid=3")), (ok, "10.232.1.2".into()), "D's");
    assert_eq!(socks_lookup(&topo, 0xF1, "10.232.0.2".into(), None), (ok, "svc.test".into()));
    assert_eq!(socks_lookup(&topo, 0xF0, "nowhere.test".into(), None).0, v6, "no such name: reply 4");

    edge.wait_vms_ended(9);
    let chosen = edge.events.of("exit_chosen");
    let exits: Vec<(u64, String)> =
        chosen.iter().map(|e| (e["exit"].as_u64().unwrap(), e["target"].as_str().unwrap().to_string())).collect();
    assert_eq!(
        exits[..3],
        [(3, format!("svc.test:{port}")), (4, format!("svc.test:{port}")), (3, format!("[fd00:232::2]:{port}"))],
        "the name travelled unresolved to the exit the criteria allow:\n{}",
        edge.events.dump()
    );
    assert!(chosen[0]["why"].as_str().unwrap().contains("nearest of 2"), "{}", chosen[0]);
    assert!(chosen[4]["why"].as_str().unwrap().contains("at random"), "{}", chosen[4]);
    let behind = if chosen[4]["exit"] == 3 { &body_s } else { &body_t };
    assert_eq!(sha256(&onion), sha256(behind), "the onion's body is the one behind its exit {}", chosen[4]["exit"]);
    let refused = edge.events.of("refused");
    let policy =
        refused.iter().find(|e| e["reply"] == 2).unwrap_or_else(|| panic!("no reply 2: {}", edge.events.dump()));
    let reason = policy["reason"].as_str().unwrap();
    assert!(reason.contains("node 3") && reason.contains("node 4") && reason.contains("reject *:22"), "{reason}");
    // The exits' hosts made the connections, each within its policy.
    for (n, host) in [(&nodes[0], "c"), (&nodes[1], "d")] {
        let connects = n.events().of("service_connect");
        assert!(connects.iter().any(|e| e["refused"].is_null()), "{host} connected nothing: {}", n.events().dump());
    }
    assert_eq!(edge.events.all().iter().filter(|e| is(e, "stream_up")).count(), 4, "{}", edge.events.dump());
    let answered: Vec<String> =
        edge.events.of("answered").iter().map(|e| e["answer"].as_str().unwrap().to_string()).collect();
    assert_eq!(answered, ["10.232.0.2", "10.232.1.2", "svc.test"], "{}", edge.events.dump());
    let lookups: usize = nodes[..2].iter().map(|n| n.events().of("lookup").len()).sum();
    assert_eq!(lookups, 4, "every lookup was made by an exit's host");
}
