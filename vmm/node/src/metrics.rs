//! Prometheus metrics over HTTP (`--metrics-listen ADDR`, loopback only):
//! what an operator's scraper reads instead of stderr or the events file.
//!
//! Two sources feed one page in the text exposition format (0.0.4):
//! [`EventMetrics`] counts what the daemon's events say as they are
//! emitted (requests by protocol and outcome, spawn and connect times,
//! bytes, drops, exits, service connects), and a [`Live`] part read on
//! every scrape: an edge's VMs running, a node's VM stats page (per-link
//! liveness, latency and loss, forwarding counters, drops by reason). The HTTP side
//! is a few lines on purpose: one GET path, bounded request reads with a
//! deadline, `Connection: close`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_agent::node::NodeStats;

use crate::events::Event;

/// A scrape's text being written: each family's `# HELP` and `# TYPE`
/// once, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Exposition {
    /// Starts family `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A histogram of durations, bucket bounds in seconds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe_us(&self, us: u64) {
        let s = us as f64 / 1e6;
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, e: &mut Exposition, name: &str, help: &str) {
        e.family(name, Kind::Histogram, help);
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            e.sample(&format!("{name}_bucket"), &[("le", &b.to_string())], cumulative as f64);
        }
        let count = self.count.load(Ordering::Relaxed);
        e.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count as f64);
        e.sample(&format!("{name}_sum"), &[], self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        e.sample(&format!("{name}_count"), &[], count as f64);
    }
}

const SPAWN_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];
const CONNECT_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];
/// Requests whose protocol is remembered until they end, at most (a
/// flood of requests that never end cannot grow it further; theirs are
/// then counted as protocol `unknown`).
const MAX_IN_FLIGHT: usize = 65_536;

/// Labelled counters: label values → count.
type Family = Mutex<BTreeMap<Vec<String>, u64>>;

fn bump(f: &Family, labels: Vec<String>, by: u64) {
    *f.lock().unwrap_or_else(|p| p.into_inner()).entry(labels).or_default() += by;
}

/// What the daemon's events say, counted as they are emitted.
#[derive(Debug)]
pub struct EventMetrics {
    protocol_of: Mutex<HashMap<String, String>>,
    requests: Family,
    spawn: Histogram,
    connect: Histogram,
    app_bytes: Family,
    request_drops: Family,
    exits: Family,
    service_connects: Family,
    lookups: Family,
    request_taps: Family,
    handshakes_failed: AtomicU64,
}

impl Default for EventMetrics {
    fn default() -> Self {
        Self {
            protocol_of: Mutex::default(),
            requests: Family::default(),
            spawn: Histogram::new(SPAWN_BUCKETS),
            connect: Histogram::new(CONNECT_BUCKETS),
            app_bytes: Family::default(),
            request_drops: Family::default(),
            exits: Family::default(),
            service_connects: Family::default(),
            lookups: Family::default(),
            request_taps: Family::default(),
            handshakes_failed: AtomicU64::new(0),
        }
    }
}

impl EventMetrics {
    fn protocol(&self, flow: &str, forget: bool) -> String {
        let mut m = self.protocol_of.lock().unwrap_or_else(|p| p.into_inner());
        let p = if forget { m.remove(flow) } else { m.get(flow).cloned() };
        p.unwrap_or_else(|| "none".into())
    }

