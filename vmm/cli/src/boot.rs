//! `pathvm boot`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use guest_agent::boot::Role;
use vmm::vcpu::GuestLog;
use vmm::{build_vm, AgentImage, KvmContext, NetConfig, VmConfig};

/// What the agent does once booted.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Echo console bytes back until the console's input closes, then exit 0.
    Echo,
    /// Answer ARP and ICMP echo on virtio-net for --ip.
    Ping,
    /// Signal ready and idle until stopped.
    Idle,
    /// Panic at once (tests the panic path).
    Panic,
    /// Hand the console a descriptor outside guest memory, then echo
    /// (tests that devices reject hostile descriptors).
    BadDescriptor,
    /// Read the console's registers byte-wide many times, then exit 0
    /// (tests that what a guest makes pathvm log is rate-limited).
    BadMmio,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Echo => Role::Echo,
            RoleArg::Ping => Role::Ping,
            RoleArg::Idle => Role::Idle,
            RoleArg::Panic => Role::Panic,
            RoleArg::BadDescriptor => Role::BadDescriptor,
            RoleArg::BadMmio => Role::BadMmio,
        }
    }
}

/// Arguments of `pathvm boot`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: the guest's own (0 when the agent finishes its role), \
125 if the guest crashed, 1 if pathvm could not start it.\n\n\
Examples:\n  echo hello | pathvm boot --role echo\n  \
pathvm boot --role ping --tap tap0 --ip 10.0.0.2/24")]
pub struct BootArgs {
    /// Guest image (ELF). Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    mem: u64,
    /// Give the VM a virtio-net backed by this tap (created if absent).
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// The guest's IPv4 address on its virtio-net, e.g. 10.0.0.2/24.
    #[arg(long, value_name = "ADDR/LEN", requires = "tap", value_parser = parse_cidr)]
    ip: Option<(Ipv4Addr, u8)>,
    /// Console host side: `stdio`, or `unix:PATH` to connect to a listening
    /// Unix stream socket.
    #[arg(long, value_name = "stdio|none|unix:PATH", default_value = "stdio", value_parser = super::parse_console)]
    console: super::ConsoleArg,
    /// What the agent does.
    #[arg(long, value_enum, default_value_t = RoleArg::Echo)]
    role: RoleArg,
    /// Write device counters and timings as JSON to this file at exit.
    #[arg(long, value_name = "PATH")]
    metrics: Option<PathBuf>,
    /// Do not print the guest's log lines.
    #[arg(long)]
    quiet: bool,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} needs a prefix length, e.g. 10.0.0.2/24"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 =
        len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{len:?} is not a prefix length (0-32)"))?;
    Ok((addr, len))
}

/// Boots one VM and waits for it to end.
pub fn run(args: BootArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let image = AgentImage::open(&args.image.unwrap_or_else(super::default_image))?;
    let kvm = KvmContext::open()?;
    let cfg = VmConfig {
        mem_mib: args.mem,
        role: args.role.into(),
        console: Some(args.console.into()),
        nets: args
            .tap
            .map(|tap| NetConfig { tap, open: None, vhost_user: None, ip: args.ip, mac: None })
            .into_iter()
            .collect(),
        args: Vec::new(),
        guest_log: if args.quiet { GuestLog::Discard } else { GuestLog::Stderr },
    };
    let spawn_start = Instant::now();
    let vm = build_vm(&kvm, &image, cfg)?;
    super::stop_on_signals(vm.stop_handle());
    let outcome = vm.run()?;
    let ready_us = outcome.ready_at.map(|t| t.duration_since(spawn_start).as_secs_f64() * 1e6);
    tracing::info!(?ready_us, total_ms = t0.elapsed().as_secs_f64() * 1e3, "guest ended: {:?}", outcome.reason);
    if let Some(path) = args.metrics {
        let report = serde_json::json!({
            "exit": format!("{:?}", outcome.reason),
            "ready_us": ready_us,
            "devices": outcome.metrics.snapshot(),
        });
        std::fs::write(&path, format!("{report:#}\n"))
            .map_err(|e| format!("cannot write metrics to {}: {e}", path.display()))?;
    }
    if let vmm::ExitReason::Crashed(why) = &outcome.reason {
        eprintln!("pathvm: {why}");
    }
    Ok(outcome.reason.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_gives_clear_errors() {
        assert_eq!(parse_cidr("10.0.0.2/24"), Ok((Ipv4Addr::new(10, 0, 0, 2), 24)));
        assert!(parse_cidr("10.0.0.2").unwrap_err().contains("prefix length"));
        assert!(parse_cidr("10.0.0.2/33").is_err());
        assert!(parse_cidr("ten/8").unwrap_err().contains("not an IPv4"));
    }
}
