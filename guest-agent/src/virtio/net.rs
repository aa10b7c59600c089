//! Polled virtio-net driver.
//!
//! Only `VERSION_1` is negotiated, so every frame carries the 12-byte
//! `virtio_net_hdr_v1` with no offloads; the VMM's tap uses the same header
//! size, so frames cross the host without being rewritten.

use alloc::vec::Vec;

use super::features::NET_MAC;
use super::mmio::new_queue;
use super::{DmaBuffers, MmioTransport, SplitQueue, VirtioError};
use crate::boot::device_id;

/// Length of `virtio_net_hdr_v1`.
pub const NET_HDR_LEN: usize = 12;
/// Largest Ethernet frame carried (no jumbo frames, no offloads).
pub const MAX_FRAME: usize = 1514;
const BUF_SIZE: usize = 2048;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const QUEUE_SIZE: u16 = 128;

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Larger than [`MAX_FRAME`].
    TooLarge,
    /// Every transmit buffer is in flight; poll and retry.
    Full,
}

/// Counters of what the driver saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Receive completions too short to hold a header.
    pub rx_runts: u64,
}

/// A virtio-net device driven by polling.
pub struct VirtioNet {
    transport: MmioTransport,
    rx: SplitQueue,
    tx: SplitQueue,
    rx_bufs: DmaBuffers,
    tx_bufs: DmaBuffers,
    tx_free: Vec<u16>,
    tx_kick_pending: bool,
    stats: NetStats,
    mac: Option<[u8; 6]>,
}

impl VirtioNet {
    /// Brings up the device and posts every receive buffer.
    pub fn new(transport: MmioTransport) -> Result<Self, VirtioError> {
        let probe = transport.probe(device_id::NET, NET_MAC, 6)?;
        let mac = (probe.accepted & NET_MAC != 0).then(|| core::array::from_fn(|i| probe.config[i]));
        let rx = new_queue(probe.queue_max[RX_QUEUE as usize], RX_QUEUE, QUEUE_SIZE)?;
        let tx = new_queue(probe.queue_max[TX_QUEUE as usize], TX_QUEUE, QUEUE_SIZE)?;
        let rx_bufs = DmaBuffers::new(rx.size() as usize, BUF_SIZE)?;
        let tx_bufs = DmaBuffers::new(tx.size() as usize, BUF_SIZE)?;
        let tx_free = (0..tx.size()).rev().collect();
        let mut dev = Self {
            transport,
            rx,
            tx,
            rx_bufs,
            tx_bufs,
            tx_free,
            tx_kick_pending: false,
            stats: NetStats::default(),
            mac,
        };
        for i in 0..dev.rx.size() {
            dev.rx.post(i, dev.rx_bufs.addr(i as usize), BUF_SIZE as u32, true);
        }
        dev.transport.activate(&probe, &[&dev.rx, &dev.tx])?;
        Ok(dev)
    }

    /// Hands each received frame (without the virtio header) to `f`, then
    /// returns its buffer to the device. Returns the number of frames.
    pub fn receive(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(u) = self.rx.pop_used() {
            let len = u.len as usize;
            if len < NET_HDR_LEN {
                self.stats.rx_runts += 1;
            } else {
                let buf = self.rx_bufs.get(u.id as usize, len);
                f(&buf[NET_HDR_LEN..]);
                self.stats.rx_frames += 1;
                n += 1;
            }
            self.rx.post(u.id, self.rx_bufs.addr(u.id as usize), BUF_SIZE as u32, true);
        }
        if n > 0 && self.rx.device_wants_kick() {
            self.transport.notify(RX_QUEUE);
        }
        n
    }

    /// Queues one Ethernet frame; [`flush`](Self::flush) kicks the device.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if frame.len() > MAX_FRAME {
            return Err(SendError::TooLarge);
        }
        self.reclaim_tx();
        let id = self.tx_free.pop().ok_or(SendError::Full)?;
        let buf = self.tx_bufs.get_mut(id as usize);
        buf[..NET_HDR_LEN].fill(0);
        buf[NET_HDR_LEN..NET_HDR_LEN + frame.len()].copy_from_slice(frame);
        let len = (NET_HDR_LEN + frame.len()) as u32;
        self.tx.post(id, self.tx_bufs.addr(id as usize), len, false);
        self.tx_kick_pending = true;
        self.stats.tx_frames += 1;
        Ok(())
    }

    /// Whether a frame can be queued now (a transmit buffer is free), so a
    /// caller can skip work that only a send would need.
    pub fn can_send(&mut self) -> bool {
        self.reclaim_tx();
        !self.tx_free.is_empty()
    }

    /// Kicks the device if frames were queued since the last kick and the
    /// device is not already polling.
    pub fn flush(&mut self) {
        if self.tx_kick_pending {
            self.tx_kick_pending = false;
            if self.tx.device_wants_kick() {
                self.transport.notify(TX_QUEUE);
            }
        }
    }

    fn reclaim_tx(&mut self) {
        while let Some(u) = self.tx.pop_used() {
            self.tx_free.push(u.id);
        }
    }

    /// The MAC the device reports, if it offers one.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// What the driver counted.
    pub fn stats(&self) -> NetStats {
        self.stats
    }
}
