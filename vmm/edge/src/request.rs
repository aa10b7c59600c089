//! One request, one VM: the edge host's half of a connection.
//!
//! The request VM gets a port per link of the edge host: a tap the VMM
//! serves, joined to the link by tc filters installed over rtnetlink
//! ([`crate::ports`], usually before the request came), and a directed
//! link id of its own from the edge side's span, so relays keep its
//! sequence numbers and key apart from every other sender's. Its console is
//! the application's connection, after the SOCKS handshake. The agent
//! reports on a port when the stream to the service is up or refused; the
//! caller's callback answers the app there (the SOCKS reply is the edge's
//! to write), before the agent carries any byte.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use guest_agent::boot::Role;
use guest_agent::node::{ConnectTimes, EdgeRequest, NodeConfig};
use netdev::netlink::NetlinkError;
use thiserror::Error;

use node::events::{micros, ConnectStages};
use node::{NodeFile, NodeFileError};

use crate::ports::PreparedPorts;
use vmm::builder::{finish_vm, prepare_shell, BuildError, ConsoleConfig, NetConfig, VmConfig};
use vmm::kvm::KvmContext;
use vmm::loader::AgentImage;
use vmm::pool::ShellPool;
use vmm::vcpu::{GuestLog, StreamReport};
use vmm::vm::{RunOutcome, VmError};

/// Why a request VM could not run.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The edge's configuration.
    #[error(transparent)]
    Config(#[from] NodeFileError),
    /// Building the VM.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Running it.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Joining its taps to the links (bringing a tap up, a qdisc, a
    /// redirect filter: the error names which, and on what).
    #[error("request VM steering: {0}")]
    Steering(#[from] NetlinkError),
}

/// What one request needs.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Flow id of its stream (random, so relays' flow tables do not collide).
    pub flow: u32,
    /// Destination node.
    pub dst: u16,
    /// `host:port` for the destination node to connect.
    pub target: String,
    /// Routing protocol (wire id).
    pub protocol: u8,
    /// From [`SlotAllocator::alloc`].
    pub slot: u32,
    /// Nodes the app asked not to relay through.
    pub avoid: Vec<u16>,
    /// The link state the edge holds now ([`crate::members::Floods`]),
    /// handed to the VM so it need not pull it first; left out when it
    /// does not fit the boot block.
    pub link_state: Vec<guest_agent::routing::linkstate::Lsa>,
}

/// Hands out request slots (a link-id offset and a tc priority each).
///
/// Slots count up; a slot's link id is
/// [`guest_agent::router::auth::request_link_id`], so ids are recycled
/// every span − 1 requests (65,535 in a topology) and that never turns
/// into refusal: relays forget the least recently heard sender, not the
/// lowest id, and keep its highest number as a floor for its id. A
/// recycled id cannot replay the earlier VM's frames, because each VM
/// numbers its frames from its boot's wall clock (µs), above anything the
/// earlier holder of the id sent, and the relay refuses every number up
/// to the highest it accepted under that id. A file beside the edge's
/// configuration records where a restarted edge goes on: the end of the
/// block of [`SLOT_BLOCK`] slots handed out now, written once per block
/// rather than once per request (a restart skips what was left of it).
pub struct SlotAllocator {
    path: PathBuf,
    next: Mutex<(u32, u32)>,
}

/// Slots reserved in the state file at a time.
pub const SLOT_BLOCK: u32 = 1024;

impl SlotAllocator {
    /// Continues from the slot recorded at `path` (1 if none).
    pub fn open(path: PathBuf) -> Self {
        let next = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
        Self { path, next: Mutex::new((next, next)) }
    }

    /// A slot no earlier request of this edge used.
    pub fn alloc(&self) -> u32 {
        let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, reserved) = *n;
        if slot == reserved {
            let end = slot.wrapping_add(SLOT_BLOCK).max(1);
            // Best effort: an unwritable state dir makes a restarted edge
            // reuse ids early, which is safe (the VMs number from the wall
            // clock) but reorders which id recycles next.
            let _ = std::fs::write(&self.path, format!("{end}\n"));
            n.1 = end;
        }
        n.0 = slot.wrapping_add(1).max(1);
        slot
    }
}

