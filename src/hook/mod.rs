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
#[derive(Clone, Debug, PartialEq, Eq, Default)]
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

/// The OpenVPN hook names vpnfix also takes as a first argument (for the down-root plugin, which
/// passes no `script_type`).
pub const OPENVPN_MODES: &[&str] = &["up", "route-up", "route-pre-down", "down"];

/// How vpnfix was invoked, when it was invoked as a hook rather than as a manual command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The hook named on the command line (`vpnfix down …`), if any.
    pub mode: Option<String>,
    /// The positional arguments OpenVPN appended.
    pub args: Vec<String>,
}

/// Tells a hook invocation from a manual command: `vpnfix up|route-up|route-pre-down|down …`,
/// or OpenVPN's `script_type` in the environment with a first argument that is not one of
/// `commands` (OpenVPN appends `tun0 1500 0 …` to up/down, nothing to route-up).
pub fn detect(args: &[String], env: &[(String, String)], commands: &[&str]) -> Option<Invocation> {
    let first = args.first().map(String::as_str);
    if let Some(mode) = first.filter(|a| OPENVPN_MODES.contains(a)) {
        return Some(Invocation {
            mode: Some(mode.to_string()),
            args: args[1..].to_vec(),
        });
    }
    let openvpn = env.iter().any(|(k, _)| k == "script_type");
    let manual = first.is_some_and(|a| commands.contains(&a) || a.starts_with('-'));
    (openvpn && !manual).then(|| Invocation {
        mode: None,
        args: args.to_vec(),
    })
}
