//! The vCPU run loop and the agent's port ABI (guest_agent::ports).
//!
//! Exits are the expensive thing on this KVM (≈ 58 µs each), so the loop
//! does little per exit: a log line is one exit, MMIO goes straight to the
//! bus, and `WAIT` parks the thread on the devices' wake eventfd instead of
//! letting the guest spin.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Once};
use std::time::Instant;

use guest_agent::ports::{self, LOG_LINE_MAX};
use guest_agent::virtio::batch::MMIO_BATCH_ADDR;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::devices::MmioBus;

/// What a request VM reported on [`ports::STREAM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamReport {
    /// The stream to the service is up.
    Up,
    /// The destination refused it (service down, no route).
    Refused,
    /// No onion circuit avoids what the app avoids: nothing was sent.
    NoCircuit,
    /// The destination's policy refuses it (an exit's, on the address a
    /// name resolved to).
    NotAllowed,
    /// A value the ABI does not define (the guest is not trusted).
    Unknown(u32),
}

impl StreamReport {
    fn from_port(v: u32) -> Self {
        match v {
            ports::STREAM_UP => Self::Up,
            ports::STREAM_REFUSED => Self::Refused,
            ports::STREAM_NO_CIRCUIT => Self::NoCircuit,
            ports::STREAM_NOT_ALLOWED => Self::NotAllowed,
            v => Self::Unknown(v),
        }
    }
}

/// Called on the vCPU thread during the exit that reported; the guest runs
/// on once it returns.
pub type StreamCallback = Box<dyn FnMut(StreamReport) + Send>;

/// Longest the vCPU parks for one `WAIT`, whatever the guest asks: an
/// idle request VM sleeps until its own next timer, and the devices' wake
/// and the stop event end a park early, so the cap only bounds a guest
/// that asks for nonsense.
const MAX_PARK_US: u32 = 60_000_000;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote its exit status to the exit port.
    Exited(u32),
    /// The guest faulted, halted, or KVM failed; the text says how.
    Crashed(String),
    /// The host stopped it.
    Stopped,
}

impl ExitReason {
    /// The process exit status `pathvm boot` returns for this ending.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(s) => (*s).min(255) as i32,
            Self::Crashed(_) => 125,
            Self::Stopped => 130,
        }
    }
}

/// Where the agent's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestLog {
    /// To stderr, prefixed with `guest: `.
    Stderr,
    /// Nowhere (benchmarks).
    Discard,
}

/// Asks a vCPU thread to stop, from any thread.
#[derive(Debug)]
pub struct StopHandle {
    requested: AtomicBool,
    evt: EventFd,
    thread: AtomicU64,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl StopHandle {
    /// A handle not yet bound to a thread.
    pub fn new() -> std::io::Result<Arc<Self>> {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            // Only interrupts KVM_RUN with EINTR; failure to install means
            // stop() relies on the guest's next exit, which parks bound.
            let _ = register_signal_handler(SIGRTMIN(), kick_handler);
        });
        Ok(Arc::new(Self {
            requested: AtomicBool::new(false),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            thread: AtomicU64::new(0),
        }))
    }

    pub(crate) fn bind_current_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        self.thread.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
    }

    /// No more kicks: the bound thread may go away or do other work.
    pub(crate) fn unbind_current_thread(&self) {
        self.thread.store(0, Ordering::Release);
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Asks the vCPU to stop: wakes it if parked, kicks it out of KVM_RUN
    /// if running. Call repeatedly until the thread ends (a kick can land
    /// just before KVM_RUN is entered). Async-signal-safe: only an atomic
    /// store, write(2) and pthread_kill.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        let _ = self.evt.write(1);
        let t = self.thread.load(Ordering::Acquire);
        if t != 0 {
            // SAFETY: `t` is the pthread_t of the vCPU thread, which is
            // joined only after it stops being signalled (RunningVm::stop).
            unsafe { libc::pthread_kill(t as libc::pthread_t, SIGRTMIN()) };
        }
    }
}

/// Runs one vCPU until the guest exits or the host stops it.
pub struct VcpuRunner {
    pub(crate) vcpu: VcpuFd,
    pub(crate) bus: MmioBus,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) wake: std::sync::Arc<EventFd>,
    pub(crate) stop: Arc<StopHandle>,
    pub(crate) ready: Option<SyncSender<Instant>>,
    pub(crate) on_stream: Option<StreamCallback>,
    pub(crate) on_ready: Option<Box<dyn FnOnce(Instant) + Send>>,
    pub(crate) log: GuestLog,
    pub(crate) byte_line: Vec<u8>,
    /// The guest's own log lines, rate-limited.
    pub(crate) log_limit: crate::guest_log::LogLimiter,
}

