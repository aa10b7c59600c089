//! A reliable stream through the overlay to a real service: the test plays
//! the edge (A) with the same transport code the agent runs, B relays in its
//! node VM, C's node VM ends the stream and C's node connects the service.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use guest_agent::routing::lsa_sign::LsaKeys;
use guest_agent::transport::e2e::{self, Binding, E2eSession};
use guest_agent::transport::stream::MSS;
use guest_agent::transport::{Segment, Stream, StreamState};
use guest_agent::wire::control::Control;
use guest_agent::wire::{
    seal_frame, EthAddrs, LinkKey, OverlayPacket, OverlayRepr, Protocol, ReplayWindow, ETHERTYPE, ETH_HDR_LEN,
    FLAG_CONTROL, FLAG_STREAM, HEADER_LEN,
};
use netdev::packet_socket::RawSocket;
use pathvm_tests::*;

const UP: Duration = Duration::from_secs(20);

/// What the test, playing A, needs of A's node config.
#[derive(Clone)]
struct APort {
    tx_link: u32,
    rx_link: u32,
    key: [u8; 32],
    /// C's link-state public key: C's onion key is taken only as C signs it.
    c_lsa: [u8; 32],
}

/// A's side of the A-B link.
const A_ETH: EthAddrs = EthAddrs { dst: [2, 0x50, 0, 0, 0, 2], src: [2, 0x50, 0, 0, 0, 1] };

/// A's port and C's link-state key, from A's node config.
fn a_port(topo: &TopoGuard) -> APort {
    // As a node loads it: the link key agreed and the members' link-state
    // keys taken from their certificates.
    let file = topo.node_file("a");
    let p = &file.port[0];
    let c = file.lsa_key.iter().find(|k| k.node == 3).expect("C's key");
    APort { tx_link: p.tx_link_id, rx_link: p.rx_link_id, key: hex32(&p.key), c_lsa: hex32(&c.public) }
}

/// Plays A asking B for the link state, as a node does: C's current onion
/// key, from C's advertisement with C's valid signature.
fn c_onion_key(ns: &str, port: &APort) -> Result<[u8; 32], String> {
    let port = port.clone();
    in_netns(ns, move || {
        let link_key = LinkKey::new(&port.key);
        let (key, rx_key) = (link_key.derive(port.tx_link), link_key.derive(port.rx_link));
        let sock = RawSocket::open("ln0").map_err(|e| e.to_string())?;
        let keys = LsaKeys::new(&[(3, port.c_lsa)]);
        let mut ask = Vec::new();
        Control::LsaRequest.encode(&mut ask);
        let (mut frame, mut buf) = (Vec::new(), vec![0u8; 65536]);
        let mut asked: Option<Instant> = None;
        let start = Instant::now();
        while start.elapsed() < UP {
            if asked.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                let repr = OverlayRepr {
                    protocol: Protocol::Shortest,
                    flags: FLAG_CONTROL,
                    hop_limit: 1,
                    flow_id: 0,
                    src: 1,
                    dst: 2,
                    state_len: 0,
                    payload_len: ask.len() as u16,
                    link_id: port.tx_link,
                    link_seq: wall_us(),
                };
                seal_frame(&mut frame, A_ETH, &repr, &[], &ask, &key).map_err(|e| format!("{e:?}"))?;
                sock.send(&frame).map_err(|e| e.to_string())?;
                asked = Some(Instant::now());
            }
            let Ok(Some(n)) = sock.recv_incoming(&mut buf, 50) else { continue };
            let f = &buf[..n];
            let Ok(p) = OverlayPacket::new_checked(&f[ETH_HDR_LEN.min(f.len())..]) else { continue };
            let Ok(r) = OverlayRepr::parse(&p) else { continue };
            if r.link_id != port.rx_link || r.flags & FLAG_CONTROL == 0 || rx_key.open(&p).is_err() {
                continue;
            }
            if let Ok(Control::LinkState(lsa)) = Control::decode(p.payload()) {
                if lsa.origin == 3 && keys.verify(&lsa) && lsa.onion_key != [0; 32] {
                    return Ok(lsa.onion_key);
                }
            }
        }
        Err("B passed on no link state signed by C".into())
    })
}

/// What A fetches, and how.
struct Fetch {
    /// `host:port` on C.
    target: String,
    /// C's onion key the stream is sealed to.
    c_public: [u8; 32],
    /// Flip one byte of the first data packet (see [`fetch`]).
    flip: bool,
    /// Flip it in the frame as sent, after its link tag, as a wire would.
    flip_on_wire: bool,
    /// How long to try.
    timeout: Duration,
}

impl Fetch {
    /// A fetch of `target` from A, sealed to C's current onion key.
    fn of(topo: &TopoGuard, target: String) -> (APort, Self) {
        let port = a_port(topo);
        let c_public = c_onion_key(&topo.netns("a"), &port).unwrap();
        (port, Self { target, c_public, flip: false, flip_on_wire: false, timeout: Duration::from_secs(60) })
    }
}

