//! The virtio-mmio transport, version 2 (virtio 1.x, 4.2.2).
//!
//! It runs on the vCPU thread: every register access is a VM exit handed
//! here by the [`MmioBus`](crate::devices::MmioBus). The driver is the
//! guest and is not trusted: out-of-order status writes, queue setup
//! outside the window the spec allows, bad queue sizes and unaligned
//! accesses are ignored (and logged), never acted on.

use std::sync::{Arc, Mutex};

use tracing::debug;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INTERRUPT_ACK,
    VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};

use super::{Interrupt, VirtioDevice};

/// "PTVM", pathvm's vendor id.
const VENDOR_ID: u32 = 0x4d56_5450;
const VERSION: u32 = 2;

/// The MagicValue register's value. `virtio-bindings` has the register
/// offsets and status bits but not this, so it comes from the agent's driver.
pub use guest_agent::virtio::MMIO_MAGIC as MAGIC;

/// One device's register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    /// Per queue: the driver wrote a value the queue refused (a size that
    /// is not a power of two, a misaligned ring). Such a queue is never
    /// activated, whatever its other registers say.
    queue_refused: Vec<bool>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    /// Warnings the guest causes, rate-limited ([`crate::guest_log`]).
    noise: crate::guest_log::LogLimiter,
}

