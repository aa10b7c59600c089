//! `pathvm bench protocols`: each routing protocol across mesh6 through the
//! SOCKS5 edge, beside kernel routing measured in the same run.
//!
//! mesh6 joins A and C by two node-disjoint relay paths (a - r1 - r2 - c,
//! low latency; a - r3 - r4 - c, more bandwidth). The run brings up test
//! hosts of its own (`ppPID`), starts a service on C, and measures from a
//! thread inside A's namespace:
//!
//! 1. kernel routing (no pathvm): connect-to-first-byte of N connections
//!    and one flow's throughput;
//! 2. with `pathvm edge` on A and fresh `pathvm node`s on C and the four
//!    relays, for each protocol: the same two through the edge, with
//!    criteria in the SOCKS5 username that select the protocol (checked in
//!    the edge's log), then the stall when a relay on the protocol's path
//!    dies: a long download starts, ~300 ms in the relay's node is killed
//!    (SIGKILL, as in a crash) and the longest gap between successive reads
//!    from then on is recorded, with whether every byte arrived.
//!
//! Nodes are started afresh for every protocol rather than restarting only
//! the killed relay, so no protocol inherits another's link state,
//! circuits or queues.
//!
//! A protocol that cannot be measured (refused by the edge, another
//! protocol chosen, a path that stalls for longer than the I/O timeout)
//! gets a row with an `error` instead of numbers; the run goes on.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::netns_io::in_netns;
use super::traffic::{self, connect_times, open, request_download, serve, throughput, Via};
use super::{interrupted, machine, percentile};
use topo::lab::host_addr;
use topo::lab::{is, Daemon, DaemonError, Lab};
use topo::Topo;

/// The protocols measured: name, criteria that select it, and the relay
/// on its path whose death is measured.
pub const PROTOCOLS: [(&str, &str, &str); 5] = [
    ("shortest", "latency=require", "r1"),
    ("widest", "bandwidth=prefer", "r3"),
    ("multipath", "reliability=require,bandwidth=prefer", "r1"),
    ("redundant", "reliability=prefer", "r1"),
    ("onion", "anonymity=require", "r2"),
];

/// Hosts the benchmark needs in its topology: the edge host first, the
/// destination, then the relays.
const HOSTS: [&str; 6] = ["a", "c", "r1", "r2", "r3", "r4"];
/// Hosts that run a node.
const NODES: [&str; 5] = ["c", "r1", "r2", "r3", "r4"];

/// Connections timed per measurement unless told otherwise.
pub const DEFAULT_CONNECTS: usize = 30;
/// Bytes of each download unless told otherwise.
pub const DEFAULT_BYTES: u64 = 64 << 20;
/// Time between the download's first byte and the relay's death.
const KILL_AFTER: Duration = Duration::from_millis(300);
/// Time fresh nodes get to probe their links before traffic.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the edge's log may lag behind the requests it handled.
const LOG_LAG: Duration = Duration::from_secs(2);

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Connections timed for connect-to-first-byte, per protocol and for
    /// the kernel baseline.
    pub connects: usize,
    /// Bytes of the throughput download and of the relay-kill download.
    pub bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { connects: DEFAULT_CONNECTS, bytes: DEFAULT_BYTES }
    }
}

/// One line of `pathvm bench protocols --json`: one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolReport {
    /// The protocol (`shortest`, `widest`, `multipath`, `redundant`, `onion`).
    pub protocol: String,
    /// The criteria sent in the SOCKS5 username (`pathvm:<criteria>`).
    pub criteria: String,
    /// Through pathvm: the numbers, or why there are none.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Median connect-to-first-byte over kernel routing, ms.
    pub kernel_connect_p50_ms: f64,
    /// 99th percentile over kernel routing, ms.
    pub kernel_connect_p99_ms: f64,
    /// One flow's throughput over kernel routing, Mbit/s.
    pub kernel_throughput_mbps: f64,
    /// The relay whose node was killed mid-download.
    pub killed_relay: String,
    /// Connections timed per measurement.
    pub samples: usize,
    /// Where it was measured.
    pub machine: String,
}

