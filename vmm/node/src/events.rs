//! Structured events of the daemons: one JSON object a line, for tests,
//! benchmarks and operators to read instead of log text.
//!
//! `pathvm edge --events FILE|-` and `pathvm node --events FILE|-` write
//! them; every object has an `event` field naming its kind. Log lines on
//! stderr stay for people; these are the contract for programs.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use guest_agent::node::NodeStats;
use serde::Serialize;

/// A duration as the events' `*_us` fields carry it (saturating).
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A request VM's or node VM's counters (its stats page) at the end.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded to a next node.
    pub forwarded: u64,
    /// Packets delivered to this VM's host (or app).
    pub delivered: u64,
    /// Packets originated.
    pub originated: u64,
    /// Times the topology routing runs on changed (the request VM
    /// rerouting around a dead relay counts here).
    pub route_changes: u64,
    /// Onion circuits relayed, ended or built.
    pub circuits: u64,
    /// Link probes sent.
    pub probes_sent: u64,
    /// Packets dropped because a transmit ring stayed full.
    pub tx_full: u64,
    /// Drops by reason (`guest_agent::router::DROP_NAMES`), those that
    /// happened only.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes a request VM took from its app.
    pub app_bytes_in: u64,
    /// Bytes a request VM gave its app.
    pub app_bytes_out: u64,
}

impl From<&NodeStats> for Counters {
    fn from(s: &NodeStats) -> Self {
        Self {
            forwarded: s.forwarded,
            delivered: s.delivered,
            originated: s.originated,
            route_changes: s.topology_changes,
            circuits: s.circuits,
            probes_sent: s.probes_sent,
            tx_full: s.tx_full,
            drops: guest_agent::router::DROP_NAMES
                .iter()
                .zip(s.drops.values())
                .filter(|(_, n)| *n > 0)
                .map(|(&name, n)| (name, n))
                .collect(),
            app_bytes_in: s.app_bytes_in,
            app_bytes_out: s.app_bytes_out,
        }
    }
}

/// Where one connect's time went, µs per step, in order: the edge's steps
/// measured on the host, the request VM's read from its stats page when it
/// reported. A step not reached is 0. `since_accept_us` minus their sum is
/// what no step names (thread hand-offs, the report's own exit).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ConnectStages {
    /// Accept to the app identified (the client socket's holder found
    /// through sock_diag and `/proc`).
    pub identify_us: u64,
    /// Then the SOCKS5 handshake, to the request read.
    pub socks_us: u64,
    /// Criteria resolved, protocol chosen, a slot taken.
    pub decide_us: u64,
    /// The request VM built (from a prepared shell when one was ready).
    pub build_us: u64,
    /// Getting its ports (taps up, joined to the links by tc filters):
    /// next to nothing when the edge had a set prepared, the netlink
    /// round trips when it had to make one.
    pub steer_us: u64,
    /// vCPU start to the agent's ready signal (the guest's boot).
    pub boot_us: u64,
    /// Of `boot_us`, the agent's entry to its router's start (its request
    /// decoded, its links brought up): the opening goes out then, and the
    /// console comes up behind it.
    pub agent_start_us: u64,
    /// Agent start to the stream's keys: link state pulled from the
    /// neighbours, signatures checked, the end-to-end key agreed.
    pub keys_us: u64,
    /// Keys to the stream's answer: the opening across every hop, the
    /// destination's host connecting the service, the answer back.
    pub open_us: u64,
    /// Agent start to its first link-state request sent (part of
    /// `keys_us`: the rest is the answer's round trip and its checks).
    pub lsa_asked_us: u64,
    /// Link-state requests the VM sent before it had keys.
    pub lsa_requests: u64,
    /// Advertisements the edge handed the VM at boot (from the floods on
    /// its links): with them it needs no request before its keys.
    pub lsas_given: u64,
    /// App bytes that rode behind the opening, before its answer
    /// (optimistic data: the app sent them before its SOCKS reply).
    pub early_bytes: u64,
}

/// One protocol's line of a selection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProtocolRow {
    /// The protocol.
    pub protocol: String,
    /// Its score against the criteria.
    pub score: i32,
    /// Why it cannot be used, if it cannot.
    pub refused: Option<String>,
}

