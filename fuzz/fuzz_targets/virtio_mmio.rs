#![no_main]
//! See `vmm::fuzzing::virtio_mmio`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::virtio_mmio(data));
