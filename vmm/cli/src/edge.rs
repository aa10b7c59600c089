//! `pathvm edge`: the SOCKS5 front door, one VM per request. The daemon
//! itself is [`edge::serve`]; this parses arguments and calls it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use edge::serve::{Edge, EdgeConfig, EdgeLimits};

/// Arguments of `pathvm edge`.
#[derive(Debug, Args)]
#[command(after_help = "Run it inside the edge host's namespace, e.g.\n  \
ip netns exec line3-a pathvm edge --config /run/pathvm/line3/a.toml\n  \
ip netns exec line3-a curl --socks5-hostname 127.0.0.1:1080 http://c:8080/file\n\n\
Destinations are hosts of the topology, by name (c) or address (10.231.1.2), or anything an \
exit's policy accepts (names are resolved by the exit). Criteria ride \
in the SOCKS5 username (pathvm:latency=require,...) or, with the username `pathvm`, in the \
password (curl --proxy-user pathvm:latency=require), else the app's manifest, else defaults. \
Tor's RESOLVE and RESOLVE_PTR are answered by an exit. Failures get their SOCKS5 reply code: 2 \
refused by policy or by every exit, 4 unknown destination, 5 service down, 7 command (BIND, UDP \
ASSOCIATE), 1 anything else.")]
pub struct EdgeArgs {
    /// The edge host's node configuration (see docs/node.example.toml; `pathvm topo up` writes them for test hosts).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to accept SOCKS5 clients.
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Manifest directory.
    #[arg(long, value_name = "DIR", default_value = super::explain::DEFAULT_MANIFESTS)]
    manifests: PathBuf,
    /// Print the request VMs' own log lines (circuits built, links seen
    /// down) on stderr, beside the edge's.
    #[arg(long)]
    guest_log: bool,
    /// Write one JSON object a line for each request step (accepted,
    /// protocol chosen, VM up, stream up or refused, VM ended) to FILE,
    /// or to stdout with `-`.
    #[arg(long, value_name = "FILE|-")]
    events: Option<PathBuf>,
    /// Request VMs running at once; beyond, a request gets SOCKS5 reply 1
    /// ("general failure") at once. Default: what this machine's memory
    /// (4 MiB a VM) and the raised fd limit (32 a VM) allow.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65_535))]
    max_vms: Option<u64>,
    /// Seconds a client may take over its whole SOCKS5 handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    handshake_timeout: u64,
    /// Request VMs kept prepared ahead of requests (KVM VM, memory with the
    /// image, vCPU at the entry), refilled by a background thread: a
    /// request then only adds its devices. 0 builds each VM on the spot.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=64))]
    prepared_vms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only):
    /// requests by protocol and outcome, VMs running, spawn and connect
    /// time histograms, bytes carried, drops by reason. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// Runs the daemon until killed.
pub fn run(a: EdgeArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let (events, metrics) = super::metrics_for(a.metrics_listen, super::open_events(a.events.as_deref())?)?;
    let mut limits = EdgeLimits::for_this_machine();
    if let Some(n) = a.max_vms {
        limits.max_vms = n as usize;
        limits.max_handshakes = (limits.max_vms / 10).max(64);
    }
    limits.handshake_timeout = Duration::from_secs(a.handshake_timeout);
    let edge = Edge::open(EdgeConfig {
        config: a.config,
        image: a.image.unwrap_or_else(super::default_image),
        manifests: a.manifests,
        guest_log: a.guest_log,
        events,
        limits,
        prepared_vms: a.prepared_vms as usize,
    })?;
    let listener = TcpListener::bind(a.listen).map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let edge = Arc::new(edge);
    if let Some((m, addr)) = metrics {
        let running = edge.clone();
        let live: node::metrics::Live = Box::new(move |e: &mut node::metrics::Exposition| {
            e.family("pathvm_vms_running", node::metrics::Kind::Gauge, "Request VMs running now.");
            e.sample("pathvm_vms_running", &[], running.running_vms() as f64);
        });
        let bound =
            node::metrics::serve(addr, m, Some(live)).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        eprintln!("pathvm edge: metrics on http://{bound}/metrics");
    }
    edge.serve(listener);
    Ok(0)
}