/// Something a daemon did that a program may want to know.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The edge listens for SOCKS5 clients.
    EdgeUp {
        /// Where.
        listen: String,
    },
    /// The edge could not accept a client: out of descriptors or memory.
    /// It retries after a pause (doubling, up to a second) instead of
    /// spinning.
    AcceptFailed {
        /// The error.
        error: String,
        /// The pause before the next try, ms.
        retry_in_ms: u64,
    },
    /// A client's SOCKS5 handshake failed (garbage, truncation); no reply
    /// code applies or it was sent by the handshake itself.
    HandshakeFailed {
        /// The client's executable, or `unknown`.
        app: String,
        /// What was wrong.
        error: String,
    },
    /// A CONNECT request was read and the app identified (claim steps
    /// (a)-(b)); its criteria resolved if they could be (step (c)).
    RequestAccepted {
        /// The flow id the request gets (names it in later events).
        flow: String,
        /// The app's executable, or `unknown`.
        app: String,
        /// Its process id, if identified.
        pid: Option<u32>,
        /// Where it asked to go (`host:port`).
        target: String,
        /// The criteria in force (`(none)` when nothing asked for any).
        criteria: Option<String>,
        /// Where they came from, most specific first.
        criteria_from: Vec<String>,
    },
    /// A routing protocol was chosen for a request (step (d)).
    ProtocolChosen {
        /// The request.
        flow: String,
        /// The protocol's name.
        protocol: String,
        /// Its wire id.
        wire_id: u8,
        /// One line: the choice and why.
        summary: String,
        /// Every protocol, scored or refused.
        rows: Vec<ProtocolRow>,
    },
    /// `pathvm run` made the app's sandbox (transparent mode).
    RunUp {
        /// The app's network namespace.
        netns: String,
        /// This host's IPv4 address on the sandbox's link.
        gateway_v4: String,
        /// Its IPv6 address there.
        gateway_v6: String,
        /// Where the app's TCP is steered on it.
        tcp_port: u16,
        /// Where the app's DNS is steered on it.
        dns_port: u16,
    },
    /// An app connection under `pathvm run` was handed to the edge.
    RunConnect {
        /// Where the app connected.
        destination: String,
        /// The name behind it, when the address was a virtual one.
        name: Option<String>,
        /// Why the edge gave no stream, if it did not.
        refused: Option<String>,
    },
    /// A DNS query from an app under `pathvm run` was answered.
    RunDns {
        /// The name asked for, if the question parsed.
        name: Option<String>,
        /// Its type (1 A, 28 AAAA, 12 PTR, ...).
        qtype: u16,
        /// The address or name given, if any.
        answer: Option<String>,
    },
    /// The app under `pathvm run` ended.
    RunEnded {
        /// Its exit status (128+N for signal N).
        status: i32,
        /// Connections the edge carried.
        connections: u64,
        /// Connections the edge refused.
        refused_connections: u64,
        /// DNS queries answered.
        dns_answers: u64,
        /// Packets the sandbox refused (UDP but DNS, ICMP, forwarding).
        refused_packets: u64,
        /// Connections and datagrams to the relay from anyone but the app,
        /// dropped.
        strangers: u64,
        /// Datagrams to the resolver that were no DNS query, dropped.
        dns_dropped: u64,
    },
    /// A lookup (SOCKS RESOLVE / RESOLVE_PTR) was answered.
    Answered {
        /// The request.
        flow: String,
        /// The address (RESOLVE) or name (RESOLVE_PTR) the app got.
        answer: String,
        /// From accept to the reply, µs.
        since_accept_us: u64,
    },
    /// A destination outside the overlay goes to this exit (step (e vi):
    /// the exit's VM takes the packets, its host connects the target).
    ExitChosen {
        /// The request.
        flow: String,
        /// The exit's node id.
        exit: u16,
        /// What the exit connects (a name travels unresolved).
        target: String,
        /// One line: why this exit.
        why: String,
        /// Every exit and what it said.
        rows: Vec<String>,
    },
    /// The request VM is built and steered, about to run.
    VmUp {
        /// The request.
        flow: String,
        /// The destination node.
        dst: u16,
        /// Time to build and steer it, µs.
        spawn_us: u64,
        /// Its taps carried an earlier request (re-steered, not made).
        ports_reused: bool,
    },
    /// The app got success: its stream to the service is up.
    StreamUp {
        /// The request.
        flow: String,
        /// From accept to the reply, µs.
        since_accept_us: u64,
        /// Where that time went, step by step.
        stages: ConnectStages,
    },
    /// The app got a refusal, from the edge (policy, unknown destination,
    /// a VM that failed) or from the destination (service down).
    Refused {
        /// The request.
        flow: String,
        /// The SOCKS5 reply code sent.
        reply: u8,
        /// Its name (`NotAllowed`, `HostUnreachable`, ...).
        reply_name: String,
        /// Why.
        reason: String,
    },
    /// A node's routing topology changed (a link went down or up, a
    /// measured metric moved, another node's link state arrived): the
    /// count so far, as the agent keeps it.
    RoutesChanged {
        /// The node.
        node: u16,
        /// Topology changes since the node VM started.
        topology_changes: u64,
    },
    /// A node VM is serving.
    NodeUp {
        /// Its node id.
        node: u16,
        /// Its link ports.
        ports: usize,
        /// From start to the agent's ready signal, µs.
        boot_us: u64,
        /// Ports left out: neighbours without a valid certificate.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        refused_ports: Vec<String>,
    },
    /// The node's identity files changed (a revocation list, a member):
    /// it stops its VM and starts again from its configuration.
    IdentityChanged {
        /// Its node id.
        node: u16,
    },
    /// An edge took a member's certificate from the link state flooded
    /// on its links: apps may name that host now.
    MemberLearned {
        /// The member's node id.
        node: u16,
        /// Its host name.
        name: String,
        /// Its addresses.
        addrs: Vec<String>,
    },
    /// A destination node connected (or failed to connect) the service a
    /// stream's opener named: the service's own part of a connect.
    ServiceConnect {
        /// The stream.
        flow: String,
        /// The TCP connect to the service, µs.
        connect_us: u64,
        /// Why it failed, if it did.
        refused: Option<String>,
    },
    /// An exit answered (or could not answer) a name lookup a stream asked
    /// for ([`crate::lookup`]); the name is not logged.
    Lookup {
        /// The stream.
        flow: String,
        /// The lookup by this host's resolver, µs.
        lookup_us: u64,
        /// Why it failed, if it did.
        failed: Option<String>,
    },
    /// A VM ended: a request VM (with `flow`) or a node VM (with `node`).
    VmEnded {
        /// The request, for a request VM.
        flow: Option<String>,
        /// The node, for a node VM.
        node: Option<u16>,
        /// How it ended (`Exited(0)`, `Stopped`, `Crashed(...)`).
        exit: String,
        /// How long the request or node ran, µs.
        elapsed_us: u64,
        /// Its counters, if its agent kept them.
        counters: Option<Counters>,
    },
}

