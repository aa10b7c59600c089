#![no_main]
//! See `guest_agent::fuzzing::replay_window`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::replay_window(data));
