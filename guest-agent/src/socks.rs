//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929),
//! sans-I/O: every message pathvm's edge, its `LD_PRELOAD` client and its
//! benchmark client exchange, encoded into caller buffers and decoded from
//! byte slices.
//!
//! It lives here because this crate is `no_std` and free of I/O, so the
//! preload shim (a `cdylib` that must stay small) can use it as cheaply as
//! the host daemons; one definition of the byte layouts serves every side.
//!
//! Decoding contract: a `decode` never panics and never reads past what it
//! reports. It answers [`Decoded::Ready`] with the message and the bytes it
//! took, [`Decoded::NeedMore`] with the fewest further bytes worth reading
//! (so a blocking reader can `read_exact` exactly that and never consume
//! bytes of the next message), or an [`Error`] when the bytes can never be
//! that message.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte of every SOCKS5 message but RFC 1929's.
pub const VERSION: u8 = 5;
/// The version byte of RFC 1929's sub-negotiation.
pub const AUTH_VERSION: u8 = 1;
/// The CONNECT command.
pub const CMD_CONNECT: u8 = 1;
/// Tor's RESOLVE extension: the reply's bound address is the name's
/// address, looked up far from the client.
pub const CMD_RESOLVE: u8 = 0xF0;
/// Tor's RESOLVE_PTR extension: the reply's bound address is the
/// address's name (a domain-type address).
pub const CMD_RESOLVE_PTR: u8 = 0xF1;
/// Longest greeting: version, count, 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// Longest RFC 1929 request: version, two length-prefixed 255-byte fields.
pub const MAX_AUTH_LEN: usize = 1 + 2 * (1 + 255);
/// Longest request or reply: head, a 255-byte host name, port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;

mod atyp {
    pub const V4: u8 = 1;
    pub const DOMAIN: u8 = 3;
    pub const V6: u8 = 4;
}

/// Authentication methods (RFC 1928 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No authentication.
    None,
    /// RFC 1929 username/password (how apps send criteria).
    UserPass,
    /// The server accepts none of the client's methods.
    Unacceptable,
    /// Any other method number.
    Other(u8),
}

impl Method {
    /// The method's number on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0x00,
            Self::UserPass => 0x02,
            Self::Unacceptable => 0xff,
            Self::Other(c) => c,
        }
    }

    /// The method a number stands for.
    pub fn from_code(c: u8) -> Self {
        match c {
            0x00 => Self::None,
            0x02 => Self::UserPass,
            0xff => Self::Unacceptable,
            c => Self::Other(c),
        }
    }
}

/// RFC 1928 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Succeeded.
    Succeeded,
    /// General SOCKS server failure.
    GeneralFailure,
    /// Connection not allowed by ruleset (policy refused the request).
    NotAllowed,
    /// Network unreachable.
    NetworkUnreachable,
    /// Host unreachable (unknown destination).
    HostUnreachable,
    /// Connection refused (the service is down).
    ConnectionRefused,
    /// TTL expired.
    TtlExpired,
    /// Command not supported.
    CommandNotSupported,
    /// Address type not supported.
    AddressTypeNotSupported,
    /// A code RFC 1928 does not define.
    Unknown(u8),
}

impl Reply {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::GeneralFailure => 1,
            Self::NotAllowed => 2,
            Self::NetworkUnreachable => 3,
            Self::HostUnreachable => 4,
            Self::ConnectionRefused => 5,
            Self::TtlExpired => 6,
            Self::CommandNotSupported => 7,
            Self::AddressTypeNotSupported => 8,
            Self::Unknown(c) => c,
        }
    }

    /// The reply a code stands for.
    pub fn from_code(c: u8) -> Self {
        match c {
            0 => Self::Succeeded,
            1 => Self::GeneralFailure,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TtlExpired,
            7 => Self::CommandNotSupported,
            8 => Self::AddressTypeNotSupported,
            c => Self::Unknown(c),
        }
    }

    /// What the code means, for messages.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::GeneralFailure => "general failure",
            Self::NotAllowed => "refused by the edge's policy",
            Self::NetworkUnreachable => "network unreachable",
            Self::HostUnreachable => "unknown destination",
            Self::ConnectionRefused => "the service refused the connection",
            Self::TtlExpired => "TTL expired",
            Self::CommandNotSupported => "command not supported",
            Self::AddressTypeNotSupported => "address type not supported",
            Self::Unknown(_) => "unknown reply code",
        }
    }
}

