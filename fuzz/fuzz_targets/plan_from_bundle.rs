//! Fuzz target `plan_from_bundle`: see [`vpnfix::fuzzing::plan_from_bundle`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::plan_from_bundle(data));
