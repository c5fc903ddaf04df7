//! Fuzz target `plugin_wire`: see [`vpnfix::fuzzing::plugin_wire`] for the input and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::plugin_wire(data));
