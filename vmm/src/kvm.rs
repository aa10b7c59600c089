//! The process's handle on KVM.
//!
//! Opening /dev/kvm and asking for the supported CPUID are done once per
//! process: `KVM_GET_SUPPORTED_CPUID` alone costs ≈ 0.4 ms the first time
//! (PLATFORM.md), which is a fifth of the spawn budget.

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use thiserror::Error;

/// Default KVM device; `PATHVM_KVM_DEVICE` overrides it (used by tests to
/// check the error a machine without KVM gives).
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Why KVM could not be used.
#[derive(Debug, Error)]
pub enum KvmError {
    /// No KVM device node.
    #[error("{0} does not exist: this machine has no KVM (enable virtualization, or load the kvm module)")]
    Missing(PathBuf),
    /// The device exists but may not be opened.
    #[error("permission denied opening {0}: run as root or add your user to the 'kvm' group")]
    NotPermitted(PathBuf),
    /// Anything else from opening the device.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The kernel's KVM API is not the stable one (12).
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
}

/// An open KVM system handle with per-process caches.
pub struct KvmContext {
    kvm: Kvm,
    cpuid: OnceLock<Result<CpuId, kvm_ioctls::Error>>,
    tsc_khz: OnceLock<u32>,
}

impl KvmContext {
    /// Opens the KVM device (`PATHVM_KVM_DEVICE` or /dev/kvm).
    pub fn open() -> Result<Self, KvmError> {
        let path = PathBuf::from(std::env::var_os("PATHVM_KVM_DEVICE").unwrap_or_else(|| KVM_DEVICE.into()));
        let cpath =
            std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| KvmError::Missing(path.clone()))?;
        let kvm = Kvm::new_with_path(&cpath).map_err(|e| {
            let err = io::Error::from_raw_os_error(e.errno());
            match err.kind() {
                io::ErrorKind::NotFound => KvmError::Missing(path.clone()),
                io::ErrorKind::PermissionDenied => KvmError::NotPermitted(path.clone()),
                _ => KvmError::Open { path: path.clone(), source: err },
            }
        })?;
        let v = kvm.get_api_version();
        if v != 12 {
            return Err(KvmError::ApiVersion(v));
        }
        Ok(Self { kvm, cpuid: OnceLock::new(), tsc_khz: OnceLock::new() })
    }

    /// The system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The host-supported CPUID, fetched on first use.
    pub fn supported_cpuid(&self) -> Result<&CpuId, KvmError> {
        self.cpuid
            .get_or_init(|| self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES))
            .as_ref()
            .map_err(|e| KvmError::Cpuid(*e))
    }

    /// The TSC frequency learnt from the first vCPU, if any yet.
    pub fn tsc_khz(&self, vcpu: &kvm_ioctls::VcpuFd) -> u32 {
        *self.tsc_khz.get_or_init(|| vcpu.get_tsc_khz().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_gives_actionable_error() {
        let err = Kvm::new_with_path(c"/nonexistent/kvm").unwrap_err();
        assert_eq!(io::Error::from_raw_os_error(err.errno()).kind(), io::ErrorKind::NotFound);
        let msg = KvmError::Missing("/nonexistent/kvm".into()).to_string();
        assert!(msg.contains("does not exist") && msg.contains("/nonexistent/kvm"), "{msg}");
    }
}
