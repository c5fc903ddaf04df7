//! NetworkManager's dispatcher interface: `vpnfix IFACE ACTION` with the dispatcher's
//! environment, parsed into a [`HookInput`].
//!
//! Facts relied on (NetworkManager 1.5x source, shared/reference/openvpn-nm-interfaces.md §5):
//! indices are zero-based; `VPN_IP4_ROUTE_N` is `net/plen next-hop metric` with next-hop
//! `0.0.0.0` (IPv6 `::`) when there is none; `VPN_IP4_NUM_ROUTES` is always present,
//! `VPN_IP6_NUM_ROUTES` only when non-zero; `vpn-down` carries no routes (vpnfix's state does);
//! `vpn-pre-down` runs only from `dispatcher.d/pre-down.d/`.

use super::{Event, HookInput};
use crate::net::{Push, Skipped, Tunnel};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// The dispatcher actions vpnfix acts on.
pub const ACTIONS: &[&str] = &["vpn-up", "vpn-pre-down", "vpn-down"];

/// Why a dispatcher invocation could not be understood at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NmError {
    /// No interface in `VPN_IP_IFACE` or `$1`.
    #[error("no VPN interface: neither VPN_IP_IFACE nor the first argument names it")]
    NoDevice,
    /// The interface name is not one the kernel would accept.
    #[error("VPN interface {0:?} is not a valid interface name")]
    BadDevice(String),
}

/// The event of a dispatcher action, or `None` for the many vpnfix ignores.
pub fn event_of(action: &str) -> Option<Event> {
    match action {
        "vpn-up" => Some(Event::Connect),
        "vpn-pre-down" | "vpn-down" => Some(Event::Disconnect),
        _ => None,
    }
}

/// Parses the dispatcher's environment and arguments (`IFACE ACTION`, without the program).
pub fn parse<I, K, V>(env: I, args: &[String]) -> Result<HookInput, NmError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env: HashMap<String, String> = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let action = args.get(1).or_else(|| env.get("NM_DISPATCHER_ACTION")).cloned();
    let dev = env.get("VPN_IP_IFACE").or_else(|| args.first()).filter(|d| !d.is_empty()).ok_or(NmError::NoDevice)?;
    if !super::openvpn::valid_ifname(dev) {
        return Err(NmError::BadDevice(dev.clone()));
    }
    let mut skipped = Vec::new();
    let mut pushes = routes(&env, "VPN_IP4", &mut skipped);
    pushes.extend(routes(&env, "VPN_IP6", &mut skipped));
    let connection = env.get("CONNECTION_UUID").filter(|u| !u.is_empty()).and_then(|u| match valid_uuid(u) {
        true => Some(u.clone()),
        false => {
            skipped.push(Skipped::new(format!("CONNECTION_UUID={u:?}"), "not a UUID; ignored"));
            None
        }
    });
    Ok(HookInput {
        connection,
        event: action.as_deref().and_then(event_of),
        script_type: action,
        tunnel: tunnel(&env, dev),
        pushes,
        skipped,
        redirect_gateway: None,
    })
}

