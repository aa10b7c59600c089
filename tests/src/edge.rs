//! Helpers for tests through the edge: an HTTP service on a host, the
//! edge daemon on A, curl through it.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use guest_agent::socks;

use crate::events::{is, Events};
use crate::{in_netns, serve_in, Daemon, TopoGuard};

/// An HTTP/1.0 server in `ns` answering every request with `body`.
pub fn http_server(ns: &str, body: Vec<u8>) -> u16 {
    http_server_at(ns, "0.0.0.0:0", body)
}

/// [`http_server`] on `bind`.
pub fn http_server_at(ns: &str, bind: &str, body: Vec<u8>) -> u16 {
    crate::serve_at(ns, bind, move |mut c| {
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let _ = c.write_all(head.as_bytes()).and_then(|_| c.write_all(&body));
    })
}

/// A running `pathvm edge` and its events.
pub struct Edge {
    /// The daemon (its stderr is for people reading a failure).
    pub child: Daemon,
    /// Its `--events`.
    pub events: Events,
}

/// Starts `pathvm edge` in A's namespace and waits until it listens.
pub fn start_edge(topo: &TopoGuard) -> Edge {
    start_edge_with(topo, std::path::Path::new("/nonexistent"))
}

/// The same, with a manifest directory.
pub fn start_edge_with(topo: &TopoGuard, manifests: &std::path::Path) -> Edge {
    start_edge_from(edge_command(topo, manifests))
}

/// `pathvm edge` in A's namespace with a manifest directory and the
/// request VMs' log lines, for the caller to adjust before
/// [`start_edge_from`].
pub fn edge_command(topo: &TopoGuard, manifests: &std::path::Path) -> Command {
    let mut c = topo.lab().edge_command("a");
    c.arg("--manifests").arg(manifests).arg("--guest-log");
    c
}

/// line3 with nodes on B and C (their metrics files in `dir`), an echo
/// service on C and the edge on A started with `edge_args`; returns the
/// echo service's address too.
pub fn line3_with_echo(
    dir: &crate::TempDir,
    edge_args: &[&str],
) -> (TopoGuard, Vec<Daemon>, Edge, std::net::SocketAddr) {
    let topo = TopoGuard::up("line3.toml");
    let nodes = vec![topo.start_node("c", 3, &dir.0.join("c.json")), topo.start_node("b", 2, &dir.0.join("b.json"))];
    let port = echo_server(&topo.netns("c"));
    let mut cmd = edge_command(&topo, std::path::Path::new("/nonexistent"));
    cmd.args(edge_args);
    let edge = start_edge_from(cmd);
    (topo, nodes, edge, std::net::SocketAddr::from(([10, 231, 1, 2], port)))
}

/// Starts an [`edge_command`] and waits for its `edge_up` event.
pub fn start_edge_from(cmd: Command) -> Edge {
    let child = Daemon::start("edge on a", cmd, "edge_up", topo::lab::READY_WITHIN).unwrap_or_else(|e| panic!("{e}"));
    let events = child.events().clone();
    Edge { child, events }
}

impl Edge {
    /// What the request VMs that ended left in namespace `ns` (filters on
    /// `link` for their flows): nothing, or a list naming it.
    pub fn leftovers(&self, ns: &str, link: &str) -> Vec<String> {
        let flows: Vec<String> =
            self.events.of("vm_ended").iter().filter_map(|e| e["flow"].as_str().map(String::from)).collect();
        assert!(!flows.is_empty(), "no request VM ended: {}", self.events.dump());
        crate::request_leftovers(ns, link, &flows)
    }

    /// Waits until `n` request VMs have ended; their `vm_ended` events.
    pub fn wait_vms_ended(&self, n: usize) -> Vec<serde_json::Value> {
        self.events.wait_n(n, Duration::from_secs(30), |e| is(e, "vm_ended"))
    }

    /// The event of kind `kind` for `flow`, once it is there.
    pub fn wait_flow(&self, flow: &serde_json::Value, kind: &str) -> serde_json::Value {
        self.events.wait(Duration::from_secs(30), |e| is(e, kind) && e["flow"] == *flow)
    }

    /// The `protocol_chosen` event of the request `app` made to a target
    /// starting with `target`.
    pub fn protocol_of(&self, app: &str, target: &str) -> Option<String> {
        let all = self.events.all();
        let flow = all
            .iter()
            .find(|e| {
                is(e, "request_accepted")
                    && e["app"].as_str().is_some_and(|a| a.contains(app))
                    && e["target"].as_str().is_some_and(|t| t.starts_with(target))
            })?
            .get("flow")?
            .clone();
        let chosen = all.iter().find(|e| is(e, "protocol_chosen") && e["flow"] == flow)?;
        chosen["protocol"].as_str().map(String::from)
    }
}

