//! Where events come from: OpenVPN's script environment and arguments ([`openvpn`]) and
//! NetworkManager's dispatcher ([`nm`]). Each source is parsed at the edge into the same
//! [`HookInput`]: an event, a tunnel and its pushed routes.

pub mod discover;
pub mod nm;
pub mod openvpn;
pub mod vpnc;
pub mod wgquick;

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
    /// The VPN connection's identity where the source gives one (NetworkManager's
    /// `CONNECTION_UUID`): kept in the record, so a disconnect that names no tunnel (the VPN
    /// died) still finds it.
    pub connection: Option<String>,
}

/// The OpenVPN hook names vpnfix also takes as a first argument (for the down-root plugin, which
/// passes no `script_type`).
pub const OPENVPN_MODES: &[&str] = &["up", "route-up", "route-pre-down", "down"];

/// Who called vpnfix as a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// OpenVPN, with the hook named on the command line (`vpnfix down …`) if it was.
    OpenVpn {
        /// The explicit hook name.
        mode: Option<String>,
    },
    /// NetworkManager's dispatcher (`vpnfix IFACE ACTION`).
    NetworkManager,
    /// wg-quick's `PostUp`/`PreDown` (`vpnfix wg-quick up|down IFACE`), with `Table = off`.
    WgQuick,
    /// A hook file vpnc-script sources (`vpnfix vpnc PHASE`), for OpenConnect and vpnc.
    Vpnc {
        /// The phase its directory names (`connect`, `post-connect` …).
        phase: String,
    },
}

/// How vpnfix was invoked, when it was invoked as a hook rather than as a manual command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Who called.
    pub source: Source,
    /// The positional arguments the caller appended.
    pub args: Vec<String>,
}

impl Invocation {
    /// Parses the caller's environment and arguments.
    pub fn parse(&self, env: &[(String, String)]) -> Result<HookInput, String> {
        let env = env.iter().cloned();
        match &self.source {
            Source::OpenVpn { mode } => openvpn::parse(env, &self.args, mode.as_deref()).map_err(|e| e.to_string()),
            Source::NetworkManager => nm::parse(env, &self.args).map_err(|e| e.to_string()),
            Source::Vpnc { phase } => vpnc::parse(env, Some(phase)).map_err(|e| e.to_string()),
            Source::WgQuick => wgquick_input(&self.args),
        }
    }
}

/// wg-quick's hook: the interface's AllowedIPs at `up` (from piped-in `wg show` output when the
/// last argument is `-`, else from its UAPI socket), none at `down`.
fn wgquick_input(args: &[String]) -> Result<HookInput, String> {
    let allowed = match (args.first().map(String::as_str), args.get(1)) {
        (Some("up"), Some(iface)) if args.last().map(String::as_str) == Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .map_err(|e| format!("cannot read `wg show {iface} allowed-ips` from stdin: {e}"))?;
            Some(wgquick::parse_wg_show(&text))
        }
        (Some("up"), Some(iface)) if crate::net::valid_ifname(iface) => {
            Some(wgquick::uapi_allowed_ips(iface).map_err(|e| crate::logging::chain(&e))?)
        }
        _ => None,
    };
    wgquick::input(args, allowed).map_err(|e| e.to_string())
}

/// The tunnel and pushes an environment captured from a hook describes, read by the parser of
/// its source: OpenVPN's (`dev`) or NetworkManager's dispatcher (`VPN_IP_IFACE`); `None` when it
/// is neither (manual mode). Bundles from either source replay through this.
pub fn from_environment(env: &[(String, String)]) -> Option<Result<HookInput, String>> {
    let has = |key: &str| env.iter().any(|(k, v)| k == key && !v.is_empty());
    let env = env.iter().cloned();
    if has("dev") {
        Some(openvpn::parse(env, &[], None).map_err(|e| e.to_string()))
    } else if has("VPN_IP_IFACE") {
        Some(nm::parse(env, &[]).map_err(|e| e.to_string()))
    } else if has("TUNDEV") {
        Some(vpnc::parse(env, None).map_err(|e| e.to_string()))
    } else {
        None
    }
}

/// Tells a hook invocation from a manual command: `vpnfix up|route-up|route-pre-down|down …`;
/// NetworkManager's `NM_DISPATCHER_ACTION` in the environment; or OpenVPN's `script_type` — in
/// both cases with a first argument that is not one of `commands` (OpenVPN appends
/// `tun0 1500 0 …` to up/down and nothing to route-up; the dispatcher passes `IFACE ACTION`).
pub fn detect(args: &[String], env: &[(String, String)], commands: &[&str]) -> Option<Invocation> {
    let first = args.first().map(String::as_str);
    if let Some(mode) = first.filter(|a| OPENVPN_MODES.contains(a)) {
        let source = Source::OpenVpn { mode: Some(mode.to_string()) };
        return Some(Invocation { source, args: args[1..].to_vec() });
    }
    if first == Some("wg-quick") {
        return Some(Invocation { source: Source::WgQuick, args: args[1..].to_vec() });
    }
    if first == Some("vpnc") {
        let phase = args.get(1).cloned().unwrap_or_default();
        return Some(Invocation { source: Source::Vpnc { phase }, args: args.iter().skip(2).cloned().collect() });
    }
    if first.is_some_and(|a| commands.contains(&a) || a.starts_with('-')) {
        return None;
    }
    let has = |key: &str| env.iter().any(|(k, _)| k == key);
    let source = if has("NM_DISPATCHER_ACTION") {
        Source::NetworkManager
    } else if has("script_type") {
        Source::OpenVpn { mode: None }
    } else {
        return None;
    };
    Some(Invocation { source, args: args.to_vec() })
}
