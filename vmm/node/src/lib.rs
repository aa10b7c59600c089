//! A relay or destination host's node: `pathvm node --config FILE`.
//!
//! The node takes every frame arriving on its host's link interfaces before
//! the host network stack sees it (tc ingress `mirred` redirect into a tap
//! per link: PLATFORM.md's verified intake), and a vhost-user-net backend
//! per link moves it from the tap into a long-lived node VM's virtio-net
//! queues, in the VM's own memory (memfd shared over the vhost-user
//! socket). `backend = "tap"` in the config serves the ports from the VMM
//! instead. Frames the VM sends on a
//! port are redirected out of that link's interface the same way. The VM
//! routes by the packet's protocol; datagrams for this node are delivered
//! to the host over the VM's console, and streams that end here are
//! connected to the real service they name ([`connector`]).

pub mod allow;
mod config;
pub mod connector;
pub mod events;
pub mod exit_policy;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod identity;
pub mod lookup;
pub mod metrics;
pub mod paths;
mod plumbing;
pub mod status;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use events::{micros, Counters, Event, EventSink};

pub use config::{
    parse_mac, ExitSpec, HostAddrs, NodeFile, NodeFileError, PortBackend, PortSpec, PublicKeySpec, Spot, TopoLinkSpec,
    DEFAULT_IDLE_TIMEOUT_S, IDLE_TIMEOUT_RANGE_S,
};
pub use plumbing::{Intake, IntakeError};

use guest_agent::boot::Role;

use netdev::vhost_user::BackendHandle;
use netdev::Tap;

