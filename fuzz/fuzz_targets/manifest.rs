#![no_main]
//! See `policy::fuzzing::manifest`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::fuzzing::manifest(data));
