//! Application traffic for the connect and protocols benchmarks: a service
//! on the destination host, connections to it (over kernel routing, or
//! through the SOCKS5 edge with routing criteria in the RFC 1929 username),
//! and the two measurements made on them. Every connect, read and write
//! has a timeout, so a dead path ends a measurement with an error instead
//! of hanging it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use guest_agent::socks;

use super::netns_io::in_netns;

/// Where `pathvm edge` listens inside the edge host's namespace.
pub const EDGE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1080));
/// Longest any one connect, read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an optimistic app waits for its answer before it counts the
/// byte it sent early as lost (answers here take milliseconds).
const LOST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Service command: answer one byte.
const PING: u8 = b'P';
/// Service command: answer the number of bytes that follows (u64, big-endian).
const DOWNLOAD: u8 = b'D';
/// Size of the service's and the reader's buffers.
const CHUNK: usize = 256 * 1024;

/// How a connection reaches the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Plain TCP over the hosts' kernel routes.
    Kernel,
    /// A SOCKS5 CONNECT to `pathvm edge` on [`EDGE`]; with criteria, they
    /// go in the RFC 1929 username as `pathvm:<criteria>`.
    Edge {
        /// Routing criteria, e.g. `latency=require`.
        criteria: Option<String>,
    },
    /// A SOCKS5 CONNECT (no authentication) to another proxy: a peer
    /// measured beside pathvm (`ssh -D`, microsocks).
    Socks {
        /// Where the proxy listens.
        proxy: SocketAddr,
    },
}

/// Listens in namespace `ns` on an ephemeral port, each connection handed
/// to `handle` on a small thread of its own; returns the port. `what`
/// names the service in the error if it does not start.
fn serve_each(ns: &str, what: &'static str, handle: fn(TcpStream)) -> io::Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let _ = in_netns(&ns, move || {
            let l = TcpListener::bind("0.0.0.0:0")?;
            let _ = tx.send(l.local_addr()?.port());
            for conn in l.incoming() {
                let Ok(c) = conn else { continue };
                let _ = std::thread::Builder::new().stack_size(64 << 10).spawn(move || handle(c));
            }
            Ok(())
        });
    });
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| io::Error::other(format!("the benchmark's {what} did not start")))
}

/// Starts a service in namespace `ns` on an ephemeral port and returns the
/// port. Per connection it reads one command: `P` is answered with one
/// byte, `D` and a u64 (big-endian) with that many bytes.
pub fn serve(ns: &str) -> io::Result<u16> {
    serve_each(ns, "service", answer)
}

/// Longest an echo connection may sit idle before the service drops it:
/// the density benchmark holds connections idle for minutes.
pub const ECHO_IDLE: Duration = Duration::from_secs(600);

/// Starts an echo service in namespace `ns` on an ephemeral port (every
/// byte comes back; a connection idle for [`ECHO_IDLE`] is dropped) and
/// returns the port.
pub fn serve_echo(ns: &str) -> io::Result<u16> {
    serve_each(ns, "echo service", |mut c| {
        let _ = c.set_read_timeout(Some(ECHO_IDLE));
        let mut b = [0u8; 16 << 10];
        while let Ok(n @ 1..) = c.read(&mut b) {
            if c.write_all(&b[..n]).is_err() {
                return;
            }
        }
    })
}

/// Sends `data` on `s` and reads it back; the round trip's time, ms.
/// Fails if what comes back differs.
pub fn echo(s: &mut TcpStream, data: &[u8]) -> io::Result<f64> {
    let t0 = Instant::now();
    s.write_all(data)?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if back != data {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the echo came back altered"));
    }
    Ok(ms)
}

/// Serves one connection (see [`serve`]).
fn answer(mut c: TcpStream) {
    let _ = c.set_read_timeout(Some(IO_TIMEOUT));
    let _ = c.set_write_timeout(Some(IO_TIMEOUT));
    let mut cmd = [0u8; 1];
    if c.read_exact(&mut cmd).is_err() {
        return;
    }
    let n = match cmd[0] {
        PING => 1,
        DOWNLOAD => {
            let mut len = [0u8; 8];
            if c.read_exact(&mut len).is_err() {
                return;
            }
            u64::from_be_bytes(len)
        }
        _ => return,
    };
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while sent < n {
        let k = usize::try_from(n - sent).map_or(chunk.len(), |left| left.min(chunk.len()));
        if c.write_all(&chunk[..k]).is_err() {
            return;
        }
        sent += k as u64;
    }
}

/// Opens a connection to `target` the way `via` says (call it inside the
/// source host's namespace). Through the edge, returns once the edge has
/// replied success, i.e. the stream to the service is up.
pub fn open(target: SocketAddrV4, via: &Via) -> io::Result<TcpStream> {
    open_at(EDGE, target, via, &[])
}

/// [`open`] for an optimistic app (as Tor Browser is): `first` goes out
/// right behind the CONNECT request, before the proxy's reply.
pub fn open_optimistic(target: SocketAddrV4, via: &Via, first: &[u8]) -> io::Result<TcpStream> {
    open_at(EDGE, target, via, first)
}