/// `curl` through the edge from A's namespace; (exit code, body).
pub fn curl(topo: &TopoGuard, url: &str, proxy_user: Option<&str>) -> (Option<i32>, Vec<u8>) {
    curl_as(topo, "curl", url, proxy_user)
}

/// The same with another curl binary (another app, as far as the edge's
/// manifests go).
pub fn curl_as(topo: &TopoGuard, program: &str, url: &str, proxy_user: Option<&str>) -> (Option<i32>, Vec<u8>) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &topo.netns("a"), program, "-s", "--max-time", "60"]);
    c.args(["--socks5-hostname", "127.0.0.1:1080"]);
    if let Some(u) = proxy_user {
        c.args(["--proxy-user", u]);
    }
    let out = c.arg(url).output().unwrap();
    (out.status.code(), out.stdout)
}

/// A service in `ns` that echoes every byte back until its client closes.
pub fn echo_server(ns: &str) -> u16 {
    serve_in(ns, |mut c| {
        let mut b = [0u8; 16 << 10];
        while let Ok(n @ 1..) = c.read(&mut b) {
            if c.write_all(&b[..n]).is_err() {
                return;
            }
        }
    })
}

/// A SOCKS5 CONNECT (no authentication) to `target` through the edge on
/// A, made inside A's namespace: the stream (read timeout 30 s) and the
/// edge's reply.
pub fn socks_connect(topo: &TopoGuard, target: std::net::SocketAddr) -> (std::net::TcpStream, socks::Reply) {
    socks_connect_early(topo, target, &[])
}

/// [`socks_connect`] for an optimistic app: `early` goes out in the same
/// write as the CONNECT request, before the reply.
pub fn socks_connect_early(
    topo: &TopoGuard,
    target: std::net::SocketAddr,
    early: &[u8],
) -> (std::net::TcpStream, socks::Reply) {
    let early = early.to_vec();
    in_netns(&topo.netns("a"), move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:1080").expect("the edge listens");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; socks::MAX_REQUEST_LEN];
        let n = socks::Greeting { methods: &[socks::Method::None.code()] }.encode(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut m = [0u8; socks::MethodChoice::LEN];
        s.read_exact(&mut m).expect("a method choice");
        let n = socks::Request::connect(socks::Addr::Ip(target)).encode(&mut buf).unwrap();
        s.write_all(&[&buf[..n], &early[..]].concat()).unwrap();
        let mut rep = [0u8; socks::ReplyMsg::LEN_V4];
        s.read_exact(&mut rep).expect("a SOCKS5 reply");
        let Ok(socks::Decoded::Ready(rep, _)) = socks::ReplyMsg::decode(&rep) else { panic!("not a reply: {rep:?}") };
        (s, rep.reply)
    })
}

/// Sends `data` on `s` and reads as many bytes back.
pub fn echo_round(s: &mut std::net::TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).expect("write to the stream");
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).expect("the echo");
    back
}

/// A SOCKS5 request of `command` (RESOLVE 0xF0, RESOLVE_PTR 0xF1) for
/// `target` through the edge on A, with `user` as RFC 1929 username (the
/// criteria): the reply and its bound address as text.
pub fn socks_lookup(topo: &TopoGuard, command: u8, target: String, user: Option<&str>) -> (socks::Reply, String) {
    let user = user.map(str::to_string);
    in_netns(&topo.netns("a"), move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:1080").expect("the edge listens");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; socks::MAX_REQUEST_LEN];
        let method = if user.is_some() { socks::Method::UserPass } else { socks::Method::None };
        let n = socks::Greeting { methods: &[method.code()] }.encode(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut m = [0u8; socks::MethodChoice::LEN];
        s.read_exact(&mut m).expect("a method choice");
        if let Some(u) = &user {
            let n = socks::UserPass { username: u.as_bytes(), password: b"x" }.encode(&mut buf).unwrap();
            s.write_all(&buf[..n]).unwrap();
            let mut st = [0u8; socks::AuthStatus::LEN];
            s.read_exact(&mut st).expect("an auth status");
        }
        let addr = match target.parse::<std::net::IpAddr>() {
            Ok(ip) => socks::Addr::Ip((ip, 0).into()),
            Err(_) => socks::Addr::Domain(&target, 0),
        };
        let n = socks::Request { command, target: addr }.encode(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut rep = Vec::new();
        let _ = s.read_to_end(&mut rep);
        match socks::ReplyMsg::decode(&rep) {
            Ok(socks::Decoded::Ready(r, _)) => {
                let bound = match r.bound {
                    socks::Addr::Ip(a) => a.ip().to_string(),
                    socks::Addr::Domain(d, _) => d.to_string(),
                };
                (r.reply, bound)
            }
            other => panic!("not a SOCKS5 reply: {rep:?} ({other:?})"),
        }
    })
}
