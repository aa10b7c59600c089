#![no_main]
//! See `guest_agent::fuzzing::stream_delivery`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::stream_delivery(data));
