//! A vhost-user-net backend: the data plane of a relay VM's virtio-net,
//! outside the VMM.
//!
//! The VMM hands the backend the guest's memory (memfd, over the
//! vhost-user socket) and the queues' addresses, a kick eventfd per queue
//! (the same ioeventfd the guest's `QueueNotify` write signals) and a call
//! eventfd (the VM's wake eventfd). The backend then moves frames between
//! the tap the intake feeds and the guest's queues with the same
//! [`queue_pair`](crate::queue_pair) code the in-VMM device runs.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use thiserror::Error;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::metrics::NetMetrics;
use crate::queue_pair::{tap_to_rx, tx_to_tap, RxFrame, MAX_FRAME_WITH_HDR};
use crate::tap::Tap;

/// Receive queue.
const RX: u16 = 0;
/// Transmit queue.
const TX: u16 = 1;
const NUM_QUEUES: usize = 2;
/// Custom event id of the tap (ids up to NUM_QUEUES are the library's).
const TAP_READABLE: u16 = NUM_QUEUES as u16 + 1;
/// Largest queue the backend accepts.
pub const MAX_QUEUE_SIZE: usize = 256;

/// Why a backend could not be started.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The daemon could not be created.
    #[error("vhost-user-net backend: {0}")]
    Daemon(String),
    /// The thread could not start.
    #[error("vhost-user-net backend thread: {0}")]
    Thread(#[source] io::Error),
}

/// The backend state the daemon drives.
pub struct NetBackend {
    tap: Tap,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    rx_frame: RxFrame,
    tx_frame: Vec<u8>,
    metrics: Arc<NetMetrics>,
    /// Confines the worker thread (seccomp) before it first touches the
    /// guest's queues; `None` once done, or if the caller wants none.
    confine: Option<Confine>,
}

/// What confines a backend's worker thread, called on that thread at its
/// first event (the thread is the vhost-user-backend crate's, so this is
/// the first moment it runs our code).
pub type Confine = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

impl NetBackend {
    /// A backend moving frames between `tap` and the guest.
    pub fn new(tap: Tap, metrics: Arc<NetMetrics>) -> Self {
        Self {
            tap,
            mem: None,
            rx_frame: RxFrame::default(),
            tx_frame: Vec::with_capacity(MAX_FRAME_WITH_HDR),
            metrics,
            confine: None,
        }
    }

    /// Runs one data-plane pass on `vring`'s queue, if the ring is live,
    /// and signals the guest if the pass completed buffers.
    fn pass(
        mem: &Option<GuestMemoryAtomic<GuestMemoryMmap>>,
        vring: &VringRwLock,
        run: impl FnOnce(&mut virtio_queue::Queue, &GuestMemoryMmap) -> usize,
    ) -> io::Result<()> {
        let Some(mem) = mem else { return Ok(()) };
        let mem = mem.memory();
        let completed = {
            let mut state = vring.get_mut();
            if !state.get_queue().ready() || !state.is_enabled() {
                return Ok(());
            }
            run(state.get_queue_mut(), &mem)
        };
        if completed > 0 {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    fn process_rx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let (tap, frame, m) = (&self.tap, &mut self.rx_frame, &self.metrics);
        Self::pass(&self.mem, vring, |q, mem| tap_to_rx(tap, q, mem, frame, m))
    }

    fn process_tx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let (tap, frame, m) = (&self.tap, &mut self.tx_frame, &self.metrics);
        Self::pass(&self.mem, vring, |q, mem| tx_to_tap(tap, q, mem, frame, m))
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        // One worker thread serves both queues: it is confined once.
        if let Some(confine) = self.confine.take() {
            confine()?;
        }
        match device_event {
            RX | TAP_READABLE => self.process_rx(&vrings[RX as usize]),
            TX => {
                self.process_tx(&vrings[TX as usize])?;
                // Transmit completions may free the guest to post receive
                // buffers; frames may be waiting for them.
                self.process_rx(&vrings[RX as usize])
            }
            other => {
                tracing::warn!("vhost-user-net backend: unexpected event {other}");
                Ok(())
            }
        }
    }
}

/// A backend serving one VM's virtio-net on a socket, on its own thread.
pub struct BackendHandle {
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<NetMetrics>,
}

impl BackendHandle {
    /// Starts a backend for `tap` listening at `socket` (replaced if it
    /// exists). It serves one frontend connection, then ends. `confine`
    /// runs on the worker thread before it first reads the guest's queues.
    pub fn start(tap: Tap, socket: &Path, confine: Option<Confine>) -> Result<Self, BackendError> {
        let metrics = Arc::new(NetMetrics::default());
        let tap_fd = tap.as_raw_fd();
        let mut net = NetBackend::new(tap, metrics.clone());
        net.confine = confine;
        let backend = Arc::new(RwLock::new(net));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("pathvm-vhost-net".into(), backend.clone(), mem)
            .map_err(|e| BackendError::Daemon(e.to_string()))?;
        let handlers = daemon.get_epoll_handlers();
        let handler = handlers.first().ok_or_else(|| BackendError::Daemon("no epoll handler".into()))?;
        // Edge-triggered: a pass reads the tap until EAGAIN or until the
        // guest is out of buffers (its next kick resumes).
        handler
            .register_listener(tap_fd, EventSet::IN | EventSet::EDGE_TRIGGERED, TAP_READABLE as u64)
            .map_err(|e| BackendError::Daemon(format!("cannot watch the tap: {e}")))?;
        let _ = std::fs::remove_file(socket);
        let mut listener = vhost::vhost_user::Listener::new(socket, true)
            .map_err(|e| BackendError::Daemon(format!("cannot listen on {}: {e}", socket.display())))?;
        let thread = std::thread::Builder::new()
            .name("pathvm-vhost-net".into())
            .spawn(move || {
                if let Err(e) = daemon.start(&mut listener).and_then(|_| daemon.wait()) {
                    tracing::debug!("vhost-user-net backend ended: {e}");
                }
                // The backend (and its tap) lives until the connection ends.
                drop(backend);
            })
            .map_err(BackendError::Thread)?;
        Ok(Self { socket: socket.to_path_buf(), thread: Some(thread), metrics })
    }

    /// The backend's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        // The thread ends when the frontend disconnects (the VM is gone by
        // the time handles are dropped); a backend that never got a
        // connection is left to end with the process rather than block.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
