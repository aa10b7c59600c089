//! Assembling a VM, in a straight line.
//!
//! Order matters in two places: guest memory is registered with KVM before
//! anything else (PLATFORM.md: an irqchip created first makes registration
//! cost milliseconds; pathvm creates none, the guest has no interrupts), and
//! the boot parameters are written last, once every device has its window.

use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use guest_agent::boot::{self, BootParams, DeviceDesc, MemRegion, Role, MAX_DEVICES};
use kvm_ioctls::{IoEventAddress, VcpuFd, VmFd};
use thiserror::Error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::{self, layout};
use crate::devices::virtio::console::{Console, ConsoleBackend};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vhost_user_net::VhostUserNet;
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::MmioBus;
use crate::kvm::{KvmContext, KvmError};
use crate::loader::{AgentImage, LoaderError};
use crate::memory::{self, MemoryError};
use crate::seccomp::ThreadKind;
use crate::vcpu::{GuestLog, StopHandle, VcpuRunner};
use crate::vm::{Subscriber, Vm, VmMetrics};
use crate::worker::Worker;

/// Where the console's bytes come from and go.
pub enum ConsoleConfig {
    /// The process's stdin/stdout.
    Stdio,
    /// Connect to a Unix stream socket listening at this path.
    Unix(PathBuf),
    /// An already connected stream (the edge daemon hands one over).
    Stream(UnixStream),
    /// No input, output discarded.
    Sink,
}

/// A virtio-net port whose queues a vhost-user backend runs.
#[derive(Debug, Clone)]
pub struct VhostUserPort {
    /// The backend's socket.
    pub socket: PathBuf,
    /// The backend's counters, reported as this port's.
    pub metrics: Arc<netdev::NetMetrics>,
}

/// A tap opened (and steered) before its VM existed, handed to the VM's
/// net device, which then owns it. Cloning shares the one tap: the first
/// device built takes it.
#[derive(Debug, Clone)]
pub struct OpenTap(Arc<Mutex<Option<netdev::Tap>>>);

impl OpenTap {
    /// Wraps an open tap.
    pub fn new(tap: netdev::Tap) -> Self {
        Self(Arc::new(Mutex::new(Some(tap))))
    }

    fn take(&self) -> Option<netdev::Tap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One of the VM's virtio-nets: a tap the VMM serves, or a vhost-user
/// backend that serves it.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Tap interface to open (created if absent); with `vhost_user`, the
    /// tap the backend serves (for messages only).
    pub tap: String,
    /// The tap, opened already (its name is `tap`); else it is opened by
    /// name.
    pub open: Option<OpenTap>,
    /// Serve the queues from this vhost-user backend instead of a tap in
    /// the VMM.
    pub vhost_user: Option<VhostUserPort>,
    /// The guest's address and prefix length, if it has one.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// The guest's MAC; derived from the tap name when absent.
    pub mac: Option<[u8; 6]>,
}

/// Everything that makes one VM.
pub struct VmConfig {
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// What the agent does.
    pub role: Role,
    /// The console, if any.
    pub console: Option<ConsoleConfig>,
    /// virtio-net devices, one per tap, in the order the guest sees them.
    pub nets: Vec<NetConfig>,
    /// Role arguments.
    pub args: Vec<u8>,
    /// Where the agent's log lines go.
    pub guest_log: GuestLog,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            mem_mib: 64,
            role: Role::Echo,
            console: Some(ConsoleConfig::Sink),
            nets: Vec::new(),
            args: Vec::new(),
            guest_log: GuestLog::Stderr,
        }
    }
}

