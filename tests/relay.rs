//! The three-host data path on real KVM and real namespaces: A's node VM
//! sends overlay datagrams, B's node VM takes them before B's host stack
//! and forwards them, C's node VM delivers them to C's host.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use guest_agent::node::Record;
use guest_agent::wire::{seal_frame, EthAddrs, LinkKey, OverlayRepr, Protocol, ETH_HDR_LEN, FLAG_CONTROL};
use pathvm_tests::capture::Capture;
use pathvm_tests::*;

const UP: Duration = Duration::from_secs(20);

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Reads delivered records from a node's stdout until `n` arrived.
fn read_records(child: &mut Child, n: usize, timeout: Duration) -> Vec<(u16, u32, Vec<u8>)> {
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut got = Vec::new();
        while got.len() < n {
            let k = match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => k,
            };
            buf.extend_from_slice(&chunk[..k]);
            let mut used = 0;
            while let Some((r, len)) = Record::decode(&buf[used..]) {
                got.push((r.node, r.flow, r.payload.to_vec()));
                used += len;
            }
            buf.drain(..used);
        }
        let _ = tx.send(got);
    });
    rx.recv_timeout(timeout).unwrap_or_default()
}

#[test]
fn ten_thousand_datagrams_cross_line3_through_b_before_its_host_stack() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let (ma, mb, mc) = (dir.0.join("a.json"), dir.0.join("b.json"), dir.0.join("c.json"));
    let mut c = topo.start_node("c", 3, &mc);
    let b = topo.start_node("b", 2, &mb);
    let mut a = topo.start_node("a", 1, &ma);
    let b_stack_before = topo.ip_in_receives("b");

    const N: usize = 10_000;
    let mut sent = HashMap::new();
    let mut input = Vec::new();
    for i in 0..N {
        let len = 16 + (i * 131) % 1300;
        let mut payload = (i as u32).to_be_bytes().to_vec();
        payload.extend(random_bytes(len, i as u64 + 1));
        sent.insert(i as u32, sha256(&payload));
        Record { node: 3, flow: i as u32, payload: &payload }.encode(&mut input);
    }
    let mut stdin = a.child().stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let got = read_records(c.child(), N, Duration::from_secs(60));
    writer.join().unwrap();
    assert_eq!(got.len(), N, "datagrams delivered at C");
    for (src, flow, payload) in &got {
        assert_eq!(*src, 1);
        assert_eq!(sent.get(flow), Some(&sha256(payload)), "payload of flow {flow} corrupted");
    }
    let unique: std::collections::HashSet<u32> = got.iter().map(|r| r.1).collect();
    assert_eq!(unique.len(), N, "duplicates delivered");

    assert_eq!(topo.ip_in_receives("b"), b_stack_before, "B's host IP stack saw overlay packets");
    for g in [a, b, c] {
        assert_eq!(g.terminate(UP).0, Some(130));
    }
    let (mb, mc) = (metrics(&mb), metrics(&mc));
    assert_eq!(mb["node"]["forwarded"], N as u64, "B forwarded: {mb}");
    assert!(mb["ports"][0]["rx_frames"].as_u64().unwrap() >= N as u64, "B port from A: {mb}");
    assert!(mb["ports"][1]["tx_frames"].as_u64().unwrap() >= N as u64, "B port to C: {mb}");
    assert_eq!(mb["node"]["tx_full"], 0);
    assert_eq!(mc["node"]["delivered"], N as u64);
}

#[test]
fn a_restarted_relay_is_heard_at_once_not_refused_as_a_replay() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let mut c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b1.json"));
    let mut a = topo.start_node("a", 1, &dir.0.join("a.json"));
    let mut c_out = c.child().stdout.take().unwrap();
    originate(&mut a, 0..100, |i| i);
    read_n(&mut c_out, 100);
    // B restarts: its link sequence numbers start from its new boot time,
    // above anything A and C saw from it, so nothing it sends is refused.
    b.terminate(UP);
    let b = topo.start_node("b", 2, &dir.0.join("b2.json"));
    originate(&mut a, 100..200, |i| i);
    read_n(&mut c_out, 100);
    for g in [a, b, c] {
        g.terminate(UP);
    }
    for h in ["a", "c"] {
        let m = metrics(&dir.0.join(format!("{h}.json")));
        assert_eq!(m["node"]["drops"]["replayed"], 0, "{h} refused the restarted B: {m}");
    }
}

