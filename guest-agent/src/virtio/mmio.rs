//! The driver's side of the virtio-mmio register window (virtio 1.x, 4.2).
//!
//! Each register access is a VM exit (≈ 58 µs here), so initialisation
//! touches only what it must: high halves of queue addresses and the low
//! feature word are left at their reset value of zero when zero is what the
//! driver would write (every ring lives below 4 GiB, identity-mapped).

use super::{features, reg, status, SplitQueue, VirtioError, MMIO_MAGIC};

/// A virtio-mmio register window.
pub struct MmioTransport {
    base: usize,
}

impl MmioTransport {
    /// # Safety
    /// `base` must be the identity-mapped address of a virtio-mmio register
    /// window that nothing else in the guest accesses.
    pub unsafe fn new(base: u64) -> Self {
        Self { base: base as usize }
    }

    fn read(&self, off: u64) -> u32 {
        // SAFETY: `new`'s contract: base..base+0x200 is the device window.
        unsafe { ((self.base + off as usize) as *const u32).read_volatile() }
    }

    fn write(&self, off: u64, v: u32) {
        // SAFETY: as in `read`.
        unsafe { ((self.base + off as usize) as *mut u32).write_volatile(v) }
    }

    /// Reads a byte of the device-specific configuration space.
    pub fn config_u8(&self, off: usize) -> u8 {
        // SAFETY: as in `read`; the config space starts at 0x100.
        unsafe { ((self.base + reg::CONFIG as usize + off) as *const u8).read_volatile() }
    }

    /// Resets the device, checks it is `device_id`, and negotiates
    /// `VERSION_1` plus whatever of `wanted` the device offers.
    /// Returns the accepted features.
    pub fn negotiate(&self, device_id: u32, wanted: u64) -> Result<u64, VirtioError> {
        self.write(reg::STATUS, 0);
        let magic = self.read(reg::MAGIC);
        if magic != MMIO_MAGIC {
            return Err(VirtioError::BadMagic(magic));
        }
        let version = self.read(reg::VERSION);
        if version != 2 {
            return Err(VirtioError::UnsupportedVersion(version));
        }
        let found = self.read(reg::DEVICE_ID);
        if found != device_id {
            return Err(VirtioError::WrongDevice { expected: device_id, found });
        }
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);

        let wanted = wanted | features::VERSION_1;
        let mut offered = 0u64;
        for word in 0..2u32 {
            if (wanted >> (32 * word)) as u32 == 0 {
                continue;
            }
            self.write(reg::DEVICE_FEATURES_SEL, word);
            offered |= (self.read(reg::DEVICE_FEATURES) as u64) << (32 * word);
        }
        if offered & features::VERSION_1 == 0 {
            self.fail();
            return Err(VirtioError::MissingFeatures(features::VERSION_1));
        }
        let accepted = wanted & offered;
        for word in 0..2u32 {
            let bits = (accepted >> (32 * word)) as u32;
            if bits == 0 {
                continue;
            }
            self.write(reg::DRIVER_FEATURES_SEL, word);
            self.write(reg::DRIVER_FEATURES, bits);
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, s);
        if self.read(reg::STATUS) & status::FEATURES_OK == 0 {
            self.fail();
            return Err(VirtioError::FeaturesRejected);
        }
        Ok(accepted)
    }

    /// The largest size the device allows for queue `index` (0: absent).
    pub fn queue_max(&self, index: u16) -> u16 {
        self.write(reg::QUEUE_SEL, index as u32);
        self.read(reg::QUEUE_NUM_MAX).min(u16::MAX as u32) as u16
    }

    /// Hands queue `index` to the device. Call right after [`queue_max`]
    /// for the same index (the queue stays selected).
    ///
    /// [`queue_max`]: Self::queue_max
    pub fn setup_queue(&self, q: &SplitQueue) {
        self.write(reg::QUEUE_NUM, q.size() as u32);
        for (low, high, addr) in [
            (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, q.desc_addr()),
            (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, q.avail_addr()),
            (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, q.used_addr()),
        ] {
            self.write(low, addr as u32);
            if addr >> 32 != 0 {
                self.write(high, (addr >> 32) as u32);
            }
        }
        self.write(reg::QUEUE_READY, 1);
    }

    /// Sets DRIVER_OK: the device may start using the queues.
    pub fn driver_ok(&self) {
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    }

    /// Tells the device that queue `index` has new buffers.
    pub fn notify(&self, index: u16) {
        self.write(reg::QUEUE_NOTIFY, index as u32);
    }

    fn fail(&self) {
        self.write(reg::STATUS, status::FAILED);
    }
}

/// Sets up queue `index` of at most `want` descriptors on `t`.
pub fn create_queue(t: &MmioTransport, index: u16, want: u16) -> Result<SplitQueue, VirtioError> {
    let max = t.queue_max(index);
    if max == 0 {
        return Err(VirtioError::QueueUnavailable(index));
    }
    // Largest power of two not above either bound.
    let bound = max.min(want).max(1);
    let size = 1u16 << (15 - bound.leading_zeros().min(15));
    let q = SplitQueue::new(size)?;
    t.setup_queue(&q);
    Ok(q)
}
