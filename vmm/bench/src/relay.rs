//! `pathvm bench relay`: packets per second and per-hop latency through
//! relay host B's node VM, beside plain kernel forwarding through B on the
//! same topology in the same run.
//!
//! Setup: line3 (A - B - C). The sender runs on a thread inside A's
//! namespace (pinned to CPU 1); B's node VM is pinned to CPU 0. Kernel
//! forwarding: UDP from A to C's address, routed by B's kernel. Relay:
//! sealed overlay frames from A (with A's real link key) to B's VM, which
//! checks, re-seals and forwards them to C. Rates are what arrives at C's
//! interface per second of sending (plus a short drain); latency is A's
//! send to C's receive of a tagged probe, one probe at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use guest_agent::wire::{seal_frame, EthAddrs, LinkKey, OverlayRepr, Protocol};
use serde::Serialize;

use super::netns_io::{in_netns, pin_to, rx_packets, RawSocket};
use super::{machine, percentile};
use node::NodeFile;
use topo::lab::Lab;
use topo::Topo;

/// Offset of the probe tag in both kinds of probe frame: Ethernet + IPv4 +
/// UDP for the kernel, Ethernet + overlay header for the relay.
const TAG_AT: usize = 42;
const PROBES: usize = 100;

/// What `pathvm bench relay --json` prints.
#[derive(Debug, Serialize)]
pub struct RelayReport {
    /// Frames/s of 64-byte frames through B's relay VM, arriving at C.
    pub relay_pps_64: f64,
    /// Same through B's kernel forwarding.
    pub kernel_pps_64: f64,
    /// Frames/s of 1400-byte frames through the relay VM.
    pub relay_pps_1400: f64,
    /// Same through kernel forwarding.
    pub kernel_pps_1400: f64,
    /// Median A-to-C one-way time through the relay VM, µs.
    pub relay_hop_latency_us: f64,
    /// 99th percentile, µs.
    pub relay_hop_latency_p99_us: f64,
    /// Median A-to-C one-way time through kernel forwarding, µs.
    pub kernel_hop_latency_us: f64,
    /// 99th percentile, µs.
    pub kernel_hop_latency_p99_us: f64,
    /// Frames/s the sender offered (64-byte relay run), for context.
    pub offered_pps_64: f64,
    /// Seconds of sending per rate measurement.
    pub window_s: f64,
    /// Where it was measured.
    pub machine: String,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayBenchError {
    /// Bringing the hosts up.
    #[error(transparent)]
    Topo(#[from] topo::TopoError),
    /// Reading B's or A's node configuration.
    #[error(transparent)]
    NodeFile(#[from] node::NodeFileError),
    /// Traffic or processes.
    #[error("relay benchmark: {0}")]
    Io(#[from] std::io::Error),
    /// A daemon never came up.
    #[error(transparent)]
    Daemon(#[from] topo::lab::DaemonError),
    /// A's configuration has no port.
    #[error("the edge host has no port")]
    NoPort,
}

/// A frame source: kernel UDP or sealed overlay frames.
#[derive(Clone)]
enum Source {
    Kernel { dst: String },
    Relay { link_id: u32, key: [u8; 32], eth: EthAddrs, dst_node: u16 },
}

/// An open sender of one source, on the thread that made it.
enum Sender {
    Kernel {
        sock: std::net::UdpSocket,
        payload: Vec<u8>,
    },
    Relay {
        sock: RawSocket,
        key: LinkKey,
        link_id: u32,
        eth: EthAddrs,
        dst_node: u16,
        payload: Vec<u8>,
        frame: Vec<u8>,
    },
}

impl Source {
    /// Opens a sender of `size`-byte frames (call inside A's namespace).
    fn sender(&self, size: usize) -> std::io::Result<Sender> {
        Ok(match self.clone() {
            Source::Kernel { dst } => {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
                sock.connect((dst.as_str(), 9))?;
                Sender::Kernel { sock, payload: vec![0u8; size.saturating_sub(TAG_AT).max(8)] }
            }
            Source::Relay { link_id, key, eth, dst_node } => {
                let overhead = TAG_AT + guest_agent::wire::TAG_LEN;
                Sender::Relay {
                    sock: RawSocket::open("ln0")?,
                    key: LinkKey::new(&key).derive(link_id),
                    link_id,
                    eth,
                    dst_node,
                    payload: vec![0u8; size.saturating_sub(overhead).max(8)],
                    frame: Vec::with_capacity(2048),
                }
            }
        })
    }

    /// Sends `size`-byte frames for `window` from A; returns frames sent.
    fn flood(&self, ns: &str, size: usize, window: Duration, seq0: u64) -> std::io::Result<u64> {
        let src = self.clone();
        in_netns(ns, move || {
            pin_to(1);
            let mut sender = src.sender(size)?;
            let end = Instant::now() + window;
            let mut sent = 0u64;
            while Instant::now() < end {
                for _ in 0..64 {
                    if sender.send(0, seq0 + sent).is_ok() {
                        sent += 1;
                    }
                }
            }
            Ok(sent)
        })
    }
}

impl Sender {
    /// Sends one frame carrying `tag` (overlay frames use sequence `seq`).
    fn send(&mut self, tag: u64, seq: u64) -> std::io::Result<()> {
        match self {
            Sender::Kernel { sock, payload } => {
                payload[..8].copy_from_slice(&tag.to_be_bytes());
                sock.send(payload).map(|_| ())
            }
            Sender::Relay { sock, key, link_id, eth, dst_node, payload, frame } => {
                payload[..8].copy_from_slice(&tag.to_be_bytes());
                let repr = OverlayRepr {
                    protocol: Protocol::Shortest,
                    flags: 0,
                    hop_limit: 8,
                    flow_id: 1,
                    src: 1,
                    dst: *dst_node,
                    state_len: 0,
                    payload_len: payload.len() as u16,
                    link_id: *link_id,
                    link_seq: seq,
                };
                seal_frame(frame, *eth, &repr, &[], payload, key)
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                sock.send(frame)
            }
        }
    }
}

/// Frames per second arriving at C's link while `src` sends `size`-byte
/// frames for `window`.
fn measure_rate(t: &Topo, src: &Source, size: usize, window: Duration, seq0: &mut u64) -> std::io::Result<(f64, f64)> {
    let (c, a) = (t.netns("c"), t.netns("a"));
    let before = rx_packets(&c, "ln1");
    let sent = src.flood(&a, size, window, *seq0)?;
    *seq0 += sent + 1;
    // Let queued frames drain before counting.
    std::thread::sleep(Duration::from_millis(200));
    let got = rx_packets(&c, "ln1").saturating_sub(before);
    let secs = window.as_secs_f64();
    Ok((got as f64 / secs, sent as f64 / secs))
}

/// One-way times of `PROBES` tagged probes, µs, sorted. A receiver
/// thread waits in C's namespace; the sender's clock starts right before
/// its send, so thread and socket set-up are not counted.
fn measure_latency(t: &Topo, src: &Source, seq0: &mut u64) -> std::io::Result<Vec<f64>> {
    use std::sync::mpsc::channel;
    let (c, a) = (t.netns("c"), t.netns("a"));
    let (probe_tx, probe_rx) = channel::<u64>();
    let (ready_tx, ready_rx) = channel::<()>();
    let (seen_tx, seen_rx) = channel::<Option<Instant>>();
    let receiver = std::thread::spawn(move || {
        in_netns(&c, move || {
            let s = RawSocket::open("ln1")?;
            while let Ok(tag) = probe_rx.recv() {
                let _ = ready_tx.send(());
                let _ = seen_tx.send(s.wait_for(TAG_AT, &tag.to_be_bytes(), Duration::from_secs(1)));
            }
            Ok(())
        })
    });
    let src = src.clone();
    let first_seq = *seq0;
    *seq0 += PROBES as u64;
    let times = in_netns(&a, move || {
        pin_to(1);
        let mut sender = src.sender(64)?;
        let mut times = Vec::with_capacity(PROBES);
        for i in 0..PROBES {
            let tag = 0x5041_5448_0000_0000u64 | i as u64;
            if probe_tx.send(tag).is_err() || ready_rx.recv_timeout(Duration::from_secs(2)).is_err() {
                break;
            }
            let t0 = Instant::now();
            sender.send(tag, first_seq + i as u64)?;
            if let Ok(Some(t1)) = seen_rx.recv_timeout(Duration::from_secs(2)) {
                times.push(t1.duration_since(t0).as_secs_f64() * 1e6);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(probe_tx);
        Ok(times)
    })?;
    let _ = receiver.join();
    let mut times = times;
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Runs the benchmark on `topo_file` (line3), sending for `window` per rate.
pub fn run(exe: &Path, image: &Path, topo_file: &Path, window: Duration) -> Result<RelayReport, RelayBenchError> {
    // A name of its own, so concurrent runs (or a test) never collide.
    let name = format!("pb{}", std::process::id() % 100_000);
    let lab = Lab::up(topo_file, &name, exe, image)?;
    let t = lab.topo();
    let mut seq = 1u64;

    // A bound socket on C, so kernel probes do not draw ICMP port
    // unreachable (which would fail the sender's next send).
    let (sink_stop, sink_wait) = std::sync::mpsc::channel::<()>();
    let (sink_up_tx, sink_up) = std::sync::mpsc::channel::<()>();
    let c_ns = t.netns("c");
    let sink = std::thread::spawn(move || {
        in_netns(&c_ns, move || {
            let _s = std::net::UdpSocket::bind("0.0.0.0:9")?;
            let _ = sink_up_tx.send(());
            let _ = sink_wait.recv();
            Ok(())
        })
    });
    let _ = sink_up.recv_timeout(Duration::from_secs(5));
    let kernel = Source::Kernel { dst: Topo::addr(1, 2) };
    let k_lat = measure_latency(t, &kernel, &mut seq)?;
    let (k64, _) = measure_rate(t, &kernel, 64, window, &mut seq)?;
    let (k1400, _) = measure_rate(t, &kernel, 1400, window, &mut seq)?;
    drop(sink_stop);
    let _ = sink.join();

    // A plays its own node: its link key and ids come from its config.
    let a_cfg = NodeFile::load(&t.node_config_path("a"))?.node_config()?;
    let port = a_cfg.ports.first().ok_or(RelayBenchError::NoPort)?;
    let relay = Source::Relay {
        link_id: port.tx_link_id,
        key: port.key,
        eth: EthAddrs { dst: port.peer_mac, src: Topo::mac(0, 1) },
        dst_node: t.file.host_id("c"),
    };
    let _b = lab.start_node("b", true)?;
    // B refuses numbers from before its boot (recorded frames): A's
    // numbers follow the clock, as a node's do.
    seq =
        seq.max(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64));
    let r_lat = measure_latency(t, &relay, &mut seq)?;
    let (r64, offered64) = measure_rate(t, &relay, 64, window, &mut seq)?;
    let (r1400, _) = measure_rate(t, &relay, 1400, window, &mut seq)?;

    Ok(RelayReport {
        relay_pps_64: r64,
        kernel_pps_64: k64,
        relay_pps_1400: r1400,
        kernel_pps_1400: k1400,
        relay_hop_latency_us: percentile(&r_lat, 50.0),
        relay_hop_latency_p99_us: percentile(&r_lat, 99.0),
        kernel_hop_latency_us: percentile(&k_lat, 50.0),
        kernel_hop_latency_p99_us: percentile(&k_lat, 99.0),
        offered_pps_64: offered64,
        window_s: window.as_secs_f64(),
        machine: machine(),
    })
}
