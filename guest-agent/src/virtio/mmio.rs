//! The driver's side of the virtio-mmio register window (virtio 1.x, 4.2).
//!
//! Each register access is a VM exit (≈ 40-150 µs here), so bring-up
//! ([`MmioTransport::probe`], then [`MmioTransport::activate`]) hands its
//! accesses to pathvm's VMM as two batches ([`super::batch`]), and only
//! where no VMM answers a batch goes register by register, touching only
//! what it must: high halves of queue addresses and the low feature word
//! are left at their reset value of zero when zero is what the driver
//! would write (every ring lives below 4 GiB, identity-mapped).

use super::batch::{BatchOutcome, MmioBatch};
use super::{features, reg, status, SplitQueue, VirtioError, MMIO_MAGIC};

/// Bytes of device configuration a driver may ask [`MmioTransport::probe`]
/// for (virtio-net's MAC is 6).
pub const PROBE_CONFIG_LEN: usize = 8;

/// What [`MmioTransport::probe`] found: the features both sides have, the
/// largest size of each queue, the start of the configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Features accepted (offered ∩ wanted, `VERSION_1` included).
    pub accepted: u64,
    /// Largest size of queue 0 and queue 1 (0: absent).
    pub queue_max: [u16; 2],
    /// The first bytes of the device's configuration space.
    pub config: [u8; PROBE_CONFIG_LEN],
    /// The VMM batches: [`MmioTransport::activate`] finishes negotiation in
    /// one exit too. Else features are settled already, register by register.
    batched: bool,
}

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
        Self::check_identity(self.read(reg::MAGIC), self.read(reg::VERSION), self.read(reg::DEVICE_ID), device_id)?;
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

    fn at(&self, off: u64) -> u64 {
        self.base as u64 + off
    }

    /// Resets the device, checks it is `device_id`, reads what it offers
    /// (features, queue 0 and 1 sizes, the first `config_len` bytes of its
    /// configuration): one exit where the VMM batches, else register by
    /// register (and features negotiated on the way).
    pub fn probe(&self, device_id: u32, wanted: u64, config_len: usize) -> Result<Probe, VirtioError> {
        let words = config_len.min(PROBE_CONFIG_LEN).div_ceil(4);
        let mut b = MmioBatch::new();
        b.write(self.at(reg::STATUS), 0);
        let (magic, version, found) =
            (b.read(self.at(reg::MAGIC)), b.read(self.at(reg::VERSION)), b.read(self.at(reg::DEVICE_ID)));
        b.write(self.at(reg::STATUS), status::ACKNOWLEDGE);
        b.write(self.at(reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
        let mut offered = [0; 2];
        for (word, slot) in offered.iter_mut().enumerate() {
            b.write(self.at(reg::DEVICE_FEATURES_SEL), word as u32);
            *slot = b.read(self.at(reg::DEVICE_FEATURES));
        }
        let mut max = [0; 2];
        for (q, slot) in max.iter_mut().enumerate() {
            b.write(self.at(reg::QUEUE_SEL), q as u32);
            *slot = b.read(self.at(reg::QUEUE_NUM_MAX));
        }
        let cfg: [usize; PROBE_CONFIG_LEN / 4] =
            core::array::from_fn(|w| if w < words { b.read(self.at(reg::CONFIG + 4 * w as u64)) } else { usize::MAX });
        match b.submit() {
            BatchOutcome::Done => {}
            BatchOutcome::Unsupported => return self.probe_by_registers(device_id, wanted, config_len),
            BatchOutcome::Partial(n) => return Err(VirtioError::BatchStopped(n)),
        }
        Self::check_identity(b.value(magic), b.value(version), b.value(found), device_id)?;
        let offered = (b.value(offered[0]) as u64) | (b.value(offered[1]) as u64) << 32;
        let wanted = wanted | features::VERSION_1;
        if offered & features::VERSION_1 == 0 {
            self.fail();
            return Err(VirtioError::MissingFeatures(features::VERSION_1));
        }
        let mut config = [0; PROBE_CONFIG_LEN];
        for (w, &i) in cfg.iter().enumerate().take(words) {
            config[4 * w..4 * w + 4].copy_from_slice(&b.value(i).to_le_bytes());
        }
        let queue_max = max.map(|i| b.value(i).min(u16::MAX as u32) as u16);
        Ok(Probe { accepted: wanted & offered, queue_max, config, batched: true })
    }

    fn probe_by_registers(&self, device_id: u32, wanted: u64, config_len: usize) -> Result<Probe, VirtioError> {
        let accepted = self.negotiate(device_id, wanted)?;
        let queue_max = [self.queue_max(0), self.queue_max(1)];
        let mut config = [0; PROBE_CONFIG_LEN];
        for (i, c) in config.iter_mut().enumerate().take(config_len) {
            *c = self.config_u8(i);
        }
        Ok(Probe { accepted, queue_max, config, batched: false })
    }

    /// Finishes bring-up after [`Self::probe`]: the accepted features,
    /// `queues` (queue 0, 1, ... in order), DRIVER_OK. Buffers posted to the
    /// queues before this are the device's from the start.
    pub fn activate(&self, probe: &Probe, queues: &[&SplitQueue]) -> Result<(), VirtioError> {
        if !probe.batched {
            for (i, q) in queues.iter().enumerate() {
                self.write(reg::QUEUE_SEL, i as u32);
                self.setup_queue(q);
            }
            self.driver_ok();
            return Ok(());
        }
        let mut b = MmioBatch::new();
        for word in 0..2u32 {
            b.write(self.at(reg::DRIVER_FEATURES_SEL), word);
            b.write(self.at(reg::DRIVER_FEATURES), (probe.accepted >> (32 * word)) as u32);
        }
        let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        b.write(self.at(reg::STATUS), ok);
        let features_st = b.read(self.at(reg::STATUS));
        for (i, q) in queues.iter().enumerate() {
            b.write(self.at(reg::QUEUE_SEL), i as u32);
            b.write(self.at(reg::QUEUE_NUM), q.size() as u32);
            for (low, high, addr) in [
                (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, q.desc_addr()),
                (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, q.avail_addr()),
                (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, q.used_addr()),
            ] {
                b.write(self.at(low), addr as u32);
                b.write(self.at(high), (addr >> 32) as u32);
            }
            b.write(self.at(reg::QUEUE_READY), 1);
        }
        // DRIVER_OK in the same exit: a device that refused the features
        // ignores it (virtio 1.x, 3.1.1: it may not run without
        // FEATURES_OK), and the driver gives up below on what it read.
        b.write(self.at(reg::STATUS), ok | status::DRIVER_OK);
        let final_st = b.read(self.at(reg::STATUS));
        match b.submit() {
            BatchOutcome::Done => {}
            BatchOutcome::Unsupported => {
                self.fail();
                return Err(VirtioError::BatchStopped(0));
            }
            BatchOutcome::Partial(n) => {
                self.fail();
                return Err(VirtioError::BatchStopped(n));
            }
        }
        let running = ok | status::DRIVER_OK;
        if b.value(features_st) & status::FEATURES_OK == 0 || b.value(final_st) & running != running {
            self.fail();
            return Err(VirtioError::FeaturesRejected);
        }
        Ok(())
    }

    fn check_identity(magic: u32, version: u32, found: u32, device_id: u32) -> Result<(), VirtioError> {
        if magic != MMIO_MAGIC {
            return Err(VirtioError::BadMagic(magic));
        }
        if version != 2 {
            return Err(VirtioError::UnsupportedVersion(version));
        }
        if found != device_id {
            return Err(VirtioError::WrongDevice { expected: device_id, found });
        }
        Ok(())
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

/// Rings for queue `index` of at most `want` descriptors, where the device
/// allows `max` (0: the queue is absent).
pub fn new_queue(max: u16, index: u16, want: u16) -> Result<SplitQueue, VirtioError> {
    if max == 0 {
        return Err(VirtioError::QueueUnavailable(index));
    }
    // Largest power of two not above either bound.
    let bound = max.min(want).max(1);
    SplitQueue::new(1u16 << (15 - bound.leading_zeros().min(15)))
}
