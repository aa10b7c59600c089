//! `pathvm bench density`: what idle connections cost the edge. N
//! connections are opened through the edge (a request VM each) and held
//! idle; then the edge process's CPU over a window, its RSS, fds and
//! threads per connection, and the round trip of a 4 KiB echo on one more
//! connection, beside the same echo with nothing idle (and over kernel
//! routing), all in one run on line3 test hosts. At the end every held
//! connection is used once (all must come back intact) and closed, and the
//! edge must fall back to its baseline fds and threads.

use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use thiserror::Error;

use super::traffic::{echo, open, serve_echo, Via};
use super::{machine, netns_io::in_netns, percentile};
use topo::lab::{DaemonError, Lab};

/// Echo round trips timed per measurement.
const ECHOES: usize = 30;
/// Bytes of one echo.
const ECHO_BYTES: usize = 4096;
/// Let the edge settle after opening connections before measuring.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the edge may take to let go of closed connections.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum DensityBenchError {
    /// Hosts.
    #[error(transparent)]
    Topo(#[from] topo::TopoError),
    /// Daemons.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Connections, the service, /proc.
    #[error("density benchmark: {0}")]
    Io(#[from] std::io::Error),
}

/// What /proc says of one process at one moment.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    /// User plus system time, clock ticks (guest time is user time).
    cpu_ticks: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|w| w.parse().unwrap_or(0)).collect();
    let cpu_ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(ProcSample { cpu_ticks, rss_kib: field("VmRSS:"), fds, threads: field("Threads:") })
}

/// CPU use of `pid` over `window`, percent of one core.
fn cpu_percent(pid: u32, window: Duration) -> std::io::Result<f64> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (a, t0) = (sample(pid)?, Instant::now());
    std::thread::sleep(window);
    let b = sample(pid)?;
    Ok((b.cpu_ticks - a.cpu_ticks) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0)
}

/// `n` 4 KiB echo round trips on one new connection, ms, sorted.
fn echo_times(ns: &str, target: SocketAddrV4, via: Via) -> std::io::Result<Vec<f64>> {
    in_netns(ns, move || {
        let mut s = open(target, &via)?;
        let data: Vec<u8> = (0..ECHO_BYTES).map(|i| (i * 31 + 7) as u8).collect();
        let mut t = (0..ECHOES).map(|_| echo(&mut s, &data)).collect::<std::io::Result<Vec<f64>>>()?;
        t.sort_by(f64::total_cmp);
        Ok(t)
    })
}

/// Opens `n` more connections through the edge from namespace `ns`.
fn open_held(ns: &str, target: SocketAddrV4, n: usize) -> std::io::Result<Vec<TcpStream>> {
    in_netns(ns, move || (0..n).map(|_| open(target, &Via::Edge { criteria: None })).collect())
}

/// Runs the benchmark on `topo_file` (line3) for each count of `counts`
/// (ascending; connections accumulate), measuring CPU over `window`.
pub fn run(
    exe: &Path,
    image: &Path,
    topo_file: &Path,
    counts: &[usize],
    window: Duration,
) -> Result<Map<String, Value>, DensityBenchError> {
    let name = format!("pd{}", std::process::id() % 100_000);
    super::catch_interrupts();
    let lab = Lab::up(topo_file, &name, exe, image)?;
    let port = serve_echo(&lab.netns("c"))?;
    let c = lab.host_addr("c").ok_or_else(|| std::io::Error::other("the topology has no host c on a link"))?;
    let target = SocketAddrV4::new(c, port);
    let ns = lab.netns("a");
    let mut out = Map::new();
    let mut put = |k: String, v: f64| {
        out.insert(k, Value::from((v * 1000.0).round() / 1000.0));
    };

    let kernel = echo_times(&ns, target, Via::Kernel)?;
    put("kernel_echo_p50_ms".into(), percentile(&kernel, 50.0));
    let _c = lab.start_node("c", false)?;
    let b = lab.start_node("b", false)?;
    let mut edge_cmd = lab.edge_command("a");
    edge_cmd.arg("--max-vms").arg((counts.iter().max().copied().unwrap_or(1) + 8).to_string());
    let edge = lab.start_edge_from("a", edge_cmd)?;
    let alone = echo_times(&ns, target, Via::Edge { criteria: None })?;
    put("echo_p50_ms_alone".into(), percentile(&alone, 50.0));
    put("echo_p99_ms_alone".into(), percentile(&alone, 99.0));
    std::thread::sleep(SETTLE);
    let base = sample(edge.pid())?;
    put("idle_cpu_percent_0".into(), cpu_percent(edge.pid(), window)?);

    let mut held: Vec<TcpStream> = Vec::new();
    for &n in counts {
        if super::interrupted() {
            break;
        }
        tracing::info!("opening {} more connections (to {n})", n.saturating_sub(held.len()));
        let t0 = Instant::now();
        held.extend(open_held(&ns, target, n.saturating_sub(held.len()))?);
        put(format!("open_seconds_{n}"), t0.elapsed().as_secs_f64());
        std::thread::sleep(SETTLE);
        put(format!("idle_cpu_percent_{n}"), cpu_percent(edge.pid(), window)?);
        put(format!("relay_idle_cpu_percent_{n}"), cpu_percent(b.pid(), window)?);
        let s = sample(edge.pid())?;
        let per = |now: u64, was: u64| now.saturating_sub(was) as f64 / n as f64;
        put(format!("rss_kib_per_conn_{n}"), per(s.rss_kib, base.rss_kib));
        put(format!("fds_per_conn_{n}"), per(s.fds, base.fds));
        put(format!("threads_per_conn_{n}"), per(s.threads, base.threads));
        put(format!("edge_rss_mib_{n}"), s.rss_kib as f64 / 1024.0);
        let e = echo_times(&ns, target, Via::Edge { criteria: None })?;
        put(format!("echo_p50_ms_{n}"), percentile(&e, 50.0));
        put(format!("echo_p99_ms_{n}"), percentile(&e, 99.0));
    }

    // Every held connection, used once after its idle time: intact?
    let data: Vec<u8> = (0..ECHO_BYTES).map(|i| (i * 13 + 1) as u8).collect();
    let intact = held.iter_mut().map(|s| echo(s, &data)).filter(Result::is_ok).count();
    put("held".into(), held.len() as f64);
    put("held_intact".into(), intact as f64);
    drop(held);
    let t0 = Instant::now();
    let after = loop {
        let s = sample(edge.pid())?;
        if (s.fds <= base.fds && s.threads <= base.threads) || t0.elapsed() > DRAIN_WITHIN {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    put("drain_seconds".into(), t0.elapsed().as_secs_f64());
    put("baseline_fds".into(), base.fds as f64);
    put("fds_after_close".into(), after.fds as f64);
    put("baseline_threads".into(), base.threads as f64);
    put("threads_after_close".into(), after.threads as f64);
    put("cpu_window_seconds".into(), window.as_secs_f64());
    out.insert("samples_per_echo".into(), Value::from(ECHOES));
    out.insert("machine".into(), Value::from(machine()));
    Ok(out)
}
