//! The `node` role: an overlay router and endpoint.
//!
//! Each virtio-net is one link port. A frame that arrives is checked
//! (overlay EtherType, total parse, link id, replay window, link key),
//! then delivered to the console if it is for this node, or re-sealed for
//! the next node's link and sent on, as `shortest` routing decides.
//! Records read from the console are originated the same way.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use guest_agent::boot::BootParams;
use guest_agent::node::{NodeConfig, NodeStats, Record, RECORD_HDR, STATS_ADDR, STATS_MAGIC};
use guest_agent::ports;
use guest_agent::routing::{NodeId, Router, Shortest, Widest};
use guest_agent::virtio::console::ConsoleEvent;
use guest_agent::virtio::net::VirtioNet;
use guest_agent::wire::{
    overlay::MAX_PAYLOAD_LEN, seal_frame, EthAddrs, LinkKey, OverlayPacket, OverlayRepr, Protocol, ReplayWindow,
    WireError, ETHERTYPE, ETH_HDR_LEN,
};

use crate::roles::{console, nets, Pacer};
use crate::{io, log};

/// Frames queued per port before new ones are dropped.
const MAX_QUEUED: usize = 4096;
/// Below this many queued frames per port the node reads more records.
const ORIGINATE_BELOW: usize = 256;
/// Above this many queued frames on any port the node stops taking frames
/// from its links: they wait in the receive rings and the taps' queues
/// (input buffering) instead of being dropped at the output.
const RECEIVE_BELOW: usize = 512;
/// Delivered bytes held for the console before deliveries are dropped.
const MAX_DELIVER_BACKLOG: usize = 4 << 20;

struct Port {
    dev: VirtioNet,
    mac: [u8; 6],
    peer: NodeId,
    peer_mac: [u8; 6],
    tx_link_id: u32,
    rx_link_id: u32,
    key: LinkKey,
    next_seq: u64,
    window: ReplayWindow,
    queue: VecDeque<Vec<u8>>,
}

struct Node {
    me: NodeId,
    hop_limit: u8,
    shortest: Shortest,
    widest: Widest,
    protocol: Protocol,
    ports: Vec<Port>,
    stats: NodeStats,
    deliver: Vec<u8>,
}

impl Node {
    fn port_to(&self, next: NodeId) -> Option<usize> {
        self.ports.iter().position(|p| p.peer == next)
    }

    /// Seals `repr` + `payload` for port `j` and queues the frame; false
    /// (and counted) if the port's queue is full.
    fn send(&mut self, j: usize, mut repr: OverlayRepr, state: &[u8], payload: &[u8]) -> bool {
        let port = &mut self.ports[j];
        if port.queue.len() >= MAX_QUEUED {
            self.stats.tx_full += 1;
            return false;
        }
        repr.link_id = port.tx_link_id;
        repr.link_seq = port.next_seq;
        port.next_seq += 1;
        let mut frame = Vec::new();
        let eth = EthAddrs { dst: port.peer_mac, src: port.mac };
        if let Err(e) = seal_frame(&mut frame, eth, &repr, state, payload, &port.key) {
            self.stats.drops.count(e);
            return false;
        }
        port.queue.push_back(frame);
        true
    }

