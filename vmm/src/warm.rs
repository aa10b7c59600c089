//! The warm-up pass of a prepared shell.
//!
//! Under nested virtualisation the first touch of each guest page by a
//! fresh VM faults into the hypervisor, and its first VM entry is slow; a
//! request's boot paid both (≈ 0.3 ms of an echo agent's 0.6 ms from entry
//! to ready, BENCHMARKS.md, Spawn). A shell made ahead of a request runs the
//! agent once as [`Role::Warm`]: it touches the image and the start of the
//! heap, writing each byte back as it read it, and exits. The VMM then
//! writes the image again as loaded (the pass's stack frames, which held a
//! copy of its boot parameters, go with it) and sets the vCPU back to the
//! entry, so the request's agent boots from the start, from memory exactly
//! as an unwarmed shell's (tests/boot.rs holds the two side by side), in a
//! VM whose pages are already mapped.

use std::sync::Arc;
use std::time::Duration;

use guest_agent::boot::{BootParams, MemRegion, Role, WarmArgs};
use guest_agent::ports;
use kvm_ioctls::{VcpuExit, VcpuFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::layout;
use crate::loader::AgentImage;
use crate::vcpu::StopHandle;
use crate::worker::Worker;

/// Heap the warm-up pass touches by default: what an agent's boot
/// touches before ready (its device rings and first buffers).
pub const DEFAULT_HEAP_KIB: u32 = 256;
/// How long the pass may take before the shell is given up: it touches a
/// few hundred pages, so this only catches an image that loops.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Why a shell's warm-up pass failed.
#[derive(Debug, Error)]
pub enum WarmError {
    /// Writing its boot parameters.
    #[error("cannot write the warm-up pass's boot parameters: {0}")]
    GuestWrite(#[from] vm_memory::GuestMemoryError),
    /// The guest ended it otherwise than with status 0.
    #[error("the agent's warm-up pass failed: {0} (an image older than this VMM exits with status 102)")]
    Failed(String),
    /// It did not end in time.
    #[error("the agent's warm-up pass did not end within {0:?}")]
    TimedOut(Duration),
    /// The worker thread went away.
    #[error("the vCPU thread ended during the warm-up pass")]
    WorkerGone,
    /// Setting the vCPU back to the entry.
    #[error(transparent)]
    Regs(#[from] crate::arch::RegsError),
    /// Putting the image back.
    #[error(transparent)]
    Reload(#[from] crate::loader::LoaderError),
}

/// Runs the warm-up pass on `worker`, then puts `image` back as loaded
/// (its data and zeroed tails, the stack the pass ran on among them) and
/// `vcpu` back at the entry.
pub(crate) fn warm(
    vcpu: VcpuFd,
    worker: &Worker,
    mem: &GuestMemoryMmap,
    mem_size: u64,
    image: &AgentImage,
    heap_kib: u32,
) -> Result<VcpuFd, WarmError> {
    let mut params = BootParams { role: Role::Warm as u32, num_mem: 1, ..Default::default() };
    params.mem[0] = MemRegion { base: 0, size: mem_size };
    let args = WarmArgs { heap_kib }.encode();
    params.args[..args.len()].copy_from_slice(&args);
    params.args_len = args.len() as u32;
    mem.write_slice(params.as_bytes(), GuestAddress(layout::BOOT_PARAMS_ADDR))?;

    let stop = StopHandle::new().map_err(|e| WarmError::Failed(format!("no stop handle: {e}")))?;
    let s = stop.clone();
    let done = worker.prepare(move || {
        let mut vcpu = vcpu;
        let r = run(&mut vcpu, &s);
        (vcpu, r)
    });
    let (vcpu, result) = match done.recv_timeout(TIMEOUT) {
        Ok(d) => d,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(WarmError::WorkerGone),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => loop {
            stop.request();
            match done.recv_timeout(Duration::from_millis(5)) {
                Ok((_, _)) => return Err(WarmError::TimedOut(TIMEOUT)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(_) => return Err(WarmError::WorkerGone),
            }
        },
    };
    result.map_err(WarmError::Failed)?;
    image.reload(mem, mem_size)?;
    crate::arch::setup_vcpu(&vcpu, image.entry(), None)?;
    Ok(vcpu)
}

/// The pass's run loop: only the exit port ends it; log output is dropped.
fn run(vcpu: &mut VcpuFd, stop: &Arc<StopHandle>) -> Result<(), String> {
    stop.bind_current_thread();
    let result = loop {
        if stop.requested() {
            break Err("stopped".into());
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(ports::EXIT, data)) => {
                break match crate::vcpu::port_value(data) {
                    0 => Ok(()),
                    s => Err(format!("exit status {s}")),
                };
            }
            Ok(VcpuExit::IoOut(..)) => {}
            Ok(other) => break Err(format!("unexpected vCPU exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => break Err(format!("KVM_RUN failed: {e}")),
        }
    };
    stop.unbind_current_thread();
    result
}
