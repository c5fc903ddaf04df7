//! OpenVPN's script interface: the environment (`dev`, `route_network_N` …) and the six positional
//! arguments of up/down/route-pre-down, parsed into a [`HookInput`].
//!
//! Facts relied on (OpenVPN 2.6 source, see shared/reference/openvpn-nm-interfaces.md §1–2):
//! scripts get only OpenVPN's own variables (no PATH); routes are numbered from 1 and the loop
//! stops at the first missing `route_network_N`; IPv4 netmasks are dotted quads while
//! `route_ipv6_network_N` carries `/bits`; metrics appear only when one is defined; up/down get
//! `dev tun_mtu 0 ifconfig_local ifconfig_remote_or_netmask init|restart`, empty ones included.

use super::{Event, HookInput};
use crate::cidr::netmask_len;
use crate::net::{Push, Skipped, Tunnel, TunnelKind};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an OpenVPN invocation could not be understood at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// Neither `dev` nor a positional argument names the tunnel.
    #[error("no tunnel device: neither the variable `dev` nor a first argument names it")]
    NoDevice,
    /// The device name is not one the kernel would accept.
    #[error("dev={0:?} is not a valid interface name")]
    BadDevice(String),
}

/// The hook's event for a script type, or `None` for types vpnfix does nothing on.
pub fn event_of(script_type: &str) -> Option<Event> {
    match script_type {
        "up" | "route-up" => Some(Event::Connect),
        "route-pre-down" | "down" => Some(Event::Disconnect),
        _ => None,
    }
}

/// Parses OpenVPN's environment and the script's arguments (without the program name).
/// `mode` names the hook when OpenVPN does not (the down-root plugin passes no `script_type`).
pub fn parse<I, K, V>(env: I, args: &[String], mode: Option<&str>) -> Result<HookInput, HookError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env: HashMap<String, String> = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let script_type = mode.map(str::to_string).or_else(|| env.get("script_type").cloned());
    let dev = env.get("dev").or_else(|| args.first()).filter(|d| !d.is_empty()).ok_or(HookError::NoDevice)?;
    if !valid_ifname(dev) {
        return Err(HookError::BadDevice(dev.clone()));
    }
    let mut skipped = Vec::new();
    let tunnel = tunnel(&env, dev, &mut skipped);
    let mut pushes = ipv4_pushes(&env, &tunnel, &mut skipped);
    pushes.extend(ipv6_pushes(&env, &mut skipped));
    dedup(&mut pushes, &mut skipped);
    Ok(HookInput {
        event: script_type.as_deref().and_then(event_of),
        script_type,
        tunnel,
        pushes,
        skipped,
        redirect_gateway: env.get("redirect_gateway").map(|v| v == "1"),
        connection: None,
    })
}

pub use crate::net::valid_ifname;

fn tunnel(env: &HashMap<String, String>, dev: &str, skipped: &mut Vec<Skipped>) -> Tunnel {
    let mut get = |key: &str| -> Option<IpAddr> { typed(env, key, skipped) };
    let local4 = get("ifconfig_local");
    let mask4 = get("ifconfig_netmask");
    let remote4 = get("ifconfig_remote");
    let gateway4 = get("route_vpn_gateway");
    let local6 = get("ifconfig_ipv6_local");
    let remote6 = get("ifconfig_ipv6_remote");
    let bits6 = typed::<u8>(env, "ifconfig_ipv6_netbits", skipped);
    let v4 = |a: Option<IpAddr>| match a {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    };
    let v6 = |a: Option<IpAddr>| match a {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    let local_v4 = match (v4(local4), v4(mask4)) {
        (Some(a), Some(m)) => netmask_len(m).and_then(|l| Ipv4Net::new(a, l).ok()).map(IpNet::V4),
        (Some(a), None) => Some(IpNet::V4(Ipv4Net::from(a))),
        _ => None,
    };
    let local_v6 = v6(local6).map(|a| IpNet::V6(Ipv6Net::new(a, bits6.unwrap_or(128).min(128)).expect("len <= 128")));
    Tunnel {
        dev: dev.to_string(),
        kind: if env.get("dev_type").map(String::as_str) == Some("tap") { TunnelKind::Tap } else { TunnelKind::Tun },
        gateway_v4: v4(gateway4),
        gateway_v6: v6(remote6).filter(|a| !a.is_unspecified()),
        local_v4,
        remote_v4: v4(remote4),
        local_v6,
        unrouted: false,
    }
}

/// A variable parsed as `T`; absent or empty is `None`, malformed is reported and `None`.
fn typed<T: std::str::FromStr>(env: &HashMap<String, String>, key: &str, skipped: &mut Vec<Skipped>) -> Option<T> {
    let v = env.get(key).filter(|v| !v.is_empty())?;
    match v.parse() {
        Ok(t) => Some(t),
        Err(_) => {
            skipped.push(Skipped::new(format!("{key}={v:?}"), "malformed; ignored"));
            None
        }
    }
}

fn ipv4_pushes(env: &HashMap<String, String>, tunnel: &Tunnel, skipped: &mut Vec<Skipped>) -> Vec<Push> {
    let mut out = Vec::new();
    for n in 1.. {
        let Some(network) = env.get(&format!("route_network_{n}")) else {
            break;
        };
        match ipv4_push(env, n, network, tunnel) {
            Ok(p) => out.push(p),
            Err(why) => skipped.push(why),
        }
    }
    out
}

fn ipv4_push(env: &HashMap<String, String>, n: usize, network: &str, tunnel: &Tunnel) -> Result<Push, Skipped> {
    let origin = format!("route_network_{n}");
    let var = |k: &str| env.get(&format!("{k}_{n}")).filter(|v| !v.is_empty());
    let bad = |k: &str, v: &str, why: &str| Skipped::new(format!("{k}_{n}={v:?}"), format!("{why}; route skipped"));
    let addr: Ipv4Addr = network.parse().map_err(|_| bad("route_network", network, "not an IPv4 address"))?;
    let mask_s = var("route_netmask").map_or("255.255.255.255", String::as_str);
    let mask: Ipv4Addr = mask_s.parse().map_err(|_| bad("route_netmask", mask_s, "not a dotted netmask"))?;
    let len = netmask_len(mask).ok_or_else(|| bad("route_netmask", mask_s, "netmask is not contiguous"))?;
    let dst = Ipv4Net::new(addr, len).expect("len <= 32");
    if dst.trunc() != dst {
        return Err(bad("route_network", network, &format!("has host bits set for /{len}")));
    }
    let gateway = match var("route_gateway") {
        None => None,
        Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| bad("route_gateway", g, "not an IPv4 address"))?),
    };
    if let Some(g) = gateway.filter(|g| !on_tunnel_v4(tunnel, *g)) {
        return Err(Skipped::new(
            format!("{dst} ({origin})"),
            format!("gateway {g} is not on the tunnel {}; not a tunnel route, left alone", tunnel.dev),
        ));
    }
    let metric = match var("route_metric") {
        None => None,
        Some(m) => Some(m.parse::<u32>().map_err(|_| bad("route_metric", m, "not a whole number"))?),
    };
    Ok(Push { dst: IpNet::V4(dst), gateway: gateway.map(IpAddr::V4), metric, origin })
}

