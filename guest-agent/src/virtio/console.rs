//! Polled virtio-console driver (port 0 only, no multiport).
//!
//! The console carries one byte stream, the application's. pathvm's VMM
//! reports the host side closing the stream by completing a receive buffer
//! with length 0, which virtio-console otherwise never does; the driver
//! turns that into [`ConsoleEvent::Closed`].

use alloc::vec::Vec;

use super::mmio::new_queue;
use super::{DmaBuffers, MmioTransport, SplitQueue, VirtioError};
use crate::boot::device_id;

/// Bytes per console buffer. The console carries a stream's bytes (the
/// app's socket, a destination's service records), and each buffer costs
/// the device thread and the guest a round of queue work and often a
/// wake-up: 64 KiB instead of 4 KiB moved one flow through line3 from
/// 44-46 to 55-58 MB/s (16 KiB: 51-53). Pages are touched only as bytes
/// come, so an idle VM pays none of it.
const BUF_SIZE: usize = 64 * 1024;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const QUEUE_SIZE: u16 = 16;

/// What [`VirtioConsole::receive`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleEvent<'a> {
    /// Bytes from the host.
    Data(&'a [u8]),
    /// The host closed its end; no more data will come.
    Closed,
}

/// A virtio-console device driven by polling.
pub struct VirtioConsole {
    transport: MmioTransport,
    rx: SplitQueue,
    tx: SplitQueue,
    rx_bufs: DmaBuffers,
    tx_bufs: DmaBuffers,
    tx_free: Vec<u16>,
    tx_kick_pending: bool,
}

impl VirtioConsole {
    /// Brings up the device and posts every receive buffer.
    pub fn new(transport: MmioTransport) -> Result<Self, VirtioError> {
        let probe = transport.probe(device_id::CONSOLE, 0, 0)?;
        let rx = new_queue(probe.queue_max[RX_QUEUE as usize], RX_QUEUE, QUEUE_SIZE)?;
        let tx = new_queue(probe.queue_max[TX_QUEUE as usize], TX_QUEUE, QUEUE_SIZE)?;
        let rx_bufs = DmaBuffers::new(rx.size() as usize, BUF_SIZE)?;
        let tx_bufs = DmaBuffers::new(tx.size() as usize, BUF_SIZE)?;
        let tx_free = (0..tx.size()).rev().collect();
        let mut dev = Self { transport, rx, tx, rx_bufs, tx_bufs, tx_free, tx_kick_pending: false };
        for i in 0..dev.rx.size() {
            dev.rx.post(i, dev.rx_bufs.addr(i as usize), BUF_SIZE as u32, true);
        }
        dev.transport.activate(&probe, &[&dev.rx, &dev.tx])?;
        Ok(dev)
    }

    /// Hands the next completed receive buffer to `f` and re-posts it.
    /// Returns false when nothing was waiting.
    pub fn receive_one(&mut self, f: impl FnOnce(ConsoleEvent<'_>)) -> bool {
        let Some(u) = self.rx.pop_used() else { return false };
        if u.len == 0 {
            f(ConsoleEvent::Closed);
        } else {
            f(ConsoleEvent::Data(self.rx_bufs.get(u.id as usize, u.len as usize)));
        }
        self.rx.post(u.id, self.rx_bufs.addr(u.id as usize), BUF_SIZE as u32, true);
        if self.rx.device_wants_kick() {
            self.transport.notify(RX_QUEUE);
        }
        true
    }

    /// Queues as much of `data` as free transmit buffers hold; returns the
    /// number of bytes taken. [`flush`](Self::flush) kicks the device.
    pub fn send(&mut self, mut data: &[u8]) -> usize {
        self.reclaim_tx();
        let mut taken = 0;
        while !data.is_empty() {
            let Some(id) = self.tx_free.pop() else { break };
            let n = data.len().min(BUF_SIZE);
            self.tx_bufs.get_mut(id as usize)[..n].copy_from_slice(&data[..n]);
            self.tx.post(id, self.tx_bufs.addr(id as usize), n as u32, false);
            self.tx_kick_pending = true;
            data = &data[n..];
            taken += n;
        }
        taken
    }

    /// Posts a descriptor for `len` bytes at an arbitrary guest address.
    /// Exists to test that the device rejects hostile descriptors.
    pub fn send_raw(&mut self, addr: u64, len: u32) -> bool {
        self.reclaim_tx();
        let Some(id) = self.tx_free.pop() else { return false };
        self.tx.post(id, addr, len, false);
        self.tx_kick_pending = true;
        true
    }

    /// Kicks the device if bytes were queued since the last kick.
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

    /// Whether every queued byte has been taken by the device.
    pub fn tx_drained(&mut self) -> bool {
        self.reclaim_tx();
        self.tx_free.len() == self.tx.size() as usize
    }
}
