//! A request VM's ports, prepared before its request: a tap per link of
//! the edge host, up, joined to its link by tc filters both ways (frames
//! the VM sends go out of the link; frames from the link carrying its flow
//! id come to it), with the flow id and slot they were steered for.
//!
//! None of it depends on what the request asks, only on the edge's links,
//! so [`PortPool`] makes a few ahead (the netlink round trips were ≈ 0.2-0.8
//! ms of a connect) and a request takes one; an empty pool prepares inline.
//! The taps' fds are held from the start, so a crashed edge leaves no tap
//! behind; the link's filters are removed when the ports are dropped.

use netdev::netlink::{Interface, Netlink, NetlinkError, U32Match};
use netdev::Tap;
use node::NodeFile;
use std::sync::Mutex;
use vmm::builder::OpenTap;
use vmm::pool::Prepared;

use crate::request::{RequestError, SlotAllocator};

/// One request's ports, steered for `flow`.
pub struct PreparedPorts {
    /// The overlay flow id the filters match (random, so relays' flow
    /// tables do not collide).
    pub flow: u32,
    /// The request slot (link ids, tc priority).
    pub slot: u32,
    /// A tap per port of the edge, in port order, with its name.
    pub taps: Vec<(String, OpenTap)>,
    _steering: Steering,
}

/// A random flow id (odd, so never 0).
pub fn random_flow() -> u32 {
    u32::from_ne_bytes(vmm::random::bytes()) | 1
}

/// Opens, brings up and steers a tap per port of `edge` for a new flow and
/// slot.
pub fn prepare(edge: &NodeFile, slots: &SlotAllocator) -> Result<PreparedPorts, RequestError> {
    let (flow, slot) = (random_flow(), slots.alloc());
    let mut taps = Vec::new();
    let mut steer = Vec::new();
    for (i, ps) in edge.port.iter().enumerate() {
        let name = format!("r{flow:08x}{i}");
        let tap = Tap::open(&name).map_err(vmm::builder::BuildError::from)?;
        taps.push((name.clone(), OpenTap::new(tap)));
        steer.push((name, ps.iface.clone()));
    }
    // One tc priority per live request (slots wrap well below u16::MAX).
    let prio = u16::try_from(1 + slot % 40_000).unwrap_or(u16::MAX);
    let steering = Steering::up(&steer, flow, prio)?;
    Ok(PreparedPorts { flow, slot, taps, _steering: steering })
}

/// Ports prepared ahead of requests.
pub struct PortPool(Prepared<PreparedPorts>);

impl PortPool {
    /// Keeps `target` sets of ports for `edge` ready.
    pub fn new(edge: NodeFile, slots: std::sync::Arc<SlotAllocator>, target: usize) -> std::io::Result<Self> {
        Prepared::new(target, "pathvm-ports", move || prepare(&edge, &slots).map_err(|e| e.to_string())).map(Self)
    }

    /// Prepared ports, if a set is ready.
    pub fn take(&self) -> Option<PreparedPorts> {
        self.0.take()
    }
}

/// tc steering of one request VM; removed on drop. It holds no socket
/// while the VM runs (a netlink socket per held connection would be a
/// thousand fds at a thousand connections); teardown opens one.
struct Steering {
    /// The links' filters for this VM (the taps' go with the taps).
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

impl Steering {
    /// Brings the taps up and joins each to its link, both ways, over one
    /// netlink socket: a process start would cost milliseconds on the
    /// connect path.
    fn up(taps_and_links: &[(String, String)], flow: u32, prio: u16) -> Result<Self, NetlinkError> {
        let mut netlink = Netlink::open()?;
        let mut s = Self { filters: Vec::new() };
        for (tap, link) in taps_and_links {
            let (tap, link) = (Interface::by_name(tap)?, Interface::by_name(link)?);
            netlink.set_link_up(&tap)?;
            ensure_ingress(&mut netlink, &link)?;
            netlink.add_redirect(&link, flow_match(flow), prio, &tap)?;
            s.filters.push((link.clone(), prio));
            netlink.add_ingress_qdisc(&tap)?;
            netlink.add_redirect(&tap, U32Match::ANY, 0, &link)?;
        }
        Ok(s)
    }
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
