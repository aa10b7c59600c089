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
    /// Each routing protocol (shortest, widest, multipath, redundant,
    /// onion) across mesh6 through the edge: connect time, one flow's
    /// throughput and the stall when a relay on its path dies, beside
    /// kernel routing measured in the same run.
    Protocols(ProtocolsArgs),
    /// What idle connections cost the edge: N held through it (a request
    /// VM each), the edge's CPU, RSS, fds and threads per connection and a
    /// 4 KiB echo on one more, beside the same echo with nothing idle.
    Density(DensityArgs),
    /// The overlay router alone on the host (no VM): frames forwarded per
    /// second on one core for 64- and 1400-byte payloads, authentication
    /// included, beside open+seal alone.
    Router(RouterArgs),
}

/// Arguments of `pathvm bench router`.
#[derive(Debug, Args)]
#[command(after_help = "Needs nothing but a CPU: no root, no KVM. Runs on the calling thread; pin it \
(taskset -c 1 pathvm bench router) to keep it apart from other load.")]
pub struct RouterArgs {
    /// Timed rounds of 4096 frames per size.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Print one JSON object (the output is JSON either way).
    #[arg(long)]
    json: bool,
}

/// Arguments of `pathvm bench protocols`.
#[derive(Debug, Args)]
#[command(after_help = "Needs root, /dev/kvm and /dev/net/tun. Brings up mesh6 under a name of its own \
(ppPID; taken down again on every exit), starts a service on c and measures from a:\n  \
1. kernel routing (no pathvm): connect-to-first-byte of --connects connections, and one --bytes download;\n  \
2. `pathvm edge` on a, fresh `pathvm node`s on c, r1, r2, r3, r4 per protocol, and through the edge with \
the protocol's criteria in the SOCKS5 username (pathvm:<criteria>): the same two, then a --bytes download \
during which, 300 ms in, the node of a relay on the protocol's path is killed (SIGKILL).\n\n\
protocol   criteria                              relay killed\n\
shortest   latency=require                       r1\n\
widest     bandwidth=prefer                      r3\n\
multipath  reliability=require,bandwidth=prefer  r1\n\
redundant  reliability=prefer                    r1\n\
onion      anonymity=require                     r2\n\n\
The edge's log must show the protocol chosen for every request. --json prints one object per protocol \
per line: protocol, criteria, connect_p50_ms, connect_p99_ms, throughput_mbps, kernel_connect_p50_ms, \
kernel_connect_p99_ms, kernel_throughput_mbps, throughput_ratio (pathvm/kernel), stall_after_relay_kill_ms \
(longest gap between reads from the kill on), killed_relay, complete (every byte arrived), samples, machine. \
A protocol that cannot be measured (refused, another protocol chosen, a stuck path) gets an \"error\" field \
instead of the pathvm numbers, and the run goes on. Takes about 20 s per protocol with the defaults.")]
pub struct ProtocolsArgs {
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Topology (hosts a, r1, r2, r3, r4, c like mesh6).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/topologies/mesh6.toml"))]
    topology: PathBuf,
    /// Bytes of each throughput download and of each relay-kill download
    /// (1 MiB to 16 GiB).
    #[arg(long, value_name = "N", default_value_t = bench::protocols::DEFAULT_BYTES)]
    bytes: u64,
    /// Connections timed for connect-to-first-byte, per protocol and for
    /// the kernel baseline (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = bench::protocols::DEFAULT_CONNECTS)]
    connects: usize,
    /// One JSON object per protocol, one per line, instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pathvm bench density`.
#[derive(Debug, Args)]
#[command(
    after_help = "Holds up to the largest count of connections at once: the edge needs about 20 fds and 1 MiB per connection, and --max-vms is set for it. Fields: idle_cpu_percent_N (of one core), rss_kib_per_conn_N, fds_per_conn_N, threads_per_conn_N, echo_p50_ms_N beside echo_p50_ms_alone and kernel_echo_p50_ms, held_intact of held, fds_after_close beside baseline_fds."
)]
pub struct DensityArgs {
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Topology (hosts a, b, c in a line, like line3).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/topologies/line3.toml"))]
    topology: PathBuf,
    /// Connection counts to measure at, ascending (connections accumulate).
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    counts: Vec<usize>,
    /// Seconds over which idle CPU is measured at each count.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print one JSON object (the output is JSON either way).
    #[arg(long)]
    json: bool,
}