/// An address in a request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr<'a> {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A host name (non-empty UTF-8, at most 255 bytes) and port.
    Domain(&'a str, u16),
}

impl Addr<'_> {
    /// The unspecified IPv4 address, port 0: what pathvm's edge reports as
    /// the bound address (the far end lives in another VM).
    pub const UNSPECIFIED: Addr<'static> = Addr::Ip(SocketAddr::new(core::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));

    fn encoded_len(&self) -> usize {
        match self {
            Self::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Self::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Self::Domain(h, _) => 1 + 1 + h.len() + 2,
        }
    }

    /// Writes ATYP, address and port; `out` holds [`Self::encoded_len`].
    fn emit(&self, out: &mut [u8]) {
        let port = match self {
            Self::Ip(SocketAddr::V4(a)) => {
                out[0] = atyp::V4;
                out[1..5].copy_from_slice(&a.ip().octets());
                a.port()
            }
            Self::Ip(SocketAddr::V6(a)) => {
                out[0] = atyp::V6;
                out[1..17].copy_from_slice(&a.ip().octets());
                a.port()
            }
            Self::Domain(h, p) => {
                out[0] = atyp::DOMAIN;
                out[1] = h.len() as u8;
                out[2..2 + h.len()].copy_from_slice(h.as_bytes());
                *p
            }
        };
        let n = out.len();
        out[n - 2..].copy_from_slice(&port.to_be_bytes());
    }

    /// Parses ATYP, address and port from the start of `b`.
    fn parse(b: &[u8]) -> Result<Decoded<Addr<'_>>, Error> {
        let Some(&t) = b.first() else { return Ok(Decoded::NeedMore(1)) };
        let fixed = |n: usize| -> Result<Decoded<&[u8]>, Error> {
            if b.len() < 1 + n + 2 {
                return Ok(Decoded::NeedMore(1 + n + 2 - b.len()));
            }
            Ok(Decoded::Ready(&b[1..1 + n + 2], 1 + n + 2))
        };
        let port = |s: &[u8]| u16::from_be_bytes([s[s.len() - 2], s[s.len() - 1]]);
        match t {
            atyp::V4 => {
                Ok(fixed(4)?.map(|s| Addr::Ip(SocketAddr::new(Ipv4Addr::new(s[0], s[1], s[2], s[3]).into(), port(s)))))
            }
            atyp::V6 => Ok(fixed(16)?.map(|s| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&s[..16]);
                Addr::Ip(SocketAddr::new(Ipv6Addr::from(ip).into(), port(s)))
            })),
            atyp::DOMAIN => {
                let Some(&n) = b.get(1) else { return Ok(Decoded::NeedMore(1)) };
                let n = n as usize;
                let len = 2 + n + 2;
                if b.len() < len {
                    return Ok(Decoded::NeedMore(len - b.len()));
                }
                let host = core::str::from_utf8(&b[2..2 + n]).map_err(|_| Error::BadHost)?;
                if host.is_empty() {
                    return Err(Error::BadHost);
                }
                Ok(Decoded::Ready(Addr::Domain(host, port(&b[..len])), len))
            }
            other => Err(Error::AddressType(other)),
        }
    }
}

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// What a decode made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The message, and how many bytes of the input it took.
    Ready(T, usize),
    /// Not enough bytes yet: at least this many more are needed.
    NeedMore(usize),
}

impl<T> Decoded<T> {
    /// The same answer without the message (which borrows the input):
    /// what [`read_message`] needs to know.
    pub fn erase(self) -> Decoded<()> {
        self.map(|_| ())
    }

    /// The same answer with the message turned into something else.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match self {
            Self::Ready(v, n) => Decoded::Ready(f(v), n),
            Self::NeedMore(n) => Decoded::NeedMore(n),
        }
    }
}

/// Why bytes cannot be the message expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not SOCKS5 (or, in RFC 1929 messages, not version 1).
    Version(u8),
    /// A greeting offering no method at all.
    NoMethods,
    /// An unknown address type.
    AddressType(u8),
    /// A host name that is empty or not UTF-8.
    BadHost,
    /// A field longer than its one-byte length prefix can say.
    TooLong,
    /// The caller's buffer cannot hold the message.
    BufferTooSmall {
        /// Bytes the message needs.
        need: usize,
    },
}

