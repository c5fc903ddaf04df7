//! Fuzz target `state`: see [`vpnfix::fuzzing::state`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::state(data));
