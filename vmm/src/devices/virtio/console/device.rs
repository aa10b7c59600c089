//! The virtio-console device state machine and its data movement.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use netdev::chain;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::backend::ConsoleBackend;
use super::metrics::ConsoleMetrics;
use super::{MAX_TX_CHAIN, QUEUE_SIZE, READ_CHUNK};
use crate::devices::virtio::{read_config_bytes, rx_tx_queues, ActivateError, Interrupt, VirtioDevice};

/// Where the device is in its life.
pub(super) enum DeviceState {
    Inactive,
    Active { mem: GuestMemoryMmap, rx: Queue, tx: Queue },
}

/// The host side's end of stream, as the guest will learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eof {
    /// Input still open.
    Open,
    /// Input ended; the guest has not been told yet.
    Pending,
    /// The guest got its zero-length buffer.
    Delivered,
}

/// A virtio-console device (port 0, no multiport).
pub struct Console {
    pub(super) backend: ConsoleBackend,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) state: DeviceState,
    interrupt: Arc<Interrupt>,
    metrics: Arc<ConsoleMetrics>,
    /// Bytes read from the host side and not yet in a guest buffer.
    pending: Vec<u8>,
    pending_pos: usize,
    eof: Eof,
    tx_buf: Vec<u8>,
    /// Guest bytes the host side had no room for yet (at most one chain's
    /// worth: the guest's later buffers stay on the ring meanwhile, which
    /// is the back-pressure the guest sees).
    tx_held: Vec<u8>,
    tx_held_pos: usize,
    /// The host side's fd is watched for room to write (bytes are held).
    pub(super) watching_output: bool,
}

impl Console {
    /// A console over `backend`, waking the guest through `interrupt`.
    pub fn new(backend: ConsoleBackend, interrupt: Arc<Interrupt>) -> io::Result<Self> {
        Ok(Self {
            backend,
            queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK)?, EventFd::new(libc::EFD_NONBLOCK)?],
            activate_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            state: DeviceState::Inactive,
            interrupt,
            metrics: Arc::new(ConsoleMetrics::default()),
            pending: Vec::with_capacity(READ_CHUNK),
            pending_pos: 0,
            eof: Eof::Open,
            tx_buf: Vec::with_capacity(MAX_TX_CHAIN),
            tx_held: Vec::new(),
            tx_held_pos: 0,
            watching_output: false,
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<ConsoleMetrics> {
        self.metrics.clone()
    }

    /// Moves host bytes into the guest's receive buffers until the host has
    /// nothing more or the guest has no buffer left.
    pub(super) fn process_rx(&mut self) {
        let DeviceState::Active { mem, rx, .. } = &mut self.state else { return };
        let mut used = 0;
        loop {
            if self.pending_pos == self.pending.len() && self.eof == Eof::Open {
                self.pending_pos = 0;
                self.pending.resize(READ_CHUNK, 0);
                let got = self.backend.read(&mut self.pending);
                self.pending.truncate(*got.as_ref().unwrap_or(&0));
                match got {
                    Ok(0) => self.eof = Eof::Pending,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!("virtio-console: input failed, treating as closed: {e}");
                        self.eof = Eof::Pending;
                    }
                }
            }
            let has_data = self.pending_pos < self.pending.len();
            if !has_data && self.eof != Eof::Pending {
                break;
            }
            let Some(chain) = rx.pop_descriptor_chain(&*mem) else { break };
            let head = chain.head_index();
            let len = if has_data {
                match chain::fill(chain, &self.pending[self.pending_pos..]) {
                    Ok(n) => {
                        self.pending_pos += n;
                        self.metrics.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        n as u32
                    }
                    Err(e) => {
                        // Returned empty, which the agent reads as end of
                        // stream: a guest that hands out bad buffers loses
                        // its own stream and nothing else.
                        tracing::debug!("virtio-console: receive chain refused: {e}");
                        self.metrics.rx_bad_descriptors.fetch_add(1, Ordering::Relaxed);
                        0
                    }
                }
            } else {
                self.eof = Eof::Delivered;
                0
            };
            if rx.add_used(&*mem, head, len).is_err() {
                break;
            }
            used += 1;
        }
        if used > 0 {
            self.interrupt.signal_used();
        }
    }

    /// Writes what the guest queued to the host side, as far as the host
    /// side takes it now; true when it is full and bytes wait (call again
    /// once it is writable). Never blocks the device thread.
    pub(super) fn process_tx(&mut self) -> bool {
        let Self { state, backend, metrics, tx_buf, tx_held, tx_held_pos, interrupt, .. } = self;
        if !write_held(backend, metrics, tx_held, tx_held_pos) {
            return true;
        }
        let DeviceState::Active { mem, tx, .. } = state else { return false };
        let mut done = 0;
        let mut full = false;
        'ring: loop {
            if tx.disable_notification(&*mem).is_err() {
                break;
            }
            let before = done;
            while let Some(chain) = tx.pop_descriptor_chain(&*mem) {
                let head = chain.head_index();
                match chain::gather(chain, tx_buf, MAX_TX_CHAIN) {
                    Ok(_) => {
                        // The guest's buffer is copied, so it goes back at
                        // once; what the host side did not take waits here.
                        std::mem::swap(tx_held, tx_buf);
                        *tx_held_pos = 0;
                        full = !write_held(backend, metrics, tx_held, tx_held_pos);
                    }
                    Err(e) => {
                        tracing::debug!("virtio-console: transmit chain refused: {e}");
                        metrics.tx_bad_descriptors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if tx.add_used(&*mem, head, 0).is_err() {
                    break 'ring;
                }
                done += 1;
                if full {
                    // Notifications stay off: the guest's next buffers wait
                    // on the ring until the host side has room.
                    break 'ring;
                }
            }
            match tx.enable_notification(&*mem) {
                // As in `netdev::drain_queue`: a broken ring that claims
                // more forever ends the pass.
                Ok(true) if done > before => continue,
                _ => break,
            }
        }
        if done > 0 {
            interrupt.signal_used();
        }
        full
    }
}

/// Writes the held bytes; false if some still wait for room. A host side
/// that failed (the app is gone) takes nothing more: its bytes are counted
/// and dropped, as a closed connection drops them.
fn write_held(backend: &mut ConsoleBackend, metrics: &ConsoleMetrics, held: &mut Vec<u8>, pos: &mut usize) -> bool {
    while *pos < held.len() {
        match backend.write(&held[*pos..]) {
            Ok(n) => {
                *pos += n;
                metrics.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                metrics.output_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    held.clear();
    *pos = 0;
    true
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, _acked: u64) {}

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio_console_config: cols, rows, max_nr_ports, emerg_wr; all 0
        // except max_nr_ports = 1.
        let mut cfg = [0u8; 12];
        cfg[4] = 1;
        read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        let (rx, tx) = rx_tx_queues(queues)?;
        self.state = DeviceState::Active { mem, rx, tx };
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.state = DeviceState::Inactive;
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}