/// The configuration request `spec`'s VM boots with: its own link id on
/// each port (offset 0 of the edge side's span is the edge host's node;
/// requests take the rest) and that id's key alone, derived here on the
/// host; no link key and no onion secret reach the VM.
pub fn request_config(edge: &NodeFile, spec: &RequestSpec) -> Result<NodeConfig, RequestError> {
    let spans: Vec<u32> = edge.port.iter().map(|p| p.tx_link_span.max(1)).collect();
    let mut cfg = edge.node_config()?.request_view(&spans, spec.slot);
    cfg.protocol = spec.protocol;
    Ok(cfg)
}

/// What request VMs are made from: KVM, the image and, when the edge keeps
/// one, the pool of shells prepared ahead of requests.
pub struct Vmm<'a> {
    /// /dev/kvm.
    pub kvm: &'a KvmContext,
    /// The guest image.
    pub image: &'a AgentImage,
    /// Prepared shells (an empty pool prepares one on the spot).
    pub pool: Option<&'a ShellPool>,
    /// Where ended requests' ports go back to be steered for new ones
    /// (none: they are closed).
    pub ports: Option<&'a crate::ports::PortPool>,
}

/// Heap a request VM's prepared shell warms ([`vmm::warm`]) besides the
/// image: none. Measured with `bench connect` and `bench density` on line3:
/// 256 KiB gave the same boot (1.26-1.45 ms vs 1.09-1.12 ms with none) for
/// 160 KiB more resident memory per connection (1,000 held: 888 vs 732 MiB).
pub const WARM_HEAP_KIB: u32 = 0;

/// Guest memory of a request VM, MiB: the edge's configured size, at most
/// 64 (one stream needs no more).
pub fn mem_mib(edge: &NodeFile) -> u64 {
    edge.mem_mib.min(64)
}

/// Where the request VM's part of a connect went, µs: the host's steps
/// (build, boot) and the agent's own (keys, opening), as [`ConnectStages`]
/// carries them (the edge's steps before the VM are the caller's).
fn vm_stages(build: Duration, boot: Option<Duration>, guest: Option<ConnectTimes>, given: usize) -> ConnectStages {
    let guest = guest.unwrap_or_default();
    ConnectStages {
        build_us: micros(build),
        boot_us: boot.map_or(0, micros),
        keys_us: guest.keyed_us,
        // Refused before it had keys: no opening was sent.
        open_us: if guest.keyed_us > 0 { guest.answered_us.saturating_sub(guest.keyed_us) } else { 0 },
        lsa_asked_us: guest.lsa_requested_us,
        lsa_requests: guest.lsa_requests,
        early_bytes: guest.early_bytes,
        lsas_given: given as u64,
        agent_start_us: guest.booted_us,
        ..ConnectStages::default()
    }
}