    /// Counts `event`.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::ProtocolChosen { flow, protocol, .. } => {
                let mut m = self.protocol_of.lock().unwrap_or_else(|p| p.into_inner());
                if m.len() < MAX_IN_FLIGHT {
                    m.insert(flow.clone(), protocol.clone());
                }
            }
            Event::StreamUp { flow, since_accept_us, .. } => {
                bump(&self.requests, vec![self.protocol(flow, false), "up".into()], 1);
                self.connect.observe_us(*since_accept_us);
            }
            Event::Answered { flow, .. } => {
                bump(&self.requests, vec![self.protocol(flow, false), "answered".into()], 1)
            }
            Event::Refused { flow, reply_name, .. } => {
                bump(&self.requests, vec![self.protocol(flow, false), reply_name.to_lowercase()], 1)
            }
            Event::VmUp { spawn_us, ports_reused, .. } => {
                self.spawn.observe_us(*spawn_us);
                bump(&self.request_taps, vec![if *ports_reused { "reused" } else { "new" }.into()], 1)
            }
            Event::VmEnded { flow: Some(flow), counters, .. } => {
                self.protocol(flow, true);
                if let Some(c) = counters {
                    bump(&self.app_bytes, vec!["from_app".into()], c.app_bytes_in);
                    bump(&self.app_bytes, vec!["to_app".into()], c.app_bytes_out);
                    for (reason, n) in &c.drops {
                        bump(&self.request_drops, vec![reason.to_string()], *n);
                    }
                }
            }
            Event::ExitChosen { exit, .. } => bump(&self.exits, vec![exit.to_string()], 1),
            Event::ServiceConnect { refused, .. } => {
                bump(&self.service_connects, vec![if refused.is_some() { "refused" } else { "ok" }.into()], 1)
            }
            Event::Lookup { failed, .. } => {
                bump(&self.lookups, vec![if failed.is_some() { "failed" } else { "ok" }.into()], 1)
            }
            Event::HandshakeFailed { .. } => {
                self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Writes every family.
    pub fn write(&self, e: &mut Exposition) {
        let family = |e: &mut Exposition, name: &str, help: &str, keys: &[&str], f: &Family| {
            e.family(name, Kind::Counter, help);
            for (labels, n) in f.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let l: Vec<(&str, &str)> = keys.iter().copied().zip(labels.iter().map(String::as_str)).collect();
                e.sample(name, &l, *n as f64);
            }
        };
        family(
            e,
            "pathvm_requests_total",
            "Requests by routing protocol and outcome (up, answered, or the SOCKS reply refusing them).",
            &["protocol", "outcome"],
            &self.requests,
        );
        self.spawn.write(e, "pathvm_spawn_seconds", "Request VM build to running, from a prepared shell when ready.");
        self.connect.write(e, "pathvm_connect_seconds", "Client accept to the stream up (the SOCKS reply).");
        family(
            e,
            "pathvm_app_bytes_total",
            "Bytes request VMs carried, by direction.",
            &["direction"],
            &self.app_bytes,
        );
        family(
            e,
            "pathvm_request_drops_total",
            "Packets request VMs dropped, by reason.",
            &["reason"],
            &self.request_drops,
        );
        family(e, "pathvm_exit_requests_total", "Requests sent to each exit.", &["exit"], &self.exits);
        family(
            e,
            "pathvm_service_connects_total",
            "Services this node connected for streams ending here.",
            &["outcome"],
            &self.service_connects,
        );
        family(e, "pathvm_lookups_total", "Name lookups this exit answered.", &["outcome"], &self.lookups);
        family(
            e,
            "pathvm_request_taps_total",
            "Request VMs by where their taps came from: made for them, or an earlier request's re-steered.",
            &["taps"],
            &self.request_taps,
        );
        e.family("pathvm_handshakes_failed_total", Kind::Counter, "SOCKS5 handshakes that failed.");
        e.sample("pathvm_handshakes_failed_total", &[], self.handshakes_failed.load(Ordering::Relaxed) as f64);
    }
}

