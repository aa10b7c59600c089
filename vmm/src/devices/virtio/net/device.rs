//! The virtio-net device state machine and its data movement.

use std::io;
use std::sync::Arc;

use netdev::queue_pair::{self, RxFrame, MAX_FRAME_WITH_HDR};
use netdev::{NetMetrics, Tap};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{config_space, QUEUE_SIZE};
use crate::devices::virtio::{read_config_bytes, rx_tx_queues, ActivateError, Interrupt, VirtioDevice};

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
    rx_frame: RxFrame,
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
            rx_frame: RxFrame::default(),
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
        if queue_pair::tap_to_rx(&self.tap, rx, mem, &mut self.rx_frame, &self.metrics) > 0 {
            self.interrupt.signal_used();
        }
    }

    /// Sends every frame the guest queued out through the tap.
    pub(super) fn process_tx(&mut self) {
        let DeviceState::Active { mem, tx, .. } = &mut self.state else { return };
        if queue_pair::tx_to_tap(&self.tap, tx, mem, &mut self.tx_frame, &self.metrics) > 0 {
            self.interrupt.signal_used();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC)
    }

    fn set_acked_features(&mut self, acked: u64) {
        self.acked_features = acked;
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&config_space(self.mac), offset, data);
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        let (rx, tx) = rx_tx_queues(queues)?;
        self.state = DeviceState::Active { mem, rx, tx };
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.state = DeviceState::Inactive;
        self.rx_frame.clear();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}
