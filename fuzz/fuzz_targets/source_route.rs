#![no_main]
//! See `guest_agent::fuzzing::source_route`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::source_route(data));
