#![no_main]
//! See `edge::fuzzing::dns`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| edge::fuzzing::dns(data));
