//! pathvm's virtual machine monitor.
//!
//! A VM here is small and short-lived: one vCPU that starts directly in
//! 64-bit mode at CPL3 (PLATFORM.md: kernel mode is emulated on this KVM),
//! guest memory backed by a memfd (so vhost-user backends can map it), and
//! virtio-mmio devices that the guest polls. The layout follows Firecracker:
//!
//! - [`kvm`]: opening /dev/kvm once per process and caching what is costly;
//! - [`memory`]: memfd-backed guest memory;
//! - [`loader`]: the agent image, parsed once and loaded per VM;
//! - [`arch`]: page tables, GDT/TSS and registers for the CPL3 entry;
//! - [`devices`]: the virtio-mmio transport and the devices behind it;
//! - [`builder`]: assembling a VM in a straight line;
//! - [`pool`]: VM shells prepared before requests arrive;
//! - [`vcpu`]: the run loop and the agent's port ABI;
//! - [`vm`]: a running VM, its threads and its teardown;
//! - [`random`]: entropy for keys and ids;
//! - [`seccomp`]: the filters that confine the vCPU and device threads;
//! - [`guest_log`]: rate limits and escaping for lines a guest can cause;
//! - [`limits`]: the process's fd limit, raised at start, and the default
//!   cap on VMs;
//! - `fuzzing` (feature `fuzzing`): the bodies of the `fuzz/` targets that
//!   play a hostile guest driver against the virtio-mmio transport.
//!
//! The daemons and tools built on it are crates of their own beside this
//! one: `node` (relay and destination hosts), `edge` (the edge host's front
//! door and request VMs), `topo` (test hosts), `bench` (measurements) and
//! `pathvm` (the command).

pub mod arch;
pub mod builder;
pub mod devices;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod guest_log;
pub mod kvm;
pub mod limits;
pub mod loader;
pub mod memory;
pub mod pool;
pub mod random;
pub mod seccomp;
pub mod signals;
pub mod vcpu;
pub mod vm;
pub mod warm;
pub mod worker;

pub use builder::{
    build_vm, finish_vm, prepare_shell, BuildError, ConsoleConfig, NetConfig, VhostUserPort, VmConfig, VmShell,
};
pub use kvm::{KvmContext, KvmError};
pub use loader::{AgentImage, LoaderError};
pub use vm::{ExitReason, RunningVm, Vm};
