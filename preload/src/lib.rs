//! `pathvm run`'s shim: loaded with LD_PRELOAD into an unmodified app, it
//! wraps `connect()`. A TCP connect to anything but loopback becomes a
//! connect to pathvm's SOCKS5 edge (`PATHVM_SOCKS`, default
//! 127.0.0.1:1080) plus a SOCKS5 CONNECT for the original destination,
//! with the criteria of `PATHVM_CRITERIA` as credentials. When `connect`
//! returns 0, the app's socket is already its connection to the service,
//! through a VM of its own; the app never knows.
//!
//! A non-blocking socket is made blocking for the handshake and restored
//! (an immediate success is a valid outcome of a non-blocking connect).
//! Apps that make system calls directly, or are statically linked, are
//! not covered: that is what the SOCKS front door is for.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use guest_agent::socks;

type ConnectFn = unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int;

fn real_connect() -> Option<ConnectFn> {
    static REAL: OnceLock<Option<ConnectFn>> = OnceLock::new();
    *REAL.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; the
        // result is libc's connect, whose signature ConnectFn matches.
        unsafe {
            let p = libc::dlsym(libc::RTLD_NEXT, c"connect".as_ptr());
            (!p.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, ConnectFn>(p))
        }
    })
}

/// The destination of a sockaddr, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` must point to `len` readable bytes.
unsafe fn destination(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: caller's contract; the family field is first in every sockaddr.
    let family = unsafe { (*addr).sa_family } as i32;
    if family == libc::AF_INET && len as usize >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: family and length say it is a sockaddr_in.
        let a = unsafe { &*(addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        return Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)));
    }
    if family == libc::AF_INET6 && len as usize >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: family and length say it is a sockaddr_in6.
        let a = unsafe { &*(addr as *const libc::sockaddr_in6) };
        return Some(SocketAddr::new(Ipv6Addr::from(a.sin6_addr.s6_addr).into(), u16::from_be(a.sin6_port)));
    }
    None
}

fn socket_type(fd: libc::c_int) -> libc::c_int {
    let mut t: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one int into `t`.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut t as *mut libc::c_int).cast(), &mut len) };
    if rc == 0 {
        t
    } else {
        -1
    }
}

fn write_all(fd: libc::c_int, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return false;
        }
        b = &b[n as usize..];
    }
    true
}

fn read_exact(fd: libc::c_int, b: &mut [u8]) -> bool {
    let mut got = 0;
    while got < b.len() {
        // SAFETY: reads into a live slice.
        let n = unsafe { libc::read(fd, b[got..].as_mut_ptr().cast(), b.len() - got) };
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

fn send(fd: libc::c_int, encode: impl FnOnce(&mut [u8]) -> Result<usize, socks::Error>) -> bool {
    let mut buf = [0u8; socks::MAX_AUTH_LEN];
    encode(&mut buf).is_ok_and(|n| write_all(fd, &buf[..n]))
}

/// Reads one message with `decode` into `buf`: its length, or None if the
/// connection broke or the bytes are not that message.
fn receive(
    fd: libc::c_int,
    buf: &mut [u8],
    decode: impl Fn(&[u8]) -> Result<socks::Decoded<()>, socks::Error>,
) -> Option<usize> {
    let read = |b: &mut [u8]| if read_exact(fd, b) { Ok(()) } else { Err(()) };
    socks::read_message(buf, read, decode).ok()?.ok()
}

/// SOCKS5 CONNECT to `dst` over `fd`, already connected to the edge.
/// Returns the reply code (0 = success), or None if the edge misbehaved.
fn socks_connect(fd: libc::c_int, dst: SocketAddr, criteria: &str) -> Option<u8> {
    let mut buf = [0u8; socks::MAX_REQUEST_LEN];
    if !send(fd, |b| socks::Greeting { methods: &[socks::Method::UserPass.code()] }.encode(b)) {
        return None;
    }
    let n = receive(fd, &mut buf, |b| Ok(socks::MethodChoice::decode(b)?.erase()))?;
    if socks::MethodChoice::decode(&buf[..n])
        != Ok(socks::Decoded::Ready(socks::MethodChoice(socks::Method::UserPass), n))
    {
        return None;
    }
    let criteria = &criteria.as_bytes()[..criteria.len().min(255)];
    if !send(fd, |b| socks::UserPass { username: b"pathvm", password: criteria }.encode(b)) {
        return None;
    }
    let n = receive(fd, &mut buf, |b| Ok(socks::AuthStatus::decode(b)?.erase()))?;
    if socks::AuthStatus::decode(&buf[..n]) != Ok(socks::Decoded::Ready(socks::AuthStatus::OK, n)) {
        return None;
    }
    if !send(fd, |b| socks::Request::connect(socks::Addr::Ip(dst)).encode(b)) {
        return None;
    }
    let n = receive(fd, &mut buf, |b| Ok(socks::ReplyMsg::decode(b)?.erase()))?;
    match socks::ReplyMsg::decode(&buf[..n]) {
        Ok(socks::Decoded::Ready(r, _)) => Some(r.reply.code()),
        _ => None,
    }
}

fn edge_addr() -> SocketAddrV4 {
    std::env::var("PATHVM_SOCKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1080))
}

/// The app's `connect`.
///
/// # Safety
/// Same contract as libc's `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: libc::c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> libc::c_int {
    let Some(real) = real_connect() else {
        // SAFETY: errno is thread-local and writable.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    // SAFETY: caller's contract for addr/len.
    let dst = unsafe { destination(addr, len) };
    let Some(dst) = dst.filter(|d| !d.ip().is_loopback() && socket_type(fd) == libc::SOCK_STREAM) else {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real(fd, addr, len) };
    };
    // Blocking for the handshake, whatever the app chose.
    // SAFETY: F_GETFL/F_SETFL on the app's fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    let edge = edge_addr();
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: edge.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*edge.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let ok = if dst.is_ipv6() {
        None // an AF_INET6 socket cannot reach the IPv4 edge; refuse below
    } else {
        // SAFETY: a valid sockaddr_in of the right length.
        let rc = unsafe {
            real(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let criteria = std::env::var("PATHVM_CRITERIA").unwrap_or_default();
        (rc == 0).then(|| socks_connect(fd, dst, &criteria)).flatten()
    };
    // SAFETY: restores the app's flags.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    let errno = match ok {
        Some(0) => return 0,
        Some(2) => libc::EACCES,
        Some(4) => libc::EHOSTUNREACH,
        Some(3) => libc::ENETUNREACH,
        Some(_) => libc::ECONNREFUSED,
        None => libc::ECONNREFUSED,
    };
    // SAFETY: errno is thread-local and writable.
    unsafe { *libc::__errno_location() = errno };
    -1
}
