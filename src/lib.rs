//! vpnfix makes VPN routes and local container networks live together on Linux.
//!
//! The flow is gather facts → plan → apply → record:
//! - [`hook`] parses what OpenVPN hands its scripts into a tunnel and its pushed routes;
//! - [`bundle`] reads the same facts from `ip -j` / `docker network inspect` dumps;
//! - [`plan`] (pure) decides which more-specific routes give the VPN what it needs while local
//!   containers stay reachable, on top of [`cidr`] set arithmetic;
//! - [`apply`] runs a plan against the kernel ([`kernel`]), inside containers too ([`netns`]),
//!   and records it ([`state`]);
//! - [`report`], [`explain`], [`status`] and [`suggest`] tell people what is going on;
//! - [`install`] puts the binary, NetworkManager's dispatcher script and the OpenVPN snippet in
//!   place, and takes them away again;
//! - [`run`] is the one place that ties them together.

pub mod apply;
pub mod bridges;
pub mod bundle;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod docker;
pub mod explain;
pub mod fsutil;
pub mod fuzzing;
pub mod hook;
pub mod install;
pub mod kernel;
pub mod logging;
pub mod net;
pub mod netns;
pub mod plan;
pub mod plugin;
pub mod privilege;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod state;
pub mod status;
pub mod suggest;
