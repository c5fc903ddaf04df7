//! Fuzz target `vpnc_env`: see [`vpnfix::fuzzing::vpnc_env`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::vpnc_env(data));