#[test]
fn a_link_captured_before_the_receiver_restarted_is_refused_whole_after_it() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let mut c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b1.json"));
    let mut a = topo.start_node("a", 1, &dir.0.join("a.json"));
    let mut c_out = c.child().stdout.take().unwrap();
    // An observer of the A-B link records 1,000 datagrams (and A's probes
    // and link state) that B accepted and forwarded.
    let capture = Capture::start(&topo.netns("a"), "ln0");
    originate(&mut a, 0..1_000, |i| i);
    read_n(&mut c_out, 1_000);
    let (a_link, _) = port_of(&topo, "a", "ln0");
    let recorded: Vec<Vec<u8>> = capture.stop().into_iter().filter(|f| overlay_link_id(f) == Some(a_link)).collect();
    // Nearly all of the link: the count matters less than that every
    // recorded frame is refused below.
    assert!(recorded.len() >= 900, "{} frames of A recorded", recorded.len());
    // A goes quiet, B restarts, and the recording is played to it.
    a.terminate(UP);
    b.terminate(UP);
    let b = topo.start_node("b", 2, &dir.0.join("b2.json"));
    let n = recorded.len() as u64;
    inject_every(&topo.netns("a"), "ln0", recorded, Duration::from_micros(300));
    std::thread::sleep(Duration::from_secs(1));
    b.terminate(UP);
    c.terminate(UP);
    let m = metrics(&dir.0.join("b2.json"));
    let node = &m["node"];
    // At least the recording (a frame C sealed just before B came back may
    // count too).
    assert!(node["drops"]["stale"].as_u64() >= Some(n), "every recorded frame refused as from before B's boot: {m}");
    assert_eq!(node["forwarded"], 0, "{m}");
    assert!(m["ports"][0]["rx_frames"].as_u64() >= Some(n), "all of the recording reached B's VM: {m}");
}

/// The sender link id of an overlay frame.
fn overlay_link_id(frame: &[u8]) -> Option<u32> {
    let p = guest_agent::wire::OverlayPacket::new_checked(frame.get(ETH_HDR_LEN..)?).ok()?;
    (frame[12..14] == guest_agent::wire::ETHERTYPE.to_be_bytes()).then(|| p.link_id())
}

/// A port of a node config: (tx_link_id, key).
fn port_of(topo: &TopoGuard, host: &str, iface: &str) -> (u32, [u8; 32]) {
    // Loading agrees the link's key from the certificates, as a node does.
    let file = topo.node_file(host);
    let p = file.port.iter().find(|p| p.iface == iface).expect("port");
    (p.tx_link_id, hex32(&p.key))
}

/// The link-state signing secret of a node config.
fn lsa_secret_of(topo: &TopoGuard, host: &str) -> [u8; 32] {
    // Loading resolves the node's [identity] (its key file) as a node does.
    hex32(&topo.node_file(host).lsa_secret)
}

/// An Ethernet frame carrying a sealed overlay packet.
fn frame(link_id: u32, seq: u64, key: &LinkKey, dst: u16, payload: &[u8]) -> Vec<u8> {
    frame_of(Protocol::Shortest, 0, link_id, seq, key, dst, payload)
}

/// The same with any protocol and flags.
fn frame_of(protocol: Protocol, flags: u8, link_id: u32, seq: u64, key: &LinkKey, dst: u16, payload: &[u8]) -> Vec<u8> {
    frame_from(1, protocol, flags, link_id, seq, key, dst, payload)
}

/// The same from any source.
#[allow(clippy::too_many_arguments)]
fn frame_from(
    src: u16,
    protocol: Protocol,
    flags: u8,
    link_id: u32,
    seq: u64,
    key: &LinkKey,
    dst: u16,
    payload: &[u8],
) -> Vec<u8> {
    let repr = OverlayRepr {
        protocol,
        flags,
        hop_limit: 8,
        flow_id: seq as u32,
        src,
        dst,
        state_len: 0,
        payload_len: payload.len() as u16,
        link_id,
        link_seq: seq,
    };
    let mut f = Vec::new();
    let eth = EthAddrs { dst: [2, 0x50, 0, 0, 0, 2], src: [2, 0x50, 0, 0, 0, 1] };
    seal_frame(&mut f, eth, &repr, &[], payload, key).unwrap();
    f
}

