//! `pathvm bench router`: the overlay router alone on the host, no VM.
//!
//! Relay B of line3 (`guest_agent::router`, the code the relay VM runs)
//! between two in-memory links: frames A sealed for B go in, frames B
//! sealed for C come out. Frames are made before each timed round, so a
//! round times exactly what a relay does per frame: parse, open (replay
//! window, Poly1305 tag), route, rebuild, seal. Beside it, in the same
//! run, the authentication floor: opening and sealing the same frames
//! with the same keys and nothing else. The ratio is the router's own
//! overhead; frames/s is the ceiling the relay VM is held against.

use std::time::Instant;

use guest_agent::router::sim::{self, link, neighbour_frame};
use guest_agent::router::{LinkPort, MemoryLink, Router};
use guest_agent::routing::Link;
use guest_agent::wire::{seal_built, LinkKey, OverlayPacket, Protocol, ETH_HDR_LEN};
use serde::Serialize;

use super::{machine, percentile};

/// Frames per timed round.
const ROUND: usize = 4096;

/// One frame size's numbers.
#[derive(Debug, Serialize)]
pub struct SizeReport {
    /// Overlay payload bytes per frame.
    pub payload_bytes: usize,
    /// Whole Ethernet frame bytes.
    pub frame_bytes: usize,
    /// Frames forwarded per second through the router, median of rounds.
    pub router_fps_p50: f64,
    /// The slowest rounds' rate (1st percentile of frames/s).
    pub router_fps_p1: f64,
    /// Per-frame time through the router, median and p99, ns.
    pub router_ns_p50: f64,
    /// See `router_ns_p50`.
    pub router_ns_p99: f64,
    /// Open + seal alone, frames per second, median.
    pub auth_only_fps_p50: f64,
    /// router / auth-only rate.
    pub ratio_to_auth: f64,
    /// Router throughput in Gbit/s of frame bytes, median.
    pub router_gbps_p50: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct RouterReport {
    /// What was measured.
    pub benchmark: &'static str,
    /// The machine.
    pub machine: String,
    /// Timed rounds per size.
    pub rounds: usize,
    /// Frames per round.
    pub frames_per_round: usize,
    /// One entry per frame size.
    pub sizes: Vec<SizeReport>,
}

fn line3() -> Vec<Link> {
    vec![link(1, 2, 100, 10_000), link(2, 3, 100, 10_000)]
}

/// Frames A sends B for C, sequence numbers from `seq`.
fn frames(links: &[Link], payload: &[u8], seq: u64) -> Vec<Vec<u8>> {
    let repr = sim::repr(Protocol::Shortest, 0, 16, 1, 1, 3);
    (0..ROUND as u64).map(|i| neighbour_frame(links, 0, 1, repr, &[], payload, seq + i)).collect()
}

/// Per-frame ns of each round, sorted.
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn measure(payload_bytes: usize, rounds: usize) -> SizeReport {
    let links = line3();
    let payload = vec![0xa5u8; payload_bytes];
    let (mut a_end, b_in) = MemoryLink::pair_with_capacity(ROUND);
    let (b_out, mut c_end) = MemoryLink::pair_with_capacity(ROUND);
    let cfg = sim::config(&links, 2, Protocol::Shortest.id());
    let mut b = match Router::new(&cfg, vec![(b_in, sim::mac(2, 1)), (b_out, sim::mac(2, 3))], 0) {
        Ok(r) => r,
        Err(e) => unreachable!("line3's relay config: {e}"),
    };
    let mut seq = 10_000;
    let mut frame_bytes = 0;
    let mut router_ns = Vec::with_capacity(rounds);
    // One untimed round warms caches and the allocator.
    for round in 0..=rounds {
        let batch = frames(&links, &payload, seq);
        seq += ROUND as u64;
        frame_bytes = batch[0].len();
        let t = Instant::now();
        for f in &batch {
            // A's end of the link: B takes them from its receive side.
            if !a_end.send(f) {
                unreachable!("the A-B link holds a whole round");
            }
        }
        let mut out = 0;
        while out < ROUND {
            b.poll_links(0);
            b.flush_links(0);
            out += c_end.receive(&mut |_| {});
            if b.stats().drops.total() > 0 {
                unreachable!("the relay dropped a valid frame: {:?}", b.stats().drops);
            }
        }
        if round > 0 {
            router_ns.push(t.elapsed().as_nanos() as f64 / ROUND as f64);
        }
    }
    // The floor: open with B's receive key, seal with B's send key.
    let rx_key = LinkKey::new(&sim::link_key(0)).derive(sim::side_id(0, &links[0], 1));
    let tx_key = LinkKey::new(&sim::link_key(1)).derive(sim::side_id(1, &links[1], 2));
    let mut auth_ns = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut batch = frames(&links, &payload, seq);
        seq += ROUND as u64;
        let t = Instant::now();
        for f in batch.iter_mut() {
            let ok = OverlayPacket::new_checked(&f[ETH_HDR_LEN..]).map(|p| rx_key.open(&p).is_ok());
            if ok != Ok(true) {
                unreachable!("a benchmark frame did not open");
            }
            seal_built(f, seq, &tx_key);
        }
        auth_ns.push(t.elapsed().as_nanos() as f64 / ROUND as f64);
    }
    let (r, a) = (sorted(router_ns), sorted(auth_ns));
    let fps = |ns: f64| if ns > 0.0 { 1e9 / ns } else { 0.0 };
    let (r50, r99) = (percentile(&r, 50.0), percentile(&r, 99.0));
    SizeReport {
        payload_bytes,
        frame_bytes,
        router_fps_p50: fps(r50),
        router_fps_p1: fps(r99),
        router_ns_p50: r50,
        router_ns_p99: r99,
        auth_only_fps_p50: fps(percentile(&a, 50.0)),
        ratio_to_auth: fps(r50) / fps(percentile(&a, 50.0)).max(1.0),
        router_gbps_p50: fps(r50) * frame_bytes as f64 * 8.0 / 1e9,
    }
}

/// Measures 64- and 1400-byte payloads, `rounds` rounds each.
pub fn run(rounds: usize) -> RouterReport {
    RouterReport {
        benchmark: "router",
        machine: machine(),
        rounds,
        frames_per_round: ROUND,
        sizes: [64, 1400].into_iter().map(|n| measure(n, rounds)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_forwards_every_frame_and_reports_both_sizes() {
        let r = run(1);
        assert_eq!(r.sizes.len(), 2);
        for s in &r.sizes {
            assert!(s.router_fps_p50 > 0.0 && s.auth_only_fps_p50 > 0.0, "{s:?}");
        }
        assert!(r.sizes[1].frame_bytes > r.sizes[0].frame_bytes + 1300);
    }
}