/// Whether an IPv4 next hop lies on the tunnel: the VPN gateway, the p2p peer, or inside the
/// tunnel's subnet. When OpenVPN told nothing about the tunnel, any gateway is accepted.
fn on_tunnel_v4(t: &Tunnel, g: Ipv4Addr) -> bool {
    let known = t.gateway_v4.is_some() || t.remote_v4.is_some() || t.local_v4.is_some();
    !known
        || t.gateway_v4 == Some(g)
        || t.remote_v4 == Some(g)
        || t.local_v4.is_some_and(|n| n.prefix_len() < 32 && n.contains(&IpAddr::V4(g)))
}

fn ipv6_pushes(env: &HashMap<String, String>, skipped: &mut Vec<Skipped>) -> Vec<Push> {
    let mut out = Vec::new();
    for n in 1.. {
        let Some(network) = env.get(&format!("route_ipv6_network_{n}")) else {
            break;
        };
        match ipv6_push(env, n, network) {
            Ok(p) => out.push(p),
            Err(why) => skipped.push(why),
        }
    }
    out
}

fn ipv6_push(env: &HashMap<String, String>, n: usize, network: &str) -> Result<Push, Skipped> {
    let origin = format!("route_ipv6_network_{n}");
    let var = |k: &str| env.get(&format!("{k}_{n}")).filter(|v| !v.is_empty());
    let bad = |k: &str, v: &str, why: &str| Skipped::new(format!("{k}_{n}={v:?}"), format!("{why}; route skipped"));
    let dst: Ipv6Net = network
        .parse()
        .or_else(|_| network.parse::<Ipv6Addr>().map(Ipv6Net::from))
        .map_err(|_| bad("route_ipv6_network", network, "not an IPv6 prefix"))?;
    if dst.trunc() != dst {
        return Err(bad("route_ipv6_network", network, "has host bits set"));
    }
    let gateway = match var("route_ipv6_gateway") {
        None => None,
        Some(g) => Some(g.parse::<Ipv6Addr>().map_err(|_| bad("route_ipv6_gateway", g, "not an IPv6 address"))?),
    };
    let metric = match var("route_ipv6_metric") {
        None => None,
        Some(m) => Some(m.parse::<u32>().map_err(|_| bad("route_ipv6_metric", m, "not a whole number"))?),
    };
    let subject = format!("{dst} ({origin})");
    // When a pushed IPv6 route covers the server, OpenVPN prepends a /128 host route to the
    // server via the *physical* gateway (route.c:880-900): not a tunnel route.
    let outside = |g: &Ipv6Addr| env.get("net_gateway_ipv6").and_then(|v| v.parse::<Ipv6Addr>().ok()) == Some(*g);
    if gateway.as_ref().is_some_and(outside) {
        return Err(Skipped::new(subject, "goes via the local IPv6 gateway, not the tunnel; left alone"));
    }
    if dst.network().to_ipv4_mapped().is_some() && dst.prefix_len() >= 96 {
        return Err(Skipped::new(subject, "IPv4-mapped IPv6 addresses are never routed; route skipped"));
    }
    Ok(Push { dst: IpNet::V6(dst), gateway: gateway.filter(|g| !g.is_unspecified()).map(IpAddr::V6), metric, origin })
}

/// Keeps the first of pushes with the same destination.
fn dedup(pushes: &mut Vec<Push>, skipped: &mut Vec<Skipped>) {
    let mut seen: HashMap<IpNet, String> = HashMap::new();
    pushes.retain(|p| match seen.get(&p.dst) {
        Some(first) => {
            skipped.push(Skipped::new(format!("{p}"), format!("duplicate of {first}; ignored")));
            false
        }
        None => {
            seen.insert(p.dst, p.origin.clone());
            true
        }
    });
}

#[cfg(test)]
mod tests;