/// Sends raw frames out of `iface` inside namespace `ns`.
fn inject(ns: &str, iface: &str, frames: Vec<Vec<u8>>) {
    inject_every(ns, iface, frames, Duration::from_millis(20));
}

/// The same, one frame per `interval`.
fn inject_every(ns: &str, iface: &str, frames: Vec<Vec<u8>>, interval: Duration) {
    let iface = iface.to_string();
    in_netns(ns, move || {
        let sock = netdev::packet_socket::RawSocket::open(&iface).expect("AF_PACKET socket");
        for f in &frames {
            sock.send(f).expect("send");
            std::thread::sleep(interval);
        }
    });
}

/// Plays A on line3 (A has no node; the test has A's real link key) and
/// sends B a valid datagram for C, the frames `hostile` makes from A's
/// link id and packet key (sequence numbers `t + 2` to `t + 999` are
/// theirs, `t` the clock after B started), then another valid one. Both valid ones must reach C and B must keep
/// running; returns B's node counters.
fn relay_between_valid_frames(hostile: impl FnOnce(u32, &LinkKey, u64) -> Vec<Vec<u8>>) -> serde_json::Value {
    relay_between_valid_frames_on(&TopoGuard::up("line3.toml"), hostile)
}

/// The same on a line3 already up.
fn relay_between_valid_frames_on(
    topo: &TopoGuard,
    hostile: impl FnOnce(u32, &LinkKey, u64) -> Vec<Vec<u8>>,
) -> serde_json::Value {
    let dir = TempDir::new();
    let (mb, mc) = (dir.0.join("b.json"), dir.0.join("c.json"));
    let mut c = topo.start_node("c", 3, &mc);
    let b = topo.start_node("b", 2, &mb);
    let (link, key) = port_of(topo, "a", "ln0");
    let key = LinkKey::new(&key).derive(link);
    let t = wall_us();
    let mut frames = vec![frame(link, t + 1, &key, 3, b"first valid")];
    frames.extend(hostile(link, &key, t));
    frames.push(frame(link, t + 1000, &key, 3, b"second valid"));
    inject(&topo.netns("a"), "ln0", frames);
    let got = read_records(c.child(), 2, Duration::from_secs(20));
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.2.as_slice()).collect();
    assert_eq!(payloads, vec![&b"first valid"[..], &b"second valid"[..]]);
    assert_eq!(b.terminate(UP).0, Some(130), "relay VM did not keep running");
    c.terminate(UP);
    let node = metrics(&mb)["node"].clone();
    assert_eq!(node["forwarded"], 2, "{node}");
    node
}

#[test]
fn relay_drops_and_counts_malformed_packets_and_keeps_forwarding() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let node = relay_between_valid_frames(|link, key, t| {
        let mut truncated = frame(link, t + 2, key, 3, b"cut short");
        truncated.truncate(ETH_HDR_LEN + 20);
        let mut wrong_version = frame(link, t + 3, key, 3, b"version 9");
        wrong_version[ETH_HDR_LEN] = 9;
        let bad_mac = frame(link, t + 4, &LinkKey::new(&[0x55; 32]), 3, b"forged");
        let replayed = frame(link, t + 1, key, 3, b"first valid");
        let no_route = frame(link, t + 5, key, 99, b"nowhere");
        let mut not_overlay = frame(link, t + 6, key, 3, b"ipv4?");
        not_overlay[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        vec![truncated, wrong_version, bad_mac, replayed, no_route, not_overlay]
    });
    let d = &node["drops"];
    for (k, want) in [("truncated", 1), ("bad_version", 1), ("bad_mac", 1), ("replayed", 1), ("no_route", 1)] {
        assert_eq!(d[k], want, "{k}: {node}");
    }
    assert!(d["not_overlay"].as_u64().unwrap() >= 1, "{node}");
}