/// A protocol's result through pathvm.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// It was measured.
    Measured(Measured),
    /// It could not be.
    Failed {
        /// Why, for a person to act on.
        error: String,
    },
}

/// A protocol's numbers through pathvm.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Median time from connect() to the first byte through the edge, ms.
    pub connect_p50_ms: f64,
    /// 99th percentile, ms.
    pub connect_p99_ms: f64,
    /// One flow's throughput through the edge, Mbit/s.
    pub throughput_mbps: f64,
    /// `throughput_mbps` / `kernel_throughput_mbps`.
    pub throughput_ratio: f64,
    /// Longest gap between successive reads of a download from the relay's
    /// death on, ms (the time since the last read, if the download never
    /// completed).
    pub stall_after_relay_kill_ms: f64,
    /// Whether every byte of that download arrived.
    pub complete: bool,
}

/// Why the benchmark could not run at all (a protocol's own failure is an
/// `error` row instead).
#[derive(Debug, Error)]
pub enum ProtocolsBenchError {
    /// Loading or bringing up the hosts.
    #[error(transparent)]
    Topo(#[from] topo::TopoError),
    /// The topology lacks a host the benchmark drives.
    #[error("topology {file} has no host {host:?} on a link: the protocols benchmark needs mesh6's hosts a, r1, r2, r3, r4 and c (tests/topologies/mesh6.toml)")]
    MissingHost {
        /// The topology file.
        file: String,
        /// The host.
        host: String,
    },
    /// The edge or a node did not come up.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The kernel baseline failed: the hosts themselves do not work.
    #[error("kernel baseline from a to c failed: {0} (is `pathvm topo up` working on this machine?)")]
    Baseline(#[source] std::io::Error),
    /// Other traffic or process errors (the service, namespaces).
    #[error("protocols benchmark: {0}")]
    Io(#[from] std::io::Error),
    /// SIGINT or SIGTERM.
    #[error("interrupted: the test hosts were taken down")]
    Interrupted,
}

/// The kernel baseline, shared by every row.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    p50: f64,
    p99: f64,
    mbps: f64,
}

/// What the benchmark drives.
struct Bench<'a> {
    lab: &'a Lab,
    target: SocketAddrV4,
    opts: Options,
}

/// Runs the benchmark on `topo_file` (mesh6) and hands each protocol's row
/// to `row` as soon as it is measured; returns all rows.
pub fn run(
    exe: &Path,
    image: &Path,
    topo_file: &Path,
    opts: Options,
    mut row: impl FnMut(&ProtocolReport),
) -> Result<Vec<ProtocolReport>, ProtocolsBenchError> {
    let name = format!("pp{}", std::process::id() % 100_000);
    let t = Topo::load(topo_file, Some(&name))?;
    for host in HOSTS {
        if host_addr(&t, host).is_none() {
            return Err(ProtocolsBenchError::MissingHost { file: topo_file.display().to_string(), host: host.into() });
        }
    }
    super::catch_interrupts();
    let lab = Lab::up(topo_file, &name, exe, image)?;
    let t = lab.topo();
    let c = host_addr(t, "c").ok_or_else(|| std::io::Error::other("host c has no address"))?;
    let target = SocketAddrV4::new(c, serve(&t.netns("c"))?);
    let bench = Bench { lab: &lab, target, opts };

    tracing::info!("kernel baseline: {} connections, {} bytes from a to {target}", opts.connects, opts.bytes);
    let (times, mbps) = traffic::measure(&t.netns("a"), target, Via::Kernel, opts.connects, opts.bytes)
        .map_err(ProtocolsBenchError::Baseline)?;
    let kernel = Kernel { p50: percentile(&times, 50.0), p99: percentile(&times, 99.0), mbps };
    check_interrupt()?;

    let manifests = t.node_config_path("a").with_file_name("no-manifests");
    let mut edge_cmd = lab.edge_command("a");
    edge_cmd.arg("--manifests").arg(&manifests);
    let edge = lab.start_edge_from("a", edge_cmd)?;
    let machine = machine();
    let mut rows = Vec::new();
    for (protocol, criteria, relay) in PROTOCOLS {
        check_interrupt()?;
        tracing::info!("{protocol}: criteria {criteria}, killing {relay}");
        let outcome = match bench.protocol(&edge, protocol, criteria, relay, kernel.mbps) {
            Ok(m) => Outcome::Measured(m),
            Err(Failure::Daemon(e)) => return Err(e.into()),
            Err(Failure::Row(error)) => {
                tracing::info!("{protocol}: {error}");
                Outcome::Failed { error }
            }
        };
        let r = ProtocolReport {
            protocol: protocol.into(),
            criteria: criteria.into(),
            outcome,
            kernel_connect_p50_ms: kernel.p50,
            kernel_connect_p99_ms: kernel.p99,
            kernel_throughput_mbps: kernel.mbps,
            killed_relay: relay.into(),
            samples: opts.connects,
            machine: machine.clone(),
        };
        row(&r);
        rows.push(r);
    }
    Ok(rows)
}

fn check_interrupt() -> Result<(), ProtocolsBenchError> {
    if interrupted() {
        return Err(ProtocolsBenchError::Interrupted);
    }
    Ok(())
}

/// Why one protocol has no numbers.
enum Failure {
    /// A node did not start: the run cannot go on.
    Daemon(DaemonError),
    /// This protocol could not be measured; the message goes in its row.
    Row(String),
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Self::Daemon(e)
    }
}

