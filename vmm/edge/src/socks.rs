//! SOCKS5, server side: the handshake up to the request, and the reply.
//! RFC 1928 with RFC 1929 username/password authentication, CONNECT and
//! Tor's RESOLVE / RESOLVE_PTR extensions (BIND and UDP ASSOCIATE get
//! reply 7: pathvm carries no datagrams for SOCKS clients); the byte
//! layouts are [`guest_agent::socks`]'s, shared with the clients.
//!
//! Everything the client sends is checked; a malformed or unsupported
//! request gets the reply code RFC 1928 defines for it (when the protocol
//! has got far enough to send one) and an error the caller logs.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

pub use guest_agent::socks::Reply;
use guest_agent::socks::{self as wire, Addr, AuthStatus, Greeting, Method, MethodChoice, ReplyMsg, UserPass};
use thiserror::Error;

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name (resolved by pathvm, at the destination) and port.
    Domain(String, u16),
}

impl Target {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Domain(_, p) => *p,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A stream to the target.
    Connect,
    /// The target name's address (Tor's RESOLVE).
    Resolve,
    /// The target address's name (Tor's RESOLVE_PTR).
    ResolvePtr,
}

/// A client's request, after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What for.
    pub command: Command,
    /// The destination (or what to look up).
    pub target: Target,
    /// The RFC 1929 username, if the client authenticated (it may carry
    /// criteria: `pathvm:latency=require,...`).
    pub username: Option<String>,
    /// The RFC 1929 password (carries the criteria when the username is
    /// just `pathvm`, as `curl --proxy-user pathvm:latency=require` sends).
    pub password: Option<String>,
}

