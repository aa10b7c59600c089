//! A built VM, and a running one: its threads, its stop and its teardown.
//!
//! Two threads per VM: the vCPU thread (guest code and register exits) and
//! the device thread (an event-manager loop that moves data between queues
//! and backends), both started and confined with the VM's shell
//! ([`crate::worker`]). Teardown stops the vCPU first, then the device loop, then
//! drops the devices (closing tap and console) and finally the memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use guest_agent::node::{ConnectTimes, NodeStats, STATS_ADDR};
use kvm_ioctls::VmFd;
use serde::Serialize;
use thiserror::Error;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::builder::VmThreads;
use crate::devices::virtio::console::{ConsoleMetrics, ConsoleMetricsSnapshot};
use crate::devices::virtio::net::{NetMetrics, NetMetricsSnapshot};
pub use crate::vcpu::ExitReason;
pub use crate::vcpu::StopHandle;
use crate::vcpu::VcpuRunner;
use crate::worker::Worker;

/// A device-thread subscriber, as the event manager holds it.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Why a VM could not be started or waited for.
#[derive(Debug, Error)]
pub enum VmError {
    /// A thread could not be created.
    #[error("cannot start VM thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The event loop could not be created.
    #[error("cannot create device event loop: {0:?}")]
    EventLoop(event_manager::Error),
    /// The guest did not signal ready in time.
    #[error("guest did not become ready within {0:?}")]
    NotReady(Duration),
    /// The guest ended before it was ready.
    #[error("guest ended before it was ready: {0:?}")]
    EndedBeforeReady(ExitReason),
}

/// Counters of a VM's devices.
#[derive(Debug, Clone, Default)]
pub struct VmMetrics {
    /// Each virtio-net device's, in device order.
    pub net: Vec<Arc<NetMetrics>>,
    /// The virtio-console device's, if any.
    pub console: Option<Arc<ConsoleMetrics>>,
}

/// A plain copy of [`VmMetrics`], for `--metrics` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmMetricsSnapshot {
    /// virtio-net counters, in device order.
    pub net: Vec<NetMetricsSnapshot>,
    /// virtio-console counters.
    pub console: Option<ConsoleMetricsSnapshot>,
}

impl VmMetrics {
    /// Current values.
    pub fn snapshot(&self) -> VmMetricsSnapshot {
        VmMetricsSnapshot {
            net: self.net.iter().map(|m| m.snapshot()).collect(),
            console: self.console.as_ref().map(|m| m.snapshot()),
        }
    }
}

/// How a VM run on the calling thread ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Why it ended.
    pub reason: ExitReason,
    /// Its device counters.
    pub metrics: VmMetrics,
    /// When the agent signalled ready, if it did.
    pub ready_at: Option<Instant>,
    /// The counters a node agent left in its stats page, if it is one.
    pub guest_stats: Option<NodeStats>,
}

/// A VM assembled by [`build_vm`](crate::build_vm), not yet running.
pub struct Vm {
    pub(crate) vm_fd: VmFd,
    pub(crate) runner: VcpuRunner,
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) metrics: VmMetrics,
    pub(crate) ready_rx: Receiver<Instant>,
    pub(crate) threads: VmThreads,
}

/// Reads the node agent's stats page (guest memory is readable after the
/// vCPU stopped; a guest that never wrote it yields `None`).
fn read_guest_stats(mem: &vm_memory::GuestMemoryMmap) -> Option<NodeStats> {
    use vm_memory::Bytes;
    let mut buf = [0u8; std::mem::size_of::<NodeStats>()];
    mem.read_slice(&mut buf, vm_memory::GuestAddress(STATS_ADDR)).ok()?;
    NodeStats::from_bytes(&buf)
}

/// A live view of a node agent's routing counters while its VM runs:
/// the host learns of route changes as they happen, not only at the end.
#[derive(Clone)]
pub struct StatsProbe {
    mem: vm_memory::GuestMemoryMmap,
}

