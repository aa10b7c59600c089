//! Bodies of the VMM's fuzz targets (`fuzz/`): the guest is the attacker,
//! so the input plays a driver. It writes and reads the virtio-mmio
//! registers in any order and width, lays out guest memory (descriptor
//! tables, rings, indirect tables, buffers) as it likes, and has the
//! device run its queues through the data plane's own chain code
//! ([`netdev::chain`], [`netdev::queue_pair::drain_queue`]), and it may
//! hand the VMM a list of accesses in guest memory at once, as the agent
//! does at boot ([`crate::devices::batch`]). Only the tap
//! is replaced: a harness device stands where the net device's tap would
//! be, so that the run is deterministic and needs no privileges.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use netdev::chain;
use netdev::queue_pair::{drain_queue, MAX_FRAME_WITH_HDR};

use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::config_space;
use crate::devices::virtio::{read_config_bytes, ActivateError, Interrupt, VirtioDevice};
use crate::devices::{batch, MmioBus};

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets by name, as `fuzz/` and the regression replay know them.
pub const TARGETS: [(&str, Body); 1] = [("virtio_mmio", virtio_mmio)];

/// Guest memory the driver lays out: small, so that random addresses often
/// land inside it.
const MEM_SIZE: usize = 64 << 10;
/// Queue sizes the harness device offers (receive, transmit), as the net
/// device has two queues.
const QUEUE_MAX: [u16; 2] = [16, 16];
/// Bytes per driver operation: kind, offset (u16), value (u32).
const OP_LEN: usize = 7;
/// Where the harness device's window sits on the bus (batches name
/// registers by guest-physical address).
const WINDOW: u64 = crate::arch::layout::MMIO_BASE;

/// What one run did, for tests that check a seed reaches the data plane.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Times the transport activated the device.
    pub activations: u32,
    /// Transmit chains completed (refused ones included).
    pub tx_chains: usize,
    /// Receive chains completed (refused ones included).
    pub rx_chains: usize,
    /// The last transmit chain gathered whole, as read from guest memory.
    pub last_tx: Vec<u8>,
}

/// The device behind the transport: a net device's shape (id, features,
/// config space, two queues) with the tap replaced by the harness.
struct Harness {
    acked: u64,
    running: Option<(GuestMemoryMmap, Vec<Queue>)>,
    activations: u32,
    evts: Vec<EventFd>,
}

impl VirtioDevice for Harness {
    fn device_type(&self) -> u32 {
        1
    }
    fn avail_features(&self) -> u64 {
        1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MAC
    }
    fn set_acked_features(&mut self, acked: u64) {
        self.acked = acked;
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&config_space([2, 0, 0, 0, 0, 1]), offset, data);
    }
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        // The transport's promise: only a negotiated driver starts a device.
        assert_ne!(self.acked & (1 << VIRTIO_F_VERSION_1), 0, "activated without VERSION_1");
        assert_eq!(self.acked & !(self.avail_features() | (1 << VIRTIO_F_VERSION_1)), 0, "unoffered features");
        assert_eq!(queues.len(), QUEUE_MAX.len());
        self.activations += 1;
        self.running = Some((mem, queues));
        Ok(())
    }
    fn reset(&mut self) {
        self.acked = 0;
        self.running = None;
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.evts
    }
}

/// The register window and guest memory under fuzzed driver operations.
pub fn virtio_mmio(data: &[u8]) {
    run(data);
}

/// Runs `data` as a driver: byte 0 is the number of operations, then
/// [`OP_LEN`] bytes each, then the initial guest memory.
///
/// An operation's kind byte: bits 0-1 pick read (0), write (1), "the
/// device runs its queues" (2) or "a batch of accesses listed at guest
/// address `value`" (3); bits 2-3 the access width (1, 2, 4 or 8 bytes).
/// For kind 2 the value sizes the frame the device delivers on receive.
pub fn run(data: &[u8]) -> Outcome {
    let n = usize::from(data.first().copied().unwrap_or(0));
    let ops_end = (1 + n * OP_LEN).min(data.len());
    let ops = data.get(1..ops_end).unwrap_or(&[]);
    let image = data.get(ops_end..).unwrap_or(&[]);

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    mem.write_slice(&image[..image.len().min(MEM_SIZE)], GuestAddress(0)).expect("fits");
    let evts = QUEUE_MAX.iter().map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")).collect();
    let dev = Arc::new(Mutex::new(Harness { acked: 0, running: None, activations: 0, evts }));
    let wake = std::sync::Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let mut bus = MmioBus::default();
    bus.insert(WINDOW, 0x1000, MmioTransport::new(dev.clone(), mem.clone(), Interrupt::new(&wake).expect("interrupt")));

    let mut out = Outcome::default();
    let mut frame = Vec::new();
    for op in ops.chunks_exact(OP_LEN) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let value = u32::from_le_bytes([op[3], op[4], op[5], op[6]]);
        let width = 1usize << ((op[0] >> 2) & 3);
        match op[0] & 3 {
            0 => {
                let mut buf = [0u8; 8];
                bus.read(WINDOW + offset, &mut buf[..width]);
            }
            1 => {
                let bytes = u64::from(value).to_le_bytes();
                bus.write(WINDOW + offset, &bytes[..width]);
            }
            3 => {
                batch::run(&mut bus, &mem, u64::from(value));
            }
            _ => {
                let mut d = dev.lock().unwrap();
                if let Some((mem, queues)) = d.running.as_mut() {
                    let (rx, tx) = queues.split_at_mut(1);
                    run_queues(mem, &mut rx[0], &mut tx[0], value, &mut frame, &mut out);
                }
            }
        }
    }
    out.activations = dev.lock().unwrap().activations;
    out
}

