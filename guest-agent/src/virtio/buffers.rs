//! Fixed-size DMA buffers shared with a device.

use alloc::alloc::{alloc, dealloc, Layout};
use core::ptr::NonNull;

use super::VirtioError;

/// `count` buffers of `size` bytes in one page-aligned allocation.
///
/// The memory is deliberately not zeroed: first touch of a guest page is
/// expensive on nested KVM (PLATFORM.md), and a buffer's bytes are only
/// read after the device has written them or the driver has filled them.
pub struct DmaBuffers {
    base: NonNull<u8>,
    layout: Layout,
    size: usize,
    count: usize,
}

impl DmaBuffers {
    /// Allocates `count` buffers of `size` bytes each.
    pub fn new(count: usize, size: usize) -> Result<Self, VirtioError> {
        let total = count.checked_mul(size).ok_or(VirtioError::OutOfMemory)?;
        let layout = Layout::from_size_align(total.max(1), 4096).map_err(|_| VirtioError::OutOfMemory)?;
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc(layout) }).ok_or(VirtioError::OutOfMemory)?;
        Ok(Self { base, layout, size, count })
    }

    /// Guest-physical (= virtual, identity-mapped) address of buffer `i`.
    pub fn addr(&self, i: usize) -> u64 {
        debug_assert!(i < self.count);
        self.base.as_ptr() as u64 + (i * self.size) as u64
    }

    /// The first `len` bytes of buffer `i` (clamped to the buffer).
    pub fn get(&self, i: usize, len: usize) -> &[u8] {
        let i = i.min(self.count.saturating_sub(1));
        let len = len.min(self.size);
        // SAFETY: `i < count` and `len <= size`, so the range lies inside
        // the allocation; callers read only bytes the device or the driver
        // wrote (the used length reported by the device).
        unsafe { core::slice::from_raw_parts(self.base.as_ptr().add(i * self.size), len) }
    }

    /// Buffer `i`, writable.
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let i = i.min(self.count.saturating_sub(1));
        // SAFETY: as in `get`; `&mut self` makes the borrow unique.
        unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr().add(i * self.size), self.size) }
    }
}

impl Drop for DmaBuffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_disjoint_and_clamped() {
        let mut b = DmaBuffers::new(4, 128).unwrap();
        assert_eq!(b.addr(1) - b.addr(0), 128);
        b.get_mut(3)[..3].copy_from_slice(b"abc");
        assert_eq!(b.get(3, 3), b"abc");
        assert_eq!(b.get(9, 1000).len(), 128);
    }
}
