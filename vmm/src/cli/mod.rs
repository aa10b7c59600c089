//! Command-line interface: one module per subcommand.

mod bench;
mod boot;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pathvm: a microVM for every network connection.
///
/// Each request gets its own KVM microVM whose virtio-net device is the
/// request's connection. These commands boot and measure those VMs.
#[derive(Debug, Parser)]
#[command(name = "pathvm", version, about, long_about = None, propagate_version = true)]
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
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../images/out/agent.elf"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATHVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Boot(args) => boot::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pathvm: error: {e}");
            1
        }
    }
}
