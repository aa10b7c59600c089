//! Which process is on the other end of a loopback TCP connection.
//!
//! The kernel knows: the client's socket has the connection's addresses in
//! `/proc/net/tcp` (or `tcp6`) with an inode, and exactly one process holds
//! an fd `socket:[inode]`. Its `/proc/PID/exe` names the application. This
//! works for clients in the same network namespace and visible `/proc`
//! (as root, every process).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use thiserror::Error;

/// Why the peer could not be identified.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeerError {
    /// No socket with those addresses (the client already left, or it is
    /// in another network namespace).
    #[error("no local socket {peer} -> {local} (client gone, or in another namespace)")]
    NoSocket {
        /// The client's address.
        peer: SocketAddr,
        /// Our address.
        local: SocketAddr,
    },
    /// No process holds the socket (or we may not look).
    #[error("no visible process holds socket inode {0}")]
    NoProcess(u64),
}

/// The application behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerApp {
    /// Its process id.
    pub pid: u32,
    /// Its executable.
    pub exe: PathBuf,
}

/// `/proc/net/tcp` address form: hex IP in host byte order per 32-bit word,
/// then hex port.
fn proc_addr(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(v6) => {
            let o = v6.ip().octets();
            let words: String =
                o.chunks(4).map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))).collect();
            format!("{words}:{:04X}", v6.port())
        }
    }
}

/// The inode of the socket whose local address is `peer` and remote is
/// `local` (the client's side of our accepted connection): asked of the
/// kernel's socket diagnostics by the exact 4-tuple (a hash lookup), else
/// found in `/proc/net/tcp`, which walks every TCP socket of the host
/// (≈ 6 ms here, most of a request's set-up).
fn socket_inode(peer: &SocketAddr, local: &SocketAddr) -> Option<u64> {
    sock_diag_inode(peer, local).or_else(|| proc_net_inode(peer, local))
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the
/// 48-byte `inet_diag_sockid`.
const REQ_LEN: usize = 8 + 48;
/// Offset of `idiag_inode` in `struct inet_diag_msg`.
const INODE_AT: usize = 4 + 48 + 16;

/// One exact `SOCK_DIAG_BY_FAMILY` request for the TCP socket bound to
/// `src` and connected to `dst`; its inode, if the kernel has it.
fn sock_diag_inode(src: &SocketAddr, dst: &SocketAddr) -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut msg = [0u8; NLMSG_HDR + REQ_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    let req = &mut msg[NLMSG_HDR..];
    req[0] = if src.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let id = &mut req[8..];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let octets = |a: &SocketAddr| -> [u8; 16] {
        let mut o = [0u8; 16];
        match a {
            SocketAddr::V4(v) => o[..4].copy_from_slice(&v.ip().octets()),
            SocketAddr::V6(v) => o.copy_from_slice(&v.ip().octets()),
        }
        o
    };
    id[4..20].copy_from_slice(&octets(src));
    id[20..36].copy_from_slice(&octets(dst));
    // Any interface; no cookie (INET_DIAG_NOCOOKIE).
    id[40..48].copy_from_slice(&[0xff; 8]);
    // SAFETY: plain socket(2); the fd is checked and then owned.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sends `msg.len()` bytes from a live buffer to the kernel
    // (a zeroed destination address of the right size means pid 0).
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent != msg.len() as isize {
        return None;
    }
    let mut buf = [0u8; 512];
    // SAFETY: receives into a live buffer of its size; the kernel answers
    // an exact request at once (a message or an error).
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let reply = buf.get(..usize::try_from(n).ok()?)?;
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let body = reply.get(NLMSG_HDR..)?;
    let inode = u32::from_ne_bytes(body.get(INODE_AT..INODE_AT + 4)?.try_into().ok()?);
    (inode != 0).then_some(inode as u64)
}

/// The same from `/proc/net/tcp` (or `tcp6`).
fn proc_net_inode(peer: &SocketAddr, local: &SocketAddr) -> Option<u64> {
    let (want_local, want_remote) = (proc_addr(peer), proc_addr(local));
    let file = if peer.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote).then(|| f[9].parse().ok()).flatten()
    })
}

/// Processes that held a client socket lately, most recent first: a
/// client that connects once tends to connect again (a browser, a script's
/// loop, the benchmark's client), and checking its fds first skips a scan
/// of every process's (≈ 1 ms with the daemons' many fds ahead of it).
static RECENT: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
/// How many recent holders are checked first.
const RECENT_MAX: usize = 8;

/// Whether process `pid` holds the socket named `needle`.
fn holds(pid: u32, needle: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|e| e.ok()).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some(needle)))
}

/// The process holding socket `inode`: recent holders first, then the
/// newest processes (the client has usually just started: a curl, a
/// browser's helper).
fn holder(inode: u64) -> Option<u32> {
    let needle = format!("socket:[{inode}]");
    let recent: Vec<u32> = RECENT.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
    let found = recent.iter().copied().find(|&pid| holds(pid, &needle)).or_else(|| {
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| !recent.contains(p))
            .collect();
        pids.sort_unstable_by(|a, b| b.cmp(a));
        pids.into_iter().find(|&pid| holds(pid, &needle))
    })?;
    let mut r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|&p| p != found);
    r.push_front(found);
    r.truncate(RECENT_MAX);
    Some(found)
}

/// Identifies the process at `peer` of a connection we accepted at `local`.
pub fn identify(peer: SocketAddr, local: SocketAddr) -> Result<PeerApp, PeerError> {
    let inode = socket_inode(&peer, &local).ok_or(PeerError::NoSocket { peer, local })?;
    let pid = holder(inode).ok_or(PeerError::NoProcess(inode))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|_| PeerError::NoProcess(inode))?;
    Ok(PeerApp { pid, exe })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn proc_address_format_matches_the_kernels() {
        // 127.0.0.1:8080 is shown as 0100007F:1F90 on little-endian hosts.
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(proc_addr(&a), "0100007F:1F90");
        }
    }

    #[test]
    fn identifies_this_process_as_the_client() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, peer) = l.accept().unwrap();
        let app = identify(peer, conn.local_addr().unwrap()).unwrap();
        assert_eq!(app.pid, std::process::id());
        assert_eq!(app.exe, std::env::current_exe().unwrap());
        // Again, now from the recent holders.
        let _again = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, peer) = l.accept().unwrap();
        assert_eq!(identify(peer, conn.local_addr().unwrap()).unwrap().pid, std::process::id());
    }

    #[test]
    fn socket_diagnostics_and_proc_net_agree() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, peer) = l.accept().unwrap();
        let local = conn.local_addr().unwrap();
        let fast = sock_diag_inode(&peer, &local);
        assert!(fast.is_some(), "sock_diag found nothing");
        assert_eq!(fast, proc_net_inode(&peer, &local));
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(sock_diag_inode(&gone, &local), None);
    }

    #[test]
    fn a_client_that_left_is_a_clear_error() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(identify(peer, local), Err(PeerError::NoSocket { peer, local }));
    }
}