/// Why a VM could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    /// KVM itself.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// A KVM ioctl on the way.
    #[error("{op} failed: {source}")]
    KvmIoctl {
        /// Which step.
        op: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The image.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Memory size out of range.
    #[error("guest memory of {0} MiB is too large: at most {max} MiB", max = layout::MAX_RAM >> 20)]
    TooMuchMemory(u64),
    /// The tap.
    #[error(transparent)]
    Tap(#[from] netdev::TapError),
    /// A vhost-user backend.
    #[error(transparent)]
    VhostUser(#[from] crate::devices::virtio::vhost_user_net::VhostUserNetError),
    /// The console's host side.
    #[error("cannot open console {what}: {source}")]
    Console {
        /// Which backend.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Arguments longer than the boot block holds.
    #[error("role arguments are {0} bytes; at most {max} fit", max = boot::ARGS_LEN)]
    ArgsTooLong(usize),
    /// Registers.
    #[error(transparent)]
    Regs(#[from] arch::RegsError),
    /// Writing boot structures into guest memory.
    #[error("cannot write boot structures into guest memory: {0}")]
    GuestWrite(#[from] vm_memory::GuestMemoryError),
    /// The shell's threads.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    /// The shell's warm-up pass.
    #[error(transparent)]
    Warm(#[from] crate::warm::WarmError),
    /// eventfds and the like.
    #[error("cannot create device plumbing: {0}")]
    Io(#[from] std::io::Error),
}

/// What the attach steps add to as they go.
struct Assembly<'a> {
    vm_fd: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    wake: &'a Arc<EventFd>,
    bus: MmioBus,
    params: BootParams,
    subscribers: Vec<Subscriber>,
    metrics: VmMetrics,
}

impl Assembly<'_> {
    /// Gives `device` the next MMIO window, wires its queue notifications
    /// to ioeventfds (so a kick wakes the device thread without an exit to
    /// userspace) and lists it in the boot parameters.
    fn attach<D>(&mut self, device: Arc<Mutex<D>>, interrupt: Arc<Interrupt>) -> Result<(), BuildError>
    where
        D: VirtioDevice + event_manager::MutEventSubscriber + Send + 'static,
    {
        let index = self.params.num_devices as usize;
        assert!(index < MAX_DEVICES, "more devices than the boot block lists");
        let base = layout::MMIO_BASE + index as u64 * layout::MMIO_SIZE;
        let device_id = {
            let d = device.lock().unwrap_or_else(|p| p.into_inner());
            for (q, evt) in d.queue_events().iter().enumerate() {
                self.vm_fd
                    .register_ioevent(evt, &IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY)), q as u32)
                    .map_err(|source| BuildError::KvmIoctl { op: "KVM_IOEVENTFD", source })?;
            }
            d.device_type()
        };
        self.params.devices[index] = DeviceDesc { device_id, _pad: 0, base, size: layout::MMIO_SIZE };
        self.params.num_devices += 1;
        self.bus.insert(base, layout::MMIO_SIZE, MmioTransport::new(device.clone(), self.mem.clone(), interrupt));
        self.subscribers.push(device);
        Ok(())
    }

    fn attach_console(&mut self, cfg: ConsoleConfig) -> Result<(), BuildError> {
        let backend = match cfg {
            ConsoleConfig::Stdio => {
                ConsoleBackend::stdio().map_err(|source| BuildError::Console { what: "stdio".into(), source })?
            }
            ConsoleConfig::Unix(p) => ConsoleBackend::unix(&p)
                .map_err(|source| BuildError::Console { what: format!("unix:{}", p.display()), source })?,
            ConsoleConfig::Stream(s) => {
                ConsoleBackend::stream(s).map_err(|source| BuildError::Console { what: "stream".into(), source })?
            }
            ConsoleConfig::Sink => ConsoleBackend::sink(),
        };
        let interrupt = Interrupt::new(self.wake)?;
        let console = Console::new(backend, interrupt.clone())?;
        self.metrics.console = Some(console.metrics());
        self.attach(Arc::new(Mutex::new(console)), interrupt)
    }

    fn attach_net(&mut self, cfg: NetConfig) -> Result<(), BuildError> {
        let mac = cfg.mac.unwrap_or_else(|| mac_for(&cfg.tap));
        let first = self.metrics.net.is_empty();
        if let Some(port) = &cfg.vhost_user {
            let dev = VhostUserNet::connect(&port.socket, mac, self.wake)?;
            self.metrics.net.push(port.metrics.clone());
            // The backend completes buffers itself; the VMM never raises this
            // device's interrupt, the backend writes the wake eventfd.
            let interrupt = Interrupt::new(self.wake)?;
            self.attach(Arc::new(Mutex::new(dev)), interrupt)?;
        } else {
            let tap = match cfg.open.as_ref().and_then(OpenTap::take) {
                Some(t) => t,
                None => netdev::Tap::open(&cfg.tap)?,
            };
            let interrupt = Interrupt::new(self.wake)?;
            let net = Net::new(tap, mac, interrupt.clone())?;
            self.metrics.net.push(net.metrics());
            self.attach(Arc::new(Mutex::new(net)), interrupt)?;
        }
        // The boot block's IPv4 configuration is the first interface's.
        if first {
            self.params.net.mac = mac;
            if let Some((ip, prefix)) = cfg.ip {
                self.params.net.ip = ip.octets();
                self.params.net.prefix_len = prefix;
            }
        }
        Ok(())
    }
}

/// A stable, locally administered MAC for a tap name.
pub fn mac_for(tap: &str) -> [u8; 6] {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let h = tap.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let b = h.to_le_bytes();
    [0x02, 0x50, b[0], b[1], b[2], b[3]]
}

/// A VM prepared up to the point where it must know its request: memory
/// with the image and tables, the KVM VM and its vCPU in long mode at the
/// entry, its two threads started and confined, and (when asked for) its
/// pages mapped by a warm-up pass. Everything here is the same for every
/// request, so it can be made before one arrives
/// ([`ShellPool`](crate::pool::ShellPool)).
pub struct VmShell {
    mem: GuestMemoryMmap,
    mem_size: u64,
    vm_fd: VmFd,
    vcpu: VcpuFd,
    threads: VmThreads,
}

/// A VM's two threads, confined, waiting for their work.
pub(crate) struct VmThreads {
    pub(crate) vcpu: Worker,
    pub(crate) device: Worker,
}

impl VmThreads {
    fn start() -> Result<Self, BuildError> {
        Ok(Self {
            vcpu: Worker::start("pathvm-vcpu", ThreadKind::Vcpu)?,
            device: Worker::start("pathvm-dev", ThreadKind::Device)?,
        })
    }
}

impl VmShell {
    /// Guest memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// The shell's guest memory, for inspection (a test holds a warmed
    /// shell's against an unwarmed one's).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// Prepares a [`VmShell`] of `mem_mib` MiB for `image`; with
/// `warm_heap_kib`, runs the warm-up pass over the image and that much
/// heap ([`crate::warm`]), which pays off only for a shell made ahead of
/// its request.
pub fn prepare_shell(
    kvm: &KvmContext,
    image: &AgentImage,
    mem_mib: u64,
    warm_heap_kib: Option<u32>,
) -> Result<VmShell, BuildError> {
    let mem_size = mem_mib << 20;
    if mem_size > layout::MAX_RAM {
        return Err(BuildError::TooMuchMemory(mem_mib));
    }
    // Checked before any kernel object exists, so a too-small VM costs nothing.
    image.check_fits(mem_size)?;
    let mem = memory::create(mem_size)?;
    let vm_fd = kvm.kvm().create_vm().map_err(|source| BuildError::KvmIoctl { op: "KVM_CREATE_VM", source })?;
    memory::register(&vm_fd, &mem)?;
    image.load(&mem, mem_size)?;
    arch::write_tables(&mem)?;
    let vcpu = vm_fd.create_vcpu(0).map_err(|source| BuildError::KvmIoctl { op: "KVM_CREATE_VCPU", source })?;
    arch::setup_vcpu(&vcpu, image.entry(), Some(kvm.supported_cpuid()?))?;
    let threads = VmThreads::start()?;
    let vcpu = match warm_heap_kib {
        Some(kib) => crate::warm::warm(vcpu, &threads.vcpu, &mem, mem_size, image, kib)?,
        None => vcpu,
    };
    Ok(VmShell { mem, mem_size, vm_fd, vcpu, threads })
}

/// Builds a VM for `image` as `cfg` describes. Nothing runs yet.
pub fn build_vm(kvm: &KvmContext, image: &AgentImage, cfg: VmConfig) -> Result<Vm, BuildError> {
    let shell = prepare_shell(kvm, image, cfg.mem_mib, None)?;
    finish_vm(kvm, shell, cfg)
}

/// Turns a prepared shell into the VM for one request: its devices and
/// boot parameters. `cfg.mem_mib` is ignored; the shell's size counts.
pub fn finish_vm(kvm: &KvmContext, shell: VmShell, cfg: VmConfig) -> Result<Vm, BuildError> {
    if cfg.args.len() > boot::ARGS_LEN {
        return Err(BuildError::ArgsTooLong(cfg.args.len()));
    }
    let VmShell { mem, mem_size, vm_fd, vcpu, threads } = shell;
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
    let mut params = BootParams { role: cfg.role as u32, num_mem: 1, ..Default::default() };
    params.mem[0] = MemRegion { base: 0, size: mem_size };
    params.args[..cfg.args.len()].copy_from_slice(&cfg.args);
    params.args_len = cfg.args.len() as u32;
    params.tsc_khz = kvm.tsc_khz(&vcpu) as u64;

    let mut asm = Assembly {
        vm_fd: &vm_fd,
        mem: &mem,
        wake: &wake,
        bus: MmioBus::default(),
        params,
        subscribers: Vec::new(),
        metrics: VmMetrics::default(),
    };
    if let Some(c) = cfg.console {
        asm.attach_console(c)?;
    }
    for n in cfg.nets {
        asm.attach_net(n)?;
    }
    let Assembly { bus, params, subscribers, metrics, .. } = asm;
    mem.write_slice(params.as_bytes(), GuestAddress(layout::BOOT_PARAMS_ADDR))?;

    let (ready_tx, ready_rx) = sync_channel(1);
    let runner = VcpuRunner {
        vcpu,
        bus,
        mem,
        wake,
        stop: StopHandle::new()?,
        ready: Some(ready_tx),
        on_stream: None,
        on_ready: None,
        log: cfg.guest_log,
        byte_line: Vec::new(),
        log_limit: Default::default(),
    };
    Ok(Vm { vm_fd, runner, subscribers, metrics, ready_rx, threads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_stable_and_locally_administered() {
        assert_eq!(mac_for("tap0"), mac_for("tap0"));
        assert_ne!(mac_for("tap0"), mac_for("tap1"));
        assert_eq!(mac_for("x")[0] & 0x03, 0x02);
    }
}