/// One pass of each queue, as the net device's event handler makes: every
/// transmit chain gathered, every receive chain given a frame of
/// `rx_len` bytes (whole, or as a byte stream when `rx_len` is odd).
fn run_queues(
    mem: &GuestMemoryMmap,
    rx: &mut Queue,
    tx: &mut Queue,
    rx_len: u32,
    frame: &mut Vec<u8>,
    out: &mut Outcome,
) {
    out.tx_chains += drain_queue(tx, mem, |c| {
        match chain::gather(c, frame, MAX_FRAME_WITH_HDR) {
            Ok(()) => {
                assert!(frame.len() <= MAX_FRAME_WITH_HDR);
                out.last_tx.clone_from(frame);
            }
            Err(_) => assert!(frame.len() <= MAX_FRAME_WITH_HDR),
        }
        0
    });
    let payload = vec![0xa5u8; (rx_len % 4096) as usize];
    out.rx_chains += drain_queue(rx, mem, |c| {
        if rx_len.is_multiple_of(2) {
            match chain::scatter(c, &payload) {
                Ok(n) => {
                    assert_eq!(n as usize, payload.len());
                    n
                }
                Err(_) => 0,
            }
        } else {
            match chain::fill(c, &payload) {
                Ok(n) => {
                    assert!(n <= payload.len());
                    n as u32
                }
                Err(_) => 0,
            }
        }
    });
}