#[test]
fn hostile_onion_cells_and_control_messages_are_counted_drops_and_the_relay_keeps_forwarding() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let node = relay_between_valid_frames(|link, key, t| {
        let onion = |seq: u64, payload: &[u8]| frame_of(Protocol::Onion, 0, link, t + seq, key, 2, payload);
        let control =
            |seq: u64, payload: &[u8]| frame_of(Protocol::Shortest, FLAG_CONTROL, link, t + seq, key, 2, payload);
        vec![
            // A cell of the wrong size.
            onion(2, &[7u8; 100]),
            // A full-size "create" whose header is noise: its MAC fails.
            onion(3, &random_bytes(guest_agent::onion::CELL_LEN, 9)),
            // Control messages that are no message, or a truncated one.
            control(4, &[9, 9, 9]),
            control(5, &[3, 0, 12, 0]),
        ]
    });
    assert_eq!(node["circuits"], 0, "{node}");
    let d = &node["drops"];
    assert_eq!(
        (d["bad_cell"].as_u64(), d["bad_mac"].as_u64(), d["bad_control"].as_u64()),
        (Some(1), Some(1), Some(2)),
        "{node}"
    );
}

#[test]
fn link_state_forged_by_a_neighbour_is_refused_and_the_relay_keeps_its_routes() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    use guest_agent::routing::linkstate::{LinkReport, LinkStatus, Lsa};
    use guest_agent::routing::lsa_sign::LsaSigner;
    use guest_agent::wire::control::Control;
    let topo = TopoGuard::up("line3.toml");
    // A holds its link key and its own signing key, not C's: it claims
    // C's link to B is down, as C and as an origin nobody configured.
    let a_secret = lsa_secret_of(&topo, "a");
    let node = relay_between_valid_frames_on(&topo, |link, key, t| {
        let lsa = |origin: u16, seq: u64| {
            let mut l = Lsa {
                origin,
                seq,
                onion_key: [0; 32],
                links: vec![LinkReport { peer: 2, status: LinkStatus::Down, latency_us: 0, loss_permille: 1000 }],
                sig: [0; 64],
                cert: Vec::new(),
            };
            LsaSigner::new(&a_secret).sign(&mut l);
            let mut payload = Vec::new();
            Control::LinkState(l).encode(&mut payload);
            payload
        };
        let control =
            |seq: u64, payload: &[u8]| frame_of(Protocol::Shortest, FLAG_CONTROL, link, t + seq, key, 2, payload);
        // Numbered a second ahead: newer than anything C sent.
        let ahead = wall_us() + 1_000_000;
        let mut frames: Vec<Vec<u8>> = (0..5).map(|k| control(2 + k, &lsa(3, ahead + k * 100_000))).collect();
        frames.push(control(10, &lsa(99, ahead)));
        frames
    });
    let d = &node["drops"];
    assert_eq!((d["bad_signature"].as_u64(), d["unknown_origin"].as_u64()), (Some(5), Some(1)), "{node}");
    assert!(node["lsas_accepted"].as_u64() >= Some(1), "C's own link state was taken in: {node}");
}

#[test]
fn several_senders_share_a_link_each_under_its_own_id_and_key() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let (mb, mc) = (dir.0.join("b.json"), dir.0.join("c.json"));
    let mut c = topo.start_node("c", 3, &mc);
    let b = topo.start_node("b", 2, &mb);
    // Two senders on A's side of the link (as two request VMs would be),
    // each with its own id, key and sequence numbers, interleaved.
    let (base, parent) = port_of(&topo, "a", "ln0");
    let parent = LinkKey::new(&parent);
    let (k0, k1) = (parent.derive(base), parent.derive(base + 1));
    let mut frames = Vec::new();
    let t = wall_us();
    for seq in 1..=3u64 {
        frames.push(frame(base, t + seq, &k0, 3, format!("s0-{seq}").as_bytes()));
        frames.push(frame(base + 1, t + seq, &k1, 3, format!("s1-{seq}").as_bytes()));
    }
    // Outside A's span, and sealed with the link key itself: both refused.
    frames.push(frame(base + (1 << 16), t + 1, &parent.derive(base + (1 << 16)), 3, b"out of span"));
    frames.push(frame(base + 2, t + 1, &parent, 3, b"underived key"));
    inject(&topo.netns("a"), "ln0", frames);
    let got = read_records(c.child(), 6, Duration::from_secs(20));
    let mut payloads: Vec<String> = got.iter().map(|r| String::from_utf8_lossy(&r.2).into_owned()).collect();
    payloads.sort();
    assert_eq!(payloads, ["s0-1", "s0-2", "s0-3", "s1-1", "s1-2", "s1-3"]);
    b.terminate(UP);
    c.terminate(UP);
    let node = &metrics(&mb)["node"];
    assert_eq!(node["forwarded"], 6, "{node}");
    assert_eq!(
        (node["drops"]["unknown_link"].as_u64(), node["drops"]["bad_mac"].as_u64()),
        (Some(1), Some(1)),
        "{node}"
    );
}