/// A node VM's counters and links, as read from its stats page now.
pub fn write_node_stats(e: &mut Exposition, s: &NodeStats) {
    for (name, help, v) in [
        ("pathvm_node_forwarded_total", "Packets forwarded to a next node.", s.forwarded),
        ("pathvm_node_delivered_total", "Packets delivered to this host.", s.delivered),
        ("pathvm_node_originated_total", "Packets originated from this host's records.", s.originated),
        ("pathvm_node_lsas_accepted_total", "Link-state advertisements taken in.", s.lsas_accepted),
        ("pathvm_node_topology_changes_total", "Times the topology routing runs on changed.", s.topology_changes),
        ("pathvm_node_circuits_total", "Onion circuits relayed or ended here.", s.circuits),
        ("pathvm_node_flows_expired_total", "Streams ending here reset for silence.", s.flows_expired),
        ("pathvm_node_hellos_sent_total", "Certificate hellos sent on links not heard.", s.hellos_sent),
        ("pathvm_node_links_keyed_total", "Links keyed from a neighbour's certificate hello.", s.links_keyed),
    ] {
        e.family(name, Kind::Counter, help);
        e.sample(name, &[], v as f64);
    }
    e.family("pathvm_node_members_learned", Kind::Gauge, "Members known from certificates in their link state.");
    e.sample("pathvm_node_members_learned", &[], s.members_learned as f64);
    e.family("pathvm_node_flows_open", Kind::Gauge, "Streams ending here now.");
    e.sample("pathvm_node_flows_open", &[], s.flows_open as f64);
    e.family("pathvm_node_drops_total", Kind::Counter, "Packets the node VM dropped, by reason.");
    for (reason, n) in guest_agent::router::DROP_NAMES.iter().zip(s.drops.values()) {
        e.sample("pathvm_node_drops_total", &[("reason", reason)], n as f64);
    }
    e.family("pathvm_topology_links", Kind::Gauge, "Links of the topology this node routes on now.");
    e.sample("pathvm_topology_links", &[], s.topology_links as f64);
    let topo = &s.topology.0[..(s.topology_links as usize).min(s.topology.0.len())];
    e.family("pathvm_topology_link_latency_seconds", Kind::Gauge, "One-way latency routing uses per link.");
    for l in topo {
        let (a, b) = (l.a.to_string(), l.b.to_string());
        e.sample("pathvm_topology_link_latency_seconds", &[("a", &a), ("b", &b)], l.latency_us as f64 / 1e6);
    }
    e.family("pathvm_topology_link_bandwidth_mbps", Kind::Gauge, "Capacity routing uses per link, Mbit/s.");
    for l in topo {
        let (a, b) = (l.a.to_string(), l.b.to_string());
        e.sample("pathvm_topology_link_bandwidth_mbps", &[("a", &a), ("b", &b)], l.bandwidth_mbps as f64);
    }
    let links: Vec<_> = s.links.iter().filter(|l| l.peer != 0).collect();
    e.family("pathvm_link_up", Kind::Gauge, "1 if the neighbour answers probes, 0 if not (or never did).");
    for l in &links {
        e.sample("pathvm_link_up", &[("peer", &l.peer.to_string())], f64::from(u8::from(l.status == 1)));
    }
    e.family("pathvm_link_latency_seconds", Kind::Gauge, "One-way latency measured by probes (0: not yet).");
    for l in &links {
        e.sample("pathvm_link_latency_seconds", &[("peer", &l.peer.to_string())], l.latency_us as f64 / 1e6);
    }
    e.family("pathvm_link_loss_ratio", Kind::Gauge, "Share of recent probes lost.");
    for l in &links {
        e.sample("pathvm_link_loss_ratio", &[("peer", &l.peer.to_string())], l.loss_permille as f64 / 1000.0);
    }
}

/// Metrics to serve and where: what `--metrics-listen` asks of a daemon.
pub type Served = (Arc<EventMetrics>, SocketAddr);

/// The samples of a page in the text format: (name, labels, value);
/// comments, blank and malformed lines are skipped.
pub fn parse(page: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match key.split_once('{') {
            None => (key, BTreeMap::new()),
            Some((name, rest)) => {
                let Some(body) = rest.strip_suffix('}') else { continue };
                (name, parse_labels(body))
            }
        };
        out.push((name.to_string(), labels, value));
    }
    out
}

/// `k="v",k2="v2"` with the format's escapes.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => break,
                },
                o => value.push(o),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// A metrics page over HTTP (`http://HOST:PORT/PATH`): how `pathvm
/// paths` and `pathvm status` read the daemons.
pub fn fetch(url: &str) -> io::Result<String> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{url:?}: write http://HOST:PORT/metrics"));
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (hostport, path) = rest.split_once('/').map_or((rest, "metrics"), |(h, p)| (h, p));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)?.next().ok_or_else(bad)?;
    let mut c = TcpStream::connect_timeout(&addr, REQUEST_DEADLINE)?;
    c.set_read_timeout(Some(REQUEST_DEADLINE * 5))?;
    c.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut reply = Vec::new();
    c.take(64 << 20).read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| io::Error::other(format!("{url}: not HTTP")))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(io::Error::other(format!("{url}: {}", head.lines().next().unwrap_or(""))));
    }
    Ok(body.to_string())
}

/// What a scrape adds beyond the event counts (a node's live stats).
pub type Live = Box<dyn Fn(&mut Exposition) + Send + Sync>;