impl StatsProbe {
    /// How often the agent's topology has changed so far; `None` until it
    /// published its stats page. Each field is read as one aligned 64-bit
    /// load, so a value the agent is rewriting is old or new, never torn.
    pub fn topology_changes(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        use vm_memory::{Bytes, GuestAddress};
        let at = |off: usize| GuestAddress(STATS_ADDR + off as u64);
        let magic: u64 = self.mem.load(at(std::mem::offset_of!(NodeStats, magic)), Relaxed).ok()?;
        if magic != guest_agent::node::STATS_MAGIC {
            return None;
        }
        self.mem.load(at(std::mem::offset_of!(NodeStats, topology_changes)), Relaxed).ok()
    }

    /// All of the agent's counters now (for live metrics); `None` until
    /// it published its stats page. Fields the agent rewrites during the
    /// copy may be one update apart from each other, which counters
    /// scraped from a running node tolerate.
    pub fn stats(&self) -> Option<NodeStats> {
        read_guest_stats(&self.mem)
    }

    /// A request VM's steps of opening its stream so far; `None` until it
    /// published its stats page. Read on the vCPU thread while the guest
    /// waits in a port exit, the agent having published just before, the
    /// fields are the ones it wrote.
    pub fn connect_times(&self) -> Option<ConnectTimes> {
        read_guest_stats(&self.mem).map(|s| s.connect)
    }
}

/// Ends the device loop when written.
struct LoopExit {
    evt: Arc<EventFd>,
    done: Arc<AtomicBool>,
}

impl MutEventSubscriber for LoopExit {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.evt, EventSet::IN));
    }
    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.evt.read();
        self.done.store(true, Ordering::Release);
    }
}

/// The device thread: runs the event loop until told to stop.
struct DeviceThread {
    exit: Arc<EventFd>,
    worker: Worker,
    done: Receiver<()>,
}

impl DeviceThread {
    fn start(subscribers: Vec<Subscriber>, worker: Worker) -> Result<Self, VmError> {
        let exit = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::Thread)?);
        let exit_sub = LoopExit { evt: exit.clone(), done: Arc::new(AtomicBool::new(false)) };
        let finished = exit_sub.done.clone();
        let mut em: EventManager<Subscriber> = EventManager::new().map_err(VmError::EventLoop)?;
        for s in subscribers {
            em.add_subscriber(s);
        }
        em.add_subscriber(Arc::new(Mutex::new(exit_sub)));
        // The worker was confined when its shell was made: no guest queue
        // is read unconfined.
        let done = worker.run(move || {
            while !finished.load(Ordering::Acquire) {
                if let Err(e) = em.run() {
                    tracing::error!("device event loop failed: {e:?}");
                    break;
                }
            }
        });
        Ok(Self { exit, worker, done })
    }

    fn stop(mut self) {
        let _ = self.exit.write(1);
        let _ = self.done.recv();
        self.worker.finish();
    }
}

impl Vm {
    /// The VM's device counters.
    pub fn metrics(&self) -> VmMetrics {
        self.metrics.clone()
    }

    /// A handle that stops this VM from another thread or a signal handler.
    pub fn stop_handle(&self) -> Arc<StopHandle> {
        self.runner.stop.clone()
    }

    /// Calls `f` on the vCPU thread when a request VM reports its stream
    /// up or refused, before the guest runs on: whoever owns the app's
    /// connection answers it there, ahead of any stream byte.
    pub fn on_stream_report(&mut self, f: impl FnMut(crate::vcpu::StreamReport) + Send + 'static) {
        self.runner.on_stream = Some(Box::new(f));
    }

    /// Calls `f` on the vCPU thread when the agent signals ready (a
    /// daemon reports its VM up without a thread waiting for it).
    pub fn on_ready(&mut self, f: impl FnOnce(Instant) + Send + 'static) {
        self.runner.on_ready = Some(Box::new(f));
    }

    /// A live view of the node agent's counters, for a watcher thread.
    pub fn stats_probe(&self) -> StatsProbe {
        StatsProbe { mem: self.runner.mem.clone() }
    }

