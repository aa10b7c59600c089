//! `pathvm bench connect`: connect-to-first-byte and single-flow
//! throughput of an application's connection through pathvm (SOCKS5 edge,
//! a VM per request, relay B's VM, C's VM) beside the same connection over
//! plain kernel routing through B, on line3 test hosts made for the run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::hosts::{start_daemon, start_node, DaemonError, Down};
use super::netns_io::in_netns;
use super::{machine, percentile};
use crate::topo::Topo;

/// Connections timed for connect-to-first-byte.
const CONNECTS: usize = 30;
/// Bytes the throughput run moves.
const BULK: usize = 64 << 20;

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
    Topo(#[from] crate::topo::TopoError),
    /// Daemons.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Traffic.
    #[error("connect benchmark: {0}")]
    Io(#[from] std::io::Error),
}

/// A service on C: one byte for `P`, `BULK` bytes for `D`.
fn serve(ns: &str) -> std::io::Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let _ = in_netns(&ns, move || {
            let l = TcpListener::bind("0.0.0.0:0")?;
            let _ = tx.send(l.local_addr()?.port());
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let mut cmd = [0u8; 1];
                    if c.read_exact(&mut cmd).is_err() {
                        return;
                    }
                    let chunk = vec![0x5au8; 64 * 1024];
                    let n = if cmd[0] == b'D' { BULK } else { 1 };
                    let mut sent = 0;
                    while sent < n {
                        let k = (n - sent).min(chunk.len());
                        if c.write_all(&chunk[..k]).is_err() {
                            return;
                        }
                        sent += k;
                    }
                });
            }
            Ok(())
        });
    });
    rx.recv_timeout(Duration::from_secs(5)).map_err(|_| std::io::Error::other("service did not start"))
}

/// Opens a connection to `target` (through the SOCKS5 edge if `socks`).
fn open(target: &str, socks: bool) -> std::io::Result<TcpStream> {
    if !socks {
        return TcpStream::connect(target);
    }
    let mut s = TcpStream::connect("127.0.0.1:1080")?;
    let addr: std::net::SocketAddrV4 = target.parse().map_err(std::io::Error::other)?;
    s.write_all(&[5, 1, 0])?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)?;
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&addr.ip().octets());
    req.extend_from_slice(&addr.port().to_be_bytes());
    s.write_all(&req)?;
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep)?;
    if rep[1] != 0 {
        return Err(std::io::Error::other(format!("SOCKS reply {}", rep[1])));
    }
    Ok(s)
}

/// Connect-to-first-byte times (ms, sorted) and bulk Mbit/s from A.
fn measure(ns: &str, target: String, socks: bool) -> std::io::Result<(Vec<f64>, f64)> {
    in_netns(ns, move || {
        let mut times = Vec::with_capacity(CONNECTS);
        for _ in 0..CONNECTS {
            let t0 = Instant::now();
            let mut s = open(&target, socks)?;
            s.write_all(b"P")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let mut s = open(&target, socks)?;
        let t0 = Instant::now();
        s.write_all(b"D")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < BULK {
            match s.read(&mut buf)? {
                0 => break,
                n => got += n,
            }
        }
        let mbps = got as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e6;
        Ok((times, mbps))
    })
}

/// Runs the benchmark on `topo_file` (line3).
pub fn run(exe: &Path, image: &Path, topo_file: &Path) -> Result<ConnectReport, ConnectBenchError> {
    let name = format!("pc{}", std::process::id() % 100_000);
    let t = Topo::load(topo_file, Some(&name))?;
    t.up()?;
    let _down = Down(&t);
    let port = serve(&t.netns("c"))?;
    let target = format!("{}:{port}", Topo::addr(1, 2));
    let (direct, kernel_mbps) = measure(&t.netns("a"), target.clone(), false)?;

    let _c = start_node(exe, image, &t, "c", false)?;
    let _b = start_node(exe, image, &t, "b", false)?;
    let config = t.node_config_path("a");
    let (image_s, config_s) = (image.to_string_lossy(), config.to_string_lossy());
    let _edge = start_daemon(&t, "a", false, exe, &["edge", "--image", &image_s, "--config", &config_s], "SOCKS5 on")?;
    let (via, mbps) = measure(&t.netns("a"), target, true)?;
    Ok(ConnectReport {
        connect_p50_ms: percentile(&via, 50.0),
        connect_p99_ms: percentile(&via, 99.0),
        direct_connect_p50_ms: percentile(&direct, 50.0),
        direct_connect_p99_ms: percentile(&direct, 99.0),
        throughput_mbps: mbps,
        kernel_throughput_mbps: kernel_mbps,
        samples: CONNECTS,
        machine: machine(),
    })
}
