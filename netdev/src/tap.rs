//! A tap device that carries `virtio_net_hdr_v1` in front of each frame.
//!
//! With `IFF_VNET_HDR` and a header size of 12 the tap speaks exactly the
//! frame format of a virtio-net device that negotiated `VERSION_1` and no
//! offloads, so frames move between a virtqueue and the tap unchanged.
//! Offloads are switched off (`TUNSETOFFLOAD 0`) so the kernel never hands
//! the guest a GSO frame it did not ask for.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

/// Size of `virtio_net_hdr_v1`, the header the tap reads and writes.
pub const VNET_HDR_LEN: usize = 12;
/// Longest tap interface name (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

const TUN_PATH: &str = "/dev/net/tun";
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// The tun driver's ioctls (`linux/if_tun.h`), numbered by vmm-sys-util's
/// macros from their type, number and argument size. Private: callers use
/// [`Tap`].
mod ioctls {
    use std::os::raw::{c_int, c_uint};

    /// The tun driver's ioctl type, `'T'`.
    const TUNTAP: c_uint = b'T' as c_uint;

    vmm_sys_util::ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, c_int);
    vmm_sys_util::ioctl_iow_nr!(TUNSETPERSIST, TUNTAP, 203, c_int);
    vmm_sys_util::ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, c_uint);
    vmm_sys_util::ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, c_int);
}

/// Why a tap could not be opened.
#[derive(Debug, Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("tap name {0:?} is invalid: use 1 to {MAX_NAME_LEN} characters without '/' or whitespace")]
    InvalidName(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open {TUN_PATH}: {0} (is TUN/TAP available, and are you root?)")]
    OpenTun(#[source] io::Error),
    /// Another process holds the tap.
    #[error("tap {0} is in use by another process; pick another name")]
    Busy(String),
    /// An interface of that name exists and is not a tap.
    #[error("interface {0} exists and is not a tap device; pick another name")]
    NotATap(String),
    /// Creating taps needs CAP_NET_ADMIN.
    #[error("not permitted to create tap {0}: needs CAP_NET_ADMIN (run as root)")]
    NotPermitted(String),
    /// A second fd on the tap could not be made.
    #[error("tap {name}: cannot open a second fd on it: {source} (out of file descriptors? raise the limit)")]
    Dup {
        /// The tap.
        name: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Another ioctl failed.
    #[error("tap {name}: {op} failed: {source}")]
    Ioctl {
        /// The tap.
        name: String,
        /// Which ioctl.
        op: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap device, non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating if needed) the tap `name` with a virtio-net header.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let tap = Self { file: attach(name)?, name: name.to_string() };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the reference, which
        // outlives the call; the fd is our open tap.
        tap.check(unsafe { ioctl_with_ref(&tap.file, ioctls::TUNSETVNETHDRSZ(), &hdr_len) }, "TUNSETVNETHDRSZ")?;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        tap.check(unsafe { ioctl_with_val(&tap.file, ioctls::TUNSETOFFLOAD(), 0) }, "TUNSETOFFLOAD")?;
        Ok(tap)
    }

    /// Creates tap `name` with a virtio-net header and leaves it in place
    /// when this process lets go of it (what `ip tuntap add NAME mode tap
    /// vnet_hdr` does): a node's tc redirects need the tap to exist before
    /// its VM or vhost-user backend opens it. Delete it as a link
    /// ([`crate::netlink::Netlink::del_link`]).
    pub fn create_persistent(name: &str) -> Result<(), TapError> {
        let file = attach(name)?;
        // SAFETY: TUNSETPERSIST takes its flag by value; the fd is our
        // attached tap.
        if unsafe { ioctl_with_val(&file, ioctls::TUNSETPERSIST(), 1) } < 0 {
            let source = io::Error::last_os_error();
            return Err(TapError::Ioctl { name: name.to_string(), op: "TUNSETPERSIST", source });
        }
        Ok(())
    }

    fn check(&self, rc: libc::c_int, op: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl { name: self.name.clone(), op, source: io::Error::last_os_error() });
        }
        Ok(())
    }

    /// Another fd on the same open tap (the same queue): the device lives
    /// while either is open, so an owner can lend one to a VM and keep the
    /// device when the VM closes its fd.
    pub fn try_clone(&self) -> Result<Self, TapError> {
        let file = self.file.try_clone().map_err(|source| TapError::Dup { name: self.name.clone(), source })?;
        Ok(Self { file, name: self.name.clone() })
    }

    /// Reads and drops every frame queued on the tap (at most `max`), so
    /// its next reader starts empty; how many it dropped.
    pub fn drain(&self, max: usize) -> usize {
        let mut buf = vec![0u8; 65_536 + VNET_HDR_LEN];
        let mut n = 0;
        while n < max && self.read(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included); `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe { libc::read(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (header included).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes buf.len() bytes from buf.
        let n = unsafe { libc::write(self.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Opens /dev/net/tun and attaches it to tap `name` (created if missing)
/// with a virtio-net header and no packet information.
fn attach(name: &str) -> Result<File, TapError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['/', ' ', '\t', '\n']) {
        return Err(TapError::InvalidName(name.to_string()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)?;
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq; `req` is a valid,
    // correctly sized ifreq that outlives the call.
    if unsafe { ioctl_with_mut_ref(&file, ioctls::TUNSETIFF(), &mut req) } < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EBUSY) => TapError::Busy(name.to_string()),
            Some(libc::EINVAL) => TapError::NotATap(name.to_string()),
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted(name.to_string()),
            _ => TapError::Ioctl { name: name.to_string(), op: "TUNSETIFF", source: err },
        });
    }
    Ok(file)
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_are_refused_before_any_syscall() {
        for name in ["", "a/b", "with space", "sixteen-chars-xx"] {
            assert!(matches!(Tap::open(name), Err(TapError::InvalidName(_))), "{name:?}");
        }
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // _IOW('T', n, int) from linux/if_tun.h, as the kernel headers spell them.
        assert_eq!(ioctls::TUNSETIFF(), 0x4004_54ca);
        assert_eq!(ioctls::TUNSETPERSIST(), 0x4004_54cb);
        assert_eq!(ioctls::TUNSETOFFLOAD(), 0x4004_54d0);
        assert_eq!(ioctls::TUNSETVNETHDRSZ(), 0x4004_54d8);
    }

    #[test]
    fn a_persistent_tap_refuses_invalid_names_too() {
        assert!(matches!(Tap::create_persistent("a/b"), Err(TapError::InvalidName(_))));
    }

    #[test]
    fn ifreq_has_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
