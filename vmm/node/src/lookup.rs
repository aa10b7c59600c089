//! Name lookups done at an exit, for apps that must never resolve on their
//! own host (Tor's SOCKS RESOLVE and RESOLVE_PTR, and `pathvm run`'s DNS).
//!
//! A lookup travels as a stream like any other: its open info is not
//! `host:port` but `?resolve NAME` or `?resolve-ptr ADDR` (`?` is in no
//! host name, so the two cannot be confused), the exit's host resolves it
//! with its own resolver and answers with the stream's bytes, one result
//! per line, then ends the stream. Only an exit answers lookups.

use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A host name's addresses.
    Name(String),
    /// An address's name (PTR).
    Addr(IpAddr),
}

const NAME: &str = "?resolve ";
const PTR: &str = "?resolve-ptr ";

/// Most results an answer carries, and most bytes of one.
pub const MAX_RESULTS: usize = 16;
/// Longest answer, in bytes.
pub const MAX_ANSWER: usize = 4096;

impl Query {
    /// The stream open info that asks an exit for it.
    pub fn open_info(&self) -> String {
        match self {
            Self::Name(n) => format!("{NAME}{n}"),
            Self::Addr(a) => format!("{PTR}{a}"),
        }
    }

    /// The query an open info asks for, if it is one.
    pub fn from_open_info(info: &str) -> Option<Result<Self, String>> {
        if let Some(a) = info.strip_prefix(PTR) {
            return Some(a.parse().map(Self::Addr).map_err(|_| format!("{a:?} is not an IP address")));
        }
        let n = info.strip_prefix(NAME)?;
        let ok = !n.is_empty() && n.len() <= 253 && n.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        Some(if ok { Ok(Self::Name(n.to_string())) } else { Err(format!("{n:?} is not a host name")) })
    }

    /// Answers it with this host's resolver: the answer's bytes.
    pub fn resolve(&self) -> Result<Vec<u8>, String> {
        let lines: Vec<String> = match self {
            Self::Name(n) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for a in (n.as_str(), 0).to_socket_addrs().map_err(|e| format!("{n}: {e}"))? {
                    if !ips.contains(&a.ip()) {
                        ips.push(a.ip());
                    }
                }
                ips.iter().take(MAX_RESULTS).map(IpAddr::to_string).collect()
            }
            Self::Addr(a) => vec![name_of(*a)?],
        };
        if lines.is_empty() {
            return Err("no result".into());
        }
        Ok(lines.join("\n").into_bytes())
    }
}

/// An answer's results (addresses, or one name), as an exit wrote them.
pub fn parse_answer(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the answer is not text".to_string())?;
    let lines: Vec<String> = text.lines().filter(|l| !l.is_empty()).take(MAX_RESULTS).map(str::to_string).collect();
    if lines.is_empty() {
        return Err("the exit gave no answer".into());
    }
    Ok(lines)
}

/// The name of `addr` by this host's resolver (getnameinfo, names only).
fn name_of(addr: IpAddr) -> Result<String, String> {
    let sa = c_sockaddr(SocketAddr::new(addr, 0));
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `sa` is a sockaddr_storage holding a sockaddr of `sa.1`
    // bytes; `host` is writable for its length; no service is asked for.
    let rc = unsafe {
        libc::getnameinfo(
            &sa.0 as *const libc::sockaddr_storage as *const libc::sockaddr,
            sa.1,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return Err(format!("{addr}: no name"));
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into `host`.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// `addr` as a C sockaddr and its length.
fn c_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_through_open_info_and_nothing_else_is_one() {
        for q in [Query::Name("svc.test".into()), Query::Addr("fd00::2".parse().unwrap())] {
            assert_eq!(Query::from_open_info(&q.open_info()), Some(Ok(q)));
        }
        assert_eq!(Query::from_open_info("svc.test:80"), None, "a connect is no lookup");
        assert!(matches!(Query::from_open_info("?resolve a b"), Some(Err(_))));
        assert!(matches!(Query::from_open_info("?resolve-ptr nope"), Some(Err(_))));
    }

    #[test]
    fn this_hosts_resolver_answers_both_ways() {
        let a = Query::Name("localhost".into()).resolve().unwrap();
        let lines = parse_answer(&a).unwrap();
        assert!(lines.iter().any(|l| l == "127.0.0.1" || l == "::1"), "{lines:?}");
        let name = Query::Addr("127.0.0.1".parse().unwrap()).resolve().unwrap();
        assert!(!parse_answer(&name).unwrap()[0].is_empty());
        assert!(Query::Name("no-such-host.invalid".into()).resolve().is_err());
        assert!(parse_answer(b"").is_err() && parse_answer(&[0xff]).is_err());
    }
}