/// A connection UUID as NetworkManager writes it: hex digits and dashes, at most 64 of them (it
/// names the record a disconnect looks for, so nothing else gets through).
fn valid_uuid(u: &str) -> bool {
    !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn tunnel(env: &HashMap<String, String>, dev: &str) -> Tunnel {
    let first = |k: &str| env.get(k).and_then(|v| v.split_whitespace().next().map(str::to_string));
    // An address of the other family in `VPN_IP4_ADDRESS_0` (`VPN_IP6_…`) is not the tunnel's.
    let addr = |k: &str, v6: bool| first(k).and_then(|v| v.parse::<IpNet>().ok()).filter(|n| n.addr().is_ipv6() == v6);
    let gw = |k: &str| first(k).and_then(|v| v.parse::<IpAddr>().ok()).filter(|g| !g.is_unspecified());
    Tunnel {
        dev: dev.to_string(),
        local_v4: addr("VPN_IP4_ADDRESS_0", false),
        local_v6: addr("VPN_IP6_ADDRESS_0", true),
        gateway_v4: gw("VPN_IP4_GATEWAY").and_then(|g| match g {
            IpAddr::V4(g) => Some(g),
            IpAddr::V6(_) => None,
        }),
        gateway_v6: gw("VPN_IP6_GATEWAY").and_then(|g| match g {
            IpAddr::V6(g) => Some(g),
            IpAddr::V4(_) => None,
        }),
        ..Tunnel::default()
    }
}

/// `{prefix}_ROUTE_0 …` until the first missing index; `{prefix}_NUM_ROUTES` is only checked
/// against what was found (a hostile count must not make vpnfix loop).
fn routes(env: &HashMap<String, String>, prefix: &str, skipped: &mut Vec<Skipped>) -> Vec<Push> {
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(v) = env.get(&format!("{prefix}_ROUTE_{n}")) {
        match route(v, &format!("{prefix}_ROUTE_{n}")) {
            Ok(p) => out.push(p),
            Err(why) => {
                skipped.push(Skipped::new(format!("{prefix}_ROUTE_{n}={v:?}"), format!("{why}; route skipped")))
            }
        }
        n += 1;
    }
    let count = env.get(&format!("{prefix}_NUM_ROUTES"));
    if let Some(c) = count.filter(|c| c.parse::<usize>().ok() != Some(n)) {
        skipped.push(Skipped::new(
            format!("{prefix}_NUM_ROUTES={c:?}"),
            format!("{n} routes found; the routes themselves were used"),
        ));
    }
    out
}

/// `net/plen next-hop metric`.
fn route(v: &str, origin: &str) -> Result<Push, String> {
    let mut parts = v.split_whitespace();
    let dst: IpNet = parts.next().and_then(|d| d.parse().ok()).ok_or("not a prefix")?;
    if dst.trunc() != dst {
        return Err("the prefix has host bits set".into());
    }
    if dst.addr().is_ipv4() != origin.starts_with("VPN_IP4") {
        return Err("wrong address family".into());
    }
    let gateway = match parts.next() {
        None => None,
        Some(g) => Some(g.parse::<IpAddr>().map_err(|_| "next hop is not an address")?),
    };
    // `0.0.0.0` (`::`) means none; any other next hop must be of the route's family.
    let gateway = gateway.filter(|g| !g.is_unspecified());
    if gateway.is_some_and(|g| g.is_ipv4() != dst.addr().is_ipv4()) {
        return Err("next hop is of the other address family".into());
    }
    let metric = match parts.next() {
        None => None,
        Some(m) => Some(m.parse::<u32>().map_err(|_| "metric is not a whole number")?),
    };
    Ok(Push { dst, gateway, metric, origin: origin.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The reference's `vpn-up` example (§8), as NetworkManager builds it.
    fn vpn_up() -> Vec<(String, String)> {
        env(&[
            ("NM_DISPATCHER_ACTION", "vpn-up"),
            ("CONNECTION_ID", "corp-vpn"),
            ("DEVICE_IFACE", "wlp2s0"),
            ("DEVICE_IP_IFACE", "wlp2s0"),
            ("IP4_ROUTE_0", "192.168.1.0/24 0.0.0.0 600"),
            ("IP4_NUM_ROUTES", "1"),
            ("VPN_IP_IFACE", "tun0"),
            ("VPN_IP4_ADDRESS_0", "10.8.0.6/24 0.0.0.0"),
            ("VPN_IP4_NUM_ADDRESSES", "1"),
            ("VPN_IP4_GATEWAY", "0.0.0.0"),
            ("VPN_IP4_ROUTE_0", "10.20.0.0/16 10.8.0.1 50"),
            ("VPN_IP4_ROUTE_1", "172.16.0.0/12 10.8.0.1 50"),
            ("VPN_IP4_NUM_ROUTES", "2"),
            ("VPN_IP6_ADDRESS_0", "fd00:8::1006/64 ::"),
            ("VPN_IP6_ROUTE_0", "fd00:20::/48 fd00:8::1 50"),
            ("VPN_IP6_NUM_ROUTES", "1"),
        ])
    }

    #[test]
    fn vpn_up_gives_the_tunnel_and_its_routes_at_metric_50() {
        let h = parse(vpn_up(), &args(&["tun0", "vpn-up"])).unwrap();
        assert_eq!(h.event, Some(Event::Connect));
        assert_eq!(h.tunnel.dev, "tun0");
        assert_eq!(h.tunnel.local_v4, Some("10.8.0.6/24".parse().unwrap()));
        assert_eq!(h.tunnel.gateway_v4, None, "0.0.0.0 means none");
        let got: Vec<String> = h.pushes.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "10.20.0.0/16 via 10.8.0.1 metric 50 (VPN_IP4_ROUTE_0)",
                "172.16.0.0/12 via 10.8.0.1 metric 50 (VPN_IP4_ROUTE_1)",
                "fd00:20::/48 via fd00:8::1 metric 50 (VPN_IP6_ROUTE_0)"
            ]
        );
        assert!(h.skipped.is_empty(), "{:?}", h.skipped);
    }

    #[test]
    fn the_connection_uuid_is_kept_and_anything_else_there_refused() {
        let with = |u: &str| {
            let mut e = vpn_up();
            e.push(("CONNECTION_UUID".into(), u.into()));
            parse(e, &args(&["tun0", "vpn-up"])).unwrap()
        };
        let ok = with("6f0e3a56-0000-4000-8000-00000000a002");
        assert_eq!(ok.connection.as_deref(), Some("6f0e3a56-0000-4000-8000-00000000a002"));
        let bad = with("../../etc/x");
        assert_eq!(bad.connection, None);
        assert!(bad.skipped.iter().any(|s| s.subject.starts_with("CONNECTION_UUID=")), "{:?}", bad.skipped);
    }

    #[test]
    fn vpn_down_has_no_routes_and_other_actions_do_nothing() {
        let down = env(&[("NM_DISPATCHER_ACTION", "vpn-down"), ("VPN_IP_IFACE", "tun0"), ("VPN_IP4_NUM_ROUTES", "0")]);
        let h = parse(down, &args(&["tun0", "vpn-down"])).unwrap();
        assert_eq!((h.event, h.pushes.len()), (Some(Event::Disconnect), 0));
        let pre = parse(env(&[]), &args(&["tun0", "vpn-pre-down"])).unwrap();
        assert_eq!(pre.event, Some(Event::Disconnect));
        let other =
            parse(env(&[("NM_DISPATCHER_ACTION", "dhcp4-change")]), &args(&["wlp2s0", "dhcp4-change"])).unwrap();
        assert_eq!(other.event, None);
    }

    #[test]
    fn malformed_routes_and_counts_are_reported() {
        let e = env(&[
            ("VPN_IP_IFACE", "tun0"),
            ("VPN_IP4_ROUTE_0", "10.20.0.0/33 10.8.0.1 50"),
            ("VPN_IP4_ROUTE_1", "10.30.0.1/16 10.8.0.1 50"),
            ("VPN_IP4_ROUTE_2", "10.40.0.0/16 gateway 50"),
            ("VPN_IP4_ROUTE_3", "fd00::/64 :: 50"),
            ("VPN_IP4_ROUTE_4", "10.50.0.0/16 0.0.0.0 -5"),
            ("VPN_IP4_ROUTE_5", "10.60.0.0/16"),
            ("VPN_IP4_NUM_ROUTES", "4000000000"),
        ]);
        let h = parse(e, &args(&["tun0", "vpn-up"])).unwrap();
        assert_eq!(h.pushes.len(), 1, "only the bare 10.60.0.0/16 is usable");
        let why: Vec<String> = h.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            why,
            [
                "VPN_IP4_ROUTE_0=\"10.20.0.0/33 10.8.0.1 50\": not a prefix; route skipped",
                "VPN_IP4_ROUTE_1=\"10.30.0.1/16 10.8.0.1 50\": the prefix has host bits set; route skipped",
                "VPN_IP4_ROUTE_2=\"10.40.0.0/16 gateway 50\": next hop is not an address; route skipped",
                "VPN_IP4_ROUTE_3=\"fd00::/64 :: 50\": wrong address family; route skipped",
                "VPN_IP4_ROUTE_4=\"10.50.0.0/16 0.0.0.0 -5\": metric is not a whole number; route skipped",
                "VPN_IP4_NUM_ROUTES=\"4000000000\": 6 routes found; the routes themselves were used",
            ]
        );
    }

    #[test]
    fn an_address_of_the_other_family_is_not_the_tunnels() {
        // Found by the nm_env fuzz target (fuzz/artifacts/nm_env/crash-nm-ipv6-address-as-ipv4).
        let e = env(&[("VPN_IP4_ADDRESS_0", "fd00:8::1006/64 ::"), ("VPN_IP6_ADDRESS_0", "10.8.0.6/24 0.0.0.0")]);
        let h = parse(e, &args(&["tun0", "vpn-up"])).unwrap();
        assert_eq!((h.tunnel.local_v4, h.tunnel.local_v6), (None, None));
    }

    #[test]
    fn a_next_hop_of_the_other_family_is_refused() {
        // Found by the nm_env fuzz target (fuzz/artifacts/nm_env/crash-nm-next-hop-of-other-family).
        let e = env(&[
            ("VPN_IP_IFACE", "tun0"),
            ("VPN_IP4_ROUTE_0", "10.20.0.0/16 fd00:8::1 50"),
            ("VPN_IP6_ROUTE_0", "fd00:20::/48 0.0.0.0 50"),
        ]);
        let h = parse(e, &args(&["tun0", "vpn-up"])).unwrap();
        let got: Vec<String> = h.pushes.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["fd00:20::/48 metric 50 (VPN_IP6_ROUTE_0)"], "an unspecified next hop is none");
        assert_eq!(
            h.skipped[0].to_string(),
            "VPN_IP4_ROUTE_0=\"10.20.0.0/16 fd00:8::1 50\": next hop is of the other address family; route skipped"
        );
    }

    #[test]
    fn the_interface_comes_from_the_environment_or_the_first_argument() {
        assert_eq!(parse(env(&[]), &args(&["tun7", "vpn-up"])).unwrap().tunnel.dev, "tun7");
        assert_eq!(parse(env(&[]), &[]), Err(NmError::NoDevice));
        assert_eq!(parse(env(&[("VPN_IP_IFACE", "a/b")]), &[]), Err(NmError::BadDevice("a/b".into())));
    }
}