/// How flows are written in events: the same form as in log lines.
pub fn flow_name(flow: u32) -> String {
    format!("{flow:#010x}")
}

/// Where events go: nowhere (not asked for), a file, or stdout. Each event
/// is written and flushed as one line under a lock, so concurrent request
/// threads never interleave.
pub struct EventSink {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    metrics: Option<std::sync::Arc<crate::metrics::EventMetrics>>,
}

impl EventSink {
    /// Events are not wanted.
    pub fn disabled() -> Self {
        Self { out: None, metrics: None }
    }

    /// The same sink, every event also counted in `metrics`.
    pub fn with_metrics(self, metrics: std::sync::Arc<crate::metrics::EventMetrics>) -> Self {
        Self { metrics: Some(metrics), ..self }
    }

    /// `-` for stdout, else a file (created or truncated).
    pub fn open(target: &Path) -> io::Result<Self> {
        let out: Box<dyn Write + Send> =
            if target == Path::new("-") { Box::new(io::stdout()) } else { Box::new(File::create(target)?) };
        Ok(Self { out: Some(Mutex::new(out)), metrics: None })
    }

    /// `target` (a file) appended to: for a daemon that starts again in
    /// the same process (a node whose identity changed).
    pub fn open_append(target: &Path) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(target)?;
        Ok(Self { out: Some(Mutex::new(Box::new(f))), metrics: None })
    }

    /// Writes `event` as one line (best effort: a full disk must not take
    /// the daemon down), stamped `mono_us` ([`monotonic_us`]).
    pub fn emit(&self, event: &Event) {
        if let Some(m) = &self.metrics {
            m.observe(event);
        }
        let Some(out) = &self.out else { return };
        let Ok(mut line) = serde_json::to_vec(event) else { return };
        // Every event is an object: its stamp goes in before the brace.
        if line.pop() != Some(b'}') {
            return;
        }
        line.extend_from_slice(format!(",\"mono_us\":{}}}\n", monotonic_us()).as_bytes());
        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.write_all(&line).and_then(|_| w.flush());
    }

    /// Whether events are written at all.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }
}

/// Now on the kernel's monotonic clock, µs: one clock for every daemon
/// on a machine (network namespaces share it), so a benchmark can put the
/// events of an edge and of a destination node on one time line.
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_snake_case_objects() {
        let e = Event::Refused {
            flow: flow_name(0x12),
            reply: 4,
            reply_name: "HostUnreachable".into(),
            reason: "x".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "refused");
        assert_eq!(v["flow"], "0x00000012");
        assert_eq!(v["reply"], 4);
    }

    #[test]
    fn a_file_sink_writes_one_line_per_event() {
        let path = std::env::temp_dir().join(format!("pathvm-events-{}.jsonl", std::process::id()));
        let sink = EventSink::open(&path).unwrap();
        sink.emit(&Event::EdgeUp { listen: "127.0.0.1:1080".into() });
        sink.emit(&Event::StreamUp { flow: flow_name(1), since_accept_us: 5, stages: ConnectStages::default() });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "stream_up");
        let (a, b) = (lines[0]["mono_us"].as_u64().unwrap(), lines[1]["mono_us"].as_u64().unwrap());
        assert!(a > 0 && a <= b && b <= monotonic_us(), "stamped in order on the monotonic clock: {a} {b}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_disabled_sink_writes_nothing() {
        let s = EventSink::disabled();
        assert!(!s.enabled());
        s.emit(&Event::EdgeUp { listen: String::new() });
    }
}
