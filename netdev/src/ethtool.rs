//! Interface offloads, switched off through the ethtool ioctl (no `ethtool`
//! binary needed).
//!
//! A veth end whose frames are carried by a program (the link emulator
//! reads them with AF_PACKET and writes them out of another interface)
//! must hand over frames as a wire would: at most MTU-sized, with their
//! checksums filled in. With the defaults the kernel leaves TCP and UDP
//! checksums to the "hardware" and builds 64 KiB segments, which arrive at
//! the far end broken.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// Legacy ethtool commands that set one feature each.
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with `ifr_data`.
#[repr(C)]
struct IfReqData {
    name: [u8; 16],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Switches off TSO, GSO and transmit checksum offload on `iface` in the
/// calling thread's network namespace (what `ethtool -K IFACE tso off gso
/// off tx off` does), so frames leave it complete and MTU-sized.
pub fn wire_like(iface: &str) -> io::Result<()> {
    if iface.is_empty() || iface.len() > 15 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{iface:?} is not an interface name")));
    }
    // SAFETY: a plain datagram socket for interface ioctls; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for cmd in [ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_STXCSUM] {
        let mut value = EthtoolValue { cmd, data: 0 };
        let mut req = IfReqData { name: [0; 16], data: &mut value, _pad: [0; 16] };
        req.name[..iface.len()].copy_from_slice(iface.as_bytes());
        // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it
        // points to; both live on this stack frame across the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("ethtool command {cmd:#x} on {iface}: {e}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_ioctl() {
        assert_eq!(wire_like("").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(wire_like("a-name-far-too-long").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