/// A driver that does everything right: negotiates, sets up both queues,
/// offers one transmit buffer holding `tx` and one receive buffer, starts
/// the device and has it run its queues twice. The fuzzer starts from it.
pub fn seed(tx: &[u8]) -> Vec<u8> {
    use virtio_bindings::virtio_config::{
        VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRV, VIRTIO_CONFIG_S_DRIVER_OK as OK,
        VIRTIO_CONFIG_S_FEATURES_OK as FOK,
    };
    use virtio_bindings::virtio_mmio::*;
    // Each queue's table, avail and used ring in 0x300 bytes (16 entries).
    const QUEUES: [(u32, u32); 2] = [(0, 0x100), (1, 0x400)];
    const TX_BUF: usize = 0x700;
    let mut ops = Vec::new();
    let mut op = |kind: u8, reg: u32, v: u32| {
        ops.push(kind | (2 << 2));
        ops.extend_from_slice(&(reg as u16).to_le_bytes());
        ops.extend_from_slice(&v.to_le_bytes());
    };
    op(0, VIRTIO_MMIO_MAGIC_VALUE, 0);
    op(1, VIRTIO_MMIO_STATUS, ACK);
    op(1, VIRTIO_MMIO_STATUS, ACK | DRV);
    op(0, VIRTIO_MMIO_DEVICE_FEATURES, 0);
    op(1, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    op(1, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    op(1, VIRTIO_MMIO_STATUS, ACK | DRV | FOK);
    for (q, base) in QUEUES {
        op(1, VIRTIO_MMIO_QUEUE_SEL, q);
        op(1, VIRTIO_MMIO_QUEUE_NUM, 16);
        op(1, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
        op(1, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x100);
        op(1, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x200);
        op(1, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    op(1, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | OK);
    op(2, 0, 1514);
    op(2, 0, 64);
    // Short, so that the fuzzer's inputs stay short: memory past the image
    // is zero, and the receive buffer lies there.
    let mut image = vec![0u8; TX_BUF + tx.len()];
    // Receive queue 0: one 2 KiB device-writable buffer at 0x1000.
    // Transmit queue 1: one device-readable buffer holding `tx`.
    let bufs = [(0x1000u64, 2048u32, 2u16), (TX_BUF as u64, tx.len() as u32, 0)];
    for ((_, base), (addr, len, flags)) in QUEUES.iter().zip(bufs) {
        let b = *base as usize;
        image[b..b + 8].copy_from_slice(&addr.to_le_bytes());
        image[b + 8..b + 12].copy_from_slice(&len.to_le_bytes());
        image[b + 12..b + 14].copy_from_slice(&flags.to_le_bytes());
        // avail: flags 0, idx 1, ring[0] = descriptor 0.
        image[b + 0x102..b + 0x104].copy_from_slice(&1u16.to_le_bytes());
    }
    image[TX_BUF..].copy_from_slice(tx);
    assemble(&ops, &image)
}

fn assemble(ops: &[u8], image: &[u8]) -> Vec<u8> {
    let mut input = vec![(ops.len() / OP_LEN) as u8];
    input.extend_from_slice(ops);
    input.extend_from_slice(image);
    input
}

/// The same driver as [`seed`], with every register access of its bring-up
/// in one batch listed in guest memory (as the agent boots), then the
/// queues run twice.
pub fn seed_batched(tx: &[u8]) -> Vec<u8> {
    use guest_agent::virtio::batch::{ENTRY_LEN, HEADER_LEN, OP_READ, OP_WRITE};
    const LIST: usize = 0x2000;
    let plain = seed(tx);
    let n = usize::from(plain[0]);
    let (ops, mut image) = (&plain[1..1 + n * OP_LEN], plain[1 + n * OP_LEN..].to_vec());
    let mut list = Vec::new();
    let mut runs = Vec::new();
    for op in ops.chunks_exact(OP_LEN) {
        let reg = u64::from(u16::from_le_bytes([op[1], op[2]]));
        match op[0] & 3 {
            k @ (0 | 1) => {
                list.extend_from_slice(&(WINDOW + reg).to_le_bytes());
                list.extend_from_slice(&(if k == 0 { OP_READ } else { OP_WRITE }).to_le_bytes());
                list.extend_from_slice(&op[3..7]);
            }
            _ => runs.extend_from_slice(op),
        }
    }
    let count = (list.len() / ENTRY_LEN) as u32;
    image.resize(LIST + HEADER_LEN + list.len(), 0);
    image[LIST..LIST + 4].copy_from_slice(&count.to_le_bytes());
    image[LIST + HEADER_LEN..].copy_from_slice(&list);
    let mut batched = vec![3 | (2 << 2), 0, 0];
    batched.extend_from_slice(&(LIST as u32).to_le_bytes());
    batched.extend_from_slice(&runs);
    assemble(&batched, &image)
}

#[cfg(test)]
#[path = "../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_reaches_the_data_plane_through_the_registers() {
        let frame: Vec<u8> = (0..80u8).collect();
        let o = run(&seed(&frame));
        assert_eq!(o.activations, 1);
        assert_eq!((o.tx_chains, o.rx_chains), (1, 1), "each buffer used once, however often the queues run");
        assert_eq!(o.last_tx, frame);
    }

    #[test]
    fn the_batched_seed_reaches_the_data_plane_in_one_batch() {
        let frame: Vec<u8> = (0..80u8).collect();
        let input = seed_batched(&frame);
        assert_eq!(input[0], 3, "one batch, two queue runs");
        let o = run(&input);
        assert_eq!(o.activations, 1);
        assert_eq!((o.tx_chains, o.rx_chains), (1, 1));
        assert_eq!(o.last_tx, frame);
    }

    #[test]
    fn a_driver_that_skips_negotiation_never_starts_the_device() {
        let mut input = seed(b"frame");
        // Drop the FEATURES_OK write: the 7th operation.
        input.drain(1 + 6 * OP_LEN..1 + 7 * OP_LEN);
        input[0] -= 1;
        assert_eq!(run(&input), Outcome::default());
    }

    #[test]
    fn every_committed_fuzz_input_runs_clean() {
        super::replay::committed_inputs_run_clean(&TARGETS);
    }

    /// Writes `fuzz/seeds/virtio_mmio/valid`. Run by hand when the input
    /// layout changes: `cargo test -p vmm --lib -- --ignored write_fuzz_seeds`.
    #[test]
    #[ignore = "writes fuzz/seeds; run by hand when the input layout changes"]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/virtio_mmio");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("valid"), seed(&[0u8; 64])).unwrap();
        std::fs::write(dir.join("valid-batched"), seed_batched(&[0u8; 64])).unwrap();
    }
}
