//! Which process is on the other end of a loopback TCP connection.
//!
//! The kernel knows: the client's socket has the connection's addresses in
//! `/proc/net/tcp` (or `tcp6`) with an inode, and exactly one process holds
//! an fd `socket:[inode]`. Its `/proc/PID/exe` names the application. This
//! works for clients in the same network namespace and visible `/proc`
//! (as root, every process).

use std::net::SocketAddr;
use std::path::PathBuf;

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
/// `local` (the client's side of our accepted connection).
fn socket_inode(peer: &SocketAddr, local: &SocketAddr) -> Option<u64> {
    let (want_local, want_remote) = (proc_addr(peer), proc_addr(local));
    let file = if peer.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote).then(|| f[9].parse().ok()).flatten()
    })
}

/// The process holding socket `inode`.
fn holder(inode: u64) -> Option<u32> {
    let needle = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.filter_map(|e| e.ok()) {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some(needle.as_str())) {
                return Some(pid);
            }
        }
    }
    None
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
    }

    #[test]
    fn a_client_that_left_is_a_clear_error() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(identify(peer, local), Err(PeerError::NoSocket { peer, local }));
    }
}
