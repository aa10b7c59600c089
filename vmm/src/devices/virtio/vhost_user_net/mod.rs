//! virtio-net served by a vhost-user backend (the frontend side).
//!
//! The VMM keeps the virtio-mmio registers and the config space; when the
//! guest sets DRIVER_OK the device hands the backend everything it needs to
//! run the queues itself: the guest memory (its memfd), the queues'
//! addresses, the kick eventfd of each queue (the ioeventfd the guest's
//! `QueueNotify` write signals, so kicks go straight to the backend) and
//! the VM's wake eventfd as the call fd (so the backend's completions wake
//! a parked vCPU). From then on no frame passes through the VMM.

mod device;

pub use device::{VhostUserNet, VhostUserNetError};
