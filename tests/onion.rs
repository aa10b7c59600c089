//! `onion` as an observer, and as a relay, would see it: mesh6 with the
//! edge on A, a download through a circuit of four relays
//! (a - r1 - r2 - r3 - r4 - c, the only path with at least three), every
//! link captured, every relay's memory written out when it stops.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use guest_agent::wire::{seal_frame, EthAddrs, LinkKey, OverlayRepr, Protocol};
use netdev::packet_socket::RawSocket;
use pathvm_tests::capture::{contains, Capture};
use pathvm_tests::edge::*;
use pathvm_tests::events;
use pathvm_tests::*;

/// mesh6's links in file order: (index, end a, end b) as host names.
const LINKS: [(usize, &str, &str); 7] =
    [(0, "a", "r1"), (1, "r1", "r2"), (2, "r2", "c"), (3, "a", "r3"), (4, "r3", "r4"), (5, "r4", "c"), (6, "r2", "r3")];

fn id(host: &str) -> u16 {
    match host {
        "a" => 1,
        "c" => 3,
        "r1" => 11,
        "r2" => 12,
        "r3" => 13,
        "r4" => 14,
        _ => unreachable!(),
    }
}

fn capture_all(topo: &TopoGuard) -> Vec<(usize, Capture)> {
    LINKS.iter().map(|&(i, a, _)| (i, Capture::start(&topo.netns(a), &format!("ln{i}")))).collect()
}

fn stop_all(caps: Vec<(usize, Capture)>) -> HashMap<usize, Vec<Vec<u8>>> {
    caps.into_iter().map(|(i, c)| (i, c.stop())).collect()
}

/// Overlay frames (EtherType 0x88b5) of protocol `proto` (3 = onion).
fn overlay(frames: &[Vec<u8>], proto: u8) -> Vec<&Vec<u8>> {
    frames.iter().filter(|f| f.len() > 16 && f[12..14] == [0x88, 0xb5] && f[15] == proto).collect()
}

/// Plays relay `host` gone bad: takes an onion frame it sent on `iface`
/// and sends its cell again to the same neighbour under a circuit id the
/// neighbour never saw, sealed afresh for the link (under an id of the
/// relay's own span, with the key its link key gives that id, and a fresh
/// link number), as a relay holding its link key can.
fn replay_cell_as(topo: &TopoGuard, host: &str, iface: &str, sent: &[u8]) {
    // The relay's link key, agreed from the certificates as its node does.
    let file = topo.node_file(host);
    let p = file.port.iter().find(|p| p.iface == iface).expect("the port");
    let link_id = p.tx_link_id + 100;
    let key = LinkKey::new(&hex32(&p.key)).derive(link_id);
    let (mut dst, mut src) = ([0u8; 6], [0u8; 6]);
    dst.copy_from_slice(&sent[..6]);
    src.copy_from_slice(&sent[6..12]);
    let cell = &sent[14 + 28..sent.len() - 16];
    let repr = OverlayRepr {
        protocol: Protocol::Onion,
        flags: 0,
        hop_limit: 1,
        flow_id: 0x0bad_cafe,
        src: u16::from_be_bytes([sent[22], sent[23]]),
        dst: u16::from_be_bytes([sent[24], sent[25]]),
        state_len: 0,
        payload_len: cell.len() as u16,
        link_id,
        link_seq: wall_us(),
    };
    let mut frame = Vec::new();
    seal_frame(&mut frame, EthAddrs { dst, src }, &repr, &[], cell, &key).unwrap();
    let iface = iface.to_string();
    in_netns(&topo.netns(host), move || RawSocket::open(&iface).unwrap().send(&frame).unwrap());
}

fn grep(file: &std::path::Path, needle: &str) -> bool {
    Command::new("grep").args(["-q", "-a", "-F", needle]).arg(file).status().unwrap().success()
}

