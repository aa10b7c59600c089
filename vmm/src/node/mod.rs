//! A relay or destination host's node: `pathvm node --config FILE`.
//!
//! The node takes every frame arriving on its host's link interfaces before
//! the host network stack sees it (tc ingress `mirred` redirect into a tap
//! per link: PLATFORM.md's verified intake), and hands it to a long-lived
//! node VM whose virtio-net ports are those taps. Frames the VM sends on a
//! port are redirected out of that link's interface the same way. The VM
//! routes by the packet's protocol; packets for this node are delivered to
//! the host over the VM's console.

mod config;
mod plumbing;

use std::path::Path;

pub use config::{NodeFile, NodeFileError, PortSpec, TopoLinkSpec};
pub use plumbing::{Intake, IntakeError};

use guest_agent::boot::Role;

use crate::builder::{build_vm, BuildError, ConsoleConfig, NetConfig, VmConfig};
use crate::kvm::KvmContext;
use crate::loader::AgentImage;
use crate::vcpu::GuestLog;
use crate::vm::{RunOutcome, StopHandle, VmError};

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] NodeFileError),
    /// Taps and redirects.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// The VM.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Running the VM.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Runs a node from `config_path` until its VM stops. `on_stop_handle`
/// receives the handle that stops it (for signal handlers).
pub fn run(
    kvm: &KvmContext,
    image: &AgentImage,
    config_path: &Path,
    console: ConsoleConfig,
    guest_log: GuestLog,
    on_stop_handle: impl FnOnce(std::sync::Arc<StopHandle>),
) -> Result<RunOutcome, NodeError> {
    let file = NodeFile::load(config_path)?;
    let node_cfg = file.node_config()?;
    let intake = Intake::up(&file.port)?;
    let mut args = Vec::with_capacity(node_cfg.encoded_len());
    node_cfg.encode(&mut args);
    let nets = file
        .port
        .iter()
        .map(|p| NetConfig { tap: p.tap.clone(), ip: None, mac: config::parse_mac(&p.mac).ok() })
        .collect();
    let cfg = VmConfig { mem_mib: file.mem_mib, role: Role::Node, console: Some(console), nets, args, guest_log };
    let vm = build_vm(kvm, image, cfg)?;
    on_stop_handle(vm.stop_handle());
    let outcome = vm.run()?;
    drop(intake);
    Ok(outcome)
}
