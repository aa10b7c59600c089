//! A request VM's ports, prepared before its request: a tap per link of
//! the edge host, up, joined to its link by tc filters both ways (frames
//! the VM sends go out of the link; frames from the link carrying its flow
//! id come to it), with the flow id and slot they were steered for.
//!
//! None of it depends on what the request asks, only on the edge's links,
//! so [`PortPool`] makes a few ahead (the netlink round trips were ≈ 0.2-0.8
//! ms of a connect) and a request takes one; an empty pool prepares inline.
//!
//! Taps outlive their request. The edge keeps its own fd on each tap and
//! lends the VM another; when the VM is gone its ports come back to the
//! pool ([`PortPool::give_back`]), which takes the link's filter for the
//! ended flow away at once and steers the taps for a new flow when it next
//! needs a set. Destroying a request's taps took 13-45 ms here (the
//! kernel unregisters each device and waits out RCU) and cost the next
//! connect ≈ 0.6 ms (BENCHMARKS.md, Connect); re-steering is one filter
//! change per link. The taps' fds are held from
//! the start, so a crashed edge leaves no tap behind; filters go when the
//! ports are dropped or given back.

use netdev::netlink::{Interface, Netlink, NetlinkError, U32Match};
use netdev::Tap;
use node::NodeFile;
use std::sync::{Arc, Mutex};
use vmm::builder::OpenTap;
use vmm::pool::Prepared;

use crate::request::{RequestError, SlotAllocator};

/// Frames a re-used tap may hold from its last flow (sent before the
/// flow's filter went); more than a tap queues.
const MAX_STALE_FRAMES: usize = 4096;

/// One request's ports, steered for `flow`.
pub struct PreparedPorts {
    /// The overlay flow id the filters match (random, so relays' flow
    /// tables do not collide).
    pub flow: u32,
    /// The request slot (link ids, tc priority).
    pub slot: u32,
    /// A tap per port of the edge, in port order, with its name: the
    /// VM's fd on it.
    pub taps: Vec<(String, OpenTap)>,
    /// Whether these taps carried an earlier request.
    pub reused: bool,
    kept: Kept,
    steering: Steering,
}

/// What outlives one request: the edge's own fd on each tap, and the
/// links they are joined to.
struct Kept {
    taps: Vec<Tap>,
    links: Vec<String>,
}

/// A random flow id (odd, so never 0).
pub fn random_flow() -> u32 {
    u32::from_ne_bytes(vmm::random::bytes()) | 1
}

/// Opens, brings up and steers a tap per port of `edge` for a new flow and
/// slot.
pub fn prepare(edge: &NodeFile, slots: &SlotAllocator) -> Result<PreparedPorts, RequestError> {
    // Named for the set, not a flow: the taps carry many flows.
    let set = random_flow();
    let mut kept = Kept { taps: Vec::new(), links: Vec::new() };
    for (i, ps) in edge.port.iter().enumerate() {
        let tap = Tap::open(&format!("r{set:08x}{i}")).map_err(vmm::builder::BuildError::from)?;
        kept.taps.push(tap);
        kept.links.push(ps.iface.clone());
    }
    let mut netlink = Netlink::open()?;
    for (tap, link) in kept.taps.iter().zip(&kept.links) {
        join(&mut netlink, tap.name(), link)?;
    }
    steer(&mut netlink, kept, slots, false)
}

/// `kept`'s taps, steered for a new flow and slot, each lent to the VM as
/// a second fd.
fn steer(
    netlink: &mut Netlink,
    kept: Kept,
    slots: &SlotAllocator,
    reused: bool,
) -> Result<PreparedPorts, RequestError> {
    let (flow, slot) = (random_flow(), slots.alloc());
    // One tc priority per live request (slots wrap well below u16::MAX).
    let prio = u16::try_from(1 + slot % 40_000).unwrap_or(u16::MAX);
    let mut steering = Steering { filters: Vec::new() };
    let mut taps = Vec::new();
    for (tap, link) in kept.taps.iter().zip(&kept.links) {
        let (tap_if, link_if) = (Interface::by_name(tap.name())?, Interface::by_name(link)?);
        netlink.add_redirect(&link_if, flow_match(flow), prio, &tap_if)?;
        steering.filters.push((link_if, prio));
        let lent = tap.try_clone().map_err(vmm::builder::BuildError::from)?;
        taps.push((tap.name().to_string(), OpenTap::new(lent)));
    }
    Ok(PreparedPorts { flow, slot, taps, reused, kept, steering })
}

