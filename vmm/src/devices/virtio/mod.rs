//! Virtio devices behind a virtio-mmio transport.
//!
//! A device implements [`VirtioDevice`] (features, config space, queues,
//! activation) and, separately, an event handler that moves data when its
//! queues are kicked or its backend is readable. The transport owns the
//! register state machine; the device only sees `activate` and `reset`.

pub mod console;
pub mod mmio;
pub mod net;
pub mod vhost_user_net;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use thiserror::Error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Why a device could not start.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// The driver set up a different number of queues than the device has.
    #[error("expected {expected} queues, driver set up {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues the driver configured.
        got: usize,
    },
    /// Waking the device's event loop failed.
    #[error("cannot signal activation: {0}")]
    Signal(#[source] std::io::Error),
    /// A vhost-user backend refused the device's setup.
    #[error("vhost-user backend {0}")]
    Backend(String),
}

/// The guest-facing interrupt of one device. The agent has no interrupts,
/// so "interrupting" means: note it in the status register and wake the
/// vCPU if it is parked on the `WAIT` port.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    wake: Arc<EventFd>,
}

impl Interrupt {
    /// An interrupt that wakes through `wake` (shared by a VM's devices:
    /// shared, not duplicated, as every fd counts at a thousand VMs).
    pub fn new(wake: &Arc<EventFd>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self { status: AtomicU32::new(0), wake: wake.clone() }))
    }

    /// Tells the guest that used buffers are waiting.
    pub fn signal_used(&self) {
        self.status.fetch_or(VIRTIO_MMIO_INT_VRING, Ordering::AcqRel);
        // A full counter (2^64 - 2 wakes) only means the guest is already awake.
        let _ = self.wake.write(1);
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Clears acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }
}

/// What a virtio device exposes to its transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (1 net, 3 console).
    fn device_type(&self) -> u32;
    /// Features the device offers.
    fn avail_features(&self) -> u64;
    /// Records what the driver accepted (a subset of `avail_features`).
    fn set_acked_features(&mut self, acked: u64);
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Starts the device with the driver's queues.
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError>;
    /// Returns the device to its initial state (driver wrote status 0).
    fn reset(&mut self);
    /// The ioeventfd behind each queue's notify register.
    fn queue_events(&self) -> &[EventFd];
}

/// Splits a two-queue device's queues into (receive 0, transmit 1).
pub fn rx_tx_queues(queues: Vec<Queue>) -> Result<(Queue, Queue), ActivateError> {
    let got = queues.len();
    let mut it = queues.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(rx), Some(tx), None) => Ok((rx, tx)),
        _ => Err(ActivateError::QueueCount { expected: 2, got }),
    }
}

/// Copies `data` from `src` at `offset`, clamped, for config-space reads.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else { return };
    if off < src.len() {
        let n = data.len().min(src.len() - off);
        data[..n].copy_from_slice(&src[off..off + n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_clamped_and_zero_filled() {
        let mut d = [0xaa; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        read_config_bytes(&[1, 2, 3], 99, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn interrupt_wakes_and_acks() {
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = Interrupt::new(&wake).unwrap();
        irq.signal_used();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING);
        assert_eq!(wake.read().unwrap(), 1);
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), 0);
    }
}
