//! Fuzz target `openvpn_env`: see [`vpnfix::fuzzing::openvpn_env`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpnfix::fuzzing::openvpn_env(data));