#[test]
fn onion_relays_see_only_their_neighbours_and_links_carry_ciphertext_of_one_size() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let topo = TopoGuard::up("mesh6.toml");
    let mut nodes = Vec::new();
    for h in ["c", "r1", "r2", "r3", "r4"] {
        let mut cmd = topo.node(h, &dir.0.join(format!("{h}.json")));
        cmd.arg("--dump-memory").arg(dir.0.join(format!("{h}.mem")));
        nodes.push((h, topo.start_node_from(cmd, id(h))));
    }
    let edge = start_edge(&topo);
    let plain = |tag: &str| tag.as_bytes().iter().copied().cycle().take(2 << 20).collect::<Vec<u8>>();
    let (visible, secret) = (plain("SHORTEST-PLAINTEXT-"), plain("ONION-PLAINTEXT-"));
    let visible_port = http_server(&topo.netns("c"), visible.clone());
    let secret_port = http_server(&topo.netns("c"), secret.clone());

    // Under `shortest` the stream is sealed end to end: an observer of the
    // links sees its frames (headers naming A and C: the control that the
    // capture sees the stream) but none of its bytes.
    let caps = capture_all(&topo);
    let (code, got) =
        curl(&topo, &format!("http://c:{visible_port}/shortest-sealed-path"), Some("pathvm:latency=require"));
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&visible)));
    std::thread::sleep(Duration::from_millis(500));
    let seen = stop_all(caps);
    let end_to_end = seen
        .values()
        .flatten()
        .filter(|f| overlay(std::slice::from_ref(f), 1).len() == 1 && matches!(f[22..26], [0, 1, 0, 3] | [0, 3, 0, 1]))
        .count();
    assert!(end_to_end > 1000, "the capture did not see the shortest stream ({end_to_end} frames between A and C)");
    for (i, a, b) in LINKS {
        assert!(
            !seen[&i].iter().any(|f| contains(f, b"SHORTEST-PLAINTEXT-") || contains(f, b"shortest-sealed-path")),
            "link {a}-{b} carried a shortest stream's bytes in the clear"
        );
    }

    // The same through an onion circuit.
    let caps = capture_all(&topo);
    let (code, got) =
        curl(&topo, &format!("http://c:{secret_port}/onion-secret-path"), Some("pathvm:anonymity=require"));
    assert_eq!(code, Some(0));
    assert!(sha256(&got) == sha256(&secret), "onion stream corrupted ({} bytes)", got.len());
    std::thread::sleep(Duration::from_millis(500));
    let seen = stop_all(caps);
    let chosen = edge.events.of("protocol_chosen");
    assert!(
        chosen.iter().any(|e| e["protocol"] == "onion"),
        "anonymity=require did not select onion:\n{}",
        edge.events.dump()
    );
    let target = format!("c:{secret_port}");
    for (i, a, b) in LINKS {
        let frames = &seen[&i];
        for f in frames {
            for needle in [&b"ONION-PLAINTEXT-"[..], b"onion-secret-path", target.as_bytes()] {
                assert!(
                    !contains(f, needle),
                    "link {a}-{b} carried {:?} in the clear",
                    String::from_utf8_lossy(needle)
                );
            }
        }
        let cells = overlay(frames, 3);
        let on_path = !matches!(i, 2 | 3);
        assert_eq!(!cells.is_empty(), on_path, "link {a}-{b}: {} onion cells", cells.len());
        for f in cells {
            assert_eq!(f.len(), 14 + 28 + 1400 + 16, "link {a}-{b}: an onion frame of another size");
            let (src, dst) = (u16::from_be_bytes([f[22], f[23]]), u16::from_be_bytes([f[24], f[25]]));
            let ends = [id(a), id(b)];
            assert!(ends.contains(&src) && ends.contains(&dst) && src != dst, "link {a}-{b} names {src} -> {dst}");
        }
    }

    // r4, the last relay, plays the create it passed to the exit again on
    // a new circuit: the exit refuses it (single-use creates) and makes no
    // circuit end for it.
    let create = overlay(&seen[&5], 3)
        .into_iter()
        .find(|f| f[22..26] == [0, 14, 0, 3])
        .expect("r4 passed a create to the exit")
        .clone();
    replay_cell_as(&topo, "r4", "ln5", &create);
    std::thread::sleep(Duration::from_millis(300));

    // The relays: what they logged and what their memory held at the end.
    drop(edge.child);
    for (h, g) in nodes {
        let (_, log) = g.terminate(Duration::from_secs(20));
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.0.join(format!("{h}.json"))).unwrap()).unwrap();
        if h == "c" {
            assert_eq!(m["node"]["drops"]["replayed_handshake"], 1, "the exit refused the replayed create: {m}");
            assert_eq!(m["node"]["circuits"], 1, "and made no circuit end for it: {m}");
            continue;
        }
        assert!(!log.contains(&target) && !log.contains("onion-secret-path"), "{h} logged the destination:\n{log}");
        let mem = dir.0.join(format!("{h}.mem"));
        assert!(std::fs::metadata(&mem).map(|m| m.len() > 1 << 20).unwrap_or(false), "{h}: no memory dump");
        for needle in ["ONION-PLAINTEXT-", "onion-secret-path", &target, "SHORTEST-PLAINTEXT-"] {
            assert!(!grep(&mem, needle), "relay {h} held {needle:?}");
        }
        assert!(m["node"]["circuits"].as_u64().unwrap() >= 1, "{h} relayed no circuit: {m}");
    }
    // The control again: the destination, which opens both streams, held
    // plaintext of at least one (its heap reuses the first stream's
    // buffers for the second, so not always of both).
    let c_mem = dir.0.join("c.mem");
    assert!(
        ["SHORTEST-PLAINTEXT-", "ONION-PLAINTEXT-"].iter().any(|n| grep(&c_mem, n)),
        "memory dumps cannot show what a VM held"
    );
}

