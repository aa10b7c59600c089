//! `pathvm bench spawn`: time from the spawn call to the agent's ready
//! signal, over sequential VMs, beside QEMU microvm booting the same image.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_agent::boot::Role;
use serde::Serialize;
use thiserror::Error;

use super::{machine, percentile, rss_kib};
use vmm::builder::{build_vm, finish_vm, BuildError, ConsoleConfig, VmConfig};
use vmm::kvm::KvmContext;
use vmm::loader::AgentImage;
use vmm::pool::ShellPool;
use vmm::vcpu::GuestLog;
use vmm::vm::VmError;

/// VMs kept running at once to measure memory per VM.
const RSS_VMS: usize = 16;
/// Prepared shells the request path draws from.
const POOL_SHELLS: usize = 2;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum SpawnBenchError {
    /// Building a VM failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Running a VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// QEMU could not be run or did not boot the image.
    #[error("QEMU baseline failed: {0}")]
    Qemu(String),
}

/// What `pathvm bench spawn --json` prints.
#[derive(Debug, Serialize)]
pub struct SpawnReport {
    /// VMs spawned.
    pub samples: usize,
    /// Median spawn-to-ready with a prepared shell (the request path), µs.
    pub spawn_p50_us: f64,
    /// 99th percentile, µs.
    pub spawn_p99_us: f64,
    /// Median spawn-to-ready building everything on the spot, µs.
    pub cold_spawn_p50_us: f64,
    /// 99th percentile of cold spawns, µs.
    pub cold_spawn_p99_us: f64,
    /// Host RSS added per running VM, KiB.
    pub rss_kib_per_vm: f64,
    /// Guest memory of each VM, MiB.
    pub guest_mem_mib: u64,
    /// QEMU microvm exec-to-first-line median, µs (same image, same run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_spawn_p50_us: Option<f64>,
    /// QEMU 99th percentile, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_spawn_p99_us: Option<f64>,
    /// qemu_spawn_p50_us / spawn_p50_us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_vs_qemu: Option<f64>,
    /// Where it was measured.
    pub machine: String,
}

fn spawn_config(mem_mib: u64) -> VmConfig {
    // The echo role brings up virtio-console before it signals ready, as
    // a per-request VM must.
    VmConfig {
        mem_mib,
        role: Role::Echo,
        console: Some(ConsoleConfig::Sink),
        guest_log: GuestLog::Discard,
        ..Default::default()
    }
}

/// Spawns `n` VMs one after another; returns spawn-to-ready times in µs.
/// With a pool, each spawn takes a prepared shell; spawns then come no
/// faster than the pool refills (it is full before each one).
pub fn measure_spawn(
    kvm: &KvmContext,
    image: &AgentImage,
    n: usize,
    mem_mib: u64,
    pool: Option<&ShellPool>,
) -> Result<Vec<f64>, SpawnBenchError> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(p) = pool {
            p.wait_full(READY_TIMEOUT);
        }
        let t0 = Instant::now();
        let built = match pool {
            Some(p) => finish_vm(kvm, p.take()?, spawn_config(mem_mib))?,
            None => build_vm(kvm, image, spawn_config(mem_mib))?,
        };
        let mut vm = built.start()?;
        let ready = vm.wait_ready(READY_TIMEOUT)?;
        times.push(ready.duration_since(t0).as_secs_f64() * 1e6);
        vm.stop();
    }
    Ok(times)
}

/// Host RSS added per running VM, KiB, with `RSS_VMS` VMs up at once.
pub fn measure_rss(kvm: &KvmContext, image: &AgentImage, mem_mib: u64) -> Result<f64, SpawnBenchError> {
    let before = rss_kib();
    let mut vms = Vec::with_capacity(RSS_VMS);
    for _ in 0..RSS_VMS {
        let mut vm = build_vm(kvm, image, spawn_config(mem_mib))?.start()?;
        vm.wait_ready(READY_TIMEOUT)?;
        vms.push(vm);
    }
    let after = rss_kib();
    for vm in vms {
        vm.stop();
    }
    Ok(after.saturating_sub(before) as f64 / RSS_VMS as f64)
}

/// Boots `image` under QEMU microvm `n` times; exec-to-first-line in µs.
pub fn measure_qemu(qemu: &Path, image: &Path, n: usize) -> Result<Vec<f64>, SpawnBenchError> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut child = Command::new(qemu)
            .args([
                "-M",
                "microvm",
                "-enable-kvm",
                "-cpu",
                "host,-arch-capabilities",
                "-m",
                "64M",
                "-nodefaults",
                "-no-user-config",
            ])
            .args([
                "-display",
                "none",
                "-serial",
                "none",
                "-debugcon",
                "stdio",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
            ])
            .arg("-kernel")
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                SpawnBenchError::Qemu(format!("cannot run {}: {e} (install qemu-system-x86)", qemu.display()))
            })?;
        let mut line = String::new();
        let got = child.stdout.take().map(|o| BufReader::new(o).read_line(&mut line));
        let dt = t0.elapsed();
        let _ = child.kill();
        let out = child.wait_with_output().map_err(|e| SpawnBenchError::Qemu(e.to_string()))?;
        if !matches!(got, Some(Ok(n)) if n > 0) || !line.contains("ready") {
            return Err(SpawnBenchError::Qemu(format!(
                "no ready line from the guest; stderr: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        times.push(dt.as_secs_f64() * 1e6);
    }
    Ok(times)
}

/// Runs the whole benchmark.
pub fn run(
    kvm: &Arc<KvmContext>,
    image: &Arc<AgentImage>,
    n: usize,
    mem_mib: u64,
    qemu: Option<&Path>,
) -> Result<SpawnReport, SpawnBenchError> {
    // One warm-up spawn: page-table bytes, CPUID and TSC caches are per
    // process and belong to start-up, not to each request.
    measure_spawn(kvm, image, 1, mem_mib, None)?;
    let mut cold = measure_spawn(kvm, image, n, mem_mib, None)?;
    cold.sort_by(f64::total_cmp);
    let pool = ShellPool::new(kvm.clone(), image.clone(), mem_mib, vmm::warm::DEFAULT_HEAP_KIB, POOL_SHELLS)
        .map_err(|e| SpawnBenchError::Vm(VmError::Thread(e)))?;
    let mut t = measure_spawn(kvm, image, n, mem_mib, Some(&pool))?;
    drop(pool);
    t.sort_by(f64::total_cmp);
    let rss = measure_rss(kvm, image, mem_mib)?;
    let (mut q50, mut q99) = (None, None);
    if let Some(q) = qemu {
        if !image.has_pvh_note() {
            return Err(SpawnBenchError::Qemu(format!(
                "{} has no PVH note, so QEMU cannot boot it",
                image.path().display()
            )));
        }
        let mut qt = measure_qemu(q, image.path(), n)?;
        qt.sort_by(f64::total_cmp);
        q50 = Some(percentile(&qt, 50.0));
        q99 = Some(percentile(&qt, 99.0));
    }
    let p50 = percentile(&t, 50.0);
    Ok(SpawnReport {
        samples: n,
        spawn_p50_us: p50,
        spawn_p99_us: percentile(&t, 99.0),
        cold_spawn_p50_us: percentile(&cold, 50.0),
        cold_spawn_p99_us: percentile(&cold, 99.0),
        rss_kib_per_vm: rss,
        guest_mem_mib: mem_mib,
        qemu_spawn_p50_us: q50,
        qemu_spawn_p99_us: q99,
        speedup_vs_qemu: q50.map(|q| q / p50),
        machine: machine(),
    })
}