/// The value a guest wrote with `out` (1, 2 or 4 bytes, little-endian).
pub(crate) fn port_value(data: &[u8]) -> u32 {
    let mut v = [0u8; 4];
    let n = data.len().min(4);
    v[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(v)
}

impl VcpuRunner {
    /// Runs the guest on the calling thread.
    pub fn run(&mut self) -> ExitReason {
        self.stop.bind_current_thread();
        let reason = self.run_loop();
        self.stop.unbind_current_thread();
        reason
    }

    fn run_loop(&mut self) -> ExitReason {
        loop {
            if self.stop.requested() {
                return ExitReason::Stopped;
            }
            let Self { vcpu, bus, mem, .. } = self;
            let port_write = match vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => Some((port, port_value(data))),
                Ok(VcpuExit::IoIn(_, data)) => {
                    data.fill(0xff);
                    None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    bus.read(addr, data);
                    None
                }
                Ok(VcpuExit::MmioWrite(MMIO_BATCH_ADDR, data)) => {
                    let mut list = [0u8; 8];
                    let n = data.len().min(8);
                    list[..n].copy_from_slice(&data[..n]);
                    crate::devices::batch::run(bus, mem, u64::from_le_bytes(list));
                    None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    bus.write(addr, data);
                    None
                }
                Ok(VcpuExit::Hlt) => return ExitReason::Crashed("guest executed hlt".into()),
                Ok(VcpuExit::Shutdown) => return ExitReason::Crashed(self.describe_fault()),
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return ExitReason::Crashed(format!("KVM entry failed (reason {reason:#x})"))
                }
                Ok(VcpuExit::InternalError) => {
                    return ExitReason::Crashed("KVM internal error (emulation failure)".into())
                }
                Ok(other) => return ExitReason::Crashed(format!("unexpected vCPU exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
                Err(e) => return ExitReason::Crashed(format!("KVM_RUN failed: {e}")),
            };
            if let Some((port, value)) = port_write {
                if let Some(reason) = self.port_out(port, value) {
                    return reason;
                }
            }
        }
    }

    fn port_out(&mut self, port: u16, value: u32) -> Option<ExitReason> {
        match port {
            ports::EXIT => return Some(ExitReason::Exited(value)),
            ports::WAIT => self.park(value),
            ports::READY => {
                let now = Instant::now();
                if let Some(tx) = self.ready.take() {
                    let _ = tx.try_send(now);
                }
                if let Some(f) = self.on_ready.take() {
                    f(now);
                }
            }
            ports::STREAM => match self.on_stream.as_mut() {
                Some(f) => f(StreamReport::from_port(value)),
                None => tracing::debug!(value, "stream report from a VM nobody asked"),
            },
            ports::LOG_LINE => self.log_line(value as u64),
            ports::LOG_BYTE => {
                let b = value as u8;
                if b == b'\n' || self.byte_line.len() >= LOG_LINE_MAX {
                    let line = String::from_utf8_lossy(&self.byte_line).into_owned();
                    self.emit(&line);
                    self.byte_line.clear();
                } else {
                    self.byte_line.push(b);
                }
            }
            _ => tracing::debug!(port, value, "write to unknown port"),
        }
        None
    }

    fn park(&mut self, timeout_us: u32) {
        let us = timeout_us.min(MAX_PARK_US) as i64;
        let ts = libc::timespec { tv_sec: us / 1_000_000, tv_nsec: (us % 1_000_000) * 1000 };
        let mut fds = [
            libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.stop.evt.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfds and `ts` a valid
        // timespec, both alive for the call; no signal mask is changed.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        let _ = self.wake.read();
    }

    fn log_line(&mut self, addr: u64) {
        let Ok(len) = self.mem.read_obj::<u32>(GuestAddress(addr)) else {
            tracing::debug!(addr, "log line outside guest memory");
            return;
        };
        let mut buf = vec![0u8; (len as usize).min(LOG_LINE_MAX)];
        if self.mem.read_slice(&mut buf, GuestAddress(addr.wrapping_add(4))).is_err() {
            tracing::debug!(addr, "log line outside guest memory");
            return;
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        self.emit(&line);
    }

    /// Prints one of the guest's lines (escaped, within its rate).
    fn emit(&mut self, line: &str) {
        if matches!(self.log, GuestLog::Discard) {
            return;
        }
        match self.log_limit.allow() {
            Some(0) => eprintln!("guest: {}", crate::guest_log::escape(line)),
            Some(held) => eprintln!("guest: {} ({held} earlier lines held back)", crate::guest_log::escape(line)),
            None => {}
        }
    }

    fn describe_fault(&self) -> String {
        let rip = self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
        let cr2 = self.vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
        format!("guest crashed (fault with no handler, e.g. a page fault or #GP) at rip {rip:#x}, cr2 {cr2:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_distinguish_endings() {
        assert_eq!(ExitReason::Exited(0).exit_code(), 0);
        assert_eq!(ExitReason::Exited(101).exit_code(), 101);
        assert_eq!(ExitReason::Exited(4000).exit_code(), 255);
        assert_eq!(ExitReason::Crashed("x".into()).exit_code(), 125);
        assert_eq!(ExitReason::Stopped.exit_code(), 130);
    }

    #[test]
    fn stream_reports_outside_the_abi_are_kept_as_unknown() {
        assert_eq!(StreamReport::from_port(ports::STREAM_UP), StreamReport::Up);
        assert_eq!(StreamReport::from_port(ports::STREAM_REFUSED), StreamReport::Refused);
        assert_eq!(StreamReport::from_port(ports::STREAM_NO_CIRCUIT), StreamReport::NoCircuit);
        assert_eq!(StreamReport::from_port(ports::STREAM_NOT_ALLOWED), StreamReport::NotAllowed);
        assert_eq!(StreamReport::from_port(7), StreamReport::Unknown(7));
    }

    #[test]
    fn stop_handle_is_sticky_and_wakes() {
        let h = StopHandle::new().unwrap();
        assert!(!h.requested());
        h.request();
        assert!(h.requested());
        assert_eq!(h.evt.read().unwrap(), 1);
    }
}
