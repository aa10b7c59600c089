#![no_main]
//! See `node::fuzzing::node_file`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| node::fuzzing::node_file(data));
