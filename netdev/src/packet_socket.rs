//! AF_PACKET sockets: raw frames on one interface, for benchmarks' traffic
//! and the link emulator of test topologies.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An AF_PACKET socket bound to one interface.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens a raw socket on `iface` (receiving every protocol).
    pub fn open(iface: &str) -> io::Result<Self> {
        let name = CString::new(iface).map_err(|_| io::Error::other("bad interface name"))?;
        // SAFETY: if_nametoindex reads a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2); the fd is checked and then owned.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let s = Self { fd, ifindex };
        let addr = s.addr(proto as u16);
        // SAFETY: bind with a valid sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    /// Raises the receive queue to `bytes` (past `rmem_max`, as root), so a
    /// capture that falls behind for a moment loses no frames.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let v = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: setsockopt reads one int from a live local.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Attaches classic BPF `program`: the kernel then queues only the
    /// frames it passes (a listener for rare frames on a busy link costs
    /// the data path nothing but the filter's run).
    pub fn attach_filter(&self, program: &[libc::sock_filter]) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| io::Error::other("filter too long"))?,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: the kernel copies `len` instructions from a live slice
        // during the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Frames queued before the filter was attached passed no filter.
        let mut buf = [0u8; 64];
        while let Ok(Some(_)) = self.recv_any(&mut buf, 0) {}
        Ok(())
    }

    fn addr(&self, proto: u16) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = proto;
        a.sll_ifindex = self.ifindex;
        a.sll_halen = 6;
        a
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sends frame.len() bytes from a live buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame that arrived on the interface (frames the host
    /// itself sends out are skipped), waiting up to `timeout_ms` (-1:
    /// forever); `Ok(None)` on timeout.
    pub fn recv_incoming(&self, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<usize>> {
        Ok(self.recv_any(buf, timeout_ms)?.and_then(|(n, outgoing)| (!outgoing).then_some(n)))
    }

    /// Receives one frame crossing the interface either way (a capture):
    /// its length and whether the host sent it; `Ok(None)` on timeout.
    pub fn recv_any(&self, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<(usize, bool)>> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: receives into live buffers of the given sizes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        Ok(Some((n as usize, from.sll_pkttype == libc::PACKET_OUTGOING)))
    }

    /// Waits up to `timeout` for a frame whose bytes at `at` equal `tag`;
    /// returns when it arrived.
    pub fn wait_for(&self, at: usize, tag: &[u8], timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
                continue;
            }
            // SAFETY: receives into a live buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n > 0 && buf.get(at..at + tag.len()) == Some(tag) {
                return Some(Instant::now());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(RawSocket::open("nope-no-such0").is_err());
    }
}
