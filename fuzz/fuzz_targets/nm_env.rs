//! Fuzz target `nm_env`: see [`vpnfix::fuzzing::nm_env`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::nm_env(data));
