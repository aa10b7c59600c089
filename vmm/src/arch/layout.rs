//! Where things live in guest-physical memory.

use guest_agent::boot::BOOT_PARAMS_ADDR as BOOT_PARAMS;

/// Global descriptor table.
pub const GDT_ADDR: u64 = 0x1000;
/// Task state segment, followed by its 8 KiB I/O permission bitmap.
pub const TSS_ADDR: u64 = 0x2000;
/// TSS limit: 104-byte TSS + 8192-byte bitmap, inclusive of the final
/// all-ones byte the CPU reads past the bitmap.
pub const TSS_LIMIT: u32 = 0x2068;
/// The boot-parameter block (defined by the agent's boot ABI).
pub const BOOT_PARAMS_ADDR: u64 = BOOT_PARAMS;
/// Top-level page table.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories (2 MiB pages covering 4 GiB).
pub const PD_ADDR: u64 = 0xb000;
/// Where the agent image must load: everything below is the VMM's.
pub const IMAGE_MIN_ADDR: u64 = 0x10_0000;
/// First virtio-mmio window; RAM must end below it.
pub const MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const MMIO_SIZE: u64 = 0x1000;
/// Most guest RAM: up to the MMIO hole, so the identity map covers it.
pub const MAX_RAM: u64 = 0xc000_0000;

// The low structures must not overlap each other or the image; checked at
// compile time.
const _: () = {
    assert!(GDT_ADDR + 56 <= TSS_ADDR);
    assert!(TSS_ADDR + (TSS_LIMIT as u64) < BOOT_PARAMS_ADDR);
    assert!(PD_ADDR + 4 * 0x1000 <= IMAGE_MIN_ADDR);
    assert!(MAX_RAM <= MMIO_BASE);
};