#[test]
fn topo_down_is_idempotent_and_removes_namespaces() {
    if !require(&[Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    let ns = topo.netns("r3");
    assert!(std::path::Path::new(&format!("/var/run/netns/{ns}")).exists());
    let file = workspace().join("tests/topologies/mesh6.toml");
    let again =
        std::process::Command::new(pathvm_bin()).args(["topo", "up"]).arg(&file).args(["--name", &topo.name]).output();
    let again = again.unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"), "second up must refuse");
    for _ in 0..2 {
        let st = std::process::Command::new(pathvm_bin())
            .args(["topo", "down"])
            .arg(&file)
            .args(["--name", &topo.name])
            .status();
        assert!(st.unwrap().success());
    }
    assert!(!std::path::Path::new(&format!("/var/run/netns/{ns}")).exists());
}

/// Makes A originate with `protocol`.
fn set_origin_protocol(topo: &TopoGuard, protocol: &str) {
    let cfg = topo.node_config("a");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed = text.replacen("protocol = \"shortest\"", &format!("protocol = \"{protocol}\""), 1);
    assert_ne!(text, changed, "node config has no protocol line");
    std::fs::write(&cfg, changed).unwrap();
}

#[test]
fn multipath_spreads_over_both_disjoint_paths_and_delivers_all() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    set_origin_protocol(&topo, "multipath");
    let forwarded = mesh6_forwarded(&topo);
    assert_eq!(forwarded["r1"] + forwarded["r3"], 200, "{forwarded:?}");
    // Weighted by bottleneck bandwidth: a - r1 - r2 - c is 500 Mbit/s,
    // a - r3 - r4 - c 2000, so about 1 in 5 packets takes r1 on an idle
    // machine; bandwidth is discounted by the loss probes measure, and on
    // two loaded cores the first probes of a starting node go unanswered
    // now and then (seen: 1 in 3), so the test asks only that the wider
    // path carries more.
    assert!(forwarded["r1"] >= 20 && forwarded["r3"] >= 100, "not spread: {forwarded:?}");
    assert!(forwarded["r3"] > forwarded["r1"], "not weighted by bandwidth: {forwarded:?}");
    assert_eq!((forwarded["r2"], forwarded["r4"]), (forwarded["r1"], forwarded["r3"]), "{forwarded:?}");
}

#[test]
fn redundant_sends_every_packet_on_two_paths_and_c_delivers_each_once_even_when_a_relay_dies() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    set_origin_protocol(&topo, "redundant");
    let dir = TempDir::new();
    let mut nodes = mesh6_nodes(&topo, &dir.0);
    originate(nodes.get_mut("a").unwrap(), 0..100, |_| 1);
    let mut c_out = nodes.get_mut("c").unwrap().child().stdout.take().unwrap();
    let first = read_n(&mut c_out, 100);
    // A relay on the fast path dies; the other copy keeps coming.
    nodes.remove("r1").unwrap().terminate(UP);
    originate(nodes.get_mut("a").unwrap(), 100..200, |_| 1);
    let second = read_n(&mut c_out, 100);
    let mut got: Vec<u32> =
        first.iter().chain(second.iter()).map(|p| u32::from_be_bytes(p[..4].try_into().unwrap())).collect();
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<u32>>(), "lost or duplicated packets");
    for g in nodes.into_values() {
        g.terminate(UP);
    }
    let c = metrics(&dir.0.join("c.json"));
    assert_eq!(c["node"]["delivered"], 200, "{c}");
    assert!(c["node"]["duplicates"].as_u64().unwrap() >= 100, "copies did not both arrive: {c}");
}

/// Reads `n` delivered records' payloads from a node's stdout.
fn read_n(out: &mut std::process::ChildStdout, n: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n && Instant::now() < deadline {
        let k = out.read(&mut chunk).unwrap_or(0);
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
        let mut used = 0;
        while let Some((r, len)) = Record::decode(&buf[used..]) {
            got.push(r.payload.to_vec());
            used += len;
        }
        buf.drain(..used);
    }
    assert_eq!(got.len(), n, "records delivered");
    got
}

