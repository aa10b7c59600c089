//! `pathvm bench`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use vmm::{AgentImage, KvmContext};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Spawn-to-ready time of sequential VMs and memory per running VM,
    /// optionally beside QEMU microvm booting the same image.
    Spawn(SpawnArgs),
    /// Packet rates and per-hop latency through relay B's node VM beside
    /// kernel forwarding through B, on line3 test hosts made for the run.
    Relay(RelayArgs),
    /// Connect-to-first-byte and one flow's throughput through pathvm
    /// (edge, a VM per request, relay, destination VM) beside kernel routing.
    Connect(ConnectArgs),
}

/// Arguments of `pathvm bench connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Topology (hosts a, b, c in a line, like line3).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/topologies/line3.toml"))]
    topology: PathBuf,
    /// Print one JSON object (the output is JSON either way).
    #[arg(long)]
    json: bool,
}

/// Arguments of `pathvm bench relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Topology (must have hosts a, b, c in a line, like line3).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/topologies/line3.toml"))]
    topology: PathBuf,
    /// Seconds of sending per rate measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print one JSON object (the output is JSON either way).
    #[arg(long)]
    json: bool,
}

/// Arguments of `pathvm bench spawn`.
#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Number of VMs to spawn (one after another).
    #[arg(short = 'n', long, default_value_t = 100)]
    count: usize,
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Guest memory per VM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    mem: u64,
    /// Also boot the same image N times under QEMU's microvm machine.
    #[arg(long)]
    compare_qemu: bool,
    /// QEMU binary for --compare-qemu.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Print one JSON object (the default output is also JSON; this flag
    /// is accepted for scripts that ask for it explicitly).
    #[arg(long)]
    json: bool,
}

/// Runs a benchmark and prints its report.
pub fn run(cmd: BenchCommand) -> Result<i32, Box<dyn std::error::Error>> {
    match cmd {
        BenchCommand::Spawn(a) => {
            if a.count == 0 {
                return Err("-n must be at least 1".into());
            }
            let image = Arc::new(AgentImage::open(&a.image.unwrap_or_else(super::default_image))?);
            let kvm = Arc::new(KvmContext::open()?);
            let qemu = a.compare_qemu.then_some(a.qemu.as_path());
            let report = vmm::bench::spawn::run(&kvm, &image, a.count, a.mem, qemu)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        BenchCommand::Connect(a) => {
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let report = vmm::bench::connect::run(&exe, &image, &a.topology)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        BenchCommand::Relay(a) => {
            if !(0.1..=60.0).contains(&a.seconds) {
                return Err("--seconds must be between 0.1 and 60".into());
            }
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let window = std::time::Duration::from_secs_f64(a.seconds);
            let report = vmm::bench::relay::run(&exe, &image, &a.topology, window)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
    }
}
