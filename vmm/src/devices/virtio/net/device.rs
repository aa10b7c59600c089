//! The virtio-net device state machine and its data movement.

use std::io;
use std::sync::Arc;

use netdev::{chain, Tap};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::metrics::NetMetrics;
use super::{MAX_FRAME_WITH_HDR, QUEUE_SIZE, VIRTIO_NET_F_MAC};
use crate::devices::virtio::{
    drain_queue, read_config_bytes, rx_tx_queues, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Where the device is in its life.
pub(super) enum DeviceState {
    /// Before DRIVER_OK, or after a reset.
    Inactive,
    /// Queues live; the event handler moves data.
    Active { mem: GuestMemoryMmap, rx: Queue, tx: Queue },
}

/// A virtio-net device backed by a tap.
pub struct Net {
    pub(super) tap: Tap,
    mac: [u8; 6],
    acked_features: u64,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) state: DeviceState,
    interrupt: Arc<Interrupt>,
    metrics: Arc<NetMetrics>,
    /// A frame read from the tap that found no receive buffer yet.
    rx_frame: Vec<u8>,
    rx_frame_len: usize,
    tx_frame: Vec<u8>,
}

impl Net {
    /// A device on `tap` with `mac`, waking the guest through `interrupt`.
    pub fn new(tap: Tap, mac: [u8; 6], interrupt: Arc<Interrupt>) -> io::Result<Self> {
        Ok(Self {
            tap,
            mac,
            acked_features: 0,
            queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK)?, EventFd::new(libc::EFD_NONBLOCK)?],
            activate_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            state: DeviceState::Inactive,
            interrupt,
            metrics: Arc::new(NetMetrics::default()),
            rx_frame: vec![0; MAX_FRAME_WITH_HDR],
            rx_frame_len: 0,
            tx_frame: Vec::with_capacity(MAX_FRAME_WITH_HDR),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The tap's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// Moves frames from the tap into receive buffers until the tap is
    /// empty or the guest has no buffer left (then the frame waits and the
    /// guest's next receive kick resumes).
    pub(super) fn process_rx(&mut self) {
        let DeviceState::Active { mem, rx, .. } = &mut self.state else { return };
        let mut used = 0;
        loop {
            if self.rx_frame_len == 0 {
                match self.tap.read(&mut self.rx_frame) {
                    Ok(n) if n >= netdev::tap::VNET_HDR_LEN => self.rx_frame_len = n,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        NetMetrics::inc(&self.metrics.rx_tap_errors);
                        break;
                    }
                }
                // num_buffers = 1: no mergeable receive buffers.
                self.rx_frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let Some(chain) = rx.pop_descriptor_chain(&*mem) else { break };
            let head = chain.head_index();
            let len = match chain::scatter(chain, &self.rx_frame[..self.rx_frame_len]) {
                Ok(n) => {
                    NetMetrics::inc(&self.metrics.rx_frames);
                    self.metrics.rx_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    self.rx_frame_len = 0;
                    n
                }
                Err(e) => {
                    // The frame stays for the next buffer; this one returns empty.
                    tracing::debug!("virtio-net {}: receive chain refused: {e}", self.tap.name());
                    NetMetrics::inc(&self.metrics.rx_bad_descriptors);
                    0
                }
            };
            if rx.add_used(&*mem, head, len).is_err() {
                break;
            }
            used += 1;
        }
        if used > 0 {
            self.interrupt.signal_used();
        }
    }

    /// Sends every frame the guest queued out through the tap.
    pub(super) fn process_tx(&mut self) {
        let DeviceState::Active { mem, tx, .. } = &mut self.state else { return };
        let (tap, metrics, frame) = (&self.tap, &self.metrics, &mut self.tx_frame);
        let done = drain_queue(tx, mem, |chain| {
            if let Err(e) = chain::gather(chain, frame, MAX_FRAME_WITH_HDR) {
                tracing::debug!("virtio-net {}: transmit chain refused: {e}", tap.name());
                NetMetrics::inc(&metrics.tx_bad_descriptors);
                return 0;
            }
            if frame.len() < netdev::tap::VNET_HDR_LEN {
                NetMetrics::inc(&metrics.tx_malformed);
                return 0;
            }
            match tap.write(frame) {
                Ok(_) => {
                    NetMetrics::inc(&metrics.tx_frames);
                    metrics.tx_bytes.fetch_add(frame.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => NetMetrics::inc(&metrics.tx_tap_errors),
            }
            0
        });
        if done > 0 {
            self.interrupt.signal_used();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        guest_agent::boot::device_id::NET
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }

    fn set_acked_features(&mut self, acked: u64) {
        self.acked_features = acked;
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio_net_config: mac[6], status u16 (LINK_UP).
        let mut cfg = [0u8; 8];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[6] = 1;
        read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        let (rx, tx) = rx_tx_queues(queues)?;
        self.state = DeviceState::Active { mem, rx, tx };
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.state = DeviceState::Inactive;
        self.rx_frame_len = 0;
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}
