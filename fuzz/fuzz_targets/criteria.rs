#![no_main]
//! See `policy::fuzzing::criteria`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::fuzzing::criteria(data));
