//! `pathvm node`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use vmm::vcpu::GuestLog;
use vmm::{AgentImage, KvmContext};

/// Arguments of `pathvm node`.
#[derive(Debug, Args)]
#[command(after_help = "Run it inside the host's namespace, e.g.\n  \
ip netns exec line3-b pathvm node --config /run/pathvm/line3/b.toml\n\n\
Console records (big-endian): to the node `dst u16, flow u32, len u16, payload` \
to originate; from the node `src u16, flow u32, len u16, payload` for each \
delivered packet. SIGINT/SIGTERM stop the node (exit 130) and write --metrics.")]
pub struct NodeArgs {
    /// Node configuration (see docs/node.example.toml; `pathvm topo up` writes them for test hosts).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Console host side: records to originate in, delivered records out.
    #[arg(long, value_name = "stdio|none|unix:PATH", default_value = "stdio", value_parser = super::parse_console)]
    console: super::ConsoleArg,
    /// Write port counters and the node's routing counters as JSON at exit.
    #[arg(long, value_name = "PATH")]
    metrics: Option<PathBuf>,
    /// Do not print the guest's log lines.
    #[arg(long)]
    quiet: bool,
    /// Write the node VM's memory to FILE when it stops: an audit of what
    /// a relay holds (tests check no onion relay knows a source and a
    /// destination together).
    #[arg(long, value_name = "FILE")]
    dump_memory: Option<PathBuf>,
    /// Write one JSON object a line (node up, VM ended with its counters)
    /// to FILE, or to stdout with `-` (with `--console unix:PATH`, since
    /// stdio carries console records).
    #[arg(long, value_name = "FILE|-")]
    events: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only):
    /// per-link liveness, latency and loss, forwarding, drops by reason,
    /// services connected. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs a node until stopped.
pub fn run(args: NodeArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let image = AgentImage::open(&args.image.unwrap_or_else(super::default_image))?;
    let kvm = KvmContext::open()?;
    let log = if args.quiet { GuestLog::Discard } else { GuestLog::Stderr };
    let (events, metrics) = super::metrics_for(args.metrics_listen, super::open_events(args.events.as_deref())?)?;
    let reload = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = Arc::new(events);
    let opts = node::NodeOptions {
        config: &args.config,
        console: args.console.into(),
        guest_log: log,
        dump_memory: args.dump_memory.as_deref(),
        events,
        metrics,
        reload: reload.clone(),
    };
    let outcome = node::run(&kvm, &image, opts, super::stop_on_signals)?;
    if reload.load(std::sync::atomic::Ordering::Acquire) {
        // The identity changed: start again from the configuration, as
        // a fresh process (the same pid, so supervisors and signals stay
        // with it), which leaves out what is revoked now.
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(super::RESTARTED, "1").exec();
        return Err(format!("cannot start again after an identity change: {err}").into());
    }
    if let Some(path) = args.metrics {
        let report = node::metrics_report(&outcome);
        std::fs::write(&path, format!("{report:#}\n"))
            .map_err(|e| format!("cannot write metrics to {}: {e}", path.display()))?;
    }
    if let vmm::ExitReason::Crashed(why) = &outcome.reason {
        eprintln!("pathvm: {why}");
    }
    Ok(outcome.reason.exit_code())
}
