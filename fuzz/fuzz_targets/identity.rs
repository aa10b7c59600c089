#![no_main]
//! See `node::fuzzing::identity`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| node::fuzzing::identity(data));
