//! Fuzz target `wg_quick`: see [`vpnfix::fuzzing::wg_quick`] for the input and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::wg_quick(data));
