//! SOCKS5, server side: the handshake up to the CONNECT request, and the
//! reply. RFC 1928 with RFC 1929 username/password authentication.
//!
//! Everything the client sends is checked; a malformed or unsupported
//! request gets the reply code RFC 1928 defines for it (when the protocol
//! has got far enough to send one) and an error the caller logs.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

const VERSION: u8 = 5;
const AUTH_VERSION: u8 = 1;
const METHOD_NONE: u8 = 0x00;
const METHOD_USERPASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// RFC 1928 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0,
    /// General SOCKS server failure.
    GeneralFailure = 1,
    /// Connection not allowed by ruleset (policy refused the request).
    NotAllowed = 2,
    /// Network unreachable.
    NetworkUnreachable = 3,
    /// Host unreachable (unknown destination).
    HostUnreachable = 4,
    /// Connection refused (the service is down).
    ConnectionRefused = 5,
    /// TTL expired.
    TtlExpired = 6,
    /// Command not supported.
    CommandNotSupported = 7,
    /// Address type not supported.
    AddressTypeNotSupported = 8,
}

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

/// A client's CONNECT request, after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The destination.
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
    /// Only CONNECT is supported.
    #[error("SOCKS command {0} is not supported (only CONNECT)")]
    Command(u8),
    /// Unknown address type.
    #[error("SOCKS address type {0} is not supported")]
    AddressType(u8),
    /// A host name that is empty or not UTF-8.
    #[error("malformed destination host name")]
    BadHost,
}

impl SocksError {
    /// The reply code for this failure, if the client should get one.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Self::Command(_) => Some(Reply::CommandNotSupported),
            Self::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Self::BadHost => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

fn byte<S: Read>(s: &mut S) -> io::Result<u8> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

fn bytes<S: Read>(s: &mut S, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

/// Runs the server side of the handshake up to the CONNECT request. On an
/// error that has a reply code, the reply has already been sent.
pub fn accept<S: Read + Write>(s: &mut S) -> Result<Request, SocksError> {
    let v = byte(s)?;
    if v != VERSION {
        return Err(SocksError::Version(v));
    }
    let n = byte(s)? as usize;
    let methods = bytes(s, n)?;
    // Prefer username/password: the username is how apps send criteria.
    let method = if methods.contains(&METHOD_USERPASS) {
        METHOD_USERPASS
    } else if methods.contains(&METHOD_NONE) {
        METHOD_NONE
    } else {
        s.write_all(&[VERSION, METHOD_UNACCEPTABLE])?;
        return Err(SocksError::NoMethod);
    };
    s.write_all(&[VERSION, method])?;
    let (username, password) = if method == METHOD_USERPASS {
        if byte(s)? != AUTH_VERSION {
            s.write_all(&[AUTH_VERSION, 1])?;
            return Err(SocksError::BadAuth);
        }
        let ulen = byte(s)? as usize;
        let user = bytes(s, ulen)?;
        let plen = byte(s)? as usize;
        let password = bytes(s, plen)?;
        let (Ok(user), Ok(password)) = (String::from_utf8(user), String::from_utf8(password)) else {
            s.write_all(&[AUTH_VERSION, 1])?;
            return Err(SocksError::BadAuth);
        };
        s.write_all(&[AUTH_VERSION, 0])?;
        (Some(user), Some(password))
    } else {
        (None, None)
    };
    let head = bytes(s, 4)?;
    if head[0] != VERSION {
        return Err(SocksError::Version(head[0]));
    }
    let result = read_target(s, head[3]).and_then(|t| {
        if head[1] == CMD_CONNECT {
            Ok(t)
        } else {
            Err(SocksError::Command(head[1]))
        }
    });
    match result {
        Ok(target) => Ok(Request { target, username, password }),
        Err(e) => {
            if let Some(code) = e.reply() {
                reply(s, code)?;
            }
            Err(e)
        }
    }
}

fn read_target<S: Read>(s: &mut S, atyp: u8) -> Result<Target, SocksError> {
    let target = match atyp {
        ATYP_V4 => {
            let a = bytes(s, 6)?;
            Target::Addr(SocketAddr::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(),
                u16::from_be_bytes([a[4], a[5]]),
            ))
        }
        ATYP_V6 => {
            let a = bytes(s, 18)?;
            let ip: [u8; 16] = a[..16].try_into().map_err(|_| SocksError::BadHost)?;
            Target::Addr(SocketAddr::new(Ipv6Addr::from(ip).into(), u16::from_be_bytes([a[16], a[17]])))
        }
        ATYP_DOMAIN => {
            let n = byte(s)? as usize;
            let a = bytes(s, n + 2)?;
            let host = String::from_utf8(a[..n].to_vec()).map_err(|_| SocksError::BadHost)?;
            if host.is_empty() {
                return Err(SocksError::BadHost);
            }
            Target::Domain(host, u16::from_be_bytes([a[n], a[n + 1]]))
        }
        other => return Err(SocksError::AddressType(other)),
    };
    Ok(target)
}

/// Sends the reply to a CONNECT request (bound address 0.0.0.0:0: the
/// connection's far end lives in another VM, not on this host).
pub fn reply<S: Write>(s: &mut S, code: Reply) -> io::Result<()> {
    s.write_all(&[VERSION, code as u8, 0, ATYP_V4, 0, 0, 0, 0, 0, 0])
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
        msg.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        msg.extend_from_slice(&[0, 22]);
        let r = accept(&mut Script::new(&msg)).unwrap();
        assert_eq!(r.target, Target::Addr("[::1]:22".parse().unwrap()));
    }

    #[test]
    fn bind_and_udp_get_command_not_supported() {
        for cmd in [2u8, 3] {
            let mut s = Script::new(&[5, 1, 0, 5, cmd, 0, 1, 1, 2, 3, 4, 0, 1]);
            assert!(matches!(accept(&mut s), Err(SocksError::Command(c)) if c == cmd));
            assert_eq!(&s.output[2..4], &[5, Reply::CommandNotSupported as u8]);
        }
    }

    #[test]
    fn unknown_address_type_is_refused_with_its_code() {
        let mut s = Script::new(&[5, 1, 0, 5, 1, 0, 9]);
        assert!(matches!(accept(&mut s), Err(SocksError::AddressType(9))));
        assert_eq!(&s.output[2..4], &[5, Reply::AddressTypeNotSupported as u8]);
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
        assert_eq!(&s.output[2..4], &[5, Reply::GeneralFailure as u8]);
    }

    #[test]
    fn reply_layout() {
        let mut out = Vec::new();
        reply(&mut out, Reply::ConnectionRefused).unwrap();
        assert_eq!(out, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
