//! Devices: the MMIO bus the vCPU dispatches to, and the virtio devices.

pub mod batch;
pub mod bus;
pub mod virtio;

pub use bus::MmioBus;