impl Bench<'_> {
    /// Measures one protocol on nodes started for it (and ended after).
    fn protocol(
        &self,
        edge: &Daemon,
        protocol: &str,
        criteria: &str,
        relay: &str,
        kernel_mbps: f64,
    ) -> Result<Measured, Failure> {
        let mut nodes = Vec::new();
        for host in NODES {
            nodes.push((host, self.lab.start_node(host, false)?));
        }
        std::thread::sleep(SETTLE);
        let via = Via::Edge { criteria: Some(criteria.to_string()) };
        let ns = self.lab.netns("a");
        let (target, connects, bytes) = (self.target, self.opts.connects, self.opts.bytes);

        let mark = events_mark(edge);
        let v = via.clone();
        let times = in_netns(&ns, move || connect_times(target, &v, connects))
            .map_err(|e| Failure::Row(why(edge, mark, "connect", &e)))?;
        let v = via.clone();
        let mbps = in_netns(&ns, move || throughput(target, &v, bytes))
            .map_err(|e| Failure::Row(why(edge, mark, "throughput download", &e)))?;
        chosen(edge, mark, protocol, connects + 1)?;

        let mark = events_mark(edge);
        let Some((_, victim)) = nodes.iter_mut().find(|(h, _)| *h == relay) else {
            return Err(Failure::Row(format!("{relay} runs no node")));
        };
        let (stall_ms, complete) = stall_after_kill(&ns, target, via, bytes, victim)
            .map_err(|e| Failure::Row(why(edge, mark, "relay-kill download", &e)))?;
        chosen(edge, mark, protocol, 1)?;
        drop(nodes);
        Ok(Measured {
            connect_p50_ms: percentile(&times, 50.0),
            connect_p99_ms: percentile(&times, 99.0),
            throughput_mbps: mbps,
            throughput_ratio: if kernel_mbps > 0.0 { mbps / kernel_mbps } else { 0.0 },
            stall_after_relay_kill_ms: stall_ms,
            complete,
        })
    }
}

/// Number of events the edge wrote so far: a mark for [`chosen`] and
/// [`why`].
fn events_mark(edge: &Daemon) -> usize {
    edge.events().all().len()
}

/// The edge's events since `mark`.
fn since(edge: &Daemon, mark: usize) -> Vec<serde_json::Value> {
    edge.events().all().into_iter().skip(mark).collect()
}

