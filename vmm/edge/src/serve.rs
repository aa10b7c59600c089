//! The edge daemon as a library: claim steps (a)-(d) in one place.
//!
//! For each client: accept (the SOCKS5 handshake, [`super::socks`]) →
//! identify the app ([`super::peer`]) → its criteria (sent > manifest >
//! defaults, [`policy::resolve`]) → a protocol ([`policy::select`]) → the
//! destination node (a host of the edge's topology, or an exit chosen by
//! [`super::exit`]) → a request VM
//! ([`super::request`]) that carries the stream. The SOCKS5 reply is
//! written here, always: for refusals before a VM, and for the VM's own
//! "stream up / refused" report, during the exit that reported it, so it
//! precedes any stream byte. Each step emits an [`Event`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy::{resolve, select, ManifestDir};
use thiserror::Error;

use crate::exit::{self, NoPlace, Place};
use crate::peer;
use crate::ports::{self, PortPool, PreparedPorts};
use crate::request::{self, RequestSpec, SlotAllocator};
use crate::socks::{self, Command, Reply, Target};
use guest_agent::routing::member::{Authority, MemberCert};
use node::events::{flow_name, micros, ConnectStages, Counters, Event, EventSink, ProtocolRow};
use node::lookup::{self, Query};
use node::{NodeFile, NodeFileError};
use vmm::kvm::{KvmContext, KvmError};
use vmm::loader::{AgentImage, LoaderError};
use vmm::pool::ShellPool;
use vmm::vcpu::{GuestLog, StreamReport};

/// What one edge holds at most, and how long a client may take.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Request VMs running at once; a request beyond gets SOCKS5 reply 1
    /// at once (default: [`vmm::limits::default_max_vms`]).
    pub max_vms: usize,
    /// Clients in their SOCKS5 handshake at once (each holds a thread);
    /// beyond, a new client is closed unanswered.
    pub max_handshakes: usize,
    /// The whole SOCKS5 handshake's deadline, from accept to the request
    /// read: a client that trickles bytes is cut at it.
    pub handshake_timeout: Duration,
}

impl EdgeLimits {
    /// Limits for this machine and process: VMs by fds and memory, as many
    /// handshakes as a tenth of that (at least 64), 10 s per handshake.
    pub fn for_this_machine() -> Self {
        let fds = vmm::limits::raise_fd_limit().unwrap_or(1024);
        let max_vms = vmm::limits::default_max_vms(fds, vmm::limits::mem_total_kib().unwrap_or(0));
        Self { max_vms, max_handshakes: (max_vms / 10).max(64), handshake_timeout: Duration::from_secs(10) }
    }
}

/// Longest the accept loop waits after running out of descriptors or
/// memory before it tries again.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A client connection whose reads and writes all end by one deadline.
struct Deadlined<'a> {
    conn: &'a TcpStream,
    deadline: Instant,
}

