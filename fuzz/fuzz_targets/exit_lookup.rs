#![no_main]
//! See `node::fuzzing::exit_lookup`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| node::fuzzing::exit_lookup(data));