/// Checks that the edge chose `protocol` for each of the `n` requests
/// since `mark` (its `protocol_chosen` events).
fn chosen(edge: &Daemon, mark: usize, protocol: &str, n: usize) -> Result<(), Failure> {
    let deadline = Instant::now() + LOG_LAG;
    let found = loop {
        let found: Vec<_> = since(edge, mark).into_iter().filter(|e| is(e, "protocol_chosen")).collect();
        if found.len() >= n || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(e) = found.iter().find(|e| e["protocol"] != protocol) {
        return Err(Failure::Row(format!("the edge chose {}, not {protocol}: {e}", e["protocol"])));
    }
    if found.len() < n {
        return Err(Failure::Row(format!(
            "the edge reported {} of {n} requests choosing {protocol} within {LOG_LAG:?}",
            found.len()
        )));
    }
    Ok(())
}

/// A failed measurement explained: the error, and the edge's refusal of a
/// request since `mark` if it refused one.
fn why(edge: &Daemon, mark: usize, what: &str, e: &std::io::Error) -> String {
    std::thread::sleep(Duration::from_millis(200));
    let said = since(edge, mark)
        .into_iter()
        .rev()
        .find(|e| is(e, "refused"))
        .map(|r| format!("; the edge refused it: {} ({})", r["reason"], r["reply_name"]))
        .unwrap_or_default();
    format!("{what} through the edge: {e}{said}")
}

/// Downloads `bytes` through `via` from inside `ns`, kills `relay`
/// [`KILL_AFTER`] after the first byte, and returns the longest gap (ms)
/// between successive reads from the kill on, and whether every byte came.
fn stall_after_kill(
    ns: &str,
    target: SocketAddrV4,
    via: Via,
    bytes: u64,
    relay: &mut Daemon,
) -> std::io::Result<(f64, bool)> {
    // Long enough for the slowest download worth measuring (≥ 1 MiB/s).
    let deadline = traffic::IO_TIMEOUT + Duration::from_secs(bytes >> 20);
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let reader = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let mut s = open(target, &via)?;
            request_download(&mut s, bytes)?;
            let started = Instant::now();
            let mut buf = vec![0u8; 256 * 1024];
            let mut reads = Vec::with_capacity(64 * 1024);
            let mut got = 0u64;
            while got < bytes && started.elapsed() < deadline {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        got += n as u64;
                        reads.push(Instant::now());
                        if reads.len() == 1 {
                            let _ = first_tx.send(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Timed out, reset: the download ends incomplete.
                    Err(e) => {
                        tracing::info!("relay-kill download ended after {got} of {bytes} bytes: {e}");
                        break;
                    }
                }
            }
            Ok((reads, got, Instant::now()))
        })
    });
    let first = first_rx.recv_timeout(traffic::IO_TIMEOUT);
    let killed_at = if first.is_ok() {
        std::thread::sleep(KILL_AFTER);
        let at = Instant::now();
        tracing::info!("killing the relay's node (pid {})", relay.pid());
        relay.kill();
        Some(at)
    } else {
        None
    };
    let (reads, got, ended) = reader.join().map_err(|_| std::io::Error::other("download thread panicked"))??;
    let Some(killed_at) = killed_at else {
        return Err(std::io::Error::other(format!("no byte of the download within {:?}", traffic::IO_TIMEOUT)));
    };
    let complete = got >= bytes;
    let mut stall = Duration::ZERO;
    for w in reads.windows(2) {
        if w[1] > killed_at {
            stall = stall.max(w[1] - w[0]);
        }
    }
    if !complete {
        if let Some(last) = reads.last() {
            stall = stall.max(ended.saturating_duration_since((*last).max(killed_at)));
        }
    }
    if reads.last().is_some_and(|l| *l <= killed_at) && complete {
        tracing::warn!("the download finished before the relay was killed: use a larger --bytes");
    }
    Ok((stall.as_secs_f64() * 1e3, complete))
}