/// [`open`] with the edge at `edge`, `early` sent behind the request.
fn open_at(edge: SocketAddr, target: SocketAddrV4, via: &Via, early: &[u8]) -> io::Result<TcpStream> {
    let (first, criteria) = match via {
        Via::Kernel => (SocketAddr::V4(target), &None),
        Via::Edge { criteria } => (edge, criteria),
        Via::Socks { proxy } => (*proxy, &None),
    };
    let edge = first;
    let mut s = TcpStream::connect_timeout(&first, IO_TIMEOUT)?;
    // As curl and browsers do: a small write goes out at once instead of
    // waiting (Nagle) for the acknowledgement of the one before.
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    if *via == Via::Kernel {
        s.write_all(early)?;
        return Ok(s);
    }
    let target = socks::Addr::Ip(SocketAddr::V4(target));
    edge::socks_client::connect(&mut s, target, criteria.as_deref(), early).map_err(|e| {
        let kind = match &e {
            edge::socks_client::ClientError::CriteriaTooLong(_) => io::ErrorKind::InvalidInput,
            edge::socks_client::ClientError::Io(io) => io.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{e} (edge on {edge})"))
    })?;
    Ok(s)
}

/// Asks the service on `s` for `bytes` bytes.
pub fn request_download(s: &mut TcpStream, bytes: u64) -> io::Result<()> {
    let mut cmd = vec![DOWNLOAD];
    cmd.extend_from_slice(&bytes.to_be_bytes());
    s.write_all(&cmd)
}

/// `n` sequential connect-to-first-byte times to `target`, in ms, sorted
/// (call it inside the source host's namespace).
pub fn connect_times(target: SocketAddrV4, via: &Via, n: usize) -> io::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut s = open(target, via)?;
        s.write_all(&[PING])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// [`connect_times`] for an optimistic app: the first byte goes out
/// behind the CONNECT request, before the reply.
pub fn optimistic_connect_times(target: SocketAddrV4, via: &Via, n: usize) -> io::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut s = open_optimistic(target, via, &[PING])?;
        // A proxy that dropped the early byte never answers: say so soon.
        s.set_read_timeout(Some(LOST_BYTE_TIMEOUT))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// One flow's throughput downloading `bytes` from `target`, Mbit/s (call it
/// inside the source host's namespace). Fails if the flow stalls for
/// [`IO_TIMEOUT`] or ends early.
pub fn throughput(target: SocketAddrV4, via: &Via, bytes: u64) -> io::Result<f64> {
    let mut s = open(target, via)?;
    let t0 = Instant::now();
    request_download(&mut s, bytes)?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < bytes {
        match s.read(&mut buf)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the download ended after {got} of {bytes} bytes"),
                ))
            }
            n => got += n as u64,
        }
    }
    Ok(got as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e6)
}

/// Connect-to-first-byte times (ms, sorted) of `connects` connections,
/// then one `bytes` download's Mbit/s, from namespace `ns` to `target`.
pub fn measure(ns: &str, target: SocketAddrV4, via: Via, connects: usize, bytes: u64) -> io::Result<(Vec<f64>, f64)> {
    in_netns(ns, move || Ok((connect_times(target, &via, connects)?, throughput(target, &via, bytes)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SOCKS5 edge stand-in on loopback: the edge's own handshake
    /// checks the client's, then replies `code`; returns the criteria it saw.
    fn fake_edge(code: u8) -> (SocketAddr, std::thread::JoinHandle<Option<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let req = edge::socks::accept(&mut c).unwrap();
            if let Some(p) = &req.password {
                assert!(!p.is_empty(), "RFC 1929 passwords are 1-255 bytes");
            }
            assert!(matches!(req.target, edge::socks::Target::Addr(SocketAddr::V4(_))));
            edge::socks::reply(&mut c, socks::Reply::from_code(code)).unwrap();
            req.criteria().map(str::to_string)
        });
        (addr, h)
    }

    #[test]
    fn criteria_ride_in_the_credentials() {
        let (addr, h) = fake_edge(0);
        let target: SocketAddrV4 = "10.231.2.2:80".parse().unwrap();
        open_at(addr, target, &Via::Edge { criteria: Some("latency=require".into()) }, &[]).unwrap();
        assert_eq!(h.join().unwrap().as_deref(), Some("latency=require"));
        let (addr, h) = fake_edge(2);
        let e = open_at(addr, target, &Via::Edge { criteria: None }, &[]).unwrap_err();
        assert!(e.to_string().contains("policy"), "{e}");
        assert_eq!(h.join().unwrap(), None);
    }

    #[test]
    fn too_long_criteria_are_an_error_not_a_panic() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let target: SocketAddrV4 = "10.231.2.2:80".parse().unwrap();
        let via = Via::Edge { criteria: Some("latency=require,".repeat(20)) };
        let e = open_at(addr, target, &via, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn the_service_answers_pings_and_downloads_on_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = match l.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        std::thread::spawn(move || {
            for c in l.incoming().take(3) {
                let c = c.unwrap();
                std::thread::spawn(move || answer(c));
            }
        });
        let times = connect_times(addr, &Via::Kernel, 2).unwrap();
        assert!(times.len() == 2 && times[0] <= times[1]);
        let mbps = throughput(addr, &Via::Kernel, 3 << 20).unwrap();
        assert!(mbps > 0.0);
    }
}
