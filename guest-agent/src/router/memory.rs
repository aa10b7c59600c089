//! An in-memory link: two ends joined by queues, for host tests,
//! simulated networks and the router benchmark.
//!
//! Frames are whole Ethernet frames, as a virtio-net would carry them
//! (without its header). Each end has a bounded transmit queue, so a
//! router sees "no room" as it would from a full ring.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::LinkPort;

/// Frames one direction holds at most.
pub const MEMORY_LINK_FRAMES: usize = 256;

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of an in-memory link.
pub struct MemoryLink {
    rx: Queue,
    tx: Queue,
    capacity: usize,
}

impl MemoryLink {
    /// Two joined ends, each direction holding `capacity` frames.
    pub fn pair_with_capacity(capacity: usize) -> (Self, Self) {
        let (a, b): (Queue, Queue) = (Default::default(), Default::default());
        (Self { rx: a.clone(), tx: b.clone(), capacity }, Self { rx: b, tx: a, capacity })
    }

    /// Two joined ends of [`MEMORY_LINK_FRAMES`] each way.
    pub fn pair() -> (Self, Self) {
        Self::pair_with_capacity(MEMORY_LINK_FRAMES)
    }

    /// Puts a frame on the wire towards this end, as the far side would
    /// (ignoring capacity): for injecting what a test forges.
    pub fn inject(&self, frame: &[u8]) {
        self.rx.borrow_mut().push_back(frame.to_vec());
    }

    /// Takes the frames this end has sent, oldest first: for a test that
    /// plays the far side itself.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.tx.borrow_mut().drain(..).collect()
    }

    /// Frames waiting for this end.
    pub fn waiting(&self) -> usize {
        self.rx.borrow().len()
    }
}

impl LinkPort for MemoryLink {
    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(frame) = self.rx.borrow_mut().pop_front() {
            f(&frame);
            n += 1;
        }
        n
    }

    fn can_send(&mut self) -> bool {
        self.tx.borrow().len() < self.capacity
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        let mut q = self.tx.borrow_mut();
        if q.len() >= self.capacity {
            return false;
        }
        q.push_back(frame.to_vec());
        true
    }
}
