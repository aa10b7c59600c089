#![no_main]
//! See `guest_agent::fuzzing::e2e`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::e2e(data));