/// `pathvm node` on ladder8's destination and six relays (metrics in
/// `dir`), each VM up; A runs only the edge.
fn ladder8_nodes(topo: &TopoGuard, dir: &std::path::Path) -> HashMap<&'static str, Daemon> {
    [("c", 3), ("r1", 11), ("r2", 12), ("r3", 13), ("r4", 14), ("r5", 15), ("r6", 16)]
        .into_iter()
        .map(|(h, id)| (h, topo.start_node(h, id, &dir.join(format!("{h}.json")))))
        .collect()
}

/// Bytes host `host` has sent on interface `iface`.
fn tx_bytes(topo: &TopoGuard, host: &str, iface: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.netns(host), "cat", &format!("/sys/class/net/{iface}/statistics/tx_bytes")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn an_onion_stream_moves_to_a_new_circuit_when_a_relay_dies_and_loses_no_byte() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // ladder8: a - r1 - r2 - r3 - c and a - r4 - r5 - r6 - c.
    let dir = TempDir::new();
    let topo = std::sync::Arc::new(TopoGuard::up("ladder8.toml"));
    let mut nodes = ladder8_nodes(&topo, &dir.0);
    let edge = start_edge(&topo);
    let body = random_bytes(20 << 20, 67);
    let port = http_server(&topo.netns("c"), body.clone());
    let t2 = topo.clone();
    let fetch = std::thread::spawn(move || curl(&t2, &format!("http://c:{port}/x"), Some("pathvm:anonymity=require")));
    // Which way did the circuit go? A sends on ln0 (to r1) or ln4 (to r4).
    std::thread::sleep(Duration::from_millis(300));
    let (via_r1, via_r4) = (tx_bytes(&topo, "a", "ln0"), tx_bytes(&topo, "a", "ln4"));
    let middle = if via_r1 > via_r4 { "r2" } else { "r5" };
    nodes.remove(middle).unwrap().terminate(Duration::from_secs(10));
    let (code, got) = fetch.join().unwrap();
    assert_eq!(code, Some(0), "the download broke off after {middle} died:\n{}", edge.child.log_text());
    assert!(sha256(&got) == sha256(&body), "lost bytes: {} of {}", got.len(), body.len());
    let chosen = edge.events.of("protocol_chosen");
    assert!(chosen.iter().any(|e| e["protocol"] == "onion"), "{}", edge.events.dump());
    let ended = edge.events.wait(Duration::from_secs(15), |e| events::is(e, "vm_ended"));
    assert!(
        ended["counters"]["route_changes"].as_u64().is_some_and(|n| n > 0),
        "the request VM never saw {middle} go:\n{}",
        edge.events.dump()
    );
    drop(edge.child);
    // The exit took the stream on a second circuit.
    nodes.remove("c").unwrap().terminate(Duration::from_secs(20));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.0.join("c.json")).unwrap()).unwrap();
    assert!(c["node"]["circuits"].as_u64().unwrap() >= 2, "{c}");
}

#[test]
fn circuits_and_source_routes_never_use_a_relay_the_app_avoids() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let topo = TopoGuard::up("ladder8.toml");
    let nodes = ladder8_nodes(&topo, &dir.0);
    let edge = start_edge(&topo);
    let body = random_bytes(2 << 20, 68);
    let port = http_server(&topo.netns("c"), body.clone());
    for _ in 0..3 {
        let (code, got) = curl(&topo, &format!("http://c:{port}/x"), Some("pathvm:anonymity=require,avoid=12"));
        assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    }
    // A source-routed protocol honours the list too.
    let (code, got) =
        curl(&topo, &format!("http://c:{port}/x"), Some("pathvm:reliability=require,bandwidth=prefer,avoid=12"));
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    assert!(edge.events.of("protocol_chosen").iter().any(|e| e["protocol"] == "multipath"), "{}", edge.events.dump());
    // Avoiding a relay of each path leaves no circuit: refused at once.
    let (code, _) = curl(&topo, &format!("http://c:{port}/x"), Some("pathvm:anonymity=require,avoid=12+15"));
    assert_eq!(code, Some(97), "a circuit through an avoided relay?");
    // The edge writes its event just after the reply curl saw: wait for it.
    edge.events.wait(Duration::from_secs(5), |e| {
        events::is(e, "refused") && e["reason"].as_str().is_some_and(|r| r.contains("no onion circuit"))
    });
    drop(edge.child);
    for (h, g) in nodes {
        g.terminate(Duration::from_secs(20));
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.0.join(format!("{h}.json"))).unwrap()).unwrap();
        let circuits = m["node"]["circuits"].as_u64().unwrap();
        match h {
            "r1" | "r2" | "r3" => {
                assert_eq!(circuits, 0, "{h} relayed a circuit that avoids r2");
                assert_eq!(m["node"]["forwarded"], 0, "{h} relayed a packet whose app avoids r2");
            }
            _ => assert!(circuits >= 3, "{h}: {circuits} circuits"),
        }
    }
}
