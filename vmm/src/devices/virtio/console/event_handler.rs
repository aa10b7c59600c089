//! Which fd woke the device thread, and what to do about it.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Console;
use super::{RX_INDEX, TX_INDEX};

/// The guest set DRIVER_OK.
const ACTIVATE: u32 = 0;
/// The guest posted receive buffers.
const RX_KICK: u32 = 1;
/// The guest queued bytes for the host.
const TX_KICK: u32 = 2;
/// The host side has bytes, room for ours, or closed.
const HOST_READY: u32 = 3;

impl Console {
    fn register_runtime(&self, ops: &mut EventOps) {
        let mut regs = vec![
            Events::with_data(&self.queue_evts[RX_INDEX], RX_KICK, EventSet::IN),
            Events::with_data(&self.queue_evts[TX_INDEX], TX_KICK, EventSet::IN),
        ];
        if let Some(fd) = self.backend.pollable_input() {
            // Edge-triggered: process_rx reads until EAGAIN, or stops for
            // lack of buffers and resumes on the next RX kick.
            regs.push(Events::with_data_raw(fd, HOST_READY, HOST_IN));
        }
        for ev in regs {
            if let Err(e) = ops.add(ev) {
                tracing::debug!("virtio-console: register: {e:?}");
            }
        }
    }

    /// Writes what the guest queued; while the host side is full, also
    /// waits for it to become writable (on the same fd as its input),
    /// and stops waiting once it drained.
    fn transmit(&mut self, ops: &mut EventOps) {
        let full = self.process_tx();
        if full == self.watching_output || !self.backend.output_can_block() {
            return;
        }
        let Some(fd) = self.backend.pollable_input() else { return };
        let set = if full { HOST_IN | EventSet::OUT } else { HOST_IN };
        match ops.modify(Events::with_data_raw(fd, HOST_READY, set)) {
            Ok(()) => self.watching_output = full,
            Err(e) => tracing::debug!("virtio-console: watch output: {e:?}"),
        }
    }
}

/// What the host side's fd is watched for besides room to write.
const HOST_IN: EventSet = EventSet::IN.union(EventSet::EDGE_TRIGGERED);

impl MutEventSubscriber for Console {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.activate_evt, ACTIVATE, EventSet::IN)) {
            tracing::error!("virtio-console: cannot watch activation: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            ACTIVATE => {
                let _ = self.activate_evt.read();
                self.register_runtime(ops);
                self.process_rx();
            }
            RX_KICK => {
                let _ = self.queue_evts[RX_INDEX].read();
                self.process_rx();
            }
            TX_KICK => {
                let _ = self.queue_evts[TX_INDEX].read();
                self.transmit(ops);
                // A regular file never signals readiness: every kick is a
                // chance to read more of it.
                if self.backend.input_always_ready() {
                    self.process_rx();
                }
            }
            HOST_READY => {
                if events.event_set().intersects(EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP) {
                    tracing::trace!("virtio-console: host side hung up");
                }
                if events.event_set().intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
                    self.transmit(ops);
                }
                self.process_rx();
            }
            other => tracing::warn!("virtio-console: unexpected event {other}"),
        }
    }
}
