//! A reliable stream through the overlay to a real service: the test plays
//! the edge (A) with the same transport code the agent runs, B relays in its
//! node VM, C's node VM ends the stream and C's node connects the service.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use guest_agent::transport::{Segment, Stream, StreamState};
use guest_agent::wire::{
    seal_frame, EthAddrs, LinkKey, OverlayPacket, OverlayRepr, Protocol, ReplayWindow, ETHERTYPE, ETH_HDR_LEN,
    FLAG_STREAM,
};
use netdev::packet_socket::RawSocket;
use pathvm_tests::*;

const UP: Duration = Duration::from_secs(20);

/// A's port: (tx link id, rx link id, key).
fn a_port(config: &Path) -> (u32, u32, [u8; 32]) {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let p = &v["port"].as_array().unwrap()[0];
    let hex = p["key"].as_str().unwrap();
    let key: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    (
        p["tx_link_id"].as_integer().unwrap() as u32,
        p["rx_link_id"].as_integer().unwrap() as u32,
        key.try_into().unwrap(),
    )
}

/// Plays A: opens a stream to `target` on node 3, sends `request`, returns
/// everything the service sent back (or why it failed).
fn fetch(ns: &str, port: (u32, u32, [u8; 32]), target: String, request: Vec<u8>) -> Result<Vec<u8>, String> {
    in_netns(ns, move || {
        let (tx_link, rx_link, key) = port;
        let link_key = LinkKey::new(&key);
        let (key, rx_key) = (link_key.derive(tx_link), link_key.derive(rx_link));
        let sock = RawSocket::open("ln0").map_err(|e| e.to_string())?;
        let eth = EthAddrs { dst: [2, 0x50, 0, 0, 0, 2], src: [2, 0x50, 0, 0, 0, 1] };
        let flow = 0x5eed_0001;
        let mut stream = Stream::connect(target.as_bytes());
        let (mut seq, mut window) = (wall_us(), ReplayWindow::new());
        let (mut sent, mut response) = (0usize, Vec::new());
        let (mut seg, mut frame, mut buf) = (Vec::new(), Vec::new(), vec![0u8; 65536]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let now = start.elapsed().as_micros() as u64;
            if stream.state() == StreamState::Established && sent < request.len() {
                sent += stream.write(&request[sent..]);
                if sent == request.len() {
                    stream.close();
                }
            }
            while stream.poll_transmit(now, &mut seg) {
                let repr = OverlayRepr {
                    protocol: Protocol::Shortest,
                    flags: FLAG_STREAM,
                    hop_limit: 8,
                    flow_id: flow,
                    src: 1,
                    dst: 3,
                    state_len: 0,
                    payload_len: seg.len() as u16,
                    link_id: tx_link,
                    link_seq: seq,
                };
                seq += 1;
                seal_frame(&mut frame, eth, &repr, &[], &seg, &key).map_err(|e| format!("{e:?}"))?;
                sock.send(&frame).map_err(|e| e.to_string())?;
            }
            stream.read(&mut response, usize::MAX);
            match stream.state() {
                StreamState::Closed => return Ok(response),
                StreamState::Reset => return Err(format!("stream reset after {} bytes", response.len())),
                _ => {}
            }
            let Ok(Some(n)) = sock.recv_incoming(&mut buf, 1) else { continue };
            let f = &buf[..n];
            if f.len() < ETH_HDR_LEN || f[12..14] != ETHERTYPE.to_be_bytes() {
                continue;
            }
            let Ok(p) = OverlayPacket::new_checked(&f[ETH_HDR_LEN..]) else { continue };
            let Ok(r) = OverlayRepr::parse(&p) else { continue };
            if r.link_id != rx_link || !window.check(r.link_seq) || rx_key.open(&p).is_err() {
                continue;
            }
            window.accept(r.link_seq);
            if r.flags & FLAG_STREAM != 0 && r.flow_id == flow {
                if let Ok(s) = Segment::parse(p.payload()) {
                    stream.on_segment(start.elapsed().as_micros() as u64, &s);
                }
            }
        }
        Err(format!("timed out with {} bytes", response.len()))
    })
}

/// A service in `ns`: answers `GET\n` with `body`, then closes.
fn serve(ns: &str, body: Vec<u8>) -> u16 {
    serve_in(ns, move |mut c| {
        let mut req = [0u8; 4];
        if c.read_exact(&mut req).is_ok() && &req == b"GET\n" {
            let _ = c.write_all(&body);
        }
    })
}

#[test]
fn a_stream_through_relay_b_fetches_two_mib_intact_from_a_service_on_c() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let (mb, mc) = (dir.0.join("b.json"), dir.0.join("c.json"));
    let c = topo.start_node("c", 3, &mc);
    let b = topo.start_node("b", 2, &mb);
    let body = random_bytes(2 << 20, 99);
    let port = serve(&topo.netns("c"), body.clone());

    let got = fetch(&topo.netns("a"), a_port(&topo.node_config("a")), format!("10.231.1.2:{port}"), b"GET\n".to_vec());
    let got = got.unwrap();
    assert_eq!(got.len(), body.len());
    assert_eq!(sha256(&got), sha256(&body));
    b.terminate(UP);
    c.terminate(UP);
    let bm: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mb).unwrap()).unwrap();
    assert!(bm["node"]["forwarded"].as_u64().unwrap() > 1500, "B relayed the stream both ways: {bm}");
}

#[test]
fn a_stream_survives_five_percent_loss_on_the_b_c_link() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // line3 with its B - C link through the link emulator, dropping 5 %.
    let dir = TempDir::new();
    let text = std::fs::read_to_string(workspace().join("tests/topologies/line3.toml")).unwrap();
    let lossy = format!("{}\nloss_percent = 5\n", text.trim_end());
    assert!(lossy.ends_with("latency_us = 100\nloss_percent = 5\n"), "line3.toml's last link changed");
    let file = dir.0.join("line3-lossy.toml");
    std::fs::write(&file, lossy).unwrap();
    let topo = TopoGuard::up_file(&file);
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(1 << 20, 7);
    let port = serve(&topo.netns("c"), body.clone());
    let got = fetch(&topo.netns("a"), a_port(&topo.node_config("a")), format!("10.231.1.2:{port}"), b"GET\n".to_vec());
    let got = got.unwrap();
    assert_eq!(sha256(&got), sha256(&body), "lossy link corrupted or cut the stream ({} bytes)", got.len());
}

#[test]
fn a_stream_to_a_service_that_is_down_is_reset_not_hung() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let started = Instant::now();
    let got = fetch(&topo.netns("a"), a_port(&topo.node_config("a")), "10.231.1.2:1".into(), b"GET\n".to_vec());
    assert!(got.unwrap_err().starts_with("stream reset"), "a refused service must reset the stream");
    assert!(started.elapsed() < Duration::from_secs(20));
}