/// Runs `pathvm node` on every mesh6 host (metrics in `dir`), each VM up.
fn mesh6_nodes(topo: &TopoGuard, dir: &Path) -> HashMap<&'static str, Daemon> {
    [("c", 3), ("r1", 11), ("r2", 12), ("r3", 13), ("r4", 14), ("a", 1)]
        .into_iter()
        .map(|(h, id)| (h, topo.start_node(h, id, &dir.join(format!("{h}.json")))))
        .collect()
}

/// Has node `a` originate one datagram to C (node 3) per number in
/// `numbers`, carrying the number, under flow id `flow(number)`.
fn originate(a: &mut Daemon, numbers: std::ops::Range<u32>, flow: impl Fn(u32) -> u32) {
    let mut input = Vec::new();
    for i in numbers {
        Record { node: 3, flow: flow(i), payload: &i.to_be_bytes() }.encode(&mut input);
    }
    a.child().stdin.as_mut().unwrap().write_all(&input).unwrap();
}

/// Runs nodes on every mesh6 host, sends 200 datagrams A -> C; returns how
/// many each relay forwarded.
fn mesh6_forwarded(topo: &TopoGuard) -> HashMap<&'static str, u64> {
    let dir = TempDir::new();
    let mut nodes = mesh6_nodes(topo, &dir.0);
    originate(nodes.get_mut("a").unwrap(), 0..200, |i| i);
    let got = read_records(nodes.get_mut("c").unwrap().child(), 200, Duration::from_secs(20));
    assert_eq!(got.len(), 200);
    let started = Instant::now();
    let mut forwarded = HashMap::new();
    for (h, g) in nodes {
        g.terminate(UP);
        forwarded.insert(h, metrics(&dir.0.join(format!("{h}.json")))["node"]["forwarded"].as_u64().unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    forwarded
}

#[test]
fn shortest_takes_the_lowest_latency_path_on_mesh6() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let forwarded = mesh6_forwarded(&TopoGuard::up("mesh6.toml"));
    // a - r1 - r2 - c has 300 µs; a - r3 - r4 - c has 900 µs.
    assert_eq!((forwarded["r1"], forwarded["r2"]), (200, 200), "{forwarded:?}");
    assert_eq!((forwarded["r3"], forwarded["r4"]), (0, 0), "{forwarded:?}");
}

#[test]
fn widest_takes_the_highest_bandwidth_path_on_mesh6() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    // A originates with `widest`; every relay routes by the packet's protocol.
    set_origin_protocol(&topo, "widest");
    let forwarded = mesh6_forwarded(&topo);
    // a - r3 - r4 - c is 2000 Mbit/s wide; a - r1 - r2 - c only 500.
    assert_eq!((forwarded["r3"], forwarded["r4"]), (200, 200), "{forwarded:?}");
    assert_eq!((forwarded["r1"], forwarded["r2"]), (0, 0), "{forwarded:?}");
}

#[test]
fn shortest_moves_off_a_link_whose_latency_rises() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // The operator's view of r1 - r2 rises from 100 µs to 100 ms: the same
    // mesh, re-planned, routes around it.
    let dir = TempDir::new();
    let text = std::fs::read_to_string(workspace().join("tests/topologies/mesh6.toml")).unwrap();
    let slow = text.replacen("b = \"r2\"\nlatency_us = 100\n", "b = \"r2\"\nlatency_us = 100000\n", 1);
    assert_ne!(slow, text, "mesh6.toml no longer has the r1 - r2 link this test edits");
    let file = dir.0.join("mesh6-slow.toml");
    std::fs::write(&file, slow).unwrap();
    let forwarded = mesh6_forwarded(&TopoGuard::up_file(&file));
    assert_eq!((forwarded["r1"], forwarded["r2"]), (0, 0), "{forwarded:?}");
    assert_eq!((forwarded["r3"], forwarded["r4"]), (200, 200), "{forwarded:?}");
}

