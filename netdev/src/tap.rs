//! A tap device that carries `virtio_net_hdr_v1` in front of each frame.
//!
//! With `IFF_VNET_HDR` and a header size of 12 the tap speaks exactly the
//! frame format of a virtio-net device that negotiated `VERSION_1` and no
//! offloads, so frames move between a virtqueue and the tap unchanged.
//! Offloads are switched off (`TUNSETOFFLOAD 0`) so the kernel never hands
//! the guest a GSO frame it did not ask for.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

/// Size of `virtio_net_hdr_v1`, the header the tap reads and writes.
pub const VNET_HDR_LEN: usize = 12;
/// Longest tap interface name (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

const TUN_PATH: &str = "/dev/net/tun";
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// _IOW('T', n, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

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
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_string()),
                Some(libc::EINVAL) => TapError::NotATap(name.to_string()),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted(name.to_string()),
                _ => TapError::Ioctl { name: name.to_string(), op: "TUNSETIFF", source: err },
            });
        }
        let tap = Self { file, name: name.to_string() };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        tap.check(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) }, "TUNSETVNETHDRSZ")?;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        tap.check(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, 0 as libc::c_ulong) }, "TUNSETOFFLOAD")?;
        Ok(tap)
    }

    fn check(&self, rc: libc::c_int, op: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl { name: self.name.clone(), op, source: io::Error::last_os_error() });
        }
        Ok(())
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

/// Brings interface `name` up (SIOCSIFFLAGS, no `ip` process: request VMs
/// are on the connect path).
pub fn set_link_up(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: a plain datagram socket for interface ioctls; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; 16], flags: 0, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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
    fn ifreq_has_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
