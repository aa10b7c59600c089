#![no_main]
//! See `topo::fuzzing::topology`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| topo::fuzzing::topology(data));