use vmm::builder::{build_vm, BuildError, ConsoleConfig, NetConfig, VhostUserPort, VmConfig};
use vmm::kvm::KvmContext;
use vmm::loader::AgentImage;
use vmm::vcpu::GuestLog;
use vmm::vm::{RunOutcome, StopHandle, VmError};

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] NodeFileError),
    /// Taps and redirects.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// The VM.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Running the VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A port's vhost-user backend.
    #[error(transparent)]
    Backend(#[from] netdev::vhost_user::BackendError),
    /// The console's host side.
    #[error("node console: {0}")]
    Console(#[source] std::io::Error),
    /// The metrics listener.
    #[error("cannot serve metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, #[source] std::io::Error),
    /// Another node runs from this configuration: two nodes on one config
    /// would send under the same link ids and keys, reusing nonces.
    #[error("node config {0} is in use by another running pathvm node; stop it first (one node per config)")]
    InUse(std::path::PathBuf),
    /// The configuration file could not be locked.
    #[error("cannot lock node config {path}: {source}")]
    Lock {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Holds `config` for this process alone (an advisory lock on the file,
/// released when the process ends, however it ends).
pub fn lock_config(config: &Path) -> Result<std::fs::File, NodeError> {
    let lock_err = |source| NodeError::Lock { path: config.into(), source };
    let f = std::fs::File::open(config).map_err(lock_err)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::InUse(config.into())),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

type ConsoleIo = (Box<dyn Read + Send>, Box<dyn Write + Send>);

/// The user's side of the node's records, from the console choice.
fn console_io(console: ConsoleConfig) -> std::io::Result<ConsoleIo> {
    Ok(match console {
        ConsoleConfig::Stdio => (Box::new(std::io::stdin()), Box::new(std::io::stdout())),
        ConsoleConfig::Unix(p) => {
            let s = UnixStream::connect(p)?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        ConsoleConfig::Stream(s) => (Box::new(s.try_clone()?), Box::new(s)),
        ConsoleConfig::Sink => (Box::new(std::io::empty()), Box::new(std::io::sink())),
    })
}

/// Writes all of a guest's RAM to `path`, region after region.
pub fn dump_memory(mem: &vm_memory::GuestMemoryMmap, path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    for r in mem.iter() {
        let (start, len) = (r.start_addr().0, r.len());
        let mut off = 0;
        while off < len {
            let n = (len - off).min(buf.len() as u64) as usize;
            mem.read_slice(&mut buf[..n], vm_memory::GuestAddress(start + off)).map_err(std::io::Error::other)?;
            out.write_all(&buf[..n])?;
            off += n as u64;
        }
    }
    out.flush()
}

/// How to run a node: what `pathvm node` takes from its arguments.
pub struct NodeOptions<'a> {
    /// The node configuration (written by `pathvm topo up`).
    pub config: &'a Path,
    /// The host side of the node's records.
    pub console: ConsoleConfig,
    /// Where the guest's log lines go.
    pub guest_log: GuestLog,
    /// Write the guest's memory here when it stops (an audit of what a
    /// relay holds).
    pub dump_memory: Option<&'a Path>,
    /// Where `node_up` and `vm_ended` go.
    pub events: Arc<EventSink>,
    /// Serve Prometheus metrics here: the counts `events` feeds into and
    /// the VM's live stats.
    pub metrics: Option<metrics::Served>,
    /// Set when the node stopped because its identity changed (a
    /// certificate revoked, a member added): the caller starts it again
    /// from the same configuration, which then leaves the revoked out.
    pub reload: Arc<AtomicBool>,
}

/// Runs a node until its VM stops, reporting `node_up` when the agent
/// serves and `vm_ended` with its counters at the end. `on_stop_handle`
/// receives the handle that stops it (for signal handlers).
pub fn run(
    kvm: &KvmContext,
    image: &AgentImage,
    opts: NodeOptions<'_>,
    on_stop_handle: impl FnOnce(Arc<StopHandle>),
) -> Result<RunOutcome, NodeError> {
    let started = Instant::now();
    let file = NodeFile::load(opts.config)?;
    let _lock = lock_config(opts.config)?;
    let (node, ports, refused_ports) = (file.id, file.port.len(), file.refused_ports.clone());
    let on_ready = {
        let events = opts.events.clone();
        move |at: Instant| {
            let boot_us = micros(at.duration_since(started));
            events.emit(&Event::NodeUp { node, ports, boot_us, refused_ports })
        }
    };
    let probe: ProbeSlot = Arc::default();
    if let Some((m, addr)) = opts.metrics {
        let slot = probe.clone();
        let live: metrics::Live = Box::new(move |e: &mut metrics::Exposition| {
            let stats = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|p| p.stats());
            if let Some(s) = stats {
                metrics::write_node_stats(e, &s);
            }
        });
        let bound = metrics::serve(addr, m, Some(live)).map_err(|e| NodeError::Metrics(addr, e))?;
        eprintln!("pathvm node: metrics on http://{bound}/metrics");
    }
    let identity = file.identity.is_some().then(|| IdentityWatch {
        config: opts.config.to_path_buf(),
        spec: file.identity.clone(),
        seen: identity_stamp(file.identity.as_ref(), opts.config),
        reload: opts.reload.clone(),
    });
    let watch = RouteWatch { node, events: opts.events.clone(), probe, identity };
    let outcome =
        run_vm(kvm, image, &file, opts.console, opts.guest_log, on_stop_handle, opts.dump_memory, on_ready, watch)?;
    opts.events.emit(&Event::VmEnded {
        flow: None,
        node: Some(node),
        exit: format!("{:?}", outcome.reason),
        elapsed_us: micros(started.elapsed()),
        counters: outcome.guest_stats.as_ref().map(Counters::from),
    });
    Ok(outcome)
}

/// How often a node's host looks at its agent's topology-change count.
const ROUTE_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Where the running VM's stats page can be read (by metrics scrapes).
type ProbeSlot = Arc<std::sync::Mutex<Option<vmm::vm::StatsProbe>>>;

/// Reports `routes_changed` while the node VM runs, offers its stats
/// page to scrapes, and watches the node's identity files.
struct RouteWatch {
    node: u16,
    events: Arc<EventSink>,
    probe: ProbeSlot,
    identity: Option<IdentityWatch>,
}

/// What a node watches of its `[identity]`: when the revocation list or
/// the members change, the VM stops and the node starts again from its
/// configuration (a revoked neighbour's port then left out, its link
/// state refused), within [`IDENTITY_WATCH_EVERY`] of the change.
struct IdentityWatch {
    config: PathBuf,
    /// The `[identity]` the node started with.
    spec: Option<identity::IdentitySpec>,
    seen: Vec<(PathBuf, Option<std::time::SystemTime>)>,
    reload: Arc<AtomicBool>,
}

/// How often a node looks at its identity files.
const IDENTITY_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The identity files `spec` names (relative to `config`) and when each last
/// changed (what a node and an edge compare to notice a revocation or a
/// new member): the CA, the list, the certificate, the members directory and
/// each member certificate.
pub fn identity_stamp(
    spec: Option<&identity::IdentitySpec>,
    config: &Path,
) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let Some(spec) = spec else { return Vec::new() };
    let base = config.parent().unwrap_or(Path::new("."));
    let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let mut paths = vec![at(&spec.ca), at(&spec.cert), at(&spec.members)];
    paths.extend(spec.crl.as_deref().map(at));
    if let Ok(d) = std::fs::read_dir(at(&spec.members)) {
        let mut members: Vec<PathBuf> = d.flatten().map(|e| e.path()).collect();
        members.sort();
        paths.extend(members);
    }
    paths.into_iter().map(|p| (p.clone(), std::fs::metadata(&p).and_then(|m| m.modified()).ok())).collect()
}

impl IdentityWatch {
    /// Whether the files changed since the node started.
    fn changed(&self) -> bool {
        identity_stamp(self.spec.as_ref(), &self.config) != self.seen
    }
}

impl RouteWatch {
    /// Watches `probe` on a thread of its own until `done` is set; nothing
    /// runs when no one reads events.
    fn start(
        self,
        probe: vmm::vm::StatsProbe,
        stop: Arc<StopHandle>,
        done: Arc<AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe.clone());
        if !self.events.enabled() && self.identity.is_none() {
            return None;
        }
        std::thread::Builder::new()
            .name("route-watch".into())
            .spawn(move || {
                let mut seen = 0;
                let mut identity_at = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    if let Some(n) = probe.topology_changes().filter(|n| *n > seen) {
                        seen = n;
                        self.events.emit(&Event::RoutesChanged { node: self.node, topology_changes: n });
                    }
                    if let Some(w) = self.identity.as_ref().filter(|_| identity_at.elapsed() >= IDENTITY_WATCH_EVERY) {
                        identity_at = Instant::now();
                        if w.changed() {
                            tracing::warn!(
                                "node {}: its identity files changed: restarting from its config",
                                self.node
                            );
                            self.events.emit(&Event::IdentityChanged { node: self.node });
                            w.reload.store(true, Ordering::Release);
                            stop.request();
                            return;
                        }
                    }
                    std::thread::sleep(ROUTE_WATCH_EVERY);
                }
            })
            .ok()
    }
}