impl Error {
    /// The reply code a server sends for this failure in a request, if
    /// the client should get one.
    pub fn reply(self) -> Option<Reply> {
        match self {
            Self::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Self::BadHost => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "not a SOCKS5 message (version byte {v:#04x})"),
            Self::NoMethods => write!(f, "SOCKS5 greeting offers no authentication method"),
            Self::AddressType(t) => write!(f, "SOCKS address type {t} is not supported"),
            Self::BadHost => write!(f, "malformed destination host name"),
            Self::TooLong => write!(f, "a SOCKS5 field is longer than 255 bytes"),
            Self::BufferTooSmall { need } => write!(f, "SOCKS5 message needs a {need}-byte buffer"),
        }
    }
}

impl core::error::Error for Error {}

fn room(out: &[u8], need: usize) -> Result<(), Error> {
    if out.len() < need {
        return Err(Error::BufferTooSmall { need });
    }
    Ok(())
}

fn check_version(b: &[u8], want: u8) -> Result<(), Error> {
    match b.first() {
        Some(&v) if v != want => Err(Error::Version(v)),
        _ => Ok(()),
    }
}

/// The client's first message: the authentication methods it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// Method numbers, as sent (see [`Method::from_code`]).
    pub methods: &'a [u8],
}

impl<'a> Greeting<'a> {
    /// Whether the client offers `m`.
    pub fn offers(&self, m: Method) -> bool {
        self.methods.contains(&m.code())
    }

    /// Writes the greeting into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let n = self.methods.len();
        if n == 0 {
            return Err(Error::NoMethods);
        }
        let count = u8::try_from(n).map_err(|_| Error::TooLong)?;
        room(out, 2 + n)?;
        out[0] = VERSION;
        out[1] = count;
        out[2..2 + n].copy_from_slice(self.methods);
        Ok(2 + n)
    }

    /// Reads a greeting from the start of `b`.
    pub fn decode(b: &'a [u8]) -> Result<Decoded<Self>, Error> {
        check_version(b, VERSION)?;
        let Some(&n) = b.get(1) else { return Ok(Decoded::NeedMore(2 - b.len())) };
        let len = 2 + n as usize;
        if n == 0 {
            return Err(Error::NoMethods);
        }
        if b.len() < len {
            return Ok(Decoded::NeedMore(len - b.len()));
        }
        Ok(Decoded::Ready(Greeting { methods: &b[2..len] }, len))
    }
}

/// The server's choice of method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodChoice(pub Method);

impl MethodChoice {
    /// Its length on the wire.
    pub const LEN: usize = 2;

    /// Writes it into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        room(out, Self::LEN)?;
        out[..2].copy_from_slice(&[VERSION, self.0.code()]);
        Ok(Self::LEN)
    }

    /// Reads it from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Decoded<Self>, Error> {
        check_version(b, VERSION)?;
        if b.len() < Self::LEN {
            return Ok(Decoded::NeedMore(Self::LEN - b.len()));
        }
        Ok(Decoded::Ready(Self(Method::from_code(b[1])), Self::LEN))
    }
}

/// RFC 1929's request: a username and a password (bytes, as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPass<'a> {
    /// The username (pathvm: `pathvm`, or `pathvm:<criteria>`).
    pub username: &'a [u8],
    /// The password (pathvm: the criteria when the username is `pathvm`).
    pub password: &'a [u8],
}

impl<'a> UserPass<'a> {
    /// Writes it into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let (u, p) = (self.username, self.password);
        let (ul, pl) = (u8::try_from(u.len()), u8::try_from(p.len()));
        let (Ok(ul), Ok(pl)) = (ul, pl) else { return Err(Error::TooLong) };
        let len = 3 + u.len() + p.len();
        room(out, len)?;
        out[0] = AUTH_VERSION;
        out[1] = ul;
        out[2..2 + u.len()].copy_from_slice(u);
        out[2 + u.len()] = pl;
        out[3 + u.len()..len].copy_from_slice(p);
        Ok(len)
    }

    /// Reads it from the start of `b`.
    pub fn decode(b: &'a [u8]) -> Result<Decoded<Self>, Error> {
        check_version(b, AUTH_VERSION)?;
        let Some(&ul) = b.get(1) else { return Ok(Decoded::NeedMore(2 - b.len())) };
        let at = 2 + ul as usize;
        let Some(&pl) = b.get(at) else { return Ok(Decoded::NeedMore(at + 1 - b.len())) };
        let len = at + 1 + pl as usize;
        if b.len() < len {
            return Ok(Decoded::NeedMore(len - b.len()));
        }
        Ok(Decoded::Ready(UserPass { username: &b[2..at], password: &b[at + 1..len] }, len))
    }
}

