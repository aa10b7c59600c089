//! `pathvm bench connect`: connect-to-first-byte and single-flow
//! throughput of an application's connection through pathvm (SOCKS5 edge,
//! a VM per request, relay B's VM, C's VM) beside the same connection over
//! plain kernel routing through B and through the tunnels a user would
//! pick instead (`ssh -D` to B, microsocks on B: [`super::peers`]), all on
//! line3 test hosts made for the run; each path also for an optimistic app
//! (its first byte sent before the proxy's reply).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use super::traffic::{measure, serve, Via};
use super::{machine, percentile};
use topo::lab::{DaemonError, Lab};

/// Connections timed for connect-to-first-byte.
const CONNECTS: usize = 30;
/// Bytes the throughput run moves.
const BULK: u64 = 64 << 20;

/// What `pathvm bench connect --json` prints.
#[derive(Debug, Serialize)]
pub struct ConnectReport {
    /// Median time from connect() to the first byte through pathvm, ms.
    pub connect_p50_ms: f64,
    /// 99th percentile, ms.
    pub connect_p99_ms: f64,
    /// Median of the same over plain kernel routing, ms.
    pub direct_connect_p50_ms: f64,
    /// 99th percentile, ms.
    pub direct_connect_p99_ms: f64,
    /// One flow's throughput through pathvm, Mbit/s.
    pub throughput_mbps: f64,
    /// One flow's throughput over kernel forwarding, Mbit/s.
    pub kernel_throughput_mbps: f64,
    /// Median connect-to-first-byte through `ssh -D` from A to B, ms.
    pub ssh_connect_p50_ms: f64,
    /// 99th percentile, ms.
    pub ssh_connect_p99_ms: f64,
    /// One flow's throughput through `ssh -D`, Mbit/s.
    pub ssh_throughput_mbps: f64,
    /// Median connect-to-first-byte through microsocks on B, ms.
    pub microsocks_connect_p50_ms: f64,
    /// 99th percentile, ms.
    pub microsocks_connect_p99_ms: f64,
    /// One flow's throughput through microsocks, Mbit/s.
    pub microsocks_throughput_mbps: f64,
    /// Median connect-to-first-byte through pathvm for an optimistic app
    /// (its first byte sent behind the CONNECT request, before the reply,
    /// as Tor Browser does), ms: the byte rides behind the stream's
    /// opening.
    pub optimistic_connect_p50_ms: f64,
    /// The same app through `ssh -D`, ms; null if the byte never came
    /// back (the proxy dropped what the app sent before its reply).
    pub ssh_optimistic_connect_p50_ms: Option<f64>,
    /// The same app through microsocks, ms; null as for ssh (microsocks
    /// 1.0 reads the request with one read and drops what follows it).
    pub microsocks_optimistic_connect_p50_ms: Option<f64>,
    /// Median app bytes that rode behind the opening in pathvm's
    /// optimistic connects (from the edge's `stream_up` events; 1 when the
    /// byte went with the opening).
    pub optimistic_early_bytes_p50: f64,
    /// Where pathvm's connects spent their time: each step's median over
    /// the edge's `stream_up` events of the run, µs (`node::events::ConnectStages`;
    /// `since_accept_us` is the whole, accept to SOCKS reply), and
    /// `service_connect_us`, the destination node's TCP connect to the
    /// service (part of `open_us`, from its `service_connect` events);
    /// `forward_us` and `back_us`, the opening's two legs around it (see
    /// [`opening_legs`]).
    pub stages_p50_us: BTreeMap<String, f64>,
    /// Connections timed.
    pub samples: usize,
    /// Where it was measured.
    pub machine: String,
}

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum ConnectBenchError {
    /// Hosts.
    #[error(transparent)]
    Topo(#[from] topo::TopoError),
    /// Daemons.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Traffic.
    #[error("connect benchmark: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the benchmark on `topo_file` (line3).
pub fn run(exe: &Path, image: &Path, topo_file: &Path) -> Result<ConnectReport, ConnectBenchError> {
    let name = format!("pc{}", std::process::id() % 100_000);
    let lab = Lab::up(topo_file, &name, exe, image)?;
    let port = serve(&lab.netns("c"))?;
    let c = lab.host_addr("c").ok_or_else(|| std::io::Error::other("the topology has no host c on a link"))?;
    let target = std::net::SocketAddrV4::new(c, port);
    let (direct, kernel_mbps) = measure(&lab.netns("a"), target, Via::Kernel, CONNECTS, BULK)?;
    // The peers, before any node takes B's links from B's host stack.
    let (microsocks, microsocks_mbps, microsocks_optimistic) = {
        let (_peer, proxy) = super::peers::microsocks(&lab)?;
        let (t, mbps) = measure(&lab.netns("a"), target, Via::Socks { proxy }, CONNECTS, BULK)?;
        (t, mbps, optimistic(&lab.netns("a"), target, Via::Socks { proxy }).ok())
    };
    let ssh_dir = std::env::temp_dir().join(format!("pathvm-bench-ssh-{}", std::process::id()));
    let ssh = super::peers::ssh_dynamic_forward(&lab, &ssh_dir).and_then(|(_peers, proxy)| {
        let (t, mbps) = measure(&lab.netns("a"), target, Via::Socks { proxy }, CONNECTS, BULK)?;
        Ok((t, mbps, optimistic(&lab.netns("a"), target, Via::Socks { proxy }).ok()))
    });
    let _ = std::fs::remove_dir_all(&ssh_dir);
    let (ssh, ssh_mbps, ssh_optimistic) = ssh?;

    let c_node = lab.start_node("c", false)?;
    let _b = lab.start_node("b", false)?;
    let edge = lab.start_edge_from("a", lab.edge_command("a"))?;
    let (via, mbps) = measure(&lab.netns("a"), target, Via::Edge { criteria: None }, CONNECTS, BULK)?;
    let plain = edge.events().of("stream_up").len();
    let via_optimistic = optimistic(&lab.netns("a"), target, Via::Edge { criteria: None })?;
    let ups = edge.events().of("stream_up");
    let (plain_ups, optimistic_ups) = ups.split_at(plain.min(ups.len()));
    let mut stages_p50_us = stage_medians(plain_ups);
    let early: Vec<f64> = optimistic_ups.iter().filter_map(|e| e["stages"]["early_bytes"].as_f64()).collect();
    // The service's own part of `open_us`, from the destination's node.
    let c_connects = c_node.events().of("service_connect");
    let connects: Vec<f64> = c_connects.iter().filter_map(|e| e["connect_us"].as_f64()).collect();
    stages_p50_us.insert("service_connect_us".into(), median(connects));
    let (forward, back) = opening_legs(plain_ups, &c_connects);
    stages_p50_us.insert("forward_us".into(), median(forward));
    stages_p50_us.insert("back_us".into(), median(back));
    Ok(ConnectReport {
        connect_p50_ms: percentile(&via, 50.0),
        connect_p99_ms: percentile(&via, 99.0),
        direct_connect_p50_ms: percentile(&direct, 50.0),
        direct_connect_p99_ms: percentile(&direct, 99.0),
        throughput_mbps: mbps,
        kernel_throughput_mbps: kernel_mbps,
        ssh_connect_p50_ms: percentile(&ssh, 50.0),
        ssh_connect_p99_ms: percentile(&ssh, 99.0),
        ssh_throughput_mbps: ssh_mbps,
        microsocks_connect_p50_ms: percentile(&microsocks, 50.0),
        microsocks_connect_p99_ms: percentile(&microsocks, 99.0),
        microsocks_throughput_mbps: microsocks_mbps,
        optimistic_connect_p50_ms: percentile(&via_optimistic, 50.0),
        ssh_optimistic_connect_p50_ms: ssh_optimistic.map(|t| percentile(&t, 50.0)),
        microsocks_optimistic_connect_p50_ms: microsocks_optimistic.map(|t| percentile(&t, 50.0)),
        optimistic_early_bytes_p50: median(early),
        stages_p50_us,
        samples: CONNECTS,
        machine: machine(),
    })
}

/// Connect-to-first-byte times (ms, sorted) of an optimistic app from
/// namespace `ns`.
fn optimistic(ns: &str, target: std::net::SocketAddrV4, via: Via) -> std::io::Result<Vec<f64>> {
    super::netns_io::in_netns(ns, move || super::traffic::optimistic_connect_times(target, &via, CONNECTS))
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// Each step's median over `stream_up` events (their `stages` object and
/// `since_accept_us`).
fn stage_medians(events: &[serde_json::Value]) -> BTreeMap<String, f64> {
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in events {
        let whole = e.get("since_accept_us").and_then(|v| v.as_f64());
        let stages = e.get("stages").and_then(|s| s.as_object()).into_iter().flatten();
        for (k, v) in stages
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .chain(whole.map(|w| ("since_accept_us".into(), w)))
        {
            steps.entry(k).or_default().push(v);
        }
    }
    steps.into_iter().map(|(k, v)| (k, median(v))).collect()
}

/// The opening's two legs, µs, per request that has both ends' events
/// (the edge's and the destination node's share the machine's monotonic
/// clock, `mono_us`): `forward`, from the request VM's opening leaving
/// (accept, the edge's steps, the build and the agent's start) to the
/// destination's host starting the service's connect (A's VM, B's relay
/// VM, C's VM and its key agreement, C's console to its host); `back`,
/// from the service connected to the edge's reply (C's host to its VM, B,
/// A's VM, its report to the edge).
fn opening_legs(ups: &[serde_json::Value], connects: &[serde_json::Value]) -> (Vec<f64>, Vec<f64>) {
    let num = |v: &serde_json::Value, k: &str| v[k].as_i64();
    let (mut forward, mut back) = (Vec::new(), Vec::new());
    for up in ups {
        let Some(c) = connects.iter().find(|c| c["flow"] == up["flow"]) else { continue };
        let st = &up["stages"];
        let before_opening: Option<i64> =
            ["identify_us", "socks_us", "decide_us", "steer_us", "build_us", "agent_start_us"]
                .iter()
                .map(|k| num(st, k))
                .sum();
        let (Some(replied), Some(whole), Some(before), Some(connected), Some(connect)) =
            (num(up, "mono_us"), num(up, "since_accept_us"), before_opening, num(c, "mono_us"), num(c, "connect_us"))
        else {
            continue;
        };
        let sent = replied - whole + before;
        forward.push((connected - connect - sent) as f64);
        back.push((replied - connected) as f64);
    }
    (forward, back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openings_legs_are_put_on_one_time_line_by_flow() {
        let up = serde_json::json!({"event": "stream_up", "flow": "0x1", "since_accept_us": 5_000, "mono_us": 105_000,
            "stages": {"identify_us": 100, "socks_us": 100, "decide_us": 100, "steer_us": 0, "build_us": 200, "agent_start_us": 500}});
        // Accepted at 100,000, the opening left at 101,000; C started its
        // connect at 102,500 and was connected at 102,600.
        let c = serde_json::json!({"event": "service_connect", "flow": "0x1", "connect_us": 100, "mono_us": 102_600});
        let other = serde_json::json!({"event": "service_connect", "flow": "0x2", "connect_us": 1, "mono_us": 1});
        let (forward, back) = opening_legs(&[up], &[other, c]);
        assert_eq!((forward, back), (vec![1_500.0], vec![2_400.0]));
    }

    #[test]
    fn stage_medians_take_each_step_and_the_whole() {
        let ev = |socks: u64, whole: u64| serde_json::json!({"event": "stream_up", "since_accept_us": whole, "stages": {"socks_us": socks, "boot_us": 7}});
        let m = stage_medians(&[ev(1, 10), ev(3, 30), ev(2, 20)]);
        assert_eq!(m["socks_us"], 2.0);
        assert_eq!(m["boot_us"], 7.0);
        assert_eq!(m["since_accept_us"], 20.0);
    }
}
