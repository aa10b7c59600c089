//! The driver's side of a split virtqueue (virtio 1.x, 2.7).
//!
//! The rings live in guest memory the driver allocates; the device reads the
//! descriptor table and available ring and writes the used ring. Everything
//! the device writes is read with volatile loads after an acquire fence and
//! checked: a used element naming a descriptor the driver did not post is
//! ignored, never trusted as an index.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use super::ring::{DESC_F_WRITE, USED_F_NO_NOTIFY};
use super::VirtioError;

const DESC_SIZE: usize = 16;

/// One completed buffer, as reported by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The descriptor (and so the buffer) index.
    pub id: u16,
    /// Bytes the device wrote into it (0 for device-readable buffers).
    pub len: u32,
}

/// A split virtqueue of `size` single-descriptor buffers.
pub struct SplitQueue {
    base: NonNull<u8>,
    layout: Layout,
    size: u16,
    avail_off: usize,
    used_off: usize,
    next_avail: u16,
    last_used: u16,
}

impl SplitQueue {
    /// Allocates zeroed rings for `size` descriptors (a power of two).
    pub fn new(size: u16) -> Result<Self, VirtioError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(VirtioError::QueueUnavailable(size));
        }
        let n = size as usize;
        let avail_off = n * DESC_SIZE;
        // flags, idx, ring[n], used_event
        let used_off = (avail_off + 6 + 2 * n).next_multiple_of(4);
        let total = used_off + 6 + 8 * n;
        let layout = Layout::from_size_align(total, 4096).map_err(|_| VirtioError::OutOfMemory)?;
        // SAFETY: non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(VirtioError::OutOfMemory)?;
        Ok(Self { base, layout, size, avail_off, used_off, next_avail: 0, last_used: 0 })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical address of the descriptor table.
    pub fn desc_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Guest-physical address of the available ring.
    pub fn avail_addr(&self) -> u64 {
        self.desc_addr() + self.avail_off as u64
    }

    /// Guest-physical address of the used ring.
    pub fn used_addr(&self) -> u64 {
        self.desc_addr() + self.used_off as u64
    }

    /// Buffers posted and not yet returned by the device.
    pub fn in_flight(&self) -> u16 {
        self.next_avail.wrapping_sub(self.last_used)
    }

    fn ptr(&self, off: usize) -> *mut u8 {
        // SAFETY: every caller passes an offset computed from `size` that
        // stays inside the allocation made in `new`.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Points descriptor `id` at `len` bytes at `addr` and makes it
    /// available. `device_writes` marks a receive buffer. Ids at or beyond
    /// the queue size are refused (returns false).
    pub fn post(&mut self, id: u16, addr: u64, len: u32, device_writes: bool) -> bool {
        if id >= self.size || self.in_flight() >= self.size {
            return false;
        }
        let d = self.ptr(id as usize * DESC_SIZE);
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        // SAFETY: `d` is descriptor `id` of the table (id < size); the
        // fields are naturally aligned inside the page-aligned table.
        unsafe {
            d.cast::<u64>().write_volatile(addr);
            d.add(8).cast::<u32>().write_volatile(len);
            d.add(12).cast::<u16>().write_volatile(flags);
            d.add(14).cast::<u16>().write_volatile(0);
        }
        let slot = (self.next_avail % self.size) as usize;
        // SAFETY: ring slot `slot < size` of the available ring.
        unsafe { self.ptr(self.avail_off + 4 + 2 * slot).cast::<u16>().write_volatile(id) };
        self.next_avail = self.next_avail.wrapping_add(1);
        // The device must see the descriptor and ring entry before the index.
        fence(Ordering::Release);
        // SAFETY: the available ring's idx field.
        unsafe { self.ptr(self.avail_off + 2).cast::<u16>().write_volatile(self.next_avail) };
        true
    }

    /// Takes the next completed buffer, if the device returned one.
    /// Elements naming an id outside the queue are skipped.
    pub fn pop_used(&mut self) -> Option<Used> {
        loop {
            // SAFETY: the used ring's idx field.
            let used_idx = unsafe { self.ptr(self.used_off + 2).cast::<u16>().read_volatile() };
            if used_idx == self.last_used {
                return None;
            }
            // Read the element only after seeing the index that covers it.
            fence(Ordering::Acquire);
            let slot = (self.last_used % self.size) as usize;
            let e = self.ptr(self.used_off + 4 + 8 * slot);
            // SAFETY: element `slot < size` of the used ring.
            let (id, len) = unsafe { (e.cast::<u32>().read_volatile(), e.add(4).cast::<u32>().read_volatile()) };
            self.last_used = self.last_used.wrapping_add(1);
            if id < self.size as u32 {
                return Some(Used { id: id as u16, len });
            }
        }
    }

    /// Whether the device asked to be kicked after new buffers.
    pub fn device_wants_kick(&self) -> bool {
        fence(Ordering::SeqCst);
        // SAFETY: the used ring's flags field.
        let flags = unsafe { self.ptr(self.used_off).cast::<u16>().read_volatile() };
        flags & USED_F_NO_NOTIFY == 0
    }

    /// Whether the device has returned buffers not yet popped.
    pub fn has_used(&self) -> bool {
        // SAFETY: the used ring's idx field.
        let used_idx = unsafe { self.ptr(self.used_off + 2).cast::<u16>().read_volatile() };
        used_idx != self.last_used
    }
}

