//! The frontend device.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use thiserror::Error;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserVirtioFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::net::{config_space, QUEUE_SIZE};
use crate::devices::virtio::{read_config_bytes, ActivateError, VirtioDevice};

/// How long to keep trying to reach a backend that is starting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the backend could not be used.
#[derive(Debug, Error)]
pub enum VhostUserNetError {
    /// No backend answered at the socket.
    #[error("cannot connect to vhost-user backend at {path}: {msg}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        msg: String,
    },
    /// A vhost-user request failed.
    #[error("vhost-user backend at {path}: {op} failed: {msg}")]
    Request {
        /// The socket.
        path: PathBuf,
        /// The request.
        op: &'static str,
        /// The error.
        msg: String,
    },
    /// The backend lacks virtio 1.x.
    #[error("vhost-user backend at {0} does not offer VIRTIO_F_VERSION_1")]
    NoVersion1(PathBuf),
    /// An eventfd could not be made.
    #[error("vhost-user-net: {0}")]
    Io(#[from] std::io::Error),
}

/// A virtio-net whose queues a vhost-user backend runs.
pub struct VhostUserNet {
    frontend: Frontend,
    path: PathBuf,
    mac: [u8; 6],
    backend_features: u64,
    acked_features: u64,
    queue_evts: Vec<EventFd>,
    call: EventFd,
    activated: bool,
}

impl VhostUserNet {
    /// Connects to the backend at `socket`; `wake` is the VM's wake eventfd.
    pub fn connect(socket: &Path, mac: [u8; 6], wake: &EventFd) -> Result<Self, VhostUserNetError> {
        let start = Instant::now();
        let frontend = loop {
            match Frontend::connect(socket, 2) {
                Ok(f) => break f,
                Err(e) if start.elapsed() < CONNECT_TIMEOUT => {
                    tracing::debug!("vhost-user connect to {}: {e}; retrying", socket.display());
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(VhostUserNetError::Connect { path: socket.into(), msg: e.to_string() }),
            }
        };
        let req = |op: &'static str| {
            let path = socket.to_path_buf();
            move |e: vhost::Error| VhostUserNetError::Request { path, op, msg: e.to_string() }
        };
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(req("GET_FEATURES"))?;
        if backend_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(VhostUserNetError::NoVersion1(socket.into()));
        }
        Ok(Self {
            frontend,
            path: socket.into(),
            mac,
            backend_features,
            acked_features: 0,
            queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK)?, EventFd::new(libc::EFD_NONBLOCK)?],
            call: wake.try_clone()?,
            activated: false,
        })
    }

    /// Host virtual address of guest address `addr` (vhost-user rings are
    /// given in the frontend's address space).
    fn hva(mem: &GuestMemoryMmap, addr: u64) -> Result<u64, String> {
        mem.get_host_address(GuestAddress(addr)).map(|p| p as u64).map_err(|e| e.to_string())
    }

    fn setup_backend(&mut self, mem: &GuestMemoryMmap, queues: &[Queue]) -> Result<(), String> {
        let f = &mut self.frontend;
        let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let features = (self.acked_features & self.backend_features) | (self.backend_features & protocol);
        f.set_features(features).map_err(|e| format!("SET_FEATURES: {e}"))?;
        if self.backend_features & protocol != 0 {
            let offered = f.get_protocol_features().map_err(|e| format!("GET_PROTOCOL_FEATURES: {e}"))?;
            f.set_protocol_features(offered & VhostUserProtocolFeatures::empty())
                .map_err(|e| format!("SET_PROTOCOL_FEATURES: {e}"))?;
        }
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("guest memory is not shareable (memfd needed): {e}"))?;
        f.set_mem_table(&regions).map_err(|e| format!("SET_MEM_TABLE: {e}"))?;
        for (i, q) in queues.iter().enumerate() {
            let cfg = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: Self::hva(mem, q.desc_table())?,
                used_ring_addr: Self::hva(mem, q.used_ring())?,
                avail_ring_addr: Self::hva(mem, q.avail_ring())?,
                log_addr: None,
            };
            f.set_vring_num(i, q.size()).map_err(|e| format!("SET_VRING_NUM: {e}"))?;
            f.set_vring_addr(i, &cfg).map_err(|e| format!("SET_VRING_ADDR: {e}"))?;
            f.set_vring_base(i, 0).map_err(|e| format!("SET_VRING_BASE: {e}"))?;
            f.set_vring_call(i, &self.call).map_err(|e| format!("SET_VRING_CALL: {e}"))?;
            f.set_vring_kick(i, &self.queue_evts[i]).map_err(|e| format!("SET_VRING_KICK: {e}"))?;
            if self.backend_features & protocol != 0 {
                f.set_vring_enable(i, true).map_err(|e| format!("SET_VRING_ENABLE: {e}"))?;
            }
        }
        Ok(())
    }
}

impl VirtioDevice for VhostUserNet {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn avail_features(&self) -> u64 {
        // The MAC lives in this VMM's config space, not the backend's.
        (self.backend_features & (1 << VIRTIO_F_VERSION_1)) | (1 << VIRTIO_NET_F_MAC)
    }

    fn set_acked_features(&mut self, acked: u64) {
        self.acked_features = acked;
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&config_space(self.mac), offset, data);
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        self.setup_backend(&mem, &queues)
            .map_err(|msg| ActivateError::Backend(format!("{}: {msg}", self.path.display())))?;
        self.activated = true;
        Ok(())
    }

    fn reset(&mut self) {
        // Every driver resets before it starts; only a reset of a running
        // device is unusual. The backend keeps the old rings until the next
        // activation replaces them.
        if self.activated {
            tracing::warn!("vhost-user-net {}: running device reset by the guest", self.path.display());
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}

/// The VMM's device thread has nothing to do for this device: kicks and
/// completions go directly between guest and backend.
impl MutEventSubscriber for VhostUserNet {
    fn init(&mut self, _ops: &mut EventOps) {}
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}
}
