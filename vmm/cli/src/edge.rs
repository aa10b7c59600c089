//! `pathvm edge`: the SOCKS5 front door, one VM per request.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use edge::peer;
use edge::request::{self, RequestSpec, SlotAllocator};
use edge::socks::{self, Reply, Target};
use node::NodeFile;
use policy::{select, Criteria, ManifestDir};
use vmm::vcpu::GuestLog;
use vmm::{AgentImage, KvmContext};

/// Arguments of `pathvm edge`.
#[derive(Debug, Args)]
#[command(after_help = "Run it inside the edge host's namespace, e.g.\n  \
ip netns exec line3-a pathvm edge --config /run/pathvm/line3/a.toml\n  \
ip netns exec line3-a curl --socks5-hostname 127.0.0.1:1080 http://c:8080/file\n\n\
Destinations are hosts of the topology, by name (c) or address (10.231.1.2). Criteria ride \
in the SOCKS5 username (pathvm:latency=require,...) or, with the username `pathvm`, in the \
password (curl --proxy-user pathvm:latency=require), else the app's manifest, else defaults. \
Failures get their SOCKS5 reply code: 2 refused by policy, 4 unknown destination, 5 service \
down, 1 anything else.")]
pub struct EdgeArgs {
    /// The edge host's node configuration (written by `pathvm topo up`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to accept SOCKS5 clients.
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// Guest image. Default: $PATHVM_IMAGE, else images/out/agent.elf.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Manifest directory.
    #[arg(long, value_name = "DIR", default_value = super::explain::DEFAULT_MANIFESTS)]
    manifests: PathBuf,
    /// Print the request VMs' own log lines (circuits built, links seen
    /// down) on stderr, beside the edge's.
    #[arg(long)]
    guest_log: bool,
}

struct Edge {
    guest_log: bool,
    slots: SlotAllocator,
    kvm: KvmContext,
    image: AgentImage,
    file: NodeFile,
    manifests: ManifestDir,
}

/// Runs the daemon until killed.
pub fn run(a: EdgeArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let file = NodeFile::load(&a.config)?;
    file.node_config()?;
    let mut slots_path = a.config.clone().into_os_string();
    slots_path.push(".slots");
    let edge = Arc::new(Edge {
        guest_log: a.guest_log,
        slots: SlotAllocator::open(slots_path.into()),
        kvm: KvmContext::open()?,
        image: AgentImage::open(&a.image.unwrap_or_else(super::default_image))?,
        file,
        manifests: ManifestDir::new(&a.manifests),
    });
    let listener = TcpListener::bind(a.listen).map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    eprintln!("pathvm edge: SOCKS5 on {}", a.listen);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let edge = edge.clone();
        let _ = std::thread::Builder::new().name("pathvm-edge-req".into()).spawn(move || serve(&edge, conn));
    }
    Ok(0)
}

/// The node a target lives on, and the `host:port` that node connects.
fn resolve(file: &NodeFile, target: &Target) -> Option<(u16, String)> {
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

fn serve(edge: &Edge, mut conn: TcpStream) {
    let started = Instant::now();
    let (peer_addr, local) = (conn.peer_addr().ok(), conn.local_addr().ok());
    let app = match (peer_addr, local) {
        (Some(p), Some(l)) if p.ip() == IpAddr::from([127, 0, 0, 1]) => peer::identify(p, l).ok(),
        _ => None,
    };
    let exe = app.as_ref().map_or_else(|| PathBuf::from("unknown"), |a| a.exe.clone());
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let req = match socks::accept(&mut conn) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("edge: {} ({peer_addr:?}): {e}", exe.display());
            return;
        }
    };
    let _ = conn.set_read_timeout(None);
    let refuse = |conn: &mut TcpStream, code: Reply, why: String| {
        eprintln!("pathvm edge: {} -> {}: refused ({code:?}): {why}", exe.display(), req.target);
        let _ = socks::reply(conn, code);
    };
    let sent = match req.criteria().map(Criteria::parse).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return refuse(&mut conn, Reply::NotAllowed, format!("criteria in the SOCKS username: {e}")),
    };
    let manifest = match edge.manifests.lookup(Path::new(&exe)) {
        Ok(m) => m.map(|m| m.criteria).unwrap_or_default(),
        Err(e) => return refuse(&mut conn, Reply::NotAllowed, e.to_string()),
    };
    let criteria = sent.over(&manifest);
    let decision = match select(&criteria) {
        Ok(d) => d,
        Err(r) => return refuse(&mut conn, Reply::NotAllowed, r.to_string()),
    };
    let Some((dst, target)) = resolve(&edge.file, &req.target) else {
        return refuse(&mut conn, Reply::HostUnreachable, "not a host of this topology".into());
    };
    let spec = RequestSpec {
        flow: random_flow(),
        dst,
        target,
        protocol: decision.chosen.wire_id,
        slot: edge.slots.alloc(),
        avoid: criteria.avoid_nodes.clone(),
    };
    eprintln!(
        "pathvm edge: {} -> {} (node {dst}, flow {:#010x}): {}",
        exe.display(),
        req.target,
        spec.flow,
        decision.summary()
    );
    let reply_conn = conn.try_clone();
    let log = if edge.guest_log { GuestLog::Stderr } else { GuestLog::Discard };
    match request::run(&edge.kvm, &edge.image, &edge.file, &spec, OwnedFd::from(conn), log) {
        Ok(outcome) => {
            let changes = outcome.guest_stats.map_or(0, |s| s.topology_changes);
            eprintln!(
                "pathvm edge: flow {:#010x} done in {:.1} ms ({:?}; route changes {changes})",
                spec.flow,
                started.elapsed().as_secs_f64() * 1e3,
                outcome.reason
            )
        }
        Err(e) => {
            eprintln!("pathvm edge: flow {:#010x}: {e}", spec.flow);
            if let Ok(mut c) = reply_conn {
                let _ = socks::reply(&mut c, Reply::GeneralFailure);
            }
        }
    }
}