/// Plays A: opens a stream to the target on node 3 (sealed end to end to
/// `c_public`, as a request VM seals it), sends `request`, returns
/// everything the service sent back (or why it failed). With `flip`, the
/// first packet carrying request bytes has one byte flipped after the
/// end-to-end seal and before the link seal, as a relay holding the link
/// key could do.
fn fetch(ns: &str, port: APort, what: Fetch, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let Fetch { target, c_public, flip, flip_on_wire, timeout } = what;
    in_netns(ns, move || {
        let link_key = LinkKey::new(&port.key);
        let (key, rx_key) = (link_key.derive(port.tx_link), link_key.derive(port.rx_link));
        let sock = RawSocket::open("ln0").map_err(|e| e.to_string())?;
        let eth = A_ETH;
        let flow = 0x5eed_0001;
        let ephemeral: [u8; 32] = random_bytes(32, wall_us()).try_into().unwrap();
        let binding = Binding { flow, src: 1, dst: 3 };
        let mut e2e = E2eSession::initiate(&ephemeral, &c_public, binding, wall_us()).ok_or("C's onion key")?;
        let mut stream = Stream::connect(target.as_bytes());
        stream.set_mss(MSS - e2e::OVERHEAD);
        let (mut seq, mut window) = (wall_us(), ReplayWindow::new());
        let (mut sent, mut response, mut flipped) = (0usize, Vec::new(), !flip);
        let mut wire_flipped = !flip_on_wire;
        let (mut seg, mut sealed, mut frame, mut buf) = (Vec::new(), Vec::new(), Vec::new(), vec![0u8; 65536]);
        let start = Instant::now();
        while start.elapsed() < timeout {
            let now = start.elapsed().as_micros() as u64;
            if stream.state() == StreamState::Established && sent < request.len() {
                sent += stream.write(&request[sent..]);
                if sent == request.len() {
                    stream.close();
                }
            }
            while stream.poll_transmit(now, &mut seg) {
                let data =
                    Segment::parse(&seg).is_ok_and(|s| !s.data.is_empty() && stream.state() != StreamState::SynSent);
                sealed.clear();
                e2e.seal(&seg, &mut sealed);
                if data && !flipped {
                    let at = sealed.len() - 20;
                    sealed[at] ^= 0x01;
                    flipped = true;
                }
                let repr = OverlayRepr {
                    protocol: Protocol::Shortest,
                    flags: FLAG_STREAM,
                    hop_limit: 8,
                    flow_id: flow,
                    src: 1,
                    dst: 3,
                    state_len: 0,
                    payload_len: sealed.len() as u16,
                    link_id: port.tx_link,
                    link_seq: seq,
                };
                seq += 1;
                seal_frame(&mut frame, eth, &repr, &[], &sealed, &key).map_err(|e| format!("{e:?}"))?;
                if data && !wire_flipped {
                    // A byte of the sealed segment, behind the link tag.
                    let at = ETH_HDR_LEN + HEADER_LEN + sealed.len() - 20;
                    frame[at] ^= 0x01;
                    wire_flipped = true;
                }
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
            if r.link_id != port.rx_link || !window.check(r.link_seq) || rx_key.open(&p).is_err() {
                continue;
            }
            window.accept(r.link_seq);
            if r.flags & FLAG_STREAM != 0 && r.flow_id == flow {
                let mut plain = Vec::new();
                if e2e.open(p.payload(), &mut plain).is_err() {
                    continue;
                }
                if let Ok(s) = Segment::parse(&plain) {
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

/// line3 with node VMs on B and C and a service on C serving `body`.
struct Line3 {
    topo: TopoGuard,
    dir: TempDir,
    b: Daemon,
    c: Daemon,
    body: Vec<u8>,
    port: u16,
}

impl Line3 {
    fn up(len: usize, seed: u64) -> Self {
        Self::up_rotating(len, seed, None)
    }

    /// The same with C rotating its onion key every `c_period_s`.
    fn up_rotating(len: usize, seed: u64, c_period_s: Option<u32>) -> Self {
        let topo = TopoGuard::up("line3.toml");
        let dir = TempDir::new();
        if let Some(p) = c_period_s {
            let path = topo.node_config("c");
            let text = std::fs::read_to_string(&path).unwrap();
            let default = format!("onion_key_period_s = {}\n", guest_agent::onion::rotation::DEFAULT_PERIOD_S);
            assert!(text.contains(&default), "C's node config sets no onion key period");
            std::fs::write(&path, text.replace(&default, &format!("onion_key_period_s = {p}\n"))).unwrap();
        }
        let c = topo.start_node("c", 3, &dir.0.join("c.json"));
        let b = topo.start_node("b", 2, &dir.0.join("b.json"));
        let body = random_bytes(len, seed);
        let port = serve(&topo.netns("c"), body.clone());
        Self { topo, dir, b, c, body, port }
    }

    /// The service's address.
    fn target(&self) -> String {
        format!("10.231.1.2:{}", self.port)
    }

    /// [`fetch`] of the service from A.
    fn fetch(&self, flip: bool) -> Result<Vec<u8>, String> {
        self.fetch_flipping(flip, false)
    }

    /// [`Line3::fetch`], `flip_on_wire` too.
    fn fetch_flipping(&self, flip: bool, flip_on_wire: bool) -> Result<Vec<u8>, String> {
        let (port, what) = Fetch::of(&self.topo, self.target());
        fetch(&self.topo.netns("a"), port, Fetch { flip, flip_on_wire, ..what }, b"GET\n".to_vec())
    }

    /// Stops B and C; their metrics.
    fn stop(self) -> (serde_json::Value, serde_json::Value) {
        self.b.terminate(UP);
        self.c.terminate(UP);
        let read = |h: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(self.dir.0.join(format!("{h}.json"))).unwrap()).unwrap()
        };
        (read("b"), read("c"))
    }
}

#[test]
fn a_stream_through_relay_b_fetches_two_mib_intact_from_a_service_on_c() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let l = Line3::up(2 << 20, 99);
    let got = l.fetch(false).unwrap();
    assert_eq!(got.len(), l.body.len());
    assert_eq!(sha256(&got), sha256(&l.body));
    let (bm, _) = l.stop();
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
    let (a, what) = Fetch::of(&topo, format!("10.231.1.2:{port}"));
    let got = fetch(&topo.netns("a"), a, what, b"GET\n".to_vec()).unwrap();
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
    let (a, what) = Fetch::of(&topo, "10.231.1.2:1".into());
    let started = Instant::now();
    let got = fetch(&topo.netns("a"), a, what, b"GET\n".to_vec());
    assert!(got.unwrap_err().starts_with("stream reset"), "a refused service must reset the stream");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_byte_a_relay_flips_in_a_shortest_stream_is_dropped_by_the_destination_and_the_download_completes() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let l = Line3::up(1 << 20, 42);
    // The request's data packet arrives with a valid link tag and one
    // byte changed: C's VM must drop it, the stream send it again.
    let got = l.fetch(true).unwrap();
    assert_eq!(sha256(&got), sha256(&l.body), "{} bytes", got.len());
    let (_, m) = l.stop();
    let d = &m["node"]["drops"];
    assert_eq!(d["bad_e2e"], 1, "C's VM dropped the altered packet, and nothing else: {m}");
    assert_eq!(d["bad_mac"], 0, "the link tag was valid: {m}");
}

#[test]
fn a_byte_flipped_on_the_wire_in_a_streams_payload_passes_the_relay_and_the_destination_drops_it() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let l = Line3::up(1 << 20, 43);
    // The link tag covers a stream's header and state, not its payload,
    // which the two ends seal: B forwards the frame, C's VM refuses it, the
    // stream sends it again.
    let got = l.fetch_flipping(false, true).unwrap();
    assert_eq!(sha256(&got), sha256(&l.body), "{} bytes", got.len());
    let (b, c) = l.stop();
    assert_eq!(b["node"]["drops"]["bad_mac"], 0, "B took the frame: {b}");
    assert_eq!(c["node"]["drops"]["bad_e2e"], 1, "C's VM dropped the altered packet: {c}");
    assert_eq!(c["node"]["drops"]["bad_mac"], 0, "and C's link tag from B was valid: {c}");
}

#[test]
fn a_hello_sealed_to_an_onion_key_c_advertised_two_periods_ago_opens_nothing() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    // C rotates every 2 s: a key opens for two periods after C advertised
    // it, then C holds nothing that opens what was sealed to it.
    let l = Line3::up_rotating(256 << 10, 17, Some(2));
    let ns = l.topo.netns("a");
    let port = a_port(&l.topo);
    let old = c_onion_key(&ns, &port).unwrap();
    std::thread::sleep(Duration::from_millis(4_500));
    let new = c_onion_key(&ns, &port).unwrap();
    assert_ne!(new, old, "C advertised a new onion key");
    let stale =
        Fetch { target: l.target(), c_public: old, flip: false, flip_on_wire: false, timeout: Duration::from_secs(3) };
    let err = fetch(&ns, port.clone(), stale, b"GET\n".to_vec()).unwrap_err();
    assert!(err.starts_with("timed out with 0 bytes"), "a stream sealed to the erased key got somewhere: {err}");
    let fresh =
        Fetch { target: l.target(), c_public: new, flip: false, flip_on_wire: false, timeout: Duration::from_secs(60) };
    let got = fetch(&ns, port, fresh, b"GET\n".to_vec()).unwrap();
    assert_eq!(sha256(&got), sha256(&l.body), "{} bytes", got.len());
    let (_, m) = l.stop();
    let refused = m["node"]["drops"]["bad_e2e"].as_u64().unwrap_or(0);
    assert!(refused >= 1, "C's VM refused the hellos sealed to its erased key: {m}");
    assert_eq!(m["node"]["drops"]["bad_mac"], 0, "every frame had a valid link tag: {m}");
}
