//! `pathvm run -- APP`: an unmodified app whose TCP connections go through
//! pathvm.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use policy::Criteria;

/// Arguments of `pathvm run`.
#[derive(Debug, Args)]
#[command(after_help = "The app is started with LD_PRELOAD=libpathvm_preload.so: every TCP connect \
to a non-loopback address becomes a connection through the edge's SOCKS5 port (start `pathvm \
edge` first), with --criteria as the connection's criteria. Statically linked apps and apps that \
make system calls directly are not covered; point those at the SOCKS5 port instead.\n\n\
Example:\n  ip netns exec line3-a pathvm run --criteria latency=require -- curl http://10.231.1.2:8080/")]
pub struct RunArgs {
    /// The edge's SOCKS5 address.
    #[arg(long, default_value = "127.0.0.1:1080")]
    socks: std::net::SocketAddrV4,
    /// Criteria for the app's connections, e.g. latency=require,anonymity=prefer
    #[arg(long)]
    criteria: Option<String>,
    /// The shim (default: libpathvm_preload.so beside this binary, or $PATHVM_PRELOAD).
    #[arg(long, value_name = "PATH")]
    preload: Option<PathBuf>,
    /// The app and its arguments.
    #[arg(last = true, required = true, value_name = "APP")]
    app: Vec<String>,
}

fn default_preload() -> PathBuf {
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
    let shim = a.preload.unwrap_or_else(default_preload);
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
        .env("PATHVM_SOCKS", a.socks.to_string())
        .env("PATHVM_CRITERIA", a.criteria.unwrap_or_default())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", a.app[0]))?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
