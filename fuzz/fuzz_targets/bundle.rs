//! Fuzz target `bundle`: see [`vpnfix::fuzzing::bundle`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::bundle(data));