/// RFC 1929's answer: status 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStatus(pub u8);

impl AuthStatus {
    /// Its length on the wire.
    pub const LEN: usize = 2;
    /// Accepted.
    pub const OK: Self = Self(0);
    /// Refused (pathvm: malformed credentials).
    pub const FAILED: Self = Self(1);

    /// Writes it into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        room(out, Self::LEN)?;
        out[..2].copy_from_slice(&[AUTH_VERSION, self.0]);
        Ok(Self::LEN)
    }

    /// Reads it from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Decoded<Self>, Error> {
        check_version(b, AUTH_VERSION)?;
        if b.len() < Self::LEN {
            return Ok(Decoded::NeedMore(Self::LEN - b.len()));
        }
        Ok(Decoded::Ready(Self(b[1]), Self::LEN))
    }
}

/// A client's request: the command and where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The command ([`CMD_CONNECT`], [`CMD_RESOLVE`], [`CMD_RESOLVE_PTR`]
    /// are what pathvm serves).
    pub command: u8,
    /// The destination.
    pub target: Addr<'a>,
}

/// Encodes a request or reply: version, a code, reserved, address.
fn encode_head(code: u8, addr: &Addr<'_>, out: &mut [u8]) -> Result<usize, Error> {
    if let Addr::Domain(h, _) = addr {
        if h.is_empty() {
            return Err(Error::BadHost);
        }
        if h.len() > 255 {
            return Err(Error::TooLong);
        }
    }
    let len = 3 + addr.encoded_len();
    room(out, len)?;
    out[..3].copy_from_slice(&[VERSION, code, 0]);
    addr.emit(&mut out[3..len]);
    Ok(len)
}

/// Decodes a request or reply: (code, address, length).
fn decode_head(b: &[u8]) -> Result<Decoded<(u8, Addr<'_>)>, Error> {
    check_version(b, VERSION)?;
    if b.len() < 4 {
        return Ok(Decoded::NeedMore(4 - b.len()));
    }
    Ok(match Addr::parse(&b[3..])? {
        Decoded::Ready(a, n) => Decoded::Ready((b[1], a), 3 + n),
        Decoded::NeedMore(n) => Decoded::NeedMore(n),
    })
}

impl<'a> Request<'a> {
    /// A CONNECT to `target`.
    pub fn connect(target: Addr<'a>) -> Self {
        Self { command: CMD_CONNECT, target }
    }

    /// Writes it into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        encode_head(self.command, &self.target, out)
    }

    /// Reads it from the start of `b`. The command is not judged here: a
    /// server answers an unsupported one with
    /// [`Reply::CommandNotSupported`].
    pub fn decode(b: &'a [u8]) -> Result<Decoded<Self>, Error> {
        Ok(decode_head(b)?.map(|(command, target)| Request { command, target }))
    }
}

/// The server's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyMsg<'a> {
    /// The outcome.
    pub reply: Reply,
    /// The bound address ([`Addr::UNSPECIFIED`] from pathvm).
    pub bound: Addr<'a>,
}

impl<'a> ReplyMsg<'a> {
    /// Length of the reply pathvm sends (IPv4 bound address).
    pub const LEN_V4: usize = 10;

    /// A reply with pathvm's bound address, 0.0.0.0:0.
    pub fn new(reply: Reply) -> ReplyMsg<'static> {
        ReplyMsg { reply, bound: Addr::UNSPECIFIED }
    }

    /// Writes it into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        encode_head(self.reply.code(), &self.bound, out)
    }

    /// Reads it from the start of `b` (any bound address type).
    pub fn decode(b: &'a [u8]) -> Result<Decoded<Self>, Error> {
        Ok(decode_head(b)?.map(|(code, bound)| ReplyMsg { reply: Reply::from_code(code), bound }))
    }
}

