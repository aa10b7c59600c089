//! The global allocator: talc over the RAM the boot parameters describe.

use core::alloc::{GlobalAlloc, Layout};

use talc::source::Manual;
use talc::TalcCell;

struct GuestAlloc(TalcCell<Manual>);

// SAFETY: the agent is single-threaded and has no interrupts, so the
// allocator is never entered concurrently.
unsafe impl Sync for GuestAlloc {}

// SAFETY: delegates to talc, which upholds GlobalAlloc's contract.
unsafe impl GlobalAlloc for GuestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: GuestAlloc = GuestAlloc(TalcCell::new(Manual));

/// Gives the allocator `[base, base + size)`.
///
/// # Safety
/// The range must be RAM that nothing else uses, identity-mapped.
pub unsafe fn init(base: usize, size: usize) -> bool {
    // SAFETY: caller's contract.
    unsafe { ALLOC.0.claim(base as *mut u8, size).is_some() }
}
