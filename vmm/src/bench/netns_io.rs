//! Traffic for benchmarks, sent and received from inside test namespaces.
//!
//! Each helper runs on a thread that has joined the namespace (`setns`
//! affects only the calling thread), so one process can play sender on A
//! and receiver on C with one clock.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let nsfd = std::fs::File::open(&path)?;
        // SAFETY: setns on this thread with a namespace fd we own.
        if unsafe { libc::setns(nsfd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Pins the calling thread to `cpu` (best effort).
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds for
    // small cpu numbers; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

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

/// Packets received so far on `iface` in namespace `ns` (the interface's
/// own counter; read through `ip`, because sysfs shows the namespace it was
/// mounted in, not the calling thread's).
pub fn rx_packets(ns: &str, iface: &str) -> u64 {
    let out = std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", iface]).output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v[0]["stats64"]["rx"]["packets"].as_u64())
        .unwrap_or(0)
}
