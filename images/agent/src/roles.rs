//! What the agent does once booted.

use alloc::vec::Vec;

use guest_agent::boot::{device_id, BootParams, Role};
use guest_agent::net::ping::{self, Iface};
use guest_agent::ports;
use guest_agent::virtio::console::{ConsoleEvent, VirtioConsole};
use guest_agent::virtio::net::VirtioNet;
use guest_agent::virtio::MmioTransport;

use crate::{clock, io, log};

/// How long the agent spins on its queues before parking the vCPU. A park
/// costs an exit (≈ 60 µs), so very short gaps are cheaper to spin over;
/// but a spinning vCPU takes the CPU from the host threads that feed it
/// (measured: relay 64-byte rate 76-82 k/s at 200 µs, 88-96 k/s at 20 µs,
/// node pinned to one CPU).
const SPIN_US: u64 = 20;
/// How long one park lasts at most on a loop that polls on a short
/// cadence (nodes' maintenance, the echo and ping roles).
pub(crate) const PARK_US: u32 = 10_000;
/// The shortest park: a timer that is already due but found nothing to
/// do is not worth spinning over.
const MIN_PARK_US: u32 = 1_000;

/// Spin-then-park pacing for a polled main loop.
pub(crate) struct Pacer {
    idle_since: Option<u64>,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Self { idle_since: None }
    }

    /// Call once per loop iteration with whether it did any work and how
    /// long the loop may sleep at most before its next timer.
    pub(crate) fn tick(&mut self, worked: bool, max_park_us: u32) {
        if worked {
            self.idle_since = None;
            return;
        }
        let now = clock::now_us();
        match self.idle_since {
            None => self.idle_since = Some(now),
            Some(t) if now.saturating_sub(t) >= SPIN_US => {
                io::wait(max_park_us.max(MIN_PARK_US));
                self.idle_since = None;
            }
            Some(_) => core::hint::spin_loop(),
        }
    }
}

pub(crate) fn console(params: &BootParams) -> VirtioConsole {
    let Some(d) = params.find_device(device_id::CONSOLE) else {
        log!("agent: this role needs a virtio-console device");
        io::exit(ports::EXIT_DEVICE);
    };
    // SAFETY: the VMM describes a virtio-mmio window at this base; only
    // this driver uses it.
    match VirtioConsole::new(unsafe { MmioTransport::new(d.base) }) {
        Ok(c) => c,
        Err(e) => {
            log!("agent: virtio-console: {e}");
            io::exit(ports::EXIT_DEVICE);
        }
    }
}

fn net(params: &BootParams) -> VirtioNet {
    let Some(d) = params.find_device(device_id::NET) else {
        log!("agent: this role needs a virtio-net device");
        io::exit(ports::EXIT_DEVICE);
    };
    // SAFETY: as in `console`.
    match VirtioNet::new(unsafe { MmioTransport::new(d.base) }) {
        Ok(n) => n,
        Err(e) => {
            log!("agent: virtio-net: {e}");
            io::exit(ports::EXIT_DEVICE);
        }
    }
}

/// Every virtio-net device, in boot-parameter order.
pub(crate) fn nets(params: &BootParams) -> Vec<VirtioNet> {
    params
        .devices()
        .iter()
        .filter(|d| d.device_id == device_id::NET)
        // SAFETY: as in `console`, one driver per window.
        .map(|d| match VirtioNet::new(unsafe { MmioTransport::new(d.base) }) {
            Ok(n) => n,
            Err(e) => {
                log!("agent: virtio-net at {:#x}: {e}", d.base);
                io::exit(ports::EXIT_DEVICE);
            }
        })
        .collect()
}

/// Runs `role` to completion.
pub fn run(role: Role, params: &mut BootParams) -> ! {
    match role {
        Role::Echo => echo(console(params)),
        Role::BadDescriptor => {
            let mut c = console(params);
            let ram_end = params.mem_regions().iter().map(|r| r.base + r.size).max().unwrap_or(0);
            // A buffer the device must refuse: it starts past the end of RAM.
            c.send_raw(ram_end + 0x10_0000, 64);
            c.flush();
            echo(c)
        }
        Role::Ping => ping_role(net(params), params),
        Role::Idle => {
            io::ready();
            loop {
                io::wait(1_000_000);
            }
        }
        Role::BadMmio => {
            let Some(d) = params.find_device(device_id::CONSOLE) else {
                log!("agent: this role needs a virtio-console device");
                io::exit(ports::EXIT_DEVICE);
            };
            io::ready();
            for _ in 0..guest_agent::boot::BAD_MMIO_ACCESSES {
                // SAFETY: the console's MMIO window is mapped at this base;
                // a byte read of its magic register has no effect on the
                // device beyond the VMM's refusal.
                let _ = unsafe { (d.base as *const u8).read_volatile() };
            }
            io::exit(0)
        }
        // Runs before the heap exists (main.rs); never reaches here.
        Role::Warm => io::exit(ports::EXIT_BAD_BOOT),
        Role::Node => crate::node::run(params),
        Role::Edge => crate::node::run_edge(params),
        Role::Panic => {
            io::ready();
            panic!("role 'panic' asked for a panic");
        }
    }
}

/// Echoes console bytes until the host closes the console, then exits 0
/// once everything has been handed back.
fn echo(mut con: VirtioConsole) -> ! {
    io::ready();
    let mut backlog: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut pacer = Pacer::new();
    loop {
        let mut worked = false;
        if !backlog.is_empty() {
            let n = con.send(&backlog);
            backlog.drain(..n);
            worked |= n > 0;
        }
        while backlog.is_empty() && !closed {
            let got = con.receive_one(|ev| match ev {
                ConsoleEvent::Data(d) => backlog.extend_from_slice(d),
                ConsoleEvent::Closed => closed = true,
            });
            if !got {
                break;
            }
            worked = true;
            let n = con.send(&backlog);
            backlog.drain(..n);
        }
        con.flush();
        if closed && backlog.is_empty() && con.tx_drained() {
            io::exit(0);
        }
        pacer.tick(worked, PARK_US);
    }
}

/// Answers ARP and ICMP echo for the configured address, forever.
fn ping_role(mut dev: VirtioNet, params: &BootParams) -> ! {
    let me = Iface { mac: params.net.mac, ip: params.net.ip };
    if me.ip == [0; 4] {
        log!("agent: role 'ping' needs an IP address (--ip)");
        io::exit(ports::EXIT_BAD_BOOT);
    }
    io::ready();
    let mut out = [0u8; 1600];
    let mut replies: Vec<Vec<u8>> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let n = dev.receive(|frame| {
            if let Ok(len) = ping::answer(frame, &me, &mut out) {
                replies.push(out[..len].to_vec());
            }
        });
        for r in replies.drain(..) {
            // A full ring drops the reply, as a NIC would.
            let _ = dev.send(&r);
        }
        dev.flush();
        pacer.tick(n > 0, PARK_US);
    }
}
