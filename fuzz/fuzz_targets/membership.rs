#![no_main]
//! See `guest_agent::fuzzing::membership`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::membership(data));
