#![no_main]
//! See `guest_agent::fuzzing::node_codecs`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| guest_agent::fuzzing::node_codecs(data));
