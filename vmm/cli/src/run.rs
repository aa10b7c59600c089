//! `pathvm run -- APP`: an unmodified app whose connections go through
//! pathvm, transparently (a sandbox whose only way out is the edge) or
//! with the LD_PRELOAD shim.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use policy::{resolve, Criteria, ManifestDir};

use crate::explain::DEFAULT_MANIFESTS;

/// How the app's connections are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A network namespace whose only way out is pathvm: all TCP (IPv4
    /// and IPv6) goes to the edge, DNS is answered by pathvm, other UDP
    /// and ICMP are refused. Covers static binaries and raw system calls.
    /// Needs root.
    Transparent,
    /// LD_PRELOAD shim wrapping connect(): no root, but dynamically linked
    /// apps only, names resolved on this host, UDP not caught.
    Preload,
}

/// Arguments of `pathvm run`.
#[derive(Debug, Args)]
#[command(after_help = "Transparent mode (the default) starts the app in a network namespace of its own, \
joined to this host by one veth link on which nftables steers every TCP connection to pathvm (which asks \
the edge's SOCKS5 port for it, by name when the address came from pathvm's DNS) and every DNS query to \
pathvm's resolver (virtual addresses from 198.18.0.0/15 and fd70:7061:7468:766d::/64: the name is resolved \
by the exit, never here); other UDP, ICMP and forwarding are refused and counted. The app runs outside \
any VM, with its own user when started by sudo. Start `pathvm edge` first.\n\n\
Preload mode (--mode preload) needs no root but only covers dynamically linked apps' connect() calls.\n\n\
Criteria: --criteria, else the app's manifest (--manifests), else defaults.\n\n\
Example:\n  ip netns exec line3-a pathvm run --criteria latency=require -- curl http://c:8080/")]
pub struct RunArgs {
    /// The edge's SOCKS5 address.
    #[arg(long, default_value = "127.0.0.1:1080")]
    socks: std::net::SocketAddr,
    /// Criteria for the app's connections, e.g. latency=require,anonymity=prefer
    #[arg(long)]
    criteria: Option<String>,
    /// How connections are caught.
    #[arg(long, value_enum, default_value_t = Mode::Transparent)]
    mode: Mode,
    /// Manifest directory (transparent mode reads the app's own there).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MANIFESTS)]
    manifests: PathBuf,
    /// Write structured events (JSON lines): run_up, run_dns, run_connect, run_ended.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// The shim for --mode preload (default: libpathvm_preload.so beside this binary, or $PATHVM_PRELOAD).
    #[arg(long, value_name = "PATH")]
    shim: Option<PathBuf>,
    /// The app and its arguments.
    #[arg(last = true, required = true, value_name = "APP")]
    app: Vec<String>,
}

fn default_shim() -> PathBuf {
    if let Some(p) = std::env::var_os("PATHVM_PRELOAD") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("libpathvm_preload.so")))
        .unwrap_or_else(|| PathBuf::from("libpathvm_preload.so"))
}

/// Runs the app; returns its exit status.
pub fn run(a: RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    if let Some(c) = &a.criteria {
        Criteria::parse(c)?;
    }
    match a.mode {
        Mode::Transparent => transparent(a),
        Mode::Preload => preload(a),
    }
}

fn transparent(a: RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    // The edge sees this process, not the app: the app's criteria travel
    // with each connection.
    let exe = which(&a.app[0]);
    let resolved = resolve(a.criteria.as_deref(), &exe, &ManifestDir::new(&a.manifests))?;
    let criteria = resolved.criteria.to_string();
    let criteria = (criteria != "(none)").then_some(criteria);
    let events = Arc::new(crate::open_events(a.events.as_deref())?);
    let (status, counts, refused) = edge::transparent::run(edge::transparent::RunConfig {
        socks: a.socks,
        criteria,
        app: a.app,
        events,
        state_dir: std::env::temp_dir(),
    })?;
    tracing::info!(
        "pathvm run: {} connections carried, {} refused, {} DNS answers, {refused} packets refused",
        counts.connections,
        counts.refused,
        counts.dns_answers
    );
    Ok(status)
}

/// The program `name` runs: itself if it has a slash, else found on PATH.
fn which(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}

fn preload(a: RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let std::net::SocketAddr::V4(socks) = a.socks else {
        return Err("--mode preload needs an IPv4 --socks address".into());
    };
    let shim = a.shim.unwrap_or_else(default_shim);
    if !shim.exists() {
        return Err(
            format!("{} not found: build it with `make build` (cargo build --workspace)", shim.display()).into()
        );
    }
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", shim.display()),
        _ => shim.display().to_string(),
    };
    let status = Command::new(&a.app[0])
        .args(&a.app[1..])
        .env("LD_PRELOAD", preload)
        .env("PATHVM_SOCKS", socks.to_string())
        .env("PATHVM_CRITERIA", a.criteria.unwrap_or_default())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", a.app[0]))?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