/// Longest a scraper may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest request read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` on a thread of its own; returns the
/// address it listens on.
pub fn serve(addr: SocketAddr, metrics: Arc<EventMetrics>, live: Option<Live>) -> io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    std::thread::Builder::new().name("pathvm-metrics".into()).spawn(move || {
        for conn in l.incoming() {
            match conn {
                Ok(c) => {
                    let _ = answer(c, &metrics, live.as_ref());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })?;
    Ok(bound)
}

/// Answers one scrape (one request, then close).
fn answer(mut c: TcpStream, metrics: &EventMetrics, live: Option<&Live>) -> io::Result<()> {
    c.set_read_timeout(Some(REQUEST_DEADLINE))?;
    c.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        match c.read(&mut buf)? {
            0 => break,
            n => req.extend_from_slice(&buf[..n]),
        }
    }
    let line = req.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let (status, kind, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            let mut e = Exposition::default();
            metrics.write(&mut e);
            if let Some(f) = live {
                f(&mut e);
            }
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", e.finish())
        }
        (b"GET", _) => ("404 Not Found", "text/plain", "pathvm serves /metrics only\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Counters;

    #[test]
    fn events_become_counts_by_protocol_and_outcome() {
        let m = EventMetrics::default();
        let f = |s: &str| s.to_string();
        m.observe(&Event::ProtocolChosen {
            flow: f("0x1"),
            protocol: f("onion"),
            wire_id: 5,
            summary: f(""),
            rows: vec![],
        });
        m.observe(&Event::VmUp { flow: f("0x1"), dst: 3, spawn_us: 400, ports_reused: true });
        m.observe(&Event::StreamUp { flow: f("0x1"), since_accept_us: 7_000, stages: Default::default() });
        m.observe(&Event::Refused { flow: f("0x2"), reply: 2, reply_name: f("NotAllowed"), reason: f("") });
        let mut counters = Counters::from(&NodeStats::default());
        counters.app_bytes_in = 10;
        counters.app_bytes_out = 20;
        m.observe(&Event::VmEnded {
            flow: Some(f("0x1")),
            node: None,
            exit: f(""),
            elapsed_us: 1,
            counters: Some(counters),
        });
        let mut e = Exposition::default();
        m.write(&mut e);
        let page = e.finish();
        for line in [
            "pathvm_requests_total{protocol=\"onion\",outcome=\"up\"} 1",
            "pathvm_requests_total{protocol=\"none\",outcome=\"notallowed\"} 1",
            "pathvm_spawn_seconds_bucket{le=\"0.0005\"} 1",
            "pathvm_connect_seconds_bucket{le=\"0.005\"} 0",
            "pathvm_connect_seconds_bucket{le=\"0.01\"} 1",
            "pathvm_connect_seconds_count 1",
            "pathvm_app_bytes_total{direction=\"to_app\"} 20",
            "pathvm_request_taps_total{taps=\"reused\"} 1",
            "# TYPE pathvm_connect_seconds histogram",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
        assert!(m.protocol_of.lock().unwrap().is_empty(), "an ended request is forgotten");
    }

    #[test]
    fn a_scrape_gets_the_page_and_anything_else_an_error() {
        let m = Arc::new(EventMetrics::default());
        let live: Live = Box::new(|e: &mut Exposition| {
            let mut s = NodeStats { forwarded: 3, ..Default::default() };
            s.links[0] = guest_agent::node::LinkStats { peer: 2, status: 1, latency_us: 100, loss_permille: 250 };
            write_node_stats(e, &s);
        });
        let addr = serve("127.0.0.1:0".parse().unwrap(), m, Some(live)).unwrap();
        let get = |req: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let page = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("version=0.0.4"), "{page}");
        for line in
            ["pathvm_node_forwarded_total 3", "pathvm_link_up{peer=\"2\"} 1", "pathvm_link_loss_ratio{peer=\"2\"} 0.25"]
        {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }

    #[test]
    fn label_values_are_escaped_and_read_back() {
        let mut e = Exposition::default();
        e.sample("m", &[("a", "x\"y\\z\n"), ("b", "2")], 1.5);
        let page = e.finish();
        assert_eq!(page, "m{a=\"x\\\"y\\\\z\\n\",b=\"2\"} 1.5\n");
        let parsed = parse(&format!("# HELP m x\n{page}n 3\nbroken\n"));
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].1["a"].as_str(), parsed[0].1["b"].as_str(), parsed[0].2), ("x\"y\\z\n", "2", 1.5));
        assert_eq!((parsed[1].0.as_str(), parsed[1].2), ("n", 3.0));
    }
}