impl MmioTransport {
    /// Wraps `device`; `mem` is what its queues will address.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, mem: GuestMemoryMmap, interrupt: Arc<Interrupt>) -> Self {
        let queues = Self::fresh_queues(&device);
        let queue_refused = vec![false; queues.len()];
        Self {
            device,
            mem,
            interrupt,
            queues,
            queue_refused,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            noise: Default::default(),
        }
    }

    fn fresh_queues(device: &Arc<Mutex<dyn VirtioDevice>>) -> Vec<Queue> {
        let d = device.lock().unwrap_or_else(|p| p.into_inner());
        // A max size of 0 or not a power of two would be a device bug;
        // such a queue is simply absent.
        d.queue_max_sizes().iter().filter_map(|&m| Queue::new(m).ok()).collect()
    }

    fn device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        // A panic elsewhere while holding the lock leaves the device usable
        // for register reads; do not propagate the poison into the vCPU.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue setup is allowed after FEATURES_OK and before DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED)
            == VIRTIO_CONFIG_S_FEATURES_OK
    }

    /// Handles a read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let config = u64::from(VIRTIO_MMIO_CONFIG);
        if offset >= config {
            self.device().read_config(offset - config, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            crate::guest_warn!(self.noise, offset, len = data.len(), "virtio-mmio: ignoring non-32-bit register read");
            data.fill(0);
            return;
        }
        // Below the config space, so the offset fits a register number.
        let v = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device().device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => {
                let f = self.device().avail_features() | (1 << VIRTIO_F_VERSION_1);
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size() as u32),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready() as u32),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => {
                debug!(offset, "virtio-mmio: read of write-only or unknown register");
                0
            }
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// Handles a write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            debug!(offset, "virtio-mmio: config space is read-only");
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            crate::guest_warn!(self.noise, offset, len = data.len(), "virtio-mmio: ignoring non-32-bit register write");
            return;
        };
        if !offset.is_multiple_of(4) {
            crate::guest_warn!(self.noise, offset, "virtio-mmio: ignoring unaligned register write");
            return;
        }
        let v = u32::from_le_bytes(bytes);
        let setup = self.queue_setup_allowed();
        // Below the config space, so the offset fits a register number.
        let reg = offset as u32;
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if self.status & (VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK) != VIRTIO_CONFIG_S_DRIVER {
                    crate::guest_warn!(self.noise, "virtio-mmio: driver features written outside negotiation");
                    return;
                }
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if setup => {
                let ok = u16::try_from(v).ok().and_then(|n| self.selected_queue().map(|q| q.try_set_size(n).is_ok()));
                self.note_queue_write(ok);
            }
            VIRTIO_MMIO_QUEUE_READY if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH if setup => self.set_queue_addr(
                reg == VIRTIO_MMIO_QUEUE_DESC_HIGH,
                v,
                |q| q.desc_table(),
                Queue::try_set_desc_table_address,
            ),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH if setup => self.set_queue_addr(
                reg == VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
                v,
                |q| q.avail_ring(),
                Queue::try_set_avail_ring_address,
            ),
            VIRTIO_MMIO_QUEUE_USED_LOW | VIRTIO_MMIO_QUEUE_USED_HIGH if setup => self.set_queue_addr(
                reg == VIRTIO_MMIO_QUEUE_USED_HIGH,
                v,
                |q| q.used_ring(),
                Queue::try_set_used_ring_address,
            ),
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => {
                crate::guest_warn!(
                    self.noise,
                    offset,
                    status = self.status,
                    "virtio-mmio: queue setup outside FEATURES_OK..DRIVER_OK ignored"
                )
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Normally an ioeventfd catches this write before it exits
                // to userspace; if not, kick the device through the same fd.
                let dev = self.device();
                if let Some(evt) = dev.queue_events().get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.set_status(v),
            _ => debug!(offset, "virtio-mmio: write to read-only or unknown register"),
        }
    }

    /// Replaces the high or low half of one ring address of the selected
    /// queue; a refused address (misaligned) marks the queue refused.
    fn set_queue_addr(
        &mut self,
        high: bool,
        v: u32,
        get: impl Fn(&Queue) -> u64,
        set: impl Fn(&mut Queue, GuestAddress) -> Result<(), virtio_queue::Error>,
    ) {
        let ok = self.selected_queue().map(|q| {
            let cur = get(q);
            let addr = if high { (cur & 0xffff_ffff) | ((v as u64) << 32) } else { (cur & !0xffff_ffff) | v as u64 };
            set(q, GuestAddress(addr)).is_ok()
        });
        self.note_queue_write(ok);
    }

    /// Records the outcome of a queue register write (`None`: no such queue).
    fn note_queue_write(&mut self, ok: Option<bool>) {
        if ok == Some(false) {
            crate::guest_warn!(
                self.noise,
                queue = self.queue_sel,
                "virtio-mmio: driver wrote an invalid queue setting; queue refused"
            );
            if let Some(r) = self.queue_refused.get_mut(self.queue_sel as usize) {
                *r = true;
            }
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        if v & VIRTIO_CONFIG_S_FAILED != 0 {
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        // The driver only ever adds bits (virtio 1.x, 3.1.1).
        if v & self.status != self.status {
            crate::guest_warn!(
                self.noise,
                old = self.status,
                new = v,
                "virtio-mmio: status may only gain bits; ignored"
            );
            return;
        }
        let added = v & !self.status;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device().avail_features() | (1 << VIRTIO_F_VERSION_1);
            if self.driver_features & !offered != 0 || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                crate::guest_warn!(
                    self.noise,
                    features = self.driver_features,
                    "virtio-mmio: driver accepted unoffered features or not VERSION_1"
                );
                self.status = v & !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
                return;
            }
            self.device().set_acked_features(self.driver_features);
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if v & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                crate::guest_warn!(self.noise, "virtio-mmio: DRIVER_OK without FEATURES_OK ignored");
                return;
            }
            if let Err(e) = self.activate() {
                crate::guest_warn!(self.noise, "virtio-mmio: device not activated: {e}");
                self.status = v & !VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET;
                return;
            }
        }
        self.status = v;
    }

    fn activate(&mut self) -> Result<(), String> {
        for (i, q) in self.queues.iter().enumerate() {
            if self.queue_refused.get(i).copied().unwrap_or(true) || !q.is_valid(&self.mem) {
                return Err(format!("queue {i} is not valid (size, alignment, addresses or ready)"));
            }
        }
        // The device gets its own copies; the transport's stay for register reads.
        let queues = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("queue state: {e}"))?;
        let mem = self.mem.clone();
        self.device().activate(mem, queues).map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        self.device().reset();
        self.queues = Self::fresh_queues(&self.device);
        self.queue_refused = vec![false; self.queues.len()];
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.ack(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ActivateError;
    use super::*;
    use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    use vmm_sys_util::eventfd::EventFd;

    /// A device that records what the transport did to it.
    struct Dummy {
        acked: u64,
        activated: Option<usize>,
        resets: u32,
        evts: Vec<EventFd>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn avail_features(&self) -> u64 {
            1 << 5
        }
        fn set_acked_features(&mut self, acked: u64) {
            self.acked = acked;
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[9, 8, 7, 6], offset, data);
        }
        fn activate(&mut self, _mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
            self.activated = Some(queues.len());
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.activated = None;
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Dummy>>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let evts = vec![EventFd::new(libc::EFD_NONBLOCK).unwrap(), EventFd::new(libc::EFD_NONBLOCK).unwrap()];
        let dev = Arc::new(Mutex::new(Dummy { acked: 0, activated: None, resets: 0, evts }));
        let wake = std::sync::Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let t = MmioTransport::new(dev.clone(), mem, Interrupt::new(&wake).unwrap());
        (t, dev)
    }

    fn r(t: &mut MmioTransport, reg: u32) -> u32 {
        let mut d = [0u8; 4];
        t.read(reg.into(), &mut d);
        u32::from_le_bytes(d)
    }

    /// The status a driver writes once it is ready: every step so far plus
    /// DRIVER_OK.
    const DRIVER_READY: u32 =
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

    fn w(t: &mut MmioTransport, reg: u32, v: u32) {
        t.write(reg.into(), &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport) {
        w(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        w(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        w(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        w(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    }

    fn setup_queues(t: &mut MmioTransport) {
        for (i, base) in [(0u32, 0x1000u32), (1, 0x3000)] {
            w(t, VIRTIO_MMIO_QUEUE_SEL, i);
            w(t, VIRTIO_MMIO_QUEUE_NUM, 16);
            w(t, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
            w(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x100);
            w(t, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x200);
            w(t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
    }

    #[test]
    fn identity_registers() {
        let (mut t, _) = setup();
        assert_eq!(r(&mut t, VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(r(&mut t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(r(&mut t, VIRTIO_MMIO_DEVICE_ID), 42);
        assert_eq!(r(&mut t, VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    }

    #[test]
    fn feature_words_are_selected() {
        let (mut t, _) = setup();
        assert_eq!(r(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1 << 5);
        w(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1);
        w(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    }

    #[test]
    fn full_negotiation_activates_device_with_all_queues() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        assert_eq!(dev.lock().unwrap().acked, 1u64 << VIRTIO_F_VERSION_1);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_STATUS, DRIVER_READY);
        assert_eq!(r(&mut t, VIRTIO_MMIO_STATUS), DRIVER_READY);
        assert_eq!(dev.lock().unwrap().activated, Some(2));
    }

    #[test]
    fn unoffered_features_keep_features_ok_clear() {
        let (mut t, dev) = setup();
        w(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        w(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        w(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1 << 9);
        w(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        w(
            &mut t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        assert_eq!(r(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        assert_eq!(dev.lock().unwrap().acked, 0);
    }

    #[test]
    fn missing_version_1_is_refused() {
        let (mut t, _) = setup();
        w(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        w(
            &mut t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        assert_eq!(r(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    }

    #[test]
    fn queue_setup_before_features_ok_is_ignored() {
        let (mut t, dev) = setup();
        w(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(r(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        negotiate(&mut t);
        w(&mut t, VIRTIO_MMIO_STATUS, DRIVER_READY);
        assert_eq!(dev.lock().unwrap().activated, None, "activated with unconfigured queues");
        assert_ne!(r(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    #[test]
    fn invalid_queue_size_prevents_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
        w(&mut t, VIRTIO_MMIO_QUEUE_NUM, 3);
        w(&mut t, VIRTIO_MMIO_STATUS, DRIVER_READY);
        assert_eq!(dev.lock().unwrap().activated, None);
    }

    #[test]
    fn misaligned_ring_prevents_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        w(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1001);
        w(&mut t, VIRTIO_MMIO_STATUS, DRIVER_READY);
        assert_eq!(dev.lock().unwrap().activated, None);
    }

    #[test]
    fn queue_outside_memory_prevents_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        w(&mut t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
        w(&mut t, VIRTIO_MMIO_STATUS, DRIVER_READY);
        assert_eq!(dev.lock().unwrap().activated, None);
    }

    #[test]
    fn status_cannot_lose_bits_except_by_reset() {
        let (mut t, _) = setup();
        negotiate(&mut t);
        w(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(
            r(&mut t, VIRTIO_MMIO_STATUS),
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK
        );
    }

    #[test]
    fn reset_clears_state_and_resets_device() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queues(&mut t);
        w(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(r(&mut t, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(dev.lock().unwrap().resets, 1);
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(r(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        assert_eq!(r(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    }

    #[test]
    fn absent_queue_reads_zero_max() {
        let (mut t, _) = setup();
        w(&mut t, VIRTIO_MMIO_QUEUE_SEL, 5);
        assert_eq!(r(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    }

    #[test]
    fn narrow_and_unaligned_accesses_are_ignored() {
        let (mut t, _) = setup();
        let mut two = [0xffu8; 2];
        t.read(VIRTIO_MMIO_MAGIC_VALUE.into(), &mut two);
        assert_eq!(two, [0, 0]);
        t.write(u64::from(VIRTIO_MMIO_STATUS) + 1, &[1, 0, 0, 0]);
        t.write(VIRTIO_MMIO_STATUS.into(), &[1]);
        assert_eq!(r(&mut t, VIRTIO_MMIO_STATUS), 0);
    }

    #[test]
    fn config_space_reads_go_to_device() {
        let (mut t, _) = setup();
        let mut d = [0u8; 2];
        t.read(u64::from(VIRTIO_MMIO_CONFIG) + 1, &mut d);
        assert_eq!(d, [8, 7]);
    }

    #[test]
    fn notify_register_kicks_the_queue_event() {
        let (mut t, dev) = setup();
        w(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        assert_eq!(dev.lock().unwrap().evts[1].read().unwrap(), 1);
        w(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 99); // no such queue: ignored
    }
}