/// Ports prepared ahead of requests, and the taps of ended requests kept
/// for the next ones.
pub struct PortPool {
    ready: Prepared<PreparedPorts>,
    spare: Arc<Mutex<Vec<Kept>>>,
    links: Vec<String>,
    max_spare: usize,
}

impl PortPool {
    /// Keeps `target` sets of ports for `edge` ready, and up to as many
    /// again of ended requests' taps.
    pub fn new(edge: NodeFile, slots: std::sync::Arc<SlotAllocator>, target: usize) -> std::io::Result<Self> {
        let spare: Arc<Mutex<Vec<Kept>>> = Arc::default();
        let links = edge.port.iter().map(|p| p.iface.clone()).collect();
        let from = spare.clone();
        let ready = Prepared::new(target, "pathvm-ports", move || {
            let old = from.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match old {
                Some(kept) => reuse(kept, &slots),
                None => prepare(&edge, &slots),
            }
            .map_err(|e| e.to_string())
        })?;
        Ok(Self { ready, spare, links, max_spare: target.max(1) })
    }

    /// Prepared ports, if a set is ready.
    pub fn take(&self) -> Option<PreparedPorts> {
        self.ready.take()
    }

    /// Takes back the ports of a request whose VM is gone (its fds on the
    /// taps closed): the link's filters for its flow go now, the taps wait
    /// for a new flow. Beyond the spares the pool keeps, or for links the
    /// edge no longer has, the taps are closed.
    pub fn give_back(&self, ports: PreparedPorts) {
        let PreparedPorts { taps, kept, steering, .. } = ports;
        drop(steering);
        drop(taps);
        if kept.links != self.links {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.max_spare {
            spare.push(kept);
        }
    }
}

/// An ended request's taps, emptied of what their last flow left and
/// steered for a new one.
fn reuse(kept: Kept, slots: &SlotAllocator) -> Result<PreparedPorts, RequestError> {
    for tap in &kept.taps {
        let stale = tap.drain(MAX_STALE_FRAMES);
        if stale > 0 {
            tracing::debug!("tap {}: dropped {stale} frames of its last flow", tap.name());
        }
    }
    steer(&mut Netlink::open()?, kept, slots, true)
}

/// tc steering of one flow to its taps; removed on drop. It holds no socket
/// while the VM runs (a netlink socket per held connection would be a
/// thousand fds at a thousand connections); teardown opens one.
struct Steering {
    /// The links' filters for the flow (the taps' own go with the taps).
    filters: Vec<(Interface, u16)>,
}

/// Adds the ingress qdisc of `link` once per process: one that exists
/// already (an earlier edge, a node) is fine, and later requests skip the
/// round trip.
fn ensure_ingress(netlink: &mut Netlink, link: &Interface) -> Result<(), NetlinkError> {
    static DONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if !done.contains(&link.index()) {
        netlink.add_ingress_qdisc(link)?;
        done.push(link.index());
    }
    Ok(())
}

/// The overlay flow id sits 4 bytes into the overlay header, which is
/// where tc's u32 offsets start (after Ethernet).
fn flow_match(flow: u32) -> U32Match {
    U32Match { value: flow, mask: u32::MAX, offset: 4 }
}

/// Brings tap `tap` up and sends what it transmits out of `link` (once
/// per tap, for every flow it will carry), over the caller's netlink
/// socket: a process start would cost milliseconds on the connect path.
fn join(netlink: &mut Netlink, tap: &str, link: &str) -> Result<(), NetlinkError> {
    let (tap, link) = (Interface::by_name(tap)?, Interface::by_name(link)?);
    netlink.set_link_up(&tap)?;
    ensure_ingress(netlink, &link)?;
    netlink.add_ingress_qdisc(&tap)?;
    netlink.add_redirect(&tap, U32Match::ANY, 0, &link)
}

impl Drop for Steering {
    fn drop(&mut self) {
        let mut netlink = match Netlink::open() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("request steering left behind ({} filters): {e}", self.filters.len());
                return;
            }
        };
        for (link, prio) in &self.filters {
            if let Err(e) = netlink.del_filters(link, *prio) {
                tracing::warn!("request steering left behind: {e}");
            }
        }
    }
}
