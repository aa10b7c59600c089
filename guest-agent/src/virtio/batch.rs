//! Register accesses handed to the VMM in one exit.
//!
//! Bringing up a virtio-mmio device register by register costs ≈ 30 VM
//! exits (features, status, each queue's size and addresses, the MAC byte by
//! byte), ≈ 40-60 µs each under nested KVM: a request VM's three devices
//! spent ≈ 3 ms of its boot there. pathvm's VMM also accepts a list of the
//! same 32-bit accesses in guest memory: one write of the list's address to
//! [`MMIO_BATCH_ADDR`] makes it perform them in order, through the same
//! register logic, and write back what each read returned. Semantics are
//! those of the registers; only the exits go. A VMM that does not know the
//! page (QEMU booting the image through PVH) ignores the write, the list
//! comes back with nothing done, and the driver goes register by register.

use alloc::boxed::Box;
use core::sync::atomic::{fence, Ordering};

/// Guest-physical address whose write starts a batch: the page below the
/// first virtio-mmio window, in the MMIO hole (no RAM, no device).
pub const MMIO_BATCH_ADDR: u64 = 0xcfff_f000;
/// Most accesses in one batch; a longer list is refused whole.
pub const MAX_BATCH: usize = 96;
/// [`BatchEntry::op`]: read the 32-bit register at `addr` into `value`.
pub const OP_READ: u32 = 1;
/// [`BatchEntry::op`]: write `value` to the 32-bit register at `addr`.
pub const OP_WRITE: u32 = 2;
/// Bytes of the header before the entries.
pub const HEADER_LEN: usize = 8;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 16;

/// One access, as the VMM reads it (little-endian, 16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchEntry {
    /// Guest-physical register address.
    pub addr: u64,
    /// [`OP_READ`] or [`OP_WRITE`].
    pub op: u32,
    /// Written, or read back.
    pub value: u32,
}

/// The list in guest memory: a count, how many the VMM performed, entries.
#[repr(C)]
struct Block {
    count: u32,
    done: u32,
    entries: [BatchEntry; MAX_BATCH],
}

/// What a submitted batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every access was performed.
    Done,
    /// None was: the VMM does not batch; go register by register.
    Unsupported,
    /// The VMM stopped after this many (an access to no device): the
    /// device is in a state the driver did not ask for.
    Partial(u32),
}

/// A list of register accesses being built.
pub struct MmioBatch {
    block: Box<Block>,
}

impl Default for MmioBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MmioBatch {
    /// An empty list.
    pub fn new() -> Self {
        Self { block: Box::new(Block { count: 0, done: 0, entries: [BatchEntry::default(); MAX_BATCH] }) }
    }

    fn push(&mut self, addr: u64, op: u32, value: u32) -> usize {
        let i = self.block.count as usize;
        // The drivers' lists are fixed and far below the bound.
        assert!(i < MAX_BATCH, "MMIO batch longer than {MAX_BATCH}");
        self.block.entries[i] = BatchEntry { addr, op, value };
        self.block.count += 1;
        i
    }

    /// Adds a read; its value is [`Self::value`] of the returned index after
    /// the batch is done.
    pub fn read(&mut self, addr: u64) -> usize {
        self.push(addr, OP_READ, 0)
    }

    /// Adds a write.
    pub fn write(&mut self, addr: u64, value: u32) {
        self.push(addr, OP_WRITE, value);
    }

    /// What read `i` returned.
    pub fn value(&self, i: usize) -> u32 {
        // SAFETY: the VMM writes entries during the exit; a volatile read
        // keeps the compiler from assuming the value it had before.
        unsafe { core::ptr::addr_of!(self.block.entries[i].value).read_volatile() }
    }

    /// Hands the list to the VMM (one exit) and empties it for the next
    /// use; the values of its reads stay readable until then.
    pub fn submit(&mut self) -> BatchOutcome {
        let count = self.block.count;
        // SAFETY: a volatile store of the done count the VMM overwrites.
        unsafe { core::ptr::addr_of_mut!(self.block.done).write_volatile(0) };
        // The list must be in memory before the VMM reads it.
        fence(Ordering::SeqCst);
        let gpa = core::ptr::addr_of!(*self.block) as u64;
        // SAFETY: MMIO_BATCH_ADDR is identity-mapped MMIO-hole space: the
        // store exits to the VMM (or is dropped by one that has nothing
        // there); it touches no guest memory.
        unsafe { (MMIO_BATCH_ADDR as *mut u64).write_volatile(gpa) };
        fence(Ordering::SeqCst);
        // SAFETY: as in `value`.
        let done = unsafe { core::ptr::addr_of!(self.block.done).read_volatile() };
        self.block.count = 0;
        if done == count {
            BatchOutcome::Done
        } else if done == 0 {
            BatchOutcome::Unsupported
        } else {
            BatchOutcome::Partial(done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_what_the_vmm_reads() {
        assert_eq!(core::mem::size_of::<BatchEntry>(), ENTRY_LEN);
        assert_eq!(core::mem::offset_of!(Block, entries), HEADER_LEN);
        assert_eq!(core::mem::offset_of!(BatchEntry, op), 8);
        assert_eq!(core::mem::offset_of!(BatchEntry, value), 12);
    }

    #[test]
    fn reads_and_writes_are_listed_in_order() {
        let mut b = MmioBatch::new();
        b.write(0x10, 7);
        let r = b.read(0x20);
        assert_eq!(r, 1);
        assert_eq!(b.block.count, 2);
        assert_eq!(b.block.entries[0], BatchEntry { addr: 0x10, op: OP_WRITE, value: 7 });
        assert_eq!(b.block.entries[1].op, OP_READ);
    }
}
