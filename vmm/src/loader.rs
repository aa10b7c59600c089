//! The agent image: read and checked once, loaded into each new VM.
//!
//! Parsing happens before any request arrives (a spawn only copies the
//! segments), and the checks give one-line errors a user can act on instead
//! of a loader's internal error code.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use linux_loader::loader::{Elf, KernelLoader};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

use crate::arch::layout::{IMAGE_MIN_ADDR, MAX_RAM};

const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
/// Heap the agent needs beyond its image to boot at all.
pub const MIN_HEAP: u64 = 2 << 20;

/// Why an image cannot be used.
#[derive(Debug, Error)]
pub enum LoaderError {
    /// The file is not there.
    #[error("guest image {0} not found (build it with `make image`)")]
    Missing(PathBuf),
    /// The file cannot be read.
    #[error("cannot read guest image {path}: {source}")]
    Read {
        /// The image.
        path: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// No ELF magic.
    #[error("guest image {0} is not an ELF file")]
    NotElf(PathBuf),
    /// ELF, but not one this VMM can start.
    #[error("guest image {path} is an ELF for the wrong machine: {what}; pathvm needs a static x86-64 executable")]
    WrongArch {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Header fields point outside the file or make no sense.
    #[error("guest image {path} is a corrupt ELF: {what}")]
    Corrupt {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The image does not fit in the VM's memory.
    #[error("guest memory of {mem_mib} MiB is too small for image {path}: it needs at least {need_mib} MiB")]
    TooSmall {
        /// The image.
        path: PathBuf,
        /// Memory configured.
        mem_mib: u64,
        /// Memory needed.
        need_mib: u64,
    },
    /// linux-loader refused the image.
    #[error("cannot load guest image {path}: {source}")]
    Load {
        /// The image.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
}

/// A parsed agent image.
#[derive(Debug, Clone)]
pub struct AgentImage {
    path: PathBuf,
    bytes: Vec<u8>,
    entry: u64,
    end: u64,
    pvh: bool,
    /// Each loadable segment's zero-filled tail (.bss): (address, length).
    zero_tails: Vec<(u64, u64)>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

impl AgentImage {
    /// Reads and checks the image at `path`.
    pub fn open(path: &Path) -> Result<Self, LoaderError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoaderError::Missing(path.to_path_buf()),
            _ => LoaderError::Read { path: path.to_path_buf(), source },
        })?;
        Self::parse(path, bytes)
    }

    /// Checks an image already in memory.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, LoaderError> {
        let path = path.to_path_buf();
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(LoaderError::NotElf(path));
        }
        let wrong = |what: String| LoaderError::WrongArch { path: path.clone(), what };
        let corrupt = |what: &str| LoaderError::Corrupt { path: path.clone(), what: what.to_string() };
        if bytes.len() < 64 {
            return Err(corrupt("header truncated"));
        }
        if bytes[4] != 2 {
            return Err(wrong("32-bit ELF".into()));
        }
        if bytes[5] != 1 {
            return Err(wrong("big-endian ELF".into()));
        }
        let machine = u16_at(&bytes, 18).ok_or_else(|| corrupt("header truncated"))?;
        if machine != EM_X86_64 {
            return Err(wrong(format!("e_machine {machine}")));
        }
        if u16_at(&bytes, 16) != Some(ET_EXEC) {
            return Err(wrong("not an executable (ET_EXEC)".into()));
        }
        let entry = u64_at(&bytes, 24).ok_or_else(|| corrupt("header truncated"))?;
        let phoff = u64_at(&bytes, 32).ok_or_else(|| corrupt("header truncated"))? as usize;
        let phentsize = u16_at(&bytes, 54).ok_or_else(|| corrupt("header truncated"))? as usize;
        let phnum = u16_at(&bytes, 56).ok_or_else(|| corrupt("header truncated"))? as usize;
        if phentsize != 56 || phnum == 0 {
            return Err(corrupt("bad program header table"));
        }
        let mut end = 0u64;
        let mut zero_tails = Vec::new();
        let mut entry_loaded = false;
        let mut pvh = false;
        for i in 0..phnum {
            let ph = phoff
                .checked_add(i * phentsize)
                .and_then(|o| bytes.get(o..o.checked_add(phentsize)?))
                .ok_or_else(|| corrupt("program headers lie outside the file"))?;
            let p_type = u32_at(ph, 0).unwrap_or(0);
            if p_type == 4 {
                pvh = true; // PT_NOTE; the image's only note is PVH's.
            }
            if p_type != PT_LOAD {
                continue;
            }
            let (off, paddr, filesz, memsz) = (
                u64_at(ph, 8).unwrap_or(0),
                u64_at(ph, 24).unwrap_or(0),
                u64_at(ph, 32).unwrap_or(0),
                u64_at(ph, 40).unwrap_or(0),
            );
            if off.checked_add(filesz).is_none_or(|e| e > bytes.len() as u64) || filesz > memsz {
                return Err(corrupt("a segment lies outside the file"));
            }
            let seg_end = paddr.checked_add(memsz).ok_or_else(|| corrupt("segment address overflows"))?;
            if paddr < IMAGE_MIN_ADDR || seg_end > MAX_RAM {
                return Err(corrupt(&format!(
                    "segment at {paddr:#x} is outside {IMAGE_MIN_ADDR:#x}..{MAX_RAM:#x}, where pathvm loads images"
                )));
            }
            entry_loaded |= (paddr..seg_end).contains(&entry);
            if memsz > filesz {
                zero_tails.push((paddr + filesz, memsz - filesz));
            }
            end = end.max(seg_end);
        }
        if end == 0 {
            return Err(corrupt("no loadable segment"));
        }
        if !entry_loaded {
            return Err(corrupt(&format!("entry point {entry:#x} is not in a loaded segment")));
        }
        Ok(Self { path, bytes, entry, end, pvh, zero_tails })
    }

