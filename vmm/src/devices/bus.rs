//! Dispatch of the guest's MMIO exits to the device windows.

use super::virtio::mmio::MmioTransport;

/// The VM's virtio-mmio windows, by guest-physical base.
#[derive(Default)]
pub struct MmioBus {
    windows: Vec<(u64, u64, MmioTransport)>,
}

impl MmioBus {
    /// Adds a window of `size` bytes at `base`.
    pub fn insert(&mut self, base: u64, size: u64, transport: MmioTransport) {
        self.windows.push((base, size, transport));
    }

    fn find(&mut self, addr: u64) -> Option<(u64, &mut MmioTransport)> {
        self.windows
            .iter_mut()
            .find(|(base, size, _)| addr >= *base && addr - *base < *size)
            .map(|(base, _, t)| (addr - *base, t))
    }

    /// Handles a guest read; returns false if no device is there (the
    /// guest then reads all ones, like an empty bus).
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((off, t)) => {
                t.read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Handles a guest write; returns false if no device is there.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((off, t)) => {
                t.write(off, data);
                true
            }
            None => false,
        }
    }
}
