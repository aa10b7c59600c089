//! The virtio-net data plane: one pass of a receive queue and one of a
//! transmit queue against a tap.
//!
//! It knows nothing of who owns the queues: the in-VMM virtio-net device
//! and the vhost-user-net backend both call it (Cloud Hypervisor's
//! `net_util::queue_pair` shape). Frames carry `virtio_net_hdr_v1` on both
//! sides, so they cross unchanged.

use std::io;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::chain;
use crate::metrics::NetMetrics;
use crate::tap::{Tap, VNET_HDR_LEN};

/// Largest frame with header moved: a 64 KiB GSO frame plus header is the
/// most a tap produces, and no guest transmit is allowed longer.
pub const MAX_FRAME_WITH_HDR: usize = 65_562;

/// A frame read from the tap that has not found a receive buffer yet.
pub struct RxFrame {
    buf: Vec<u8>,
    len: usize,
}

impl Default for RxFrame {
    fn default() -> Self {
        Self { buf: vec![0; MAX_FRAME_WITH_HDR], len: 0 }
    }
}

impl RxFrame {
    /// Forgets a pending frame (device reset).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Pops every available chain of a driver-to-device queue and hands each to
/// `handle`, which returns the length to report as used. Kicks are
/// suppressed while draining; the final check after re-enabling them closes
/// the race with a driver adding buffers meanwhile. Returns the number of
/// chains completed.
pub fn drain_queue<F>(queue: &mut Queue, mem: &GuestMemoryMmap, mut handle: F) -> usize
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let mut done = 0;
    loop {
        if queue.disable_notification(mem).is_err() {
            return done;
        }
        let before = done;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = handle(chain);
            if queue.add_used(mem, head, len).is_err() {
                return done;
            }
            done += 1;
        }
        match queue.enable_notification(mem) {
            // More came while notifications were off. But a ring whose
            // index claims buffers that cannot be popped (found by the
            // virtio_mmio fuzz target: an avail index far past the queue's
            // size) would say so forever: a pass that took nothing ends.
            Ok(true) if done > before => continue,
            _ => return done,
        }
    }
}

/// Moves frames from `tap` into receive buffers of `rx` until the tap is
/// empty or the driver has no buffer left (the frame then waits in
/// `pending` for the next call). Returns the number of buffers used.
pub fn tap_to_rx(tap: &Tap, rx: &mut Queue, mem: &GuestMemoryMmap, pending: &mut RxFrame, m: &NetMetrics) -> usize {
    let mut used = 0;
    loop {
        if pending.len == 0 {
            match tap.read(&mut pending.buf) {
                Ok(n) if n >= VNET_HDR_LEN => pending.len = n,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    NetMetrics::inc(&m.rx_tap_errors);
                    break;
                }
            }
            // num_buffers = 1: no mergeable receive buffers.
            pending.buf[10..12].copy_from_slice(&1u16.to_le_bytes());
        }
        let Some(chain) = rx.pop_descriptor_chain(mem) else { break };
        let head = chain.head_index();
        let len = match chain::scatter(chain, &pending.buf[..pending.len]) {
            Ok(n) => {
                NetMetrics::inc(&m.rx_frames);
                m.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                pending.len = 0;
                n
            }
            Err(e) => {
                // The frame stays for the next buffer; this one returns empty.
                tracing::debug!("virtio-net: receive chain refused: {e}");
                NetMetrics::inc(&m.rx_bad_descriptors);
                0
            }
        };
        if rx.add_used(mem, head, len).is_err() {
            break;
        }
        used += 1;
    }
    used
}

/// Sends every frame queued on `tx` out through `tap`. Returns the number
/// of chains completed.
pub fn tx_to_tap(tap: &Tap, tx: &mut Queue, mem: &GuestMemoryMmap, frame: &mut Vec<u8>, m: &NetMetrics) -> usize {
    drain_queue(tx, mem, |chain| {
        if let Err(e) = chain::gather(chain, frame, MAX_FRAME_WITH_HDR) {
            tracing::debug!("virtio-net: transmit chain refused: {e}");
            NetMetrics::inc(&m.tx_bad_descriptors);
            return 0;
        }
        if frame.len() < VNET_HDR_LEN {
            NetMetrics::inc(&m.tx_malformed);
            return 0;
        }
        match tap.write(frame) {
            Ok(_) => {
                NetMetrics::inc(&m.tx_frames);
                m.tx_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            Err(_) => NetMetrics::inc(&m.tx_tap_errors),
        }
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn drain_queue_completes_every_chain_once() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mq = MockSplitQueue::new(&m, 16);
        for i in 0..3u16 {
            let d = RawDescriptor::from(SplitDescriptor::new(0x1000 * (i as u64 + 1), 8, 0, 0));
            mq.add_desc_chains(&[d], i).unwrap();
        }
        let mut q: Queue = mq.create_queue().unwrap();
        let mut seen = 0;
        assert_eq!(
            drain_queue(&mut q, &m, |_| {
                seen += 1;
                0
            }),
            3
        );
        assert_eq!(seen, 3);
        assert_eq!(drain_queue(&mut q, &m, |_| 0), 0);
        let used_idx: u16 = m.read_obj(GuestAddress(mq.used_addr().0 + 2)).unwrap();
        assert_eq!(used_idx, 3);
    }
}
