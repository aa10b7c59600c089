//! Which fd woke the device thread, and what to do about it.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Net;
use super::{RX_INDEX, TX_INDEX};

/// The guest set DRIVER_OK: start listening on queues and tap.
const ACTIVATE: u32 = 0;
/// The guest posted receive buffers.
const RX_KICK: u32 = 1;
/// The guest queued frames to send.
const TX_KICK: u32 = 2;
/// The tap has frames for the guest.
const TAP_READABLE: u32 = 3;

impl Net {
    fn register_runtime(&self, ops: &mut EventOps) {
        let regs = [
            Events::with_data(&self.queue_evts[RX_INDEX], RX_KICK, EventSet::IN),
            Events::with_data(&self.queue_evts[TX_INDEX], TX_KICK, EventSet::IN),
            // Edge-triggered: process_rx drains the tap until EAGAIN, or
            // stops for lack of buffers and resumes on the next RX kick.
            Events::with_data(&self.tap, TAP_READABLE, EventSet::IN | EventSet::EDGE_TRIGGERED),
        ];
        for ev in regs {
            // After a reset and re-activation the fds are already
            // registered; that is fine.
            if let Err(e) = ops.add(ev) {
                tracing::debug!("virtio-net {}: register: {e:?}", self.tap_name());
            }
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.activate_evt, ACTIVATE, EventSet::IN)) {
            tracing::error!("virtio-net {}: cannot watch activation: {e:?}", self.tap_name());
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
                self.process_tx();
            }
            TAP_READABLE => self.process_rx(),
            other => tracing::warn!("virtio-net {}: unexpected event {other}", self.tap_name()),
        }
    }
}
