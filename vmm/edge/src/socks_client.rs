//! SOCKS5, client side, blocking: what `pathvm run`'s transparent relay
//! and the benchmarks use to ask an edge for a stream. The byte layouts
//! are [`guest_agent::socks`]'s, shared with the server.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use guest_agent::socks::{self, Addr, Reply};
use thiserror::Error;

/// Why an edge gave no stream.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The connection to the edge broke or timed out.
    #[error("SOCKS5 edge: {0}")]
    Io(#[from] io::Error),
    /// The edge answered something that is not SOCKS5.
    #[error("SOCKS5 edge: malformed answer: {0}")]
    Protocol(String),
    /// The criteria do not fit a username (255 bytes).
    #[error("criteria {0:?} longer than a SOCKS5 username")]
    CriteriaTooLong(String),
    /// The edge refused the credentials.
    #[error("SOCKS5 edge refused authentication ({0})")]
    Auth(String),
    /// The edge refused the request with this reply.
    #[error("SOCKS5 edge: reply {} ({})", .0.code(), .0.meaning())]
    Refused(Reply),
}

/// Asks the edge on `s` for a stream to `target`, with `criteria` (sent
/// as the password of user `pathvm`) and `early` bytes written right
/// behind the request (optimistic data); returns when the edge replied
/// success, `s` then carries the stream.
pub fn connect(s: &mut TcpStream, target: Addr<'_>, criteria: Option<&str>, early: &[u8]) -> Result<(), ClientError> {
    if let Some(c) = criteria.filter(|c| c.len() > 255) {
        return Err(ClientError::CriteriaTooLong(c.into()));
    }
    let method = if criteria.is_some() { socks::Method::UserPass } else { socks::Method::None };
    send(s, |b| socks::Greeting { methods: &[method.code()] }.encode(b))?;
    let chosen = receive(s, socks::MethodChoice::decode)?;
    if chosen != socks::MethodChoice(method) {
        return Err(ClientError::Auth(format!("it chose method {:?}, not {method:?}", chosen.0)));
    }
    if let Some(c) = criteria {
        send(s, |b| socks::UserPass { username: b"pathvm", password: c.as_bytes() }.encode(b))?;
        let status = receive(s, socks::AuthStatus::decode)?;
        if status != socks::AuthStatus::OK {
            return Err(ClientError::Auth(format!("criteria {c:?}: status {}", status.0)));
        }
    }
    send(s, |b| socks::Request::connect(target).encode(b))?;
    s.write_all(early)?;
    match receive(s, |b| Ok(socks::ReplyMsg::decode(b)?.map(|r| r.reply)))? {
        Reply::Succeeded => Ok(()),
        r => Err(ClientError::Refused(r)),
    }
}

fn send(s: &mut TcpStream, encode: impl FnOnce(&mut [u8]) -> Result<usize, socks::Error>) -> Result<(), ClientError> {
    let mut buf = [0u8; socks::MAX_AUTH_LEN];
    let n = encode(&mut buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(s.write_all(&buf[..n])?)
}

/// Reads one SOCKS5 message from `s`, exactly its bytes; `decode` yields
/// an owned summary of it.
fn receive<T>(
    s: &mut TcpStream,
    decode: impl Fn(&[u8]) -> Result<socks::Decoded<T>, socks::Error>,
) -> Result<T, ClientError> {
    let mut buf = [0u8; socks::MAX_REQUEST_LEN];
    let n = socks::read_message(&mut buf, |b| s.read_exact(b), |b| Ok(decode(b)?.erase()))?
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    match decode(&buf[..n]) {
        Ok(socks::Decoded::Ready(v, _)) => Ok(v),
        Ok(socks::Decoded::NeedMore(_)) => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        Err(e) => Err(ClientError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_connect_with_criteria_meets_the_server_and_a_refusal_is_its_reply() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut replies = Vec::new();
            for code in [Reply::Succeeded, Reply::NotAllowed] {
                let (mut c, _) = l.accept().unwrap();
                let r = crate::socks::accept(&mut c).unwrap();
                crate::socks::reply(&mut c, code).unwrap();
                replies.push((r.criteria().map(str::to_string), r.target.to_string()));
            }
            replies
        });
        let mut s = TcpStream::connect(addr).unwrap();
        connect(&mut s, Addr::Domain("svc.test", 80), Some("latency=require"), b"").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        let e = connect(&mut s, Addr::Ip("10.0.0.1:22".parse().unwrap()), None, b"").unwrap_err();
        assert!(matches!(e, ClientError::Refused(Reply::NotAllowed)), "{e}");
        let seen = server.join().unwrap();
        assert_eq!(seen[0], (Some("latency=require".into()), "svc.test:80".into()));
        assert_eq!(seen[1], (None, "10.0.0.1:22".into()));
    }
}
