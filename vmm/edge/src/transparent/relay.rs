//! The relay between the sandbox and the edge: each TCP connection the
//! app makes (steered here by nftables) becomes a SOCKS5 CONNECT to its
//! original destination — by name when the address is a virtual one the
//! resolver gave out, so the name is resolved at the exit — and each DNS
//! datagram is answered by [`super::dns`].

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_agent::socks::Addr;
use node::events::{Event, EventSink};

use super::dns::Resolver;
use super::setup::Sandbox;
use crate::socks_client;

/// How long the edge gets to answer a connection's SOCKS5 request.
const EDGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the relay did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// App connections the edge carried.
    pub connections: u64,
    /// App connections the edge refused (or that failed before it).
    pub refused: u64,
    /// DNS queries answered.
    pub dns_answers: u64,
    /// Connections and datagrams from anyone but the app, dropped.
    pub strangers: u64,
    /// Datagrams to the resolver that were no DNS query, dropped.
    pub dns_dropped: u64,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    refused: AtomicU64,
    dns_answers: AtomicU64,
    strangers: AtomicU64,
    dns_dropped: AtomicU64,
}

/// What every relay thread shares.
struct Shared {
    socks: SocketAddr,
    criteria: Option<String>,
    events: Arc<EventSink>,
    resolver: Mutex<Resolver>,
    counts: Counts,
    /// The app's addresses on the link: whom the relay serves.
    is_app: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

/// A running relay (its threads live as long as the process).
pub struct Relay {
    tcp_port: u16,
    dns_port: u16,
    shared: Arc<Shared>,
}

impl Relay {
    /// Listens on this host's end of the sandbox's link (IPv4 and IPv6,
    /// one port each for TCP and for DNS) and serves in threads.
    pub fn start(
        sandbox: &Sandbox,
        socks: SocketAddr,
        criteria: Option<String>,
        events: Arc<EventSink>,
    ) -> io::Result<Self> {
        let (g4, g6) = (IpAddr::V4(sandbox.gateway_v4()), IpAddr::V6(sandbox.gateway_v6()));
        let tcp4 = TcpListener::bind((g4, 0))?;
        let tcp_port = tcp4.local_addr()?.port();
        let tcp6 = TcpListener::bind((g6, tcp_port))?;
        let dns4 = UdpSocket::bind((g4, 0))?;
        let dns_port = dns4.local_addr()?.port();
        let dns6 = UdpSocket::bind((g6, dns_port))?;
        let (a4, a6) = (sandbox.app_addrs().0, sandbox.app_addrs().1);
        let shared = Arc::new(Shared {
            socks,
            criteria,
            events,
            resolver: Mutex::new(Resolver::default()),
            counts: Counts::default(),
            is_app: Box::new(move |ip| match ip {
                IpAddr::V4(a) => a == a4,
                IpAddr::V6(a) => a == a6 || a.to_ipv4_mapped() == Some(a4),
            }),
        });
        for l in [tcp4, tcp6] {
            let s = shared.clone();
            std::thread::Builder::new().name("pathvm-run-tcp".into()).spawn(move || accept_loop(&l, &s))?;
        }
        for u in [dns4, dns6] {
            let s = shared.clone();
            std::thread::Builder::new().name("pathvm-run-dns".into()).spawn(move || dns_loop(&u, &s))?;
        }
        Ok(Self { tcp_port, dns_port, shared })
    }

    /// Where the app's TCP is steered.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Where the app's DNS is steered.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// What it did so far.
    pub fn counts(&self) -> RelayCounts {
        let c = &self.shared.counts;
        RelayCounts {
            connections: c.connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dns_answers: c.dns_answers.load(Ordering::Relaxed),
            strangers: c.strangers.load(Ordering::Relaxed),
            dns_dropped: c.dns_dropped.load(Ordering::Relaxed),
        }
    }
}

fn accept_loop(l: &TcpListener, shared: &Arc<Shared>) {
    for conn in l.incoming() {
        match conn {
            Ok(c) if !c.peer_addr().is_ok_and(|p| (shared.is_app)(p.ip())) => {
                shared.counts.strangers.fetch_add(1, Ordering::Relaxed);
            }
            Ok(c) => {
                let s = shared.clone();
                let _ = std::thread::Builder::new().name("pathvm-run-conn".into()).spawn(move || carry(c, &s));
            }
            // Out of fds: wait for connections to end.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One app connection: the edge's stream to where the app was going.
fn carry(app: TcpStream, shared: &Shared) {
    let Some(dst) = original_destination(&app) else {
        shared.counts.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let name = shared.resolver.lock().unwrap_or_else(|p| p.into_inner()).name_of(dst.ip()).map(str::to_string);
    let target = match &name {
        Some(n) => Addr::Domain(n, dst.port()),
        None => Addr::Ip(dst),
    };
    let opened = TcpStream::connect_timeout(&shared.socks, EDGE_TIMEOUT)
        .map_err(socks_client::ClientError::from)
        .and_then(|mut s| {
            s.set_read_timeout(Some(EDGE_TIMEOUT))?;
            socks_client::connect(&mut s, target, shared.criteria.as_deref(), &[])?;
            s.set_read_timeout(None)?;
            Ok(s)
        });
    shared.events.emit(&Event::RunConnect {
        destination: dst.to_string(),
        name: name.clone(),
        refused: opened.as_ref().err().map(|e| e.to_string()),
    });
    let edge = match opened {
        Ok(s) => s,
        Err(_) => {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            // A reset, as a refused connect would give the app.
            let _ = socket_linger_zero(&app);
            return;
        }
    };
    shared.counts.connections.fetch_add(1, Ordering::Relaxed);
    let _ = (app.set_nodelay(true), edge.set_nodelay(true));
    let (Ok(app2), Ok(edge2)) = (app.try_clone(), edge.try_clone()) else { return };
    let up = std::thread::Builder::new().name("pathvm-run-up".into()).spawn(move || pipe(app2, edge2));
    pipe(edge, app);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn socket_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: SO_LINGER reads one `linger` from the pointer given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Where the app meant to connect, before nftables steered it here.
fn original_destination(s: &TcpStream) -> Option<SocketAddr> {
    let fd = s.as_raw_fd();
    match s.local_addr().ok()? {
        SocketAddr::V4(_) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: SO_ORIGINAL_DST writes at most `len` bytes of a sockaddr_in.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IP,
                    libc::SO_ORIGINAL_DST,
                    &mut a as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            (rc == 0)
                .then(|| SocketAddr::from((u32::from_be(a.sin_addr.s_addr).to_be_bytes(), u16::from_be(a.sin_port))))
        }
        SocketAddr::V6(_) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: IP6T_SO_ORIGINAL_DST writes at most `len` bytes of a sockaddr_in6.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IPV6,
                    libc::IP6T_SO_ORIGINAL_DST,
                    &mut a as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            (rc == 0).then(|| SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
        }
    }
}

/// Answers the app's DNS datagrams on `u`.
fn dns_loop(u: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = u.recv_from(&mut buf) else { continue };
        if !(shared.is_app)(from.ip()) {
            shared.counts.strangers.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let answered = shared.resolver.lock().unwrap_or_else(|p| p.into_inner()).answer(&buf[..n]);
        let Ok((response, what)) = answered else {
            shared.counts.dns_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if u.send_to(&response, from).is_ok() {
            shared.counts.dns_answers.fetch_add(1, Ordering::Relaxed);
        }
        shared.events.emit(&Event::RunDns { name: what.name, qtype: what.qtype, answer: what.answer });
    }
}
