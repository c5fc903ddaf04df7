//! OpenVPN's plugin: `plugin vpnfix.so` (this library, built as a `cdylib`). OpenVPN loads it as
//! root; at open it starts its helper — this crate's own binary, `vpnfix plugin-helper` — which
//! keeps CAP_NET_ADMIN (and what the routes inside containers need) and nothing else for the
//! life of the tunnel. Each event (up, route-up, route-pre-down, down) goes to the helper over a
//! socket and runs the same hook logic a script runs; the helper's log lines come back into
//! OpenVPN's log. So `user nobody` + `persist-tun` cleans up exactly, with no `script-security`.
//!
//! - [`ffi`]: the C structures and exported entry points (all the plugin's unsafe code);
//! - [`client`]: the plugin's side, inside OpenVPN;
//! - [`wire`]: what the two say to each other;
//! - [`helper`]: the helper's side.

pub mod client;
pub mod ffi;
pub mod helper;
pub mod wire;