    /// Routes a packet for `dst` out of the right port; Ok(false) if the
    /// port's queue was full.
    fn route(&mut self, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> Result<bool, WireError> {
        let router: &dyn Router = match repr.protocol {
            Protocol::Shortest => &self.shortest,
            Protocol::Widest => &self.widest,
            _ => return Err(WireError::UnsupportedProtocol),
        };
        let next = router.next_hop(repr.dst).ok_or(WireError::NoRoute)?;
        let j = self.port_to(next).ok_or(WireError::NoRoute)?;
        Ok(self.send(j, repr, state, payload))
    }

    fn deliver(&mut self, src: NodeId, flow: u32, payload: &[u8]) {
        if self.deliver.len() + RECORD_HDR + payload.len() > MAX_DELIVER_BACKLOG {
            self.stats.tx_full += 1;
            return;
        }
        Record { node: src, flow, payload }.encode(&mut self.deliver);
        self.stats.delivered += 1;
    }

    /// Handles one frame that arrived on port `i`.
    fn receive(&mut self, i: usize, frame: &[u8]) -> Result<(), WireError> {
        let port = &self.ports[i];
        let p = OverlayPacket::new_checked(&frame[ETH_HDR_LEN..])?;
        let repr = OverlayRepr::parse(&p)?;
        if repr.link_id != port.rx_link_id {
            return Err(WireError::UnknownLink);
        }
        if !port.window.check(repr.link_seq) {
            return Err(WireError::Replayed);
        }
        port.key.open(&p)?;
        self.ports[i].window.accept(repr.link_seq);
        if repr.dst == self.me {
            self.deliver(repr.src, repr.flow_id, p.payload());
            return Ok(());
        }
        if repr.hop_limit <= 1 {
            return Err(WireError::HopLimitExceeded);
        }
        let fwd = OverlayRepr { hop_limit: repr.hop_limit - 1, ..repr };
        if self.route(fwd, p.state(), p.payload())? {
            self.stats.forwarded += 1;
        }
        Ok(())
    }

    /// Originates one record from the host.
    fn originate(&mut self, r: Record<'_>) {
        if r.node == self.me {
            self.deliver(self.me, r.flow, r.payload);
            return;
        }
        if r.payload.len() > MAX_PAYLOAD_LEN {
            self.stats.drops.count(WireError::BadLength);
            return;
        }
        let repr = OverlayRepr {
            protocol: self.protocol,
            hop_limit: self.hop_limit,
            flow_id: r.flow,
            src: self.me,
            dst: r.node,
            state_len: 0,
            payload_len: r.payload.len() as u16,
            link_id: 0,
            link_seq: 0,
        };
        match self.route(repr, &[], r.payload) {
            Ok(true) => self.stats.originated += 1,
            Ok(false) => {}
            Err(e) => self.stats.drops.count(e),
        }
    }

    fn publish_stats(&self) {
        // SAFETY: STATS_ADDR is a page the VMM reserves for this struct
        // (below the page tables, above the boot block); only the agent
        // writes it, the VMM reads it after the vCPU stopped.
        unsafe { core::ptr::write_volatile(STATS_ADDR as *mut NodeStats, self.stats) };
    }
}

/// Whether a frame claims to be overlay; whether it is a valid one is the
/// wire parser's call (and a counted drop if not).
fn is_overlay(frame: &[u8]) -> bool {
    frame.len() >= ETH_HDR_LEN && frame[12..14] == ETHERTYPE.to_be_bytes()
}

/// Runs the node until the VM is stopped.
pub fn run(params: &BootParams) -> ! {
    let cfg = match NodeConfig::decode(params.args()) {
        Ok(c) => c,
        Err(e) => {
            log!("node: unusable node configuration: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    };
    let devs = nets(params);
    if devs.len() != cfg.ports.len() {
        log!("node: {} virtio-net devices for {} configured ports", devs.len(), cfg.ports.len());
        io::exit(ports::EXIT_BAD_BOOT);
    }
    let mut con = console(params);
    let ports: Vec<Port> = devs
        .into_iter()
        .zip(cfg.ports.iter())
        .map(|(dev, pc)| Port {
            mac: dev.mac().unwrap_or([0x02, 0, 0, 0, 0, 1]),
            dev,
            peer: pc.peer,
            peer_mac: pc.peer_mac,
            tx_link_id: pc.tx_link_id,
            rx_link_id: pc.rx_link_id,
            key: LinkKey::new(&pc.key),
            next_seq: 1,
            window: ReplayWindow::new(),
            queue: VecDeque::new(),
        })
        .collect();
    let mut node = Node {
        me: cfg.me,
        hop_limit: cfg.hop_limit,
        shortest: Shortest::compute(&cfg.topology(), cfg.me),
        widest: Widest::compute(&cfg.topology(), cfg.me),
        protocol: Protocol::from(cfg.protocol),
        ports,
        stats: NodeStats { magic: STATS_MAGIC, ..Default::default() },
        deliver: Vec::new(),
    };
    node.publish_stats();
    log!("node {} up: {} ports, originating with {:?}", node.me, node.ports.len(), node.protocol);
    io::ready();

    let mut inbuf: Vec<u8> = Vec::new();
    let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = false;
        // Frames from the links, while the outputs keep up.
        if node.ports.iter().all(|p| p.queue.len() < RECEIVE_BELOW) {
            for i in 0..node.ports.len() {
                node.ports[i].dev.receive(|f| frames.push((i, f.to_vec())));
            }
        }
        for (i, f) in frames.drain(..) {
            worked = true;
            if !is_overlay(&f) {
                node.stats.drops.not_overlay += 1;
                continue;
            }
            if let Err(e) = node.receive(i, &f) {
                node.stats.drops.count(e);
            }
        }
        // Records from the host, while the ports keep up.
        if node.ports.iter().all(|p| p.queue.len() < ORIGINATE_BELOW) {
            while con.receive_one(|ev| {
                if let ConsoleEvent::Data(d) = ev {
                    inbuf.extend_from_slice(d)
                }
            }) {
                worked = true;
                if inbuf.len() > 64 * 1024 {
                    break;
                }
            }
            let mut used = 0;
            while let Some((r, n)) = Record::decode(&inbuf[used..]) {
                node.originate(r);
                used += n;
            }
            inbuf.drain(..used);
        }
        // Out to the links.
        for p in node.ports.iter_mut() {
            while let Some(f) = p.queue.front() {
                if p.dev.send(f).is_err() {
                    break;
                }
                p.queue.pop_front();
                worked = true;
            }
            p.dev.flush();
        }
        // Deliveries to the host.
        if !node.deliver.is_empty() {
            let n = con.send(&node.deliver);
            node.deliver.drain(..n);
            worked |= n > 0;
        }
        con.flush();
        if worked {
            node.publish_stats();
        }
        pacer.tick(worked);
    }
}