/// What `pathvm node --metrics FILE` writes: the ports' counters and the
/// node's routing counters (drops by reason).
pub fn metrics_report(outcome: &RunOutcome) -> serde_json::Value {
    serde_json::json!({
        "exit": format!("{:?}", outcome.reason),
        "ports": outcome.metrics.snapshot().net,
        "node": outcome.guest_stats.map(|s| serde_json::json!({
            "forwarded": s.forwarded,
            "delivered": s.delivered,
            "originated": s.originated,
            "tx_full": s.tx_full,
            "duplicates": s.duplicates,
            "probes_sent": s.probes_sent,
            "probe_acks": s.probe_acks,
            "lsas_accepted": s.lsas_accepted,
            "topology_changes": s.topology_changes,
            "circuits": s.circuits,
            "flows_open": s.flows_open,
            "flows_expired": s.flows_expired,
            "hellos_sent": s.hellos_sent,
            "links_keyed": s.links_keyed,
            "members_learned": s.members_learned,
            "drops": guest_agent::router::DROP_NAMES
                .iter()
                .zip(s.drops.values())
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>(),
        })),
    })
}

/// A directory only this process's user may enter (0700, a fresh random
/// name, created, never reused), for the vhost-user sockets: no other
/// local user can connect to a backend or put a socket in its place.
/// Removed with what it holds on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("pathvm-node-{}-{}", std::process::id(), vmm::random::hex(&vmm::random::bytes::<8>()));
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_vm(
    kvm: &KvmContext,
    image: &AgentImage,
    file: &NodeFile,
    console: ConsoleConfig,
    guest_log: GuestLog,
    on_stop_handle: impl FnOnce(Arc<StopHandle>),
    dump_to: Option<&Path>,
    on_ready: impl FnOnce(Instant) + Send + 'static,
    watch: RouteWatch,
) -> Result<RunOutcome, NodeError> {
    let node_cfg = file.node_config()?;
    let intake = Intake::up(&file.port)?;
    let mut args = Vec::with_capacity(node_cfg.encoded_len());
    node_cfg.encode(&mut args);
    let mut backends = Vec::new();
    let mut nets = Vec::new();
    let sockets = PrivateDir::new().map_err(NodeError::Console)?;
    for (i, p) in file.port.iter().enumerate() {
        let vhost_user = match file.backend {
            PortBackend::Tap => None,
            PortBackend::VhostUser => {
                let tap = Tap::open(&p.tap).map_err(BuildError::from)?;
                let socket = sockets.0.join(format!("port{i}.sock"));
                let confine: netdev::vhost_user::Confine =
                    Arc::new(|| vmm::seccomp::confine(vmm::seccomp::ThreadKind::Device).map_err(std::io::Error::other));
                let handle = BackendHandle::start(tap, &socket, Some(confine))?;
                let port = VhostUserPort { socket, metrics: handle.metrics() };
                backends.push(handle);
                Some(port)
            }
        };
        nets.push(NetConfig {
            tap: p.tap.clone(),
            open: None,
            vhost_user,
            ip: None,
            mac: config::parse_mac(&p.mac).ok(),
        });
    }
    // The VM's console is one end of a socket pair; the connector owns the
    // other and serves the user's records and the streams' services.
    let (vm_end, host_end) = UnixStream::pair().map_err(NodeError::Console)?;
    let (input, output) = console_io(console).map_err(NodeError::Console)?;
    connector::start(host_end, input, output, file.allow_policy()?, watch.events.clone())
        .map_err(NodeError::Console)?;
    let cfg = VmConfig {
        mem_mib: file.mem_mib,
        role: Role::Node,
        console: Some(ConsoleConfig::Stream(vm_end)),
        nets,
        args,
        guest_log,
    };
    let mut vm = build_vm(kvm, image, cfg)?;
    vm.on_ready(on_ready);
    on_stop_handle(vm.stop_handle());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch.start(vm.stats_probe(), vm.stop_handle(), done.clone());
    let outcome = vm.run_then(|mem| {
        if let Some(path) = dump_to {
            if let Err(e) = dump_memory(mem, path) {
                tracing::warn!("cannot write guest memory to {}: {e}", path.display());
            }
        }
    });
    done.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    let outcome = outcome?;
    drop(backends);
    drop(intake);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_user_sockets_live_in_a_directory_only_we_may_enter() {
        use std::os::unix::fs::PermissionsExt;
        let d = PrivateDir::new().unwrap();
        let mode = std::fs::metadata(&d.0).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let other = PrivateDir::new().unwrap();
        assert_ne!(d.0, other.0, "a fresh name each time");
        let path = d.0.clone();
        std::fs::write(path.join("port0.sock"), b"").unwrap();
        drop(d);
        assert!(!path.exists(), "left behind");
    }

    #[test]
    fn a_config_in_use_is_refused_until_its_node_ends() {
        let path = std::env::temp_dir().join(format!("pathvm-lock-test-{}.toml", std::process::id()));
        std::fs::write(&path, "id = 1\n").unwrap();
        let held = lock_config(&path).unwrap();
        let err = lock_config(&path).unwrap_err();
        assert!(matches!(err, NodeError::InUse(_)), "{err}");
        assert!(err.to_string().contains("in use by another running pathvm node"));
        drop(held);
        assert!(lock_config(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }
}