impl Drop for SplitQueue {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the device: returns `id` with `len` in the used ring.
    fn complete(q: &SplitQueue, id: u32, len: u32) {
        let used = q.used_addr() as *mut u8;
        // SAFETY: test-only access to the queue's own used ring.
        unsafe {
            let idx = used.add(2).cast::<u16>().read();
            let e = used.add(4 + 8 * (idx % q.size()) as usize);
            e.cast::<u32>().write(id);
            e.add(4).cast::<u32>().write(len);
            used.add(2).cast::<u16>().write(idx.wrapping_add(1));
        }
    }

    fn desc(q: &SplitQueue, id: u16) -> (u64, u32, u16) {
        let d = (q.desc_addr() + 16 * id as u64) as *const u8;
        // SAFETY: test-only read of the queue's own descriptor table.
        unsafe { (d.cast::<u64>().read(), d.add(8).cast::<u32>().read(), d.add(12).cast::<u16>().read()) }
    }

    #[test]
    fn post_writes_descriptor_and_available_ring() {
        let mut q = SplitQueue::new(8).unwrap();
        assert!(q.post(3, 0x1234, 100, true));
        assert_eq!(desc(&q, 3), (0x1234, 100, DESC_F_WRITE));
        let avail = q.avail_addr() as *const u16;
        // SAFETY: test-only read of the available ring.
        unsafe {
            assert_eq!(avail.add(1).read(), 1);
            assert_eq!(avail.add(2).read(), 3);
        }
        assert_eq!(q.in_flight(), 1);
    }

    #[test]
    fn pop_used_returns_completions_in_order() {
        let mut q = SplitQueue::new(4).unwrap();
        q.post(0, 0x1000, 10, false);
        q.post(1, 0x2000, 10, false);
        assert_eq!(q.pop_used(), None);
        complete(&q, 1, 0);
        complete(&q, 0, 7);
        assert_eq!(q.pop_used(), Some(Used { id: 1, len: 0 }));
        assert_eq!(q.pop_used(), Some(Used { id: 0, len: 7 }));
        assert_eq!(q.pop_used(), None);
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn pop_used_skips_out_of_range_ids_from_a_hostile_device() {
        let mut q = SplitQueue::new(4).unwrap();
        q.post(2, 0x1000, 10, true);
        complete(&q, 999, 5);
        complete(&q, 2, 5);
        assert_eq!(q.pop_used(), Some(Used { id: 2, len: 5 }));
    }

    #[test]
    fn post_refuses_bad_ids_and_a_full_ring() {
        let mut q = SplitQueue::new(2).unwrap();
        assert!(!q.post(2, 0, 0, false));
        assert!(q.post(0, 0, 0, false));
        assert!(q.post(1, 0, 0, false));
        assert!(!q.post(0, 0, 0, false));
    }

    #[test]
    fn rejects_sizes_that_are_not_powers_of_two() {
        assert!(SplitQueue::new(0).is_err());
        assert!(SplitQueue::new(12).is_err());
    }

    #[test]
    fn kick_follows_the_devices_no_notify_flag() {
        let q = SplitQueue::new(4).unwrap();
        assert!(q.device_wants_kick());
        // SAFETY: test-only write of the used ring's flags.
        unsafe { (q.used_addr() as *mut u16).write(USED_F_NO_NOTIFY) };
        assert!(!q.device_wants_kick());
    }
}