/// Arguments of `pathvm bench connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Topology (hosts a, b, c in a line, like line3).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/topologies/line3.toml"))]
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
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/topologies/line3.toml"))]
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
            let report = bench::spawn::run(&kvm, &image, a.count, a.mem, qemu)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        BenchCommand::Connect(a) => {
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let report = bench::connect::run(&exe, &image, &a.topology)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        BenchCommand::Protocols(a) => {
            if !(1..=1000).contains(&a.connects) {
                return Err("--connects must be between 1 and 1000".into());
            }
            if !((1 << 20)..=(16 << 30)).contains(&a.bytes) {
                return Err("--bytes must be between 1048576 (1 MiB; the relay dies 300 ms into the download) \
                    and 17179869184 (16 GiB)"
                    .into());
            }
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let opts = bench::protocols::Options { connects: a.connects, bytes: a.bytes };
            let mut first = true;
            let rows = bench::protocols::run(&exe, &image, &a.topology, opts, |r| {
                if a.json {
                    match serde_json::to_string(r) {
                        Ok(line) => println!("{line}"),
                        Err(e) => eprintln!("pathvm bench protocols: {e}"),
                    }
                    return;
                }
                if std::mem::take(&mut first) {
                    print_table_head(r);
                }
                print_table_row(r);
            })?;
            if let (false, Some(r)) = (a.json, rows.first()) {
                println!("\n{} connections per protocol and for the kernel; {}", r.samples, r.machine);
            }
            Ok(0)
        }
        BenchCommand::Density(a) => {
            if a.counts.is_empty() || a.counts.windows(2).any(|w| w[0] >= w[1]) || a.counts.contains(&0) {
                return Err("--counts must be ascending counts of at least 1, e.g. 100,500,1000".into());
            }
            if a.counts.iter().any(|&n| n > 4000) {
                return Err("--counts above 4000 are not supported (each connection is a VM)".into());
            }
            if !(1.0..=60.0).contains(&a.seconds) {
                return Err("--seconds must be between 1 and 60".into());
            }
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let window = std::time::Duration::from_secs_f64(a.seconds);
            let report = bench::density::run(&exe, &image, &a.topology, &a.counts, window)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        BenchCommand::Router(a) => {
            if !(1..=10_000).contains(&a.rounds) {
                return Err("--rounds must be between 1 and 10000".into());
            }
            let _ = a.json;
            println!("{}", serde_json::to_string(&bench::router::run(a.rounds))?);
            Ok(0)
        }
        BenchCommand::Relay(a) => {
            if !(0.1..=60.0).contains(&a.seconds) {
                return Err("--seconds must be between 0.1 and 60".into());
            }
            let image = a.image.unwrap_or_else(super::default_image);
            let exe = std::env::current_exe()?;
            let window = std::time::Duration::from_secs_f64(a.seconds);
            let report = bench::relay::run(&exe, &image, &a.topology, window)?;
            let _ = a.json;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
    }
}

/// The table's header and the kernel baseline's line (`pathvm bench
/// protocols` without --json).
fn print_table_head(r: &bench::protocols::ProtocolReport) {
    println!(
        "{:<10} {:<37} {:>8} {:>8} {:>9} {:>7} {:>9} {:>6} {:>8}",
        "protocol", "criteria", "p50 ms", "p99 ms", "Mbit/s", "×kernel", "stall ms", "killed", "complete"
    );
    println!(
        "{:<10} {:<37} {:>8.2} {:>8.2} {:>9.0} {:>7.2}",
        "kernel",
        "(plain routing, no pathvm)",
        r.kernel_connect_p50_ms,
        r.kernel_connect_p99_ms,
        r.kernel_throughput_mbps,
        1.0
    );
}

/// One protocol's line of the table.
fn print_table_row(r: &bench::protocols::ProtocolReport) {
    use bench::protocols::Outcome;
    match &r.outcome {
        Outcome::Measured(m) => println!(
            "{:<10} {:<37} {:>8.2} {:>8.2} {:>9.0} {:>7.2} {:>9.0} {:>6} {:>8}",
            r.protocol,
            r.criteria,
            m.connect_p50_ms,
            m.connect_p99_ms,
            m.throughput_mbps,
            m.throughput_ratio,
            m.stall_after_relay_kill_ms,
            r.killed_relay,
            if m.complete { "yes" } else { "NO" }
        ),
        Outcome::Failed { error } => println!("{:<10} {:<37} error: {error}", r.protocol, r.criteria),
    }
}
