//! `pathvm run`'s transparent mode: the app runs in a network namespace
//! of its own whose only way out is pathvm.
//!
//! The namespace has one veth link to this host. On this host's end,
//! nftables (table `inet pathvm_run_PID`) sends every TCP connection from
//! the app to the relay ([`relay`]), which asks the edge's SOCKS5 port for
//! a stream to the connection's original destination, and every UDP
//! datagram to port 53 to the resolver ([`dns`]), which answers with
//! virtual addresses; everything else from the app (other UDP, ICMP,
//! forwarding) is refused and counted. So statically linked programs and
//! raw system calls are covered, IPv6 as well as IPv4, and no DNS query or
//! datagram leaves this host outside the overlay. The app itself runs
//! outside any VM (claim step (f)) and sees `/etc/resolv.conf` naming the
//! resolver (a private mount namespace).
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` and `nft`.

pub mod dns;
mod relay;
mod setup;

pub use relay::RelayCounts;
pub use setup::{Sandbox, SetupError};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use node::events::EventSink;

/// What a transparent run needs.
pub struct RunConfig {
    /// The edge's SOCKS5 address.
    pub socks: SocketAddr,
    /// Criteria sent with every connection (the app's own, resolved by
    /// the caller from `--criteria` or its manifest); `None`: defaults.
    pub criteria: Option<String>,
    /// The app and its arguments.
    pub app: Vec<String>,
    /// Where events go.
    pub events: Arc<EventSink>,
    /// Where to write the app's resolv.conf (a private file per run).
    pub state_dir: PathBuf,
}

/// Runs the app in its sandbox until it exits; its exit status (128+N
/// for a signal), the relay's counts, and the packets the sandbox
/// refused.
pub fn run(cfg: RunConfig) -> Result<(i32, RelayCounts, u64), SetupError> {
    let sandbox = Sandbox::create(std::process::id(), &cfg.state_dir)?;
    let relay = relay::Relay::start(&sandbox, cfg.socks, cfg.criteria.clone(), cfg.events.clone())
        .map_err(SetupError::Relay)?;
    sandbox.steer(relay.tcp_port(), relay.dns_port())?;
    cfg.events.emit(&node::events::Event::RunUp {
        netns: sandbox.netns().into(),
        gateway_v4: sandbox.gateway_v4().to_string(),
        gateway_v6: sandbox.gateway_v6().to_string(),
        tcp_port: relay.tcp_port(),
        dns_port: relay.dns_port(),
    });
    let status = sandbox.run_app(&cfg.app)?;
    let refused = sandbox.refused_packets();
    let counts = relay.counts();
    cfg.events.emit(&node::events::Event::RunEnded {
        status,
        connections: counts.connections,
        refused_connections: counts.refused,
        dns_answers: counts.dns_answers,
        refused_packets: refused,
        strangers: counts.strangers,
        dns_dropped: counts.dns_dropped,
    });
    Ok((status, counts, refused))
}