impl Request {
    /// The criteria string the client sent, if any: the username, or the
    /// password when the username is `pathvm`.
    pub fn criteria(&self) -> Option<&str> {
        match self.username.as_deref() {
            Some("pathvm") => self.password.as_deref(),
            Some(u) if !u.is_empty() => Some(u),
            _ => None,
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Error)]
pub enum SocksError {
    /// The connection broke or timed out.
    #[error("SOCKS client connection: {0}")]
    Io(#[from] io::Error),
    /// Not SOCKS5.
    #[error("not a SOCKS5 client (version byte {0:#04x})")]
    Version(u8),
    /// No method we support.
    #[error("client offers no usable authentication method (need 0x00 or 0x02)")]
    NoMethod,
    /// Bad RFC 1929 sub-negotiation.
    #[error("malformed username/password authentication")]
    BadAuth,
    /// Only CONNECT, RESOLVE and RESOLVE_PTR are supported.
    #[error("SOCKS command {0:#04x} is not supported (only CONNECT, and Tor's RESOLVE and RESOLVE_PTR)")]
    Command(u8),
    /// RESOLVE_PTR of a name.
    #[error("SOCKS RESOLVE_PTR needs an IP address, not a name")]
    PtrOfName,
    /// Unknown address type.
    #[error("SOCKS address type {0} is not supported")]
    AddressType(u8),
    /// A host name that is empty or not UTF-8.
    #[error("malformed destination host name")]
    BadHost,
}

impl From<wire::Error> for SocksError {
    fn from(e: wire::Error) -> Self {
        match e {
            wire::Error::Version(v) => Self::Version(v),
            wire::Error::NoMethods => Self::NoMethod,
            wire::Error::AddressType(t) => Self::AddressType(t),
            wire::Error::BadHost => Self::BadHost,
            // Only encoders say these; every read buffer here holds the
            // longest message.
            wire::Error::TooLong | wire::Error::BufferTooSmall { .. } => Self::BadAuth,
        }
    }
}

impl SocksError {
    /// The reply code for this failure, if the client should get one.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Self::Command(_) => Some(Reply::CommandNotSupported),
            Self::AddressType(_) | Self::PtrOfName => Some(Reply::AddressTypeNotSupported),
            Self::BadHost => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

/// Reads one message with `decode` into `buf`, exactly its bytes.
fn read<S: Read>(
    s: &mut S,
    buf: &mut [u8],
    decode: impl Fn(&[u8]) -> Result<wire::Decoded<()>, wire::Error>,
) -> Result<usize, SocksError> {
    Ok(wire::read_message(buf, |b| s.read_exact(b), decode)??)
}

/// The message [`read`] found whole (decoding the same bytes again).
fn whole<T>(d: wire::Decoded<T>) -> Result<T, SocksError> {
    match d {
        wire::Decoded::Ready(v, _) => Ok(v),
        wire::Decoded::NeedMore(_) => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
    }
}

fn send<S: Write>(s: &mut S, encode: impl FnOnce(&mut [u8]) -> Result<usize, wire::Error>) -> io::Result<()> {
    let mut buf = [0u8; wire::MAX_REQUEST_LEN];
    let n = encode(&mut buf).map_err(io::Error::other)?;
    s.write_all(&buf[..n])
}

/// Runs the server side of the handshake up to the CONNECT request. On an
/// error that has a reply code, the reply has already been sent.
pub fn accept<S: Read + Write>(s: &mut S) -> Result<Request, SocksError> {
    let mut buf = [0u8; wire::MAX_AUTH_LEN];
    let n = match read(s, &mut buf, |b| Ok(Greeting::decode(b)?.erase())) {
        Err(SocksError::NoMethod) => {
            send(s, |b| MethodChoice(Method::Unacceptable).encode(b))?;
            return Err(SocksError::NoMethod);
        }
        r => r?,
    };
    let greeting = whole(Greeting::decode(&buf[..n])?)?;
    // Prefer username/password: the username is how apps send criteria.
    let method = if greeting.offers(Method::UserPass) {
        Method::UserPass
    } else if greeting.offers(Method::None) {
        Method::None
    } else {
        send(s, |b| MethodChoice(Method::Unacceptable).encode(b))?;
        return Err(SocksError::NoMethod);
    };
    send(s, |b| MethodChoice(method).encode(b))?;
    let (username, password) = if method == Method::UserPass {
        let n = match read(s, &mut buf, |b| Ok(UserPass::decode(b)?.erase())) {
            Err(SocksError::Version(_)) => {
                send(s, |b| AuthStatus::FAILED.encode(b))?;
                return Err(SocksError::BadAuth);
            }
            r => r?,
        };
        let up = whole(UserPass::decode(&buf[..n])?)?;
        let (Ok(user), Ok(password)) = (std::str::from_utf8(up.username), std::str::from_utf8(up.password)) else {
            send(s, |b| AuthStatus::FAILED.encode(b))?;
            return Err(SocksError::BadAuth);
        };
        let creds = (Some(user.to_string()), Some(password.to_string()));
        send(s, |b| AuthStatus::OK.encode(b))?;
        creds
    } else {
        (None, None)
    };
    let mut buf = [0u8; wire::MAX_REQUEST_LEN];
    let result = read(s, &mut buf, |b| Ok(wire::Request::decode(b)?.erase())).and_then(|n| {
        let r = whole(wire::Request::decode(&buf[..n])?)?;
        let command = match r.command {
            wire::CMD_CONNECT => Command::Connect,
            wire::CMD_RESOLVE => Command::Resolve,
            wire::CMD_RESOLVE_PTR => Command::ResolvePtr,
            c => return Err(SocksError::Command(c)),
        };
        let target = match r.target {
            Addr::Ip(a) => Target::Addr(a),
            Addr::Domain(..) if command == Command::ResolvePtr => return Err(SocksError::PtrOfName),
            Addr::Domain(h, p) => Target::Domain(h.to_string(), p),
        };
        Ok((command, target))
    });
    match result {
        Ok((command, target)) => Ok(Request { command, target, username, password }),
        Err(e) => {
            if let Some(code) = e.reply() {
                reply(s, code)?;
            }
            Err(e)
        }
    }
}

/// Sends the reply to a CONNECT request (bound address 0.0.0.0:0: the
/// connection's far end lives in another VM, not on this host).
pub fn reply<S: Write>(s: &mut S, code: Reply) -> io::Result<()> {
    send(s, |b| ReplyMsg::new(code).encode(b))
}

/// Sends the success reply to a lookup: the answer as the bound address.
pub fn reply_bound<S: Write>(s: &mut S, bound: Addr<'_>) -> io::Result<()> {
    send(s, |b| ReplyMsg { reply: Reply::Succeeded, bound }.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted client: what it sends, and what the server wrote back.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Script {
        fn new(bytes: &[u8]) -> Self {
            Self { input: io::Cursor::new(bytes.to_vec()), output: Vec::new() }
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn connect_ipv4_without_auth() {
        let mut s = Script::new(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 3, 0x1f, 0x90]);
        let r = accept(&mut s).unwrap();
        assert_eq!(r.target, Target::Addr("10.0.0.3:8080".parse().unwrap()));
        assert_eq!((r.username.as_deref(), r.criteria()), (None, None));
        assert_eq!(s.output, [5, 0]);
    }

    #[test]
    fn connect_hostname_with_criteria_in_username() {
        let user = b"pathvm:latency=require";
        let mut msg = vec![5, 2, 0, 2, 1, user.len() as u8];
        msg.extend_from_slice(user);
        msg.extend_from_slice(&[1, b'x']);
        msg.extend_from_slice(&[5, 1, 0, 3, 9]);
        msg.extend_from_slice(b"service.c");
        msg.extend_from_slice(&[0, 80]);
        let mut s = Script::new(&msg);
        let r = accept(&mut s).unwrap();
        assert_eq!(r.target, Target::Domain("service.c".into(), 80));
        assert_eq!(r.username.as_deref(), Some("pathvm:latency=require"));
        assert_eq!(r.criteria(), Some("pathvm:latency=require"));
        assert_eq!(s.output, [5, 2, 1, 0]);
    }

    #[test]
    fn criteria_in_the_password_when_the_user_is_pathvm() {
        let mut msg = vec![5, 1, 2, 1, 6];
        msg.extend_from_slice(b"pathvm");
        msg.push(15);
        msg.extend_from_slice(b"latency=require");
        msg.extend_from_slice(&[5, 1, 0, 1, 10, 0, 0, 3, 0, 80]);
        let r = accept(&mut Script::new(&msg)).unwrap();
        assert_eq!(r.criteria(), Some("latency=require"));
    }

    #[test]
    fn connect_ipv6() {
        let mut msg = vec![5, 1, 0, 5, 1, 0, 4];
        msg.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        msg.extend_from_slice(&[0, 22]);
        let r = accept(&mut Script::new(&msg)).unwrap();
        assert_eq!(r.target, Target::Addr("[::1]:22".parse().unwrap()));
    }

    #[test]
    fn tors_resolve_and_resolve_ptr_are_requests_too() {
        let mut msg = vec![5, 1, 0, 5, 0xF0, 0, 3, 8];
        msg.extend_from_slice(b"svc.test");
        msg.extend_from_slice(&[0, 0]);
        let r = accept(&mut Script::new(&msg)).unwrap();
        assert_eq!((r.command, r.target), (Command::Resolve, Target::Domain("svc.test".into(), 0)));
        let r = accept(&mut Script::new(&[5, 1, 0, 5, 0xF1, 0, 1, 10, 0, 0, 3, 0, 0])).unwrap();
        assert_eq!((r.command, r.target), (Command::ResolvePtr, Target::Addr("10.0.0.3:0".parse().unwrap())));
        // The PTR of a name is no question: reply 8.
        let mut s = Script::new(&[5, 1, 0, 5, 0xF1, 0, 3, 1, b'x', 0, 0]);
        assert!(matches!(accept(&mut s), Err(SocksError::PtrOfName)));
        assert_eq!(&s.output[2..4], &[5, Reply::AddressTypeNotSupported.code()]);
    }

    #[test]
    fn bind_and_udp_get_command_not_supported() {
        for cmd in [2u8, 3] {
            let mut s = Script::new(&[5, 1, 0, 5, cmd, 0, 1, 1, 2, 3, 4, 0, 1]);
            assert!(matches!(accept(&mut s), Err(SocksError::Command(c)) if c == cmd));
            assert_eq!(&s.output[2..4], &[5, Reply::CommandNotSupported.code()]);
        }
    }

    #[test]
    fn unknown_address_type_is_refused_with_its_code() {
        let mut s = Script::new(&[5, 1, 0, 5, 1, 0, 9]);
        assert!(matches!(accept(&mut s), Err(SocksError::AddressType(9))));
        assert_eq!(&s.output[2..4], &[5, Reply::AddressTypeNotSupported.code()]);
    }

    #[test]
    fn no_acceptable_method_gets_ff() {
        let mut s = Script::new(&[5, 1, 0x80]);
        assert!(matches!(accept(&mut s), Err(SocksError::NoMethod)));
        assert_eq!(s.output, [5, 0xff]);
    }

    #[test]
    fn socks4_and_garbage_are_not_socks5() {
        assert!(matches!(accept(&mut Script::new(&[4, 1, 0, 80])), Err(SocksError::Version(4))));
        assert!(matches!(accept(&mut Script::new(b"GET / HTTP/1.1\r\n")), Err(SocksError::Version(b'G'))));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_hang_or_panic() {
        let full = [5u8, 1, 0, 5, 1, 0, 3, 1, b'h', 0, 80];
        for n in 0..full.len() {
            assert!(accept(&mut Script::new(&full[..n])).is_err(), "prefix {n}");
        }
        assert!(accept(&mut Script::new(&full)).is_ok());
    }

    #[test]
    fn empty_host_name_is_refused() {
        let mut s = Script::new(&[5, 1, 0, 5, 1, 0, 3, 0, 0, 80]);
        assert!(matches!(accept(&mut s), Err(SocksError::BadHost)));
        assert_eq!(&s.output[2..4], &[5, Reply::GeneralFailure.code()]);
    }

    #[test]
    fn reply_layout() {
        let mut out = Vec::new();
        reply(&mut out, Reply::ConnectionRefused).unwrap();
        assert_eq!(out, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
