//! The edge daemon as a library: claim steps (a)-(d) in one place.
//!
//! For each client: accept (the SOCKS5 handshake, [`super::socks`]) →
//! identify the app ([`super::peer`]) → its criteria (sent > manifest >
//! defaults, [`policy::resolve`]) → a protocol ([`policy::select`]) → the
//! destination node (the edge's topology) → a request VM
//! ([`super::request`]) that carries the stream. The SOCKS5 reply is
//! written here, always: for refusals before a VM, and for the VM's own
//! "stream up / refused" report, during the exit that reported it, so it
//! precedes any stream byte. Each step emits an [`Event`].

use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy::{resolve, select, ManifestDir};
use thiserror::Error;

use crate::peer;
use crate::request::{self, RequestSpec, SlotAllocator};
use crate::socks::{self, Reply, Target};
use node::events::{flow_name, micros, Counters, Event, EventSink, ProtocolRow};
use node::{NodeFile, NodeFileError};
use vmm::kvm::{KvmContext, KvmError};
use vmm::loader::{AgentImage, LoaderError};
use vmm::vcpu::{GuestLog, StreamReport};

/// How long a client may take over its SOCKS5 handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an edge needs to start.
pub struct EdgeConfig {
    /// The edge host's node configuration (written by `pathvm topo up`).
    pub config: PathBuf,
    /// The guest image.
    pub image: PathBuf,
    /// The manifest directory.
    pub manifests: PathBuf,
    /// Print the request VMs' own log lines on stderr.
    pub guest_log: bool,
    /// Where events go.
    pub events: EventSink,
}

/// Why the edge could not start.
#[derive(Debug, Error)]
pub enum EdgeError {
    /// Its node configuration.
    #[error(transparent)]
    Config(#[from] NodeFileError),
    /// /dev/kvm.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The guest image.
    #[error(transparent)]
    Image(#[from] LoaderError),
}

/// A running edge: what every request shares.
pub struct Edge {
    guest_log: bool,
    slots: SlotAllocator,
    kvm: KvmContext,
    image: AgentImage,
    file: NodeFile,
    manifests: ManifestDir,
    events: Arc<EventSink>,
}

/// The node a target lives on, and the `host:port` that node connects.
fn destination(file: &NodeFile, target: &Target) -> Option<(u16, String)> {
    let (host, port) = match target {
        Target::Addr(a) => (a.ip().to_string(), a.port()),
        Target::Domain(d, p) => (d.clone(), *p),
    };
    file.host.iter().find_map(|h| {
        if h.name == host {
            Some((h.node, format!("{}:{port}", h.addrs.first()?)))
        } else if h.addrs.contains(&host) {
            Some((h.node, format!("{host}:{port}")))
        } else {
            None
        }
    })
}

fn random_flow() -> u32 {
    u32::from_ne_bytes(vmm::random::bytes()) | 1
}

/// Sends the app its one SOCKS5 reply (once, whoever gets there first)
/// and says so in the events.
struct Replier {
    conn: Option<TcpStream>,
    sent: AtomicBool,
    events: Arc<EventSink>,
    flow: String,
    accepted: Instant,
}

impl Replier {
    fn success(&self) {
        if self.send(Reply::Succeeded) {
            self.events
                .emit(&Event::StreamUp { flow: self.flow.clone(), since_accept_us: micros(self.accepted.elapsed()) });
        }
    }

    fn refuse(&self, code: Reply, reason: String) {
        if self.send(code) {
            self.events.emit(&Event::Refused {
                flow: self.flow.clone(),
                reply: code.code(),
                reply_name: format!("{code:?}"),
                reason,
            });
        }
    }

    fn send(&self, code: Reply) -> bool {
        if self.sent.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(mut c) = self.conn.as_ref().and_then(|c| c.try_clone().ok()) {
            let _ = socks::reply(&mut c, code);
        }
        true
    }
}

impl Edge {
    /// Loads the edge's configuration, opens /dev/kvm and the image.
    pub fn open(cfg: EdgeConfig) -> Result<Self, EdgeError> {
        let file = NodeFile::load(&cfg.config)?;
        file.node_config()?;
        let mut slots_path = cfg.config.clone().into_os_string();
        slots_path.push(".slots");
        Ok(Self {
            guest_log: cfg.guest_log,
            slots: SlotAllocator::open(slots_path.into()),
            kvm: KvmContext::open()?,
            image: AgentImage::open(&cfg.image)?,
            file,
            manifests: ManifestDir::new(&cfg.manifests),
            events: Arc::new(cfg.events),
        })
    }

    /// Serves clients of `listener` until it fails, each on a thread.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        let listen = listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string());
        eprintln!("pathvm edge: SOCKS5 on {listen}");
        self.events.emit(&Event::EdgeUp { listen });
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let edge = self.clone();
            let _ = std::thread::Builder::new().name("pathvm-edge-req".into()).spawn(move || edge.handle(conn));
        }
    }

