//! The `pathvm` command: one module per subcommand. Each parses its
//! arguments and calls the library crate that does the work (vmm, node,
//! edge, topo, bench, policy).

mod bench;
mod boot;
mod edge;
mod explain;
mod identity;
mod node;
mod paths;
mod run;
mod status;
mod topo;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use vmm::vm::StopHandle;
use vmm::ConsoleConfig;

/// pathvm: a microVM for every network connection.
///
/// Each request gets its own KVM microVM whose virtio-net device is the
/// request's connection; relay hosts take packets into VMs of their own
/// before their host stack and route them on. These commands boot VMs, run
/// relay nodes, build test hosts and measure all of it.
#[derive(Debug, Parser)]
#[command(name = "pathvm", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot one VM running the guest agent; exit with the guest's status.
    Boot(boot::BootArgs),
    /// Measure pathvm against baselines from the same run; prints JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Bring test hosts (network namespaces joined by veth links) up or down.
    #[command(subcommand)]
    Topo(topo::TopoCommand),
    /// Run a host's overlay node: intake before the host stack, a
    /// long-lived node VM that routes, delivery to the console.
    Node(node::NodeArgs),
    /// Show which routing protocol an app's criteria select, and why.
    Explain(explain::ExplainArgs),
    /// The edge host's SOCKS5 front door: one microVM per connection.
    Edge(edge::EdgeArgs),
    /// Start an unmodified app whose connections all go through the edge.
    Run(run::RunArgs),
    /// The network CA: create it, revoke a node's certificate.
    #[command(subcommand)]
    Ca(identity::CaCommand),
    /// Node keys and certificates: make keys, issue, verify.
    #[command(subcommand)]
    Cert(identity::CertCommand),
    /// Each routing protocol's current path between two nodes, from a node's metrics.
    Paths(paths::PathsArgs),
    /// A live view of this host's daemons (links, routes, VMs, rates) from their metrics.
    Status(status::StatusArgs),
}

/// Set in the environment of a `pathvm node` that started itself again
/// (its identity changed): its events file is appended to, not replaced.
pub const RESTARTED: &str = "PATHVM_NODE_RESTARTED";

/// The event sink `--events` asks for (disabled without it).
pub fn open_events(target: Option<&std::path::Path>) -> Result<::node::events::EventSink, String> {
    match target {
        None => Ok(::node::events::EventSink::disabled()),
        // A node started again after its identity changed keeps its
        // earlier events (see `node::run`'s reload).
        Some(p) if std::env::var_os(RESTARTED).is_some() && p != std::path::Path::new("-") => {
            ::node::events::EventSink::open_append(p)
                .map_err(|e| format!("cannot write events to {}: {e}", p.display()))
        }
        Some(p) => {
            ::node::events::EventSink::open(p).map_err(|e| format!("cannot write events to {}: {e}", p.display()))
        }
    }
}

/// The metrics counted from a daemon's events, and `events` feeding
/// them, when `--metrics-listen` asks for them; refuses addresses beyond
/// loopback (the page names links, peers and exits).
pub fn metrics_for(
    listen: Option<std::net::SocketAddr>,
    events: ::node::events::EventSink,
) -> Result<(::node::events::EventSink, Option<::node::metrics::Served>), String> {
    let Some(addr) = listen else { return Ok((events, None)) };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--metrics-listen {addr}: metrics are served on loopback only (127.0.0.1:PORT or [::1]:PORT); \
             a scraper elsewhere reaches them through a local agent or a tunnel"
        ));
    }
    let m = Arc::new(::node::metrics::EventMetrics::default());
    Ok((events.with_metrics(m.clone()), Some((m, addr))))
}

/// The guest image to use when `--image` is not given: `$PATHVM_IMAGE`,
/// else `images/out/agent.elf` under the current directory, else beside
/// the source tree the binary was built in.
pub fn default_image() -> PathBuf {
    if let Some(p) = std::env::var_os("PATHVM_IMAGE") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("images/out/agent.elf");
    if local.exists() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../images/out/agent.elf"))
}

/// The console's host side as given on the command line.
#[derive(Debug, Clone)]
pub enum ConsoleArg {
    /// stdin and stdout.
    Stdio,
    /// Connect to a listening Unix socket.
    Unix(PathBuf),
    /// Nothing in, delivered records dropped (a node run as a service).
    None,
}

/// Parses `stdio`, `none` or `unix:PATH`.
pub fn parse_console(s: &str) -> Result<ConsoleArg, String> {
    match s {
        "stdio" => Ok(ConsoleArg::Stdio),
        "none" => Ok(ConsoleArg::None),
        _ => match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(ConsoleArg::Unix(PathBuf::from(p))),
            _ => Err(format!("{s:?} is not a console: use stdio, none or unix:PATH")),
        },
    }
}

impl From<ConsoleArg> for ConsoleConfig {
    fn from(c: ConsoleArg) -> Self {
        match c {
            ConsoleArg::Stdio => ConsoleConfig::Stdio,
            ConsoleArg::Unix(p) => ConsoleConfig::Unix(p),
            ConsoleArg::None => ConsoleConfig::Sink,
        }
    }
}

/// The VM SIGINT and SIGTERM stop (one per process: `boot` runs one VM).
static STOP: OnceLock<Arc<StopHandle>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(h) = STOP.get() {
        h.request();
    }
}

/// Makes SIGINT and SIGTERM stop the guest cleanly (exit status 130, the
/// metrics file still written) instead of killing the process.
pub fn stop_on_signals(handle: Arc<StopHandle>) {
    if STOP.set(handle).is_err() {
        return;
    }
    // The handler only calls the async-signal-safe StopHandle::request.
    vmm::signals::on_stop_signals(on_signal);
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATHVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs the command line; returns the process exit status.
fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cli = Cli::parse();
    init_logging();
    // Every VM holds about 20 fds; the usual 1,024 would end an edge or a
    // benchmark with EMFILE at about 50.
    if let Err(e) = vmm::limits::raise_fd_limit() {
        tracing::warn!("cannot raise the fd limit: {e}");
    }
    let result = match cli.command {
        Command::Boot(args) => boot::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Topo(cmd) => topo::run(cmd),
        Command::Node(args) => node::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Edge(args) => edge::run(args),
        Command::Run(args) => run::run(args),
        Command::Paths(args) => paths::run(args),
        Command::Ca(cmd) => identity::run_ca(cmd),
        Command::Cert(cmd) => identity::run_cert(cmd),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pathvm: error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_parsing() {
        assert!(matches!(parse_console("stdio"), Ok(ConsoleArg::Stdio)));
        assert!(matches!(parse_console("unix:/tmp/x"), Ok(ConsoleArg::Unix(_))));
        assert!(matches!(parse_console("none"), Ok(ConsoleArg::None)));
        assert!(parse_console("unix:").is_err());
        assert!(parse_console("tcp:1").is_err());
    }
}