impl Deadlined<'_> {
    fn arm(&self, set: impl Fn(&TcpStream, Option<Duration>) -> io::Result<()>) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the SOCKS5 handshake took too long"));
        }
        set(self.conn, Some(left))
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(TcpStream::set_read_timeout)?;
        match (&mut &*self.conn).read(buf) {
            // A read timeout shows as WouldBlock on Linux.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "the SOCKS5 handshake took too long"))
            }
            r => r,
        }
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(TcpStream::set_write_timeout)?;
        (&mut &*self.conn).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts one holder of a limited resource while alive.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    /// One more holder, unless `max` hold it already.
    fn take(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an accept error means the process or machine is out of
/// something (descriptors, memory), so retrying at once would spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

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
    /// Caps and deadlines.
    pub limits: EdgeLimits,
    /// VM shells kept prepared for the next requests (0: each request
    /// builds its VM from nothing).
    pub prepared_vms: usize,
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
    /// The thread that prepares VM shells.
    #[error("cannot start the thread that prepares request VMs: {0}")]
    Pool(#[source] io::Error),
}

/// The edge's configuration for the requests that come now.
struct View {
    file: NodeFile,
    /// The topology's exits and their policies.
    exits: Vec<(guest_agent::routing::NodeId, node::exit_policy::ExitPolicy)>,
    /// When its identity files last changed (see `node::identity_stamp`).
    stamp: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

/// The CA and revocation list certificates are checked with, as `file`
/// was loaded.
fn authority_of(file: &NodeFile) -> Authority {
    Authority::new(&file.certified.ca_public, &file.certified.revoked)
}

/// Adds the host `c` names to `file`'s hosts unless its node or name is
/// there already; whether it was added.
fn add_host(file: &mut NodeFile, c: &MemberCert) -> bool {
    if file.host.iter().any(|h| h.node == c.node || h.name == c.name) {
        return false;
    }
    file.host.push(node::HostAddrs { name: c.name.clone(), node: c.node, addrs: c.addrs.clone() });
    true
}

/// How often the edge looks at its identity files.
const IDENTITY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A running edge: what every request shares.
pub struct Edge {
    guest_log: bool,
    slots: Arc<SlotAllocator>,
    /// Request ports (taps steered onto the links) prepared ahead.
    ports: Option<PortPool>,
    kvm: Arc<KvmContext>,
    image: Arc<AgentImage>,
    /// Shells prepared ahead of requests (KVM VM, memory with the image,
    /// vCPU at the entry): a request only adds its devices and arguments.
    pool: Option<ShellPool>,
    /// The configuration as it stands (reloaded when its identity files
    /// change: a member revoked or added).
    view: std::sync::RwLock<Arc<View>>,
    /// Where it came from, and when its identity files were last looked at.
    config: PathBuf,
    identity_checked: std::sync::Mutex<Instant>,
    manifests: ManifestDir,
    events: Arc<EventSink>,
    limits: EdgeLimits,
    /// The link state flooded on the edge's links, signatures checked.
    floods: Arc<crate::members::Floods>,
    /// Members learnt from the link state flooded on the edge's links
    /// ([`crate::members`]), kept across reloads of the configuration.
    learned: std::sync::Mutex<Vec<MemberCert>>,
    /// Request VMs running now.
    vms: AtomicUsize,
    /// Clients in their handshake now.
    handshakes: AtomicUsize,
}

/// How long a lookup may take, from its VM's start to the exit's answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A request the edge answers or refuses without a VM.
enum Early {
    /// A lookup whose answer is known here (an address as a name, a host
    /// of the topology).
    Answer(Bound),
    /// A refusal, and why.
    Refuse(Reply, String),
}

/// A lookup's answer: the bound address of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// RESOLVE: an address.
    Ip(IpAddr),
    /// RESOLVE_PTR: a name.
    Name(String),
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// The bound address a lookup's answer lines give for `command`: for
/// RESOLVE the first IPv4 address (else the first address), as Tor does.
fn bound_of(command: Command, lines: &[String]) -> Option<Bound> {
    match command {
        Command::ResolvePtr => lines.first().map(|n| Bound::Name(n.clone())),
        _ => {
            let ips: Vec<IpAddr> = lines.iter().filter_map(|l| l.parse().ok()).collect();
            ips.iter().find(|a| a.is_ipv4()).or(ips.first()).copied().map(Bound::Ip)
        }
    }
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
    fn success(&self, stages: ConnectStages) {
        if self.send(Reply::Succeeded) {
            self.events.emit(&Event::StreamUp {
                flow: self.flow.clone(),
                since_accept_us: micros(self.accepted.elapsed()),
                stages,
            });
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

    fn answer(&self, bound: &Bound) {
        let addr = match bound {
            Bound::Ip(a) => guest_agent::socks::Addr::Ip((*a, 0).into()),
            Bound::Name(n) => guest_agent::socks::Addr::Domain(n, 0),
        };
        if self.send_with(|c| socks::reply_bound(c, addr)) {
            self.events.emit(&Event::Answered {
                flow: self.flow.clone(),
                answer: bound.to_string(),
                since_accept_us: micros(self.accepted.elapsed()),
            });
        }
    }

    fn send(&self, code: Reply) -> bool {
        self.send_with(|c| socks::reply(c, code))
    }

    /// Writes the one reply with `write`, unless one went out already.
    fn send_with(&self, write: impl FnOnce(&mut TcpStream) -> io::Result<()>) -> bool {
        if self.sent.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(mut c) = self.conn.as_ref().and_then(|c| c.try_clone().ok()) {
            let _ = write(&mut c);
        }
        true
    }
}

impl Edge {
    /// Loads the edge's configuration, opens /dev/kvm and the image.
    pub fn open(cfg: EdgeConfig) -> Result<Self, EdgeError> {
        let file = NodeFile::load(&cfg.config)?;
        let floods = Arc::new(crate::members::Floods::new(&file.node_config()?));
        let exits = file.exits()?;
        let mut slots_path = cfg.config.clone().into_os_string();
        slots_path.push(".slots");
        let kvm = Arc::new(KvmContext::open()?);
        let image = Arc::new(AgentImage::open(&cfg.image)?);
        let pool = match cfg.prepared_vms {
            0 => None,
            n => Some(
                ShellPool::new(kvm.clone(), image.clone(), request::mem_mib(&file), request::WARM_HEAP_KIB, n)
                    .map_err(EdgeError::Pool)?,
            ),
        };
        let slots = Arc::new(SlotAllocator::open(slots_path.into()));
        let ports = match cfg.prepared_vms {
            0 => None,
            n => Some(PortPool::new(file.clone(), slots.clone(), n).map_err(EdgeError::Pool)?),
        };
        Ok(Self {
            guest_log: cfg.guest_log,
            slots,
            ports,
            kvm,
            image,
            pool,
            view: std::sync::RwLock::new(Arc::new(View {
                stamp: node::identity_stamp(file.identity.as_ref(), &cfg.config),
                file,
                exits,
            })),
            config: cfg.config.clone(),
            identity_checked: std::sync::Mutex::new(Instant::now()),
            manifests: ManifestDir::new(&cfg.manifests),
            events: Arc::new(cfg.events),
            limits: cfg.limits,
            floods,
            learned: std::sync::Mutex::new(Vec::new()),
            vms: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
        })
    }

    /// Request VMs running now.
    pub fn running_vms(&self) -> usize {
        self.vms.load(Ordering::Acquire)
    }

    /// The configuration for a request now: reloaded first when its
    /// identity files changed (looked at once a second at most), so a
    /// revoked member's keys leave and a new member's come without a
    /// restart; a reload that fails keeps the last good one.
    fn view(&self) -> Arc<View> {
        let current = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        if current.file.identity.is_none() {
            return current;
        }
        {
            let mut at = self.identity_checked.lock().unwrap_or_else(|p| p.into_inner());
            if at.elapsed() < IDENTITY_CHECK_EVERY {
                return current;
            }
            *at = Instant::now();
        }
        if node::identity_stamp(current.file.identity.as_ref(), &self.config) == current.stamp {
            return current;
        }
        let fresh = NodeFile::load(&self.config).and_then(|f| {
            let exits = f.exits()?;
            let mut v = View { stamp: node::identity_stamp(f.identity.as_ref(), &self.config), file: f, exits };
            // What was learnt stays, unless the new list revokes it.
            let authority = authority_of(&v.file);
            let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
            for c in learned.iter().filter(|c| authority.check_cert(c, c.node, node::identity::now_s()).is_ok()) {
                add_host(&mut v.file, c);
            }
            Ok(v)
        });
        match fresh {
            Ok(v) => {
                tracing::warn!("edge: identity files changed: {} members now", v.file.lsa_key.len());
                if let Ok(cfg) = v.file.node_config() {
                    self.floods.rekey(&cfg);
                }
                let v = Arc::new(v);
                *self.view.write().unwrap_or_else(|p| p.into_inner()) = v.clone();
                v
            }
            Err(e) => {
                tracing::warn!("edge: identity files changed, but the config does not load: {e}; keeping the last");
                current
            }
        }
    }

    /// Listens on the edge's links for the flooded link state: it is
    /// handed to request VMs at boot, and the certificates it carries add
    /// the hosts they name.
    fn listen_floods(self: &Arc<Self>) {
        let view = self.view();
        let ifaces: Vec<String> = view.file.port.iter().map(|p| p.iface.clone()).collect();
        let edge = Arc::downgrade(self);
        let learner = crate::members::Learner::new(authority_of(&view.file));
        crate::members::listen(
            &ifaces,
            learner,
            self.floods.clone(),
            Arc::new(move |c: MemberCert| {
                if let Some(edge) = edge.upgrade() {
                    edge.learned(c);
                }
            }),
        );
    }

    /// A member's certificate, checked: its host joins the view.
    fn learned(&self, c: MemberCert) {
        let mut slot = self.view.write().unwrap_or_else(|p| p.into_inner());
        // The listener checked it with the list the edge started with; the
        // view's may be newer.
        if authority_of(&slot.file).check_cert(&c, c.node, node::identity::now_s()).is_err() {
            return;
        }
        let mut file = slot.file.clone();
        if add_host(&mut file, &c) {
            tracing::info!("edge: member {} ({}) learnt from the link state", c.node, c.name);
            self.events.emit(&Event::MemberLearned { node: c.node, name: c.name.clone(), addrs: c.addrs.clone() });
            *slot = Arc::new(View { file, exits: slot.exits.clone(), stamp: slot.stamp.clone() });
        }
        self.learned.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// Serves clients of `listener` until it fails, each on a thread.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        self.listen_floods();
        let listen = listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string());
        eprintln!("pathvm edge: SOCKS5 on {listen}");
        self.events.emit(&Event::EdgeUp { listen });
        let mut backoff = Duration::ZERO;
        loop {
            let conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if out_of_resources(&e) => {
                    // Out of fds or memory: wait for requests to end
                    // rather than spin on a listener that stays readable.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    tracing::warn!("edge: accept: {e}; retrying in {backoff:?}");
                    self.events
                        .emit(&Event::AcceptFailed { error: e.to_string(), retry_in_ms: backoff.as_millis() as u64 });
                    std::thread::sleep(backoff);
                    continue;
                }
                // The client gave up before we took it (ECONNABORTED):
                // nothing of ours is wrong.
                Err(_) => continue,
            };
            backoff = Duration::ZERO;
            // Beyond the handshake cap a client is closed here, without a
            // thread (`handle` checks again, exactly, on its own).
            if self.handshakes.load(Ordering::Acquire) >= self.limits.max_handshakes {
                self.too_many_handshakes();
                continue;
            }
            let edge = self.clone();
            let _ = std::thread::Builder::new().name("pathvm-edge-req".into()).spawn(move || edge.handle(conn));
        }
    }

    /// A client closed unanswered: a reply needs the handshake, and the
    /// edge holds its most already.
    fn too_many_handshakes(&self) {
        self.events.emit(&Event::HandshakeFailed {
            app: "unknown".into(),
            error: format!("{} handshakes in progress already (the edge's limit)", self.limits.max_handshakes),
        });
    }

    /// One client, from its handshake until its request VM ended.
    pub fn handle(&self, conn: TcpStream) {
        let accepted = Instant::now();
        let Some(handshaking) = Held::take(&self.handshakes, self.limits.max_handshakes) else {
            // Closed unanswered: a reply needs the handshake, which needs
            // the thread this would hold.
            self.too_many_handshakes();
            return;
        };
        // (a)-(b): who is asking, and what for.
        let (peer_addr, local) = (conn.peer_addr().ok(), conn.local_addr().ok());
        let app = match (peer_addr, local) {
            (Some(p), Some(l)) if p.ip() == IpAddr::from([127, 0, 0, 1]) => peer::identify(p, l).ok(),
            _ => None,
        };
        let exe = app.as_ref().map_or_else(|| PathBuf::from("unknown"), |a| a.exe.clone());
        let identified = Instant::now();
        let deadline = accepted + self.limits.handshake_timeout;
        let req = match socks::accept(&mut Deadlined { conn: &conn, deadline }) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("edge: {} ({peer_addr:?}): {e}", exe.display());
                self.events.emit(&Event::HandshakeFailed { app: exe.display().to_string(), error: e.to_string() });
                return;
            }
        };
        drop(handshaking);
        let socks_done = Instant::now();
        // The VM writes the stream's bytes as they come: without this, a
        // small first write behind the SOCKS reply waits for the app's
        // delayed ACK (Nagle), 40 ms on Linux.
        let _ = conn.set_nodelay(true);
        let _ = conn.set_read_timeout(None);
        let _ = conn.set_write_timeout(None);
        // (c)-(d), and the checks that need no ports: a request refused
        // here (policy, unknown destination, the VM limit) costs no tap or
        // filter, so a flood of refusals stays cheap.
        let view = self.view();
        let resolved = resolve(req.criteria(), Path::new(&exe), &self.manifests);
        let decision = match &resolved {
            Ok(r) => select(&r.criteria).map_err(|e| e.to_string()),
            Err(policy::ResolveError::Sent(e)) => Err(format!("criteria in the SOCKS username: {e}")),
            Err(e) => Err(e.to_string()),
        };
        let place = match (&resolved, &decision) {
            (Ok(r), Ok(d)) => {
                Some(self.plan(&view, req.command, &req.target, &r.criteria.avoid_nodes, d.chosen.name == "onion"))
            }
            _ => None,
        };
        let vm_held =
            place.as_ref().and_then(|p| p.as_ref().ok()).and_then(|_| Held::take(&self.vms, self.limits.max_vms));
        // The ports: their flow id names the request from here on.
        let preparing = Instant::now();
        let ports = vm_held.as_ref().map(|_| {
            self.ports
                .as_ref()
                .and_then(PortPool::take)
                .map(Ok)
                .unwrap_or_else(|| ports::prepare(&view.file, &self.slots))
        });
        let steer_us = micros(preparing.elapsed());
        let flow = match &ports {
            Some(Ok(p)) => p.flow,
            _ => ports::random_flow(),
        };
        let replier = Arc::new(Replier {
            conn: conn.try_clone().ok(),
            sent: AtomicBool::new(false),
            events: self.events.clone(),
            flow: flow_name(flow),
            accepted,
        });
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
        let (criteria, decision) = match (resolved, decision) {
            (Ok(r), Ok(d)) => (r.criteria, d),
            (_, Err(why)) => return refuse(Reply::NotAllowed, why),
            // Not reached: a decision needs resolved criteria.
            (Err(e), Ok(_)) => return refuse(Reply::NotAllowed, e.to_string()),
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
        let place = match place {
            Some(Ok(p)) => p,
            Some(Err(Early::Refuse(code, why))) => return refuse(code, why),
            Some(Err(Early::Answer(bound))) => return replier.answer(&bound),
            // Not reached: a place is looked for once a protocol is chosen.
            None => return refuse(Reply::GeneralFailure, "no destination".into()),
        };
        if let Some(x) = &place.exit {
            self.events.emit(&Event::ExitChosen {
                flow: flow_name(flow),
                exit: x.node,
                target: place.target.clone(),
                why: x.why.clone(),
                rows: x.rows.clone(),
            });
        }
        let (dst, target) = (place.node, place.target);
        let Some(_vm) = vm_held else {
            return refuse(
                Reply::GeneralFailure,
                format!("the edge runs its limit of {} request VMs (--max-vms); try again later", self.limits.max_vms),
            );
        };
        let ports = match ports {
            Some(Ok(p)) => p,
            Some(Err(e)) => return refuse(Reply::GeneralFailure, format!("cannot prepare the request's ports: {e}")),
            None => return refuse(Reply::GeneralFailure, "no ports for the request".into()),
        };
        let spec = RequestSpec {
            flow,
            dst,
            target,
            protocol: decision.chosen.wire_id,
            slot: ports.slot,
            avoid: criteria.avoid_nodes.clone(),
            link_state: self.floods.current(),
        };
        let via = place.exit.as_ref().map_or_else(String::new, |x| format!("; {}", x.why));
        eprintln!(
            "pathvm edge: {} -> {} (node {dst}, flow {:#010x}): {}{via}",
            exe.display(),
            req.target,
            spec.flow,
            decision.summary()
        );
        let edge_steps = ConnectStages {
            identify_us: micros(identified.duration_since(accepted)),
            socks_us: micros(socks_done.duration_since(identified)),
            decide_us: micros(socks_done.elapsed()).saturating_sub(steer_us),
            steer_us,
            ..ConnectStages::default()
        };
        match req.command {
            Command::Connect => self.run_request(&view.file, &spec, ports, conn, replier, accepted, edge_steps),
            lookup => self.run_lookup(&view.file, &spec, ports, lookup, &replier),
        }
    }

    /// What request VMs are built from.
    fn vmm(&self) -> request::Vmm<'_> {
        request::Vmm { kvm: &self.kvm, image: &self.image, pool: self.pool.as_ref(), ports: self.ports.as_ref() }
    }

    /// Reports `vm_up` for `spec`'s VM, timed from now; `ports_reused`:
    /// its taps carried an earlier request.
    fn on_vm_up(&self, spec: &RequestSpec, ports_reused: bool) -> impl FnOnce() {
        let (events, spawning, flow, dst) = (self.events.clone(), Instant::now(), spec.flow, spec.dst);
        move || {
            events.emit(&Event::VmUp { flow: flow_name(flow), dst, spawn_us: micros(spawning.elapsed()), ports_reused })
        }
    }

    /// Where a request goes, or how it is answered without a VM.
    fn plan(&self, view: &View, command: Command, target: &Target, avoid: &[u16], onion: bool) -> Result<Place, Early> {
        let refusal = |e: NoPlace| match e {
            NoPlace::NoExit => Early::Refuse(Reply::HostUnreachable, e.to_string()),
            NoPlace::Refused(_) => Early::Refuse(Reply::NotAllowed, e.to_string()),
        };
        let query = match (command, target) {
            (Command::Connect, _) => {
                return exit::place(&view.file, &view.exits, target, avoid, onion).map_err(refusal);
            }
            // An address needs no lookup; a host of the topology is
            // known here (no resolver is asked either way).
            (Command::Resolve, Target::Addr(a)) => return Err(Early::Answer(Bound::Ip(a.ip()))),
            (Command::Resolve, Target::Domain(name, _)) => match name.parse::<IpAddr>() {
                Ok(ip) => return Err(Early::Answer(Bound::Ip(ip))),
                Err(_) => match exit::overlay_host(&view.file, target) {
                    Some((_, hostport)) => {
                        let ip = hostport.rsplit_once(':').and_then(|(h, _)| h.parse().ok());
                        return Err(ip.map(Bound::Ip).map(Early::Answer).unwrap_or_else(|| {
                            Early::Refuse(Reply::GeneralFailure, format!("topology host {name} has no address"))
                        }));
                    }
                    None => Query::Name(name.clone()),
                },
            },
            (Command::ResolvePtr, Target::Addr(a)) => Query::Addr(a.ip()),
            // Refused by the handshake already.
            (Command::ResolvePtr, Target::Domain(..)) => {
                return Err(Early::Refuse(Reply::AddressTypeNotSupported, "RESOLVE_PTR of a name".into()))
            }
        };
        let exit = exit::lookup_exit(&view.file, &view.exits, avoid, onion).map_err(refusal)?;
        Ok(Place { node: exit.node, target: query.open_info(), exit: Some(exit) })
    }

    /// A lookup's request VM: its stream's far end is the exit's resolver
    /// and its near end is the edge (the app only gets the reply).
    fn run_lookup(
        &self,
        file: &NodeFile,
        spec: &RequestSpec,
        ports: PreparedPorts,
        command: Command,
        replier: &Arc<Replier>,
    ) {
        let (mine, theirs) = match std::os::unix::net::UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return replier.refuse(Reply::GeneralFailure, format!("cannot make the lookup's socket: {e}")),
        };
        let _ = mine.set_read_timeout(Some(LOOKUP_TIMEOUT));
        let reader = std::thread::Builder::new().name("pathvm-edge-lookup".into()).spawn(move || {
            let mut answer = Vec::new();
            let got = (&mine).take(lookup::MAX_ANSWER as u64).read_to_end(&mut answer);
            // Closing ends the VM's stream if the exit is still talking.
            drop(mine);
            got.map(|_| answer)
        });
        let log = if self.guest_log { GuestLog::Stderr } else { GuestLog::Discard };
        let on_stream = {
            let r = replier.clone();
            move |report, _: ConnectStages| match report {
                // The reply carries the answer: it waits for it.
                StreamReport::Up => {}
                StreamReport::Refused | StreamReport::NotAllowed => {
                    r.refuse(Reply::HostUnreachable, "the exit found no answer (or is no exit)".into())
                }
                StreamReport::NoCircuit => r.refuse(
                    Reply::HostUnreachable,
                    "no onion circuit to an exit avoids the relays the app avoids".into(),
                ),
                StreamReport::Unknown(v) => r.refuse(Reply::GeneralFailure, format!("request VM reported {v}")),
            }
        };
        let reused = ports.reused;
        let ran = request::run(
            &self.vmm(),
            file,
            spec,
            ports,
            OwnedFd::from(theirs),
            log,
            on_stream,
            self.on_vm_up(spec, reused),
        );
        let answer = match reader {
            Ok(t) => t.join().ok().and_then(Result::ok).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let (exit, counters) = match &ran {
            Ok(o) => (format!("{:?}", o.reason), o.guest_stats.as_ref().map(Counters::from)),
            Err(e) => (e.to_string(), None),
        };
        match lookup::parse_answer(&answer).ok().and_then(|lines| bound_of(command, &lines)) {
            Some(bound) => replier.answer(&bound),
            None => replier.refuse(Reply::HostUnreachable, format!("the lookup ended without an answer ({exit})")),
        }
        self.events.emit(&Event::VmEnded {
            flow: Some(flow_name(spec.flow)),
            node: None,
            exit,
            elapsed_us: micros(replier.accepted.elapsed()),
            counters,
        });
    }

    /// The request VM: it carries the stream; the reply is written when it
    /// reports (or, if it never does, when it ends).
    #[allow(clippy::too_many_arguments)]
    fn run_request(
        &self,
        file: &NodeFile,
        spec: &RequestSpec,
        ports: PreparedPorts,
        conn: TcpStream,
        replier: Arc<Replier>,
        accepted: Instant,
        edge_steps: ConnectStages,
    ) {
        let log = if self.guest_log { GuestLog::Stderr } else { GuestLog::Discard };
        let on_stream = {
            let r = replier.clone();
            move |report, vm: ConnectStages| match report {
                StreamReport::Up => {
                    let ConnectStages { identify_us, socks_us, decide_us, steer_us, .. } = edge_steps;
                    r.success(ConnectStages { identify_us, socks_us, decide_us, steer_us, ..vm })
                }
                StreamReport::Refused => {
                    r.refuse(Reply::ConnectionRefused, "the destination refused the stream".into())
                }
                // Same reply as before the report existed; the reason tells it apart.
                StreamReport::NoCircuit => r.refuse(
                    Reply::ConnectionRefused,
                    "no onion circuit to the destination avoids the relays the app avoids".into(),
                ),
                StreamReport::NotAllowed => r.refuse(
                    Reply::NotAllowed,
                    "the destination's policy refuses it (an exit's policy, on the address the name resolved to)"
                        .into(),
                ),
                StreamReport::Unknown(v) => r.refuse(Reply::GeneralFailure, format!("request VM reported {v}")),
            }
        };
        let vm = self.vmm();
        let reused = ports.reused;
        match request::run(&vm, file, spec, ports, OwnedFd::from(conn), log, on_stream, self.on_vm_up(spec, reused)) {
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

    #[test]
    fn a_client_that_trickles_its_handshake_is_cut_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let slow = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // A valid greeting, one byte every 200 ms: no single read
            // waits long, the whole takes far too long.
            for b in [5u8, 1, 0] {
                if c.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = c.write_all(&[5, 1, 0, 1, 10, 0, 0, 1]);
            std::thread::sleep(Duration::from_secs(2));
        });
        let (conn, _) = l.accept().unwrap();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(500);
        let e = socks::accept(&mut Deadlined { conn: &conn, deadline }).unwrap_err();
        let waited = t0.elapsed();
        assert!(matches!(&e, socks::SocksError::Io(io) if io.kind() == io::ErrorKind::TimedOut), "{e}");
        assert!(waited < Duration::from_secs(2), "cut after {waited:?}, not at the deadline");
        slow.join().unwrap();
    }

    #[test]
    fn a_limit_holds_and_frees_its_places() {
        let n = AtomicUsize::new(0);
        let a = Held::take(&n, 2).unwrap();
        let b = Held::take(&n, 2).unwrap();
        assert!(Held::take(&n, 2).is_none(), "a third place beyond the limit");
        drop(a);
        let c = Held::take(&n, 2);
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(n.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_resolve_answers_ipv4_first_and_a_ptr_its_name() {
        let lines: Vec<String> = ["fd00::2", "10.0.0.2", "10.0.0.3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(bound_of(Command::Resolve, &lines), Some(Bound::Ip("10.0.0.2".parse().unwrap())));
        assert_eq!(bound_of(Command::Resolve, &lines[..1]), Some(Bound::Ip("fd00::2".parse().unwrap())));
        assert_eq!(bound_of(Command::ResolvePtr, &["svc.test".into()]), Some(Bound::Name("svc.test".into())));
        assert_eq!(bound_of(Command::Resolve, &["garbage".into()]), None);
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