    /// Runs the guest until it ends (on a vCPU thread of its own, which
    /// its sandbox confines; the caller waits).
    pub fn run(self) -> Result<RunOutcome, VmError> {
        self.run_then(|_| {})
    }

    /// Runs the guest until it ends, then lets `inspect` read its memory
    /// before it is freed (an audit of what a guest held).
    pub fn run_then(self, inspect: impl FnOnce(&vm_memory::GuestMemoryMmap)) -> Result<RunOutcome, VmError> {
        let Vm { vm_fd, runner, subscribers, metrics, ready_rx, threads } = self;
        let VmThreads { vcpu: mut vcpu_worker, device } = threads;
        let devices = DeviceThread::start(subscribers, device)?;
        let done = vcpu_worker.run(move || {
            let mut runner = runner;
            let reason = runner.run();
            (runner, reason)
        });
        let (runner, reason) = match done.recv() {
            Ok(done) => done,
            Err(_) => {
                devices.stop();
                return Err(VmError::Thread(std::io::Error::other("the vCPU thread panicked")));
            }
        };
        vcpu_worker.finish();
        devices.stop();
        let guest_stats = read_guest_stats(&runner.mem);
        inspect(&runner.mem);
        drop(runner);
        drop(vm_fd);
        Ok(RunOutcome { reason, metrics, ready_at: ready_rx.try_recv().ok(), guest_stats })
    }

    /// Runs the guest on a thread of its own.
    pub fn start(self) -> Result<RunningVm, VmError> {
        let Vm { vm_fd, mut runner, subscribers, metrics, ready_rx, threads } = self;
        let VmThreads { vcpu: vcpu_worker, device } = threads;
        let stop = runner.stop.clone();
        let devices = DeviceThread::start(subscribers, device)?;
        let (done_tx, done_rx) = sync_channel(1);
        let reason = vcpu_worker.run(move || {
            let reason = runner.run();
            let _ = done_tx.send(());
            drop(runner);
            reason
        });
        let vcpu = Some((vcpu_worker, reason));
        Ok(RunningVm { vm_fd: Some(vm_fd), stop, vcpu, done_rx, devices: Some(devices), ready_rx, metrics })
    }
}

/// A VM whose vCPU runs on its own thread.
pub struct RunningVm {
    vm_fd: Option<VmFd>,
    stop: Arc<StopHandle>,
    vcpu: Option<(Worker, Receiver<ExitReason>)>,
    done_rx: Receiver<()>,
    devices: Option<DeviceThread>,
    ready_rx: Receiver<Instant>,
    metrics: VmMetrics,
}

impl RunningVm {
    /// Waits until the agent signals ready; returns when it did.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Instant, VmError> {
        match self.ready_rx.recv_timeout(timeout) {
            Ok(t) => Ok(t),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(VmError::NotReady(timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(VmError::EndedBeforeReady(self.finish())),
        }
    }

    /// The VM's device counters.
    pub fn metrics(&self) -> &VmMetrics {
        &self.metrics
    }

    /// Stops the guest and frees everything it held.
    pub fn stop(mut self) -> ExitReason {
        self.finish_with_stop(true)
    }

    /// Waits for the guest to end on its own.
    pub fn join(mut self) -> ExitReason {
        self.finish_with_stop(false)
    }

    fn finish(&mut self) -> ExitReason {
        self.finish_with_stop(false)
    }

    fn finish_with_stop(&mut self, stop: bool) -> ExitReason {
        let Some((mut worker, result)) = self.vcpu.take() else { return ExitReason::Stopped };
        if stop {
            // Kick until the vCPU thread reports it left the run loop; a
            // kick may land just before KVM_RUN and be lost.
            loop {
                self.stop.request();
                match self.done_rx.recv_timeout(Duration::from_millis(5)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
        }
        let reason = result.recv().unwrap_or_else(|_| ExitReason::Crashed("vCPU thread panicked".into()));
        worker.finish();
        if let Some(d) = self.devices.take() {
            d.stop();
        }
        self.vm_fd.take();
        reason
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if self.vcpu.is_some() {
            self.finish_with_stop(true);
        }
    }
}