/// Runs `decode` over a growing buffer, asking `read` for exactly the
/// bytes it still needs each time: how a blocking reader takes one
/// message without consuming the next. `read(buf)` must fill `buf`.
/// `decode` is a message's decode with [`Decoded::erase`] applied.
/// Returns the message's length in `buf` (decode it once more to borrow).
pub fn read_message<E>(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8]) -> Result<(), E>,
    decode: impl Fn(&[u8]) -> Result<Decoded<()>, Error>,
) -> Result<Result<usize, Error>, E> {
    let mut have = 0;
    loop {
        match decode(&buf[..have]) {
            Ok(Decoded::Ready(_, n)) => return Ok(Ok(n)),
            Ok(Decoded::NeedMore(more)) => {
                let Some(end) = have.checked_add(more).filter(|&e| e <= buf.len()) else {
                    return Ok(Err(Error::BufferTooSmall { need: have + more }));
                };
                read(&mut buf[have..end])?;
                have = end;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl Fn(&mut [u8]) -> Result<usize, Error>) -> Vec<u8> {
        let mut b = [0u8; 600];
        let n = f(&mut b).unwrap();
        b[..n].to_vec()
    }

    #[test]
    fn greeting_golden_bytes_both_ways() {
        let g = Greeting { methods: &[0, 2] };
        assert_eq!(enc(|b| g.encode(b)), [5, 2, 0, 2]);
        assert_eq!(Greeting::decode(&[5, 2, 0, 2, 9]), Ok(Decoded::Ready(g, 4)));
        assert!(g.offers(Method::UserPass) && !g.offers(Method::Other(1)));
    }

    #[test]
    fn greeting_prefixes_need_exactly_what_is_missing() {
        assert_eq!(Greeting::decode(&[]), Ok(Decoded::NeedMore(2)));
        assert_eq!(Greeting::decode(&[5]), Ok(Decoded::NeedMore(1)));
        assert_eq!(Greeting::decode(&[5, 3, 0]), Ok(Decoded::NeedMore(2)));
    }

    #[test]
    fn greeting_with_wrong_version_or_no_method_is_an_error() {
        assert_eq!(Greeting::decode(&[4, 1, 0]), Err(Error::Version(4)));
        assert_eq!(Greeting::decode(b"GET"), Err(Error::Version(b'G')));
        assert_eq!(Greeting::decode(&[5, 0]), Err(Error::NoMethods));
        assert_eq!(Greeting { methods: &[] }.encode(&mut [0; 8]), Err(Error::NoMethods));
    }

    #[test]
    fn method_choice_and_auth_status_golden_bytes() {
        assert_eq!(enc(|b| MethodChoice(Method::Unacceptable).encode(b)), [5, 0xff]);
        assert_eq!(MethodChoice::decode(&[5, 2]), Ok(Decoded::Ready(MethodChoice(Method::UserPass), 2)));
        assert_eq!(MethodChoice::decode(&[5]), Ok(Decoded::NeedMore(1)));
        assert_eq!(enc(|b| AuthStatus::OK.encode(b)), [1, 0]);
        assert_eq!(AuthStatus::decode(&[1, 1]), Ok(Decoded::Ready(AuthStatus::FAILED, 2)));
        assert_eq!(AuthStatus::decode(&[5, 0]), Err(Error::Version(5)));
    }

    #[test]
    fn user_pass_golden_bytes_and_every_prefix() {
        let up = UserPass { username: b"pathvm", password: b"latency=require" };
        let bytes = enc(|b| up.encode(b));
        let mut want = vec![1, 6];
        want.extend_from_slice(b"pathvm");
        want.push(15);
        want.extend_from_slice(b"latency=require");
        assert_eq!(bytes, want);
        assert_eq!(UserPass::decode(&bytes), Ok(Decoded::Ready(up, bytes.len())));
        for n in 0..bytes.len() {
            match UserPass::decode(&bytes[..n]) {
                Ok(Decoded::NeedMore(k)) => assert!(n + k <= bytes.len(), "prefix {n} asks past the end"),
                other => panic!("prefix {n}: {other:?}"),
            }
        }
    }

    #[test]
    fn user_pass_longer_than_255_is_refused_on_encode() {
        let long = [b'x'; 256];
        assert_eq!(UserPass { username: &long, password: b"" }.encode(&mut [0; 600]), Err(Error::TooLong));
    }

    #[test]
    fn request_ipv4_ipv6_and_domain_golden_bytes() {
        let v4 = Request::connect(Addr::Ip("10.0.0.3:8080".parse().unwrap()));
        assert_eq!(enc(|b| v4.encode(b)), [5, 1, 0, 1, 10, 0, 0, 3, 0x1f, 0x90]);
        let v6 = Request::connect(Addr::Ip("[::1]:22".parse().unwrap()));
        let mut want = vec![5, 1, 0, 4];
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&[0, 22]);
        assert_eq!(enc(|b| v6.encode(b)), want);
        let d = Request::connect(Addr::Domain("service.c", 80));
        let mut want_d = vec![5, 1, 0, 3, 9];
        want_d.extend_from_slice(b"service.c");
        want_d.extend_from_slice(&[0, 80]);
        assert_eq!(enc(|b| d.encode(b)), want_d);
        for (r, bytes) in [(v4, enc(|b| v4.encode(b))), (v6, want), (d, want_d)] {
            assert_eq!(Request::decode(&bytes), Ok(Decoded::Ready(r, bytes.len())));
        }
    }

    #[test]
    fn request_every_truncation_asks_for_more_never_past_the_end() {
        let full = [5u8, 1, 0, 3, 1, b'h', 0, 80];
        for n in 0..full.len() {
            match Request::decode(&full[..n]) {
                Ok(Decoded::NeedMore(k)) => assert!(n + k <= full.len(), "prefix {n}"),
                other => panic!("prefix {n}: {other:?}"),
            }
        }
    }

    #[test]
    fn request_with_unknown_address_type_or_bad_host_is_an_error_with_its_reply() {
        assert_eq!(Request::decode(&[5, 1, 0, 9]), Err(Error::AddressType(9)));
        assert_eq!(Error::AddressType(9).reply(), Some(Reply::AddressTypeNotSupported));
        assert_eq!(Request::decode(&[5, 1, 0, 3, 0, 0, 80]), Err(Error::BadHost));
        assert_eq!(Request::decode(&[5, 1, 0, 3, 1, 0xff, 0, 80]), Err(Error::BadHost));
        assert_eq!(Error::BadHost.reply(), Some(Reply::GeneralFailure));
        assert_eq!(Error::Version(4).reply(), None);
    }

    #[test]
    fn request_keeps_the_command_for_the_server_to_judge() {
        let r = Request::decode(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 1]).unwrap();
        assert!(matches!(r, Decoded::Ready(Request { command: 2, .. }, 10)));
    }

    #[test]
    fn reply_every_code_round_trips_in_ten_bytes() {
        for c in 0..=255u8 {
            let r = Reply::from_code(c);
            assert_eq!(r.code(), c);
            let bytes = enc(|b| ReplyMsg::new(r).encode(b));
            assert_eq!(bytes, [5, c, 0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(ReplyMsg::decode(&bytes), Ok(Decoded::Ready(ReplyMsg::new(r), ReplyMsg::LEN_V4)));
        }
        assert_eq!(Reply::from_code(5), Reply::ConnectionRefused);
        assert_eq!(Reply::from_code(9), Reply::Unknown(9));
    }

    #[test]
    fn reply_with_a_domain_bound_address_is_read_whole() {
        let bytes = [5, 0, 0, 3, 2, b'h', b'i', 0, 1];
        assert_eq!(ReplyMsg::decode(&bytes[..4]), Ok(Decoded::NeedMore(1)));
        assert_eq!(ReplyMsg::decode(&bytes[..5]), Ok(Decoded::NeedMore(4)));
        let Ok(Decoded::Ready(r, 9)) = ReplyMsg::decode(&bytes) else { panic!() };
        assert_eq!(r.bound, Addr::Domain("hi", 1));
    }

    #[test]
    fn encode_into_a_short_buffer_says_how_much_it_needs() {
        assert_eq!(ReplyMsg::new(Reply::Succeeded).encode(&mut [0; 9]), Err(Error::BufferTooSmall { need: 10 }));
        assert_eq!(Request::connect(Addr::Domain("", 1)).encode(&mut [0; 64]), Err(Error::BadHost));
    }

    #[test]
    fn read_message_reads_exactly_one_message() {
        let wire = [5u8, 1, 0, 3, 1, b'h', 0, 80, 0xaa, 0xbb];
        let mut at = 0;
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = read_message::<()>(
            &mut buf,
            |b| {
                b.copy_from_slice(&wire[at..at + b.len()]);
                at += b.len();
                Ok(())
            },
            |b| Ok(Request::decode(b)?.erase()),
        )
        .unwrap()
        .unwrap();
        assert_eq!((n, at), (8, 8), "the bytes after the request stay unread");
        assert!(matches!(
            Request::decode(&buf[..n]),
            Ok(Decoded::Ready(Request { target: Addr::Domain("h", 80), .. }, 8))
        ));
    }
}