/// Runs the request VM for `spec` with `app` (the client's socket, SOCKS
/// request already read) as its console, until the connection ends; its
/// exit and the counters the request VM kept. `on_stream` is called on the
/// vCPU thread when the VM reports its stream up or refused, with the VM's
/// steps so far; `on_up` once the VM is built and steered, just before it
/// runs.
/// `ports` are the VM's, steered for `spec.flow`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    vmm: &Vmm<'_>,
    edge: &NodeFile,
    spec: &RequestSpec,
    ports: PreparedPorts,
    app: OwnedFd,
    guest_log: GuestLog,
    mut on_stream: impl FnMut(StreamReport, ConnectStages) + Send + 'static,
    on_up: impl FnOnce(),
) -> Result<RunOutcome, RequestError> {
    let building = Instant::now();
    let cfg = request_config(edge, spec)?;
    let nets = edge
        .port
        .iter()
        .zip(&ports.taps)
        .map(|(ps, (tap, open))| NetConfig {
            tap: tap.clone(),
            open: Some(open.clone()),
            vhost_user: None,
            ip: None,
            mac: node::parse_mac(&ps.mac).ok(),
        })
        .collect();
    let mut args = Vec::new();
    cfg.encode(&mut args);
    let mut req = EdgeRequest {
        dst: spec.dst,
        flow: spec.flow,
        target: spec.target.as_bytes().to_vec(),
        avoid: spec.avoid.clone(),
        link_state: spec.link_state.clone(),
    };
    let mut tail = Vec::new();
    req.encode(&mut tail);
    if args.len() + tail.len() > guest_agent::boot::ARGS_LEN {
        // Too much link state for the boot block: the VM pulls it.
        req.link_state.clear();
        tail.clear();
        req.encode(&mut tail);
    }
    args.extend_from_slice(&tail);
    let given = req.link_state.len();
    let vm_cfg = VmConfig {
        mem_mib: mem_mib(edge),
        role: Role::Edge,
        console: Some(ConsoleConfig::Stream(UnixStream::from(app))),
        nets,
        args,
        guest_log,
    };
    let shell = match vmm.pool {
        Some(pool) => pool.take()?,
        None => prepare_shell(vmm.kvm, vmm.image, vm_cfg.mem_mib, None)?,
    };
    let mut vm = finish_vm(vmm.kvm, shell, vm_cfg)?;
    let build = building.elapsed();
    let ready = Arc::new(OnceLock::new());
    vm.on_ready({
        let ready = ready.clone();
        move |at| {
            let _ = ready.set(at);
        }
    });
    let probe = vm.stats_probe();
    let running = Instant::now();
    vm.on_stream_report(move |report| {
        let boot = ready.get().map(|at: &Instant| at.saturating_duration_since(running));
        on_stream(report, vm_stages(build, boot, probe.connect_times(), given))
    });
    on_up();
    // The filters stay until the VM is gone.
    let outcome = vm.run()?;
    // Its threads are joined and its fds on the taps closed: they may
    // carry another request.
    if let Some(pool) = vmm.ports {
        pool.give_back(ports);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_agent::node::KeyScope;
    use guest_agent::wire::LinkKey;

    #[test]
    fn slots_go_on_past_a_restart_and_the_file_is_written_once_a_block() {
        let path = std::env::temp_dir().join(format!("pathvm-slots-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = SlotAllocator::open(path.clone());
        assert_eq!((a.alloc(), a.alloc()), (1, 2));
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), (1 + SLOT_BLOCK).to_string());
        std::fs::write(&path, "7\n").unwrap();
        a.alloc();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "7", "not rewritten within the block");
        std::fs::write(&path, (1 + SLOT_BLOCK).to_string()).unwrap();
        let restarted = SlotAllocator::open(path.clone());
        assert_eq!(restarted.alloc(), 1 + SLOT_BLOCK, "a restart never reuses a slot of the block before");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_request_vm_gets_its_own_ids_keys_only_and_no_secret_of_the_node() {
        let port = |iface: &str, tx: u32, key: &str| {
            format!(
                "[[port]]\niface = \"{iface}\"\ntap = \"t{iface}\"\nmac = \"02:00:00:00:00:01\"\npeer = 2\n\
                 peer_mac = \"02:00:00:00:00:02\"\ntx_link_id = {tx}\ntx_link_span = 100\nrx_link_id = 900\n\
                 key = \"{}\"\n",
                key.repeat(32)
            )
        };
        let text = format!(
            "id = 1\nhop_limit = 8\nmem_mib = 64\nlsa_secret = \"{}\"\n{}{}[[link]]\n\
             a = 1\nb = 2\nlatency_us = 1\nbandwidth_mbps = 1\n",
            "06".repeat(32),
            port("ln0", 100, "0a"),
            port("ln1", 300, "0b")
        );
        let edge: NodeFile = toml::from_str(&text).unwrap();
        let spec = RequestSpec {
            flow: 7,
            dst: 2,
            target: "x:1".into(),
            protocol: 1,
            slot: 3,
            avoid: vec![],
            link_state: vec![],
        };
        let cfg = request_config(&edge, &spec).unwrap();
        assert_eq!(cfg.onion_period_s, 0, "a request VM holds no onion key");
        assert_eq!(cfg.lsa_secret, [0; 32], "so does the link-state secret");
        for (p, (first, link_key)) in cfg.ports.iter().zip([(100, [0x0a; 32]), (300, [0x0b; 32])]) {
            assert_eq!(p.tx_link_id, guest_agent::router::auth::request_link_id(first, 100, 3));
            assert_eq!(p.scope, KeyScope::Own);
            assert_eq!(p.key, LinkKey::new(&link_key).derive_bytes(p.tx_link_id));
        }
        assert_eq!(cfg.protocol, 1);
    }
}