#[test]
fn shortest_moves_off_a_link_when_its_measured_delay_rises_by_100_ms() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // Same nodes, same configuration: only the wire changes. The nodes'
    // probes measure it, flood it, and A's route moves.
    let topo = TopoGuard::up("mesh6.toml");
    let dir = TempDir::new();
    let mut nodes = mesh6_nodes(&topo, &dir.0);
    let mut c_out = nodes.get_mut("c").unwrap().child().stdout.take().unwrap();
    originate(nodes.get_mut("a").unwrap(), 0..50, |i| i);
    read_n(&mut c_out, 50);
    let mark = routes_changed(&nodes["a"]);
    topo.set_link("r1-r2", 100, 0);
    // Probes every 50 ms, a 1 s minimum-RTT window, then one flood that
    // reaches A. (A's first `routes_changed` after the mark is not proof:
    // link state from the nodes' start-up may still be arriving.)
    std::thread::sleep(Duration::from_millis(2500));
    assert!(routes_changed(&nodes["a"]) > mark, "A reported no route change:\n{}", nodes["a"].events().dump());
    originate(nodes.get_mut("a").unwrap(), 50..250, |i| i);
    read_n(&mut c_out, 200);
    for g in nodes.into_values() {
        g.terminate(UP);
    }
    let m = |h: &str| metrics(&dir.0.join(format!("{h}.json")));
    let fwd = |h: &str| m(h)["node"]["forwarded"].as_u64().unwrap();
    assert_eq!((fwd("r1"), fwd("r2")), (50, 50), "before the delay: the fast path; after: not");
    assert_eq!((fwd("r3"), fwd("r4")), (200, 200), "after the delay the slow path");
    let a = m("a");
    assert!(a["node"]["lsas_accepted"].as_u64().unwrap() > 0, "{a}");
    assert!(a["node"]["topology_changes"].as_u64().unwrap() > 0, "{a}");
    assert!(a["node"]["probe_acks"].as_u64().unwrap() > 0, "{a}");
}

/// Round-trip time of one ping from `from` to `addr`, ms (None: lost).
fn ping_ms(topo: &TopoGuard, from: &str, addr: &str) -> Option<f64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.netns(from), "ping", "-c", "1", "-W", "2", addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()
}

#[test]
fn emulated_links_delay_and_drop_as_set_while_running() {
    if !require(&[Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("mesh6.toml");
    // Link 0 (a - r1) is emulated; r1's end is 10.231.0.2.
    let base = ping_ms(&topo, "a", "10.231.0.2").expect("emulated link passes traffic");
    assert!(base < 20.0, "no delay configured, yet {base} ms");
    topo.set_link("a-r1", 25, 0);
    std::thread::sleep(Duration::from_millis(300));
    let slow = ping_ms(&topo, "a", "10.231.0.2").expect("delayed link passes traffic");
    assert!(slow >= 50.0, "25 ms each way, yet the round trip took {slow} ms");
    topo.set_link("a-r1", 0, 100);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping_ms(&topo, "a", "10.231.0.2"), None, "100 % loss let a ping through");
    topo.set_link("a-r1", 0, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(ping_ms(&topo, "a", "10.231.0.2").is_some(), "link did not recover");
}

#[test]
fn relay_benchmark_prints_rates_and_latencies_beside_kernel_forwarding() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let out = std::process::Command::new(pathvm_bin())
        .args(["bench", "relay", "--json", "--seconds", "0.2", "--image"])
        .arg(image())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for f in [
        "relay_pps_64",
        "kernel_pps_64",
        "relay_pps_1400",
        "kernel_pps_1400",
        "relay_hop_latency_us",
        "kernel_hop_latency_us",
    ] {
        assert!(r[f].as_f64().is_some_and(|v| v > 0.0), "{f} missing or zero: {r}");
    }
}

#[test]
fn packets_from_console_record_ids_are_dropped_by_the_relay_and_reach_no_host() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // Sealed with A's real key: only the source (a console record id, which
    // C's host would read as stream bytes or an OPEN) is wrong.
    let node = relay_between_valid_frames(|link, key, t| {
        [guest_agent::node::RECORD_STREAM, guest_agent::node::RECORD_CONTROL]
            .into_iter()
            .enumerate()
            .map(|(k, src)| frame_from(src, Protocol::Shortest, 0, link, t + 2 + k as u64, key, 3, b"\x01127.0.0.1:22"))
            .collect()
    });
    assert_eq!(node["drops"]["reserved_source"], 2, "{node}");
    assert_eq!(node["drops"]["bad_mac"], 0, "{node}");
}