    /// The ELF entry point (the 64-bit CPL3 entry).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// First byte after the highest segment.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether the image carries a PVH note (bootable by QEMU microvm).
    pub fn has_pvh_note(&self) -> bool {
        self.pvh
    }

    /// Where the image came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Smallest guest memory that boots this image.
    pub fn min_mem(&self) -> u64 {
        (self.end + MIN_HEAP).next_multiple_of(1 << 20)
    }

    /// Checks that a VM of `mem_size` bytes can hold the image and a heap.
    pub fn check_fits(&self, mem_size: u64) -> Result<(), LoaderError> {
        if mem_size < self.min_mem() {
            return Err(LoaderError::TooSmall {
                path: self.path.clone(),
                mem_mib: mem_size >> 20,
                need_mib: self.min_mem() >> 20,
            });
        }
        Ok(())
    }

    /// Copies the segments into `mem` (whose size is `mem_size`).
    pub fn load(&self, mem: &GuestMemoryMmap, mem_size: u64) -> Result<(), LoaderError> {
        self.check_fits(mem_size)?;
        Elf::load(mem, None, &mut Cursor::new(&self.bytes), None)
            .map_err(|source| LoaderError::Load { path: self.path.clone(), source })?;
        Ok(())
    }

    /// Puts the image back into `mem` as [`load`](Self::load) left it in
    /// fresh memory, its zero-filled tails (the stack among them) zeroed
    /// again: whatever an agent run wrote into the image is gone.
    pub fn reload(&self, mem: &GuestMemoryMmap, mem_size: u64) -> Result<(), LoaderError> {
        self.load(mem, mem_size)?;
        for &(addr, len) in &self.zero_tails {
            let zero = |e: vm_memory::GuestMemoryError| LoaderError::Corrupt {
                path: self.path.clone(),
                what: format!("cannot zero {len} bytes at {addr:#x}: {e}"),
            };
            let len = usize::try_from(len).map_err(|_| zero(vm_memory::GuestMemoryError::InvalidBackendAddress))?;
            vm_memory::Bytes::write_slice(mem, &vec![0u8; len], vm_memory::GuestAddress(addr)).map_err(zero)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid ELF: header + one PT_LOAD at 1 MiB holding the entry.
    fn tiny_elf() -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 + 16];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut b[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes());
        ph[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        ph[32..40].copy_from_slice(&16u64.to_le_bytes());
        ph[40..48].copy_from_slice(&0x1000u64.to_le_bytes());
        b
    }

    fn parse(b: Vec<u8>) -> Result<AgentImage, LoaderError> {
        AgentImage::parse(Path::new("test.elf"), b)
    }

    #[test]
    fn accepts_minimal_image() {
        let img = parse(tiny_elf()).unwrap();
        assert_eq!((img.entry(), img.end()), (0x10_0000, 0x10_1000));
        assert_eq!(img.min_mem(), 4 << 20);
    }

    #[test]
    fn rejects_non_elf_with_clear_message() {
        let e = parse(b"#!/bin/sh\n".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "guest image test.elf is not an ELF file");
    }

    #[test]
    fn rejects_other_architectures() {
        let mut b = tiny_elf();
        b[18..20].copy_from_slice(&183u16.to_le_bytes()); // aarch64
        assert!(matches!(parse(b), Err(LoaderError::WrongArch { .. })));
        let mut b = tiny_elf();
        b[4] = 1;
        assert!(matches!(parse(b), Err(LoaderError::WrongArch { .. })));
    }

    #[test]
    fn rejects_segments_outside_file_or_below_1mib() {
        let mut b = tiny_elf();
        b[64 + 32..64 + 40].copy_from_slice(&1_000_000u64.to_le_bytes());
        assert!(matches!(parse(b), Err(LoaderError::Corrupt { .. })));
        let mut b = tiny_elf();
        b[64 + 24..64 + 32].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(matches!(parse(b), Err(LoaderError::Corrupt { .. })));
    }

    #[test]
    fn rejects_entry_outside_segments() {
        let mut b = tiny_elf();
        b[24..32].copy_from_slice(&0x50_0000u64.to_le_bytes());
        assert!(matches!(parse(b), Err(LoaderError::Corrupt { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = tiny_elf();
        for n in 0..b.len() - 16 {
            assert!(parse(b[..n].to_vec()).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn too_small_memory_names_the_need() {
        let img = parse(tiny_elf()).unwrap();
        let e = img.check_fits(2 << 20).unwrap_err();
        assert!(e.to_string().contains("needs at least 4 MiB"), "{e}");
    }
}
