//! The `node` and `edge` roles: drive a [`Router`] with this VM's devices.
//!
//! Each virtio-net is one link port; the console is the host's side (node
//! VMs: console records) or the app's connection (request VMs on an edge
//! host). Everything else, from authentication to onion circuits, is
//! `guest_agent::router`, which this loop feeds with frames, bytes and
//! the clock.

use alloc::vec::Vec;

use guest_agent::boot::BootParams;
use guest_agent::node::{EdgeRequest, NodeConfig, NodeStats, STATS_ADDR};
use guest_agent::ports;
use guest_agent::router::{Notice, Router, MAX_HOST_INPUT};
use guest_agent::virtio::console::{ConsoleEvent, VirtioConsole};
use guest_agent::virtio::net::VirtioNet;

use crate::roles::{console, nets, Pacer, PARK_US};
use crate::{clock, io, log};

fn decode_config(params: &BootParams) -> NodeConfig {
    match NodeConfig::decode(params.args()) {
        Ok(c) => c,
        Err(e) => {
            log!("node: unusable node configuration: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    }
}

/// This VM's link devices, each with its MAC.
fn links(params: &BootParams) -> Vec<(VirtioNet, [u8; 6])> {
    nets(params)
        .into_iter()
        .map(|dev| {
            let mac = dev.mac().unwrap_or([0x02, 0, 0, 0, 0, 1]);
            (dev, mac)
        })
        .collect()
}

/// Writes the agent's stats page. The counters go out on every pass
/// that did work; the link and topology tables (most of the page) only
/// when the topology changed or a second has passed, so a busy relay does
/// not copy kilobytes per batch of frames.
struct StatsPage {
    topology_changes: u64,
    tables_at: u64,
}

/// How often the link table (measured latency, loss) is rewritten at least.
const TABLES_EVERY_US: u64 = 1_000_000;

impl StatsPage {
    fn new() -> Self {
        Self { topology_changes: u64::MAX, tables_at: 0 }
    }

    fn publish(&mut self, s: &NodeStats) {
        let now = clock::now_us();
        let tables = s.topology_changes != self.topology_changes || now >= self.tables_at;
        if tables {
            self.topology_changes = s.topology_changes;
            self.tables_at = now + TABLES_EVERY_US;
        }
        let end = if tables { core::mem::size_of::<NodeStats>() } else { core::mem::offset_of!(NodeStats, links) };
        let words = s.as_bytes()[..end].chunks_exact(8);
        let page = STATS_ADDR as *mut u64;
        for (i, w) in words.enumerate() {
            let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            // SAFETY: STATS_ADDR is a page the VMM reserves for this struct
            // (below the page tables, above the boot block); only the agent
            // writes it, the VMM reads it while the vCPU waits in an exit or
            // after it stopped; `i` stays within size_of::<NodeStats>(), all
            // u64 fields, so every store is an aligned field.
            unsafe { core::ptr::write_volatile(page.add(i), v) };
        }
    }
}

fn log_notices(r: &mut Router<VirtioNet>) {
    while let Some(n) = r.poll_notice() {
        let me = r.me();
        match n {
            Notice::LinksUsable { now, before } => {
                log!("node {me}: {now} of the configured links usable now (was {before})")
            }
            Notice::LinkDown { peer } => log!("node {me}: link to {peer} is down (no answer to probes)"),
            Notice::CircuitBuilt { relays } => log!("edge: onion circuit through {relays} relays"),
            Notice::CircuitMoved => log!("edge: a relay of the onion circuit is gone; moved to a new circuit"),
            Notice::CircuitLost => log!("edge: a relay of the onion circuit is gone and no other circuit is possible"),
            Notice::NoCircuit => log!("edge: no onion circuit to the destination"),
            Notice::LinkKeyed { peer } => log!("node {me}: link to {peer} keyed from its certificate"),
        }
    }
}

fn unusable(e: impl core::fmt::Display) -> ! {
    log!("node: {e}");
    io::exit(ports::EXIT_BAD_BOOT)
}

/// Runs a node VM until it is stopped.
pub fn run(params: &mut BootParams) -> ! {
    let mut cfg = decode_config(params);
    params.wipe_args();
    let mut router = Router::new(&cfg, links(params), clock::now_us()).unwrap_or_else(|e| unusable(e));
    cfg.wipe_secrets();
    let mut con = console(params);
    let mut stats = StatsPage::new();
    stats.publish(router.stats());
    log!("node {} up: {} ports, originating with {:?}", router.me(), router.ports().len(), router.protocol());
    io::ready();

    let mut inbuf: Vec<u8> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = router.poll_links(clock::now_us());
        // Records from the host, while the ports keep up.
        if router.wants_host_input() {
            while con.receive_one(|ev| {
                if let ConsoleEvent::Data(d) = ev {
                    inbuf.extend_from_slice(d)
                }
            }) {
                worked = true;
                if inbuf.len() > MAX_HOST_INPUT {
                    break;
                }
            }
            let used = router.host_input(&inbuf);
            inbuf.drain(..used);
        }
        let now = clock::now_us();
        worked |= router.poll(now);
        worked |= router.flush_links(now);
        // Deliveries to the host.
        if !router.host_output().is_empty() {
            let n = con.send(router.host_output());
            router.host_took(n);
            worked |= n > 0;
        }
        con.flush();
        log_notices(&mut router);
        if worked {
            stats.publish(router.stats());
        }
        pacer.tick(worked, PARK_US);
    }
}

/// Longest a request VM sleeps with nothing to do (the VMM's cap): an
/// idle request costs one exit per this, not one per maintenance pass.
const IDLE_PARK_US: u64 = 60_000_000;

/// How long a request VM may sleep: until its router's next timer, or a
/// short park while frames or console bytes wait for room (the devices
/// wake it when room comes, the short park bounds a missed wake).
fn request_park_us(router: &Router<VirtioNet>, con: &mut VirtioConsole) -> u32 {
    if !router.links_idle() || !router.app_output().is_empty() || !con.tx_drained() {
        return PARK_US;
    }
    let now = clock::now_us();
    router.poll_at().map_or(IDLE_PARK_US, |t| t.saturating_sub(now).min(IDLE_PARK_US)) as u32
}

/// A request VM: carries one app connection (the console, after the edge
/// daemon's SOCKS handshake) as a stream to the service on the destination
/// node, reports to the host when the stream is up or refused (the host
/// writes the SOCKS reply), and exits when the connection is over.
pub fn run_edge(params: &mut BootParams) -> ! {
    let mut cfg = decode_config(params);
    let req = match EdgeRequest::decode(params.args().get(cfg.encoded_len()..).unwrap_or(&[])) {
        Ok(r) => r,
        Err(e) => {
            log!("edge: unusable request: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    };
    params.wipe_args();
    let mut router = Router::new_request(&cfg, &req, links(params), clock::now_us()).unwrap_or_else(|e| unusable(e));
    router.note_boot(clock::since_entry_us());
    cfg.wipe_secrets();
    // Ask the neighbours for link state (the stream's keys) before the
    // console is up and the host told: their answer is on its way while
    // the rest of the boot runs.
    let now = clock::now_us();
    router.poll(now);
    router.flush_links(now);
    let mut con = console(params);
    let mut stats = StatsPage::new();
    stats.publish(router.stats());
    log_notices(&mut router);
    io::ready();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = router.poll_links(clock::now_us());
        // Up or refused: the host answers the app (its SOCKS reply) during
        // this exit, before any stream byte reaches the console.
        if let Some(phase) = router.request_reply_due() {
            // The host reads the opening's steps from the page as it answers.
            stats.publish(router.stats());
            io::report_stream(phase.port_value());
            router.request_replied();
            worked = true;
        }
        // App to stream.
        while router.wants_app_input() {
            let mut closed = false;
            let mut got = Vec::new();
            let any = con.receive_one(|ev| match ev {
                ConsoleEvent::Data(d) => got.extend_from_slice(d),
                ConsoleEvent::Closed => closed = true,
            });
            if !any {
                break;
            }
            worked = true;
            router.app_input(&got);
            if closed {
                router.app_closed();
            }
        }
        let now = clock::now_us();
        worked |= router.poll(now);
        // Stream to app.
        if !router.app_output().is_empty() {
            let n = con.send(router.app_output());
            router.app_took(n);
            worked |= n > 0;
        }
        worked |= router.flush_links(now);
        con.flush();
        log_notices(&mut router);
        if router.request_done(now) && con.tx_drained() {
            stats.publish(router.stats());
            io::exit(0);
        }
        if worked {
            stats.publish(router.stats());
        }
        pacer.tick(worked, request_park_us(&router, &mut con));
    }
}
