//! Where events come from: OpenVPN's script environment and arguments ([`openvpn`]). Each source
//! is parsed at the edge into the same [`HookInput`]: an event, a tunnel and its pushed routes.

pub mod openvpn;

use crate::net::{Push, Skipped, Tunnel};

/// What the VPN is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The tunnel came up (OpenVPN `up`/`route-up`).
    Connect,
    /// The tunnel is going away (OpenVPN `route-pre-down`/`down`).
    Disconnect,
}

/// A hook invocation, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookInput {
    /// The hook's name as the VPN gave it (`route-up`), if it gave one.
    pub script_type: Option<String>,
    /// What to do; `None` for script types vpnfix ignores (`ipchange`, `tls-verify` …).
    pub event: Option<Event>,
    /// The VPN device.
    pub tunnel: Tunnel,
    /// The routes the VPN pushed, parsed and checked.
    pub pushes: Vec<Push>,
    /// Malformed or unusable variables, one entry each.
    pub skipped: Vec<Skipped>,
    /// Whether the VPN redirected the default gateway (`redirect_gateway`, route-up and later).
    pub redirect_gateway: Option<bool>,
}
