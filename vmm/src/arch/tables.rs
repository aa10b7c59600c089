//! Page tables, GDT and TSS, written into guest memory before boot.
//!
//! The page tables identity-map 0–4 GiB with 2 MiB pages and the user bit
//! set at every level, so CPL3 code may touch all of it (the agent is the
//! only software in the VM). The bytes are the same for every VM, so they
//! are built once per process and copied.

use std::sync::OnceLock;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;

/// GDT entries (PLATFORM.md): null, code64 DPL0, data DPL0, data DPL3,
/// code64 DPL3, and a 64-bit busy TSS taking two slots.
fn gdt() -> [u64; 7] {
    let base = TSS_ADDR;
    let limit = TSS_LIMIT as u64;
    let tss_low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, 64-bit TSS (busy)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    let tss_high = base >> 32;
    [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x00CF_F300_0000_FFFF, 0x00AF_FB00_0000_FFFF, tss_low, tss_high]
}

/// Selectors into [`gdt`], with their requested privilege level.
pub mod selector {
    /// 64-bit code, CPL3.
    pub const CODE_USER: u16 = 0x20 | 3;
    /// Data, CPL3.
    pub const DATA_USER: u16 = 0x18 | 3;
    /// The TSS.
    pub const TSS: u16 = 0x28;
}

/// PML4, PDPT and four PDs as one byte image from PML4_ADDR to PD end.
fn page_tables() -> &'static [u8] {
    static TABLES: OnceLock<Vec<u8>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = vec![0u8; (PD_ADDR + 4 * 0x1000 - PML4_ADDR) as usize];
        let mut put = |addr: u64, v: u64| {
            let off = (addr - PML4_ADDR) as usize;
            t[off..off + 8].copy_from_slice(&v.to_le_bytes());
        };
        // Present | writable | user | accessed at every level; PS and dirty
        // for 2 MiB leaves. Accessed and dirty set ahead, so the hypervisor
        // never has to write them into the guest's tables on a first access
        // (a shadow-paging fault), and the tables stay as written.
        put(PML4_ADDR, PDPT_ADDR | 0x27);
        for i in 0..4u64 {
            put(PDPT_ADDR + 8 * i, (PD_ADDR + 0x1000 * i) | 0x27);
        }
        for j in 0..2048u64 {
            put(PD_ADDR + 8 * j, (j << 21) | 0xe7);
        }
        t
    })
}

/// The TSS and its I/O bitmap: all zero (every port allowed at CPL3, the
/// only way `out` works there) except `iomap_base` and the closing 0xff.
fn tss() -> &'static [u8] {
    static TSS: OnceLock<Vec<u8>> = OnceLock::new();
    TSS.get_or_init(|| {
        let mut t = vec![0u8; TSS_LIMIT as usize + 1];
        t[102..104].copy_from_slice(&104u16.to_le_bytes());
        t[TSS_LIMIT as usize] = 0xff;
        t
    })
}

/// Writes GDT, TSS and page tables.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    let gdt: Vec<u8> = gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(GDT_ADDR))?;
    mem.write_slice(tss(), GuestAddress(TSS_ADDR))?;
    mem.write_slice(page_tables(), GuestAddress(PML4_ADDR))
}

/// GDT limit (bytes - 1).
pub const GDT_LIMIT: u16 = 7 * 8 - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_matches_platform_recipe() {
        // PLATFORM.md: 0x00008B0020002068 for base 0x2000, limit 0x2068.
        assert_eq!(gdt()[5], 0x0000_8B00_2000_2068);
        assert_eq!(gdt()[6], 0);
    }

    #[test]
    fn page_tables_identity_map_4gib_with_user_and_accessed_bits() {
        let t = page_tables();
        let at = |addr: u64| {
            let off = (addr - PML4_ADDR) as usize;
            u64::from_le_bytes(t[off..off + 8].try_into().unwrap())
        };
        assert_eq!(at(PML4_ADDR), 0xa027);
        assert_eq!(at(PDPT_ADDR + 24), 0xe027);
        assert_eq!(at(PD_ADDR), 0xe7);
        assert_eq!(at(PD_ADDR + 8 * 2047), (2047 << 21) | 0xe7);
    }

    #[test]
    fn io_bitmap_allows_every_port() {
        let t = tss();
        assert_eq!(u16::from_le_bytes([t[102], t[103]]), 104);
        assert!(t[104..104 + 8192].iter().all(|&b| b == 0));
        assert_eq!(t[104 + 8192], 0xff);
    }
}