    /// One client, from its handshake until its request VM ended.
    pub fn handle(&self, mut conn: TcpStream) {
        let accepted = Instant::now();
        // (a)-(b): who is asking, and what for.
        let (peer_addr, local) = (conn.peer_addr().ok(), conn.local_addr().ok());
        let app = match (peer_addr, local) {
            (Some(p), Some(l)) if p.ip() == IpAddr::from([127, 0, 0, 1]) => peer::identify(p, l).ok(),
            _ => None,
        };
        let exe = app.as_ref().map_or_else(|| PathBuf::from("unknown"), |a| a.exe.clone());
        let _ = conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let req = match socks::accept(&mut conn) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("edge: {} ({peer_addr:?}): {e}", exe.display());
                self.events.emit(&Event::HandshakeFailed { app: exe.display().to_string(), error: e.to_string() });
                return;
            }
        };
        let _ = conn.set_read_timeout(None);
        let flow = random_flow();
        let replier = Arc::new(Replier {
            conn: conn.try_clone().ok(),
            sent: AtomicBool::new(false),
            events: self.events.clone(),
            flow: flow_name(flow),
            accepted,
        });
        // (c): criteria.
        let resolved = resolve(req.criteria(), Path::new(&exe), &self.manifests);
        self.events.emit(&Event::RequestAccepted {
            flow: flow_name(flow),
            app: exe.display().to_string(),
            pid: app.as_ref().map(|a| a.pid),
            target: req.target.to_string(),
            criteria: resolved.as_ref().ok().map(|r| r.criteria.to_string()),
            criteria_from: resolved
                .as_ref()
                .map(|r| r.sources.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        });
        let refuse = |code: Reply, why: String| {
            eprintln!("pathvm edge: {} -> {}: refused ({code:?}): {why}", exe.display(), req.target);
            replier.refuse(code, why);
        };
        let criteria = match resolved {
            Ok(r) => r.criteria,
            Err(policy::ResolveError::Sent(e)) => {
                return refuse(Reply::NotAllowed, format!("criteria in the SOCKS username: {e}"))
            }
            Err(e) => return refuse(Reply::NotAllowed, e.to_string()),
        };
        // (d): the protocol.
        let decision = match select(&criteria) {
            Ok(d) => d,
            Err(r) => return refuse(Reply::NotAllowed, r.to_string()),
        };
        self.events.emit(&Event::ProtocolChosen {
            flow: flow_name(flow),
            protocol: decision.chosen.name.into(),
            wire_id: decision.chosen.wire_id,
            summary: decision.summary(),
            rows: decision
                .rows
                .iter()
                .map(|r| ProtocolRow { protocol: r.protocol.name.into(), score: r.score, refused: r.refused.clone() })
                .collect(),
        });
        let Some((dst, target)) = destination(&self.file, &req.target) else {
            return refuse(Reply::HostUnreachable, "not a host of this topology".into());
        };
        let spec = RequestSpec {
            flow,
            dst,
            target,
            protocol: decision.chosen.wire_id,
            slot: self.slots.alloc(),
            avoid: criteria.avoid_nodes.clone(),
        };
        eprintln!(
            "pathvm edge: {} -> {} (node {dst}, flow {:#010x}): {}",
            exe.display(),
            req.target,
            spec.flow,
            decision.summary()
        );
        self.run_request(&spec, conn, replier, accepted);
    }

    /// The request VM: it carries the stream; the reply is written when it
    /// reports (or, if it never does, when it ends).
    fn run_request(&self, spec: &RequestSpec, conn: TcpStream, replier: Arc<Replier>, accepted: Instant) {
        let log = if self.guest_log { GuestLog::Stderr } else { GuestLog::Discard };
        let on_stream = {
            let r = replier.clone();
            move |report| match report {
                StreamReport::Up => r.success(),
                StreamReport::Refused => {
                    r.refuse(Reply::ConnectionRefused, "the destination refused the stream".into())
                }
                // Same reply as before the report existed; the reason tells it apart.
                StreamReport::NoCircuit => r.refuse(
                    Reply::ConnectionRefused,
                    "no onion circuit to the destination avoids the relays the app avoids".into(),
                ),
                StreamReport::Unknown(v) => r.refuse(Reply::GeneralFailure, format!("request VM reported {v}")),
            }
        };
        let spawning = Instant::now();
        let events = self.events.clone();
        let on_up = || {
            events.emit(&Event::VmUp {
                flow: flow_name(spec.flow),
                dst: spec.dst,
                spawn_us: micros(spawning.elapsed()),
            })
        };
        match request::run(&self.kvm, &self.image, &self.file, spec, OwnedFd::from(conn), log, on_stream, on_up) {
            Ok(outcome) => {
                let changes = outcome.guest_stats.map_or(0, |s| s.topology_changes);
                eprintln!(
                    "pathvm edge: flow {:#010x} done in {:.1} ms ({:?}; route changes {changes})",
                    spec.flow,
                    accepted.elapsed().as_secs_f64() * 1e3,
                    outcome.reason
                );
                replier
                    .refuse(Reply::GeneralFailure, format!("request VM ended without an answer: {:?}", outcome.reason));
                self.events.emit(&Event::VmEnded {
                    flow: Some(flow_name(spec.flow)),
                    node: None,
                    exit: format!("{:?}", outcome.reason),
                    elapsed_us: micros(accepted.elapsed()),
                    counters: outcome.guest_stats.as_ref().map(Counters::from),
                });
            }
            Err(e) => {
                eprintln!("pathvm edge: flow {:#010x}: {e}", spec.flow);
                replier.refuse(Reply::GeneralFailure, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> NodeFile {
        toml::from_str(
            r#"
            id = 1
            hop_limit = 8
            mem_mib = 64
            port = []
            link = []
            [[host]]
            name = "c"
            node = 3
            addrs = ["10.231.1.2"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn destinations_by_name_and_by_address_get_the_node_and_its_address() {
        let f = file();
        let by_name = destination(&f, &Target::Domain("c".into(), 80));
        assert_eq!(by_name, Some((3, "10.231.1.2:80".into())));
        let by_addr = destination(&f, &Target::Addr("10.231.1.2:8080".parse().unwrap()));
        assert_eq!(by_addr, Some((3, "10.231.1.2:8080".into())));
        assert_eq!(destination(&f, &Target::Domain("nowhere".into(), 80)), None);
    }

    #[test]
    fn the_reply_is_sent_once_whoever_comes_first() {
        let r = Replier {
            conn: None,
            sent: AtomicBool::new(false),
            events: Arc::new(EventSink::disabled()),
            flow: flow_name(1),
            accepted: Instant::now(),
        };
        assert!(r.send(Reply::Succeeded));
        assert!(!r.send(Reply::GeneralFailure), "a second reply would corrupt the stream");
    }
}
