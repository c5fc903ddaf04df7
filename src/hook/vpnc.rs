//! OpenConnect's (and vpnc's) script interface, as Debian's vpnc-script hands it to the hook files
//! it sources from `/etc/vpnc/<phase>.d/`: `reason`, `TUNDEV`, `INTERNAL_IP4_*`/`INTERNAL_IP6_*`,
//! and the split-include lists `CISCO_SPLIT_INC` (count) with `CISCO_SPLIT_INC_N_ADDR`,
//! `_MASK`, `_MASKLEN`, and `CISCO_IPV6_SPLIT_INC` with `_N_ADDR`, `_N_MASKLEN` (numbered from 0,
//! exactly as many as the count says). Captured from openconnect 9.01 in
//! shared/fixtures/openconnect-9.01.
//!
//! `reason` is `connect` both before vpnc-script touches a route (connect.d) and after all of
//! them (post-connect.d); the phase is not exported. So the hook files name it:
//! `vpnfix vpnc PHASE` ([`PHASES`]).
//!
//! vpnc-script adds each IPv4 split-include with `ip route replace`, which takes the place of a
//! bridge's own route of the same prefix and metric (and its disconnect deletes it: the bridge
//! loses its route for good). vpnfix's connect.d step ([`withheld`]) therefore takes those
//! pushes out of the list before vpnc-script acts, and hands them to post-connect.d in
//! `VPNFIX_VPNC_HELD`; post-connect plans with the whole list, as route-up does for OpenVPN.

use super::{Event, HookInput};
use crate::net::{Push, Skipped, Tunnel, TunnelKind};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The phases the hook files name, in vpnc-script's order.
pub const PHASES: &[&str] = &["pre-init", "connect", "post-connect", "disconnect", "post-disconnect"];

/// The variable that carries the pushes connect.d withheld from vpnc-script, to post-connect.d
/// (comma-separated prefixes).
pub const HELD: &str = "VPNFIX_VPNC_HELD";

/// Why a vpnc-script invocation could not be understood at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VpncError {
    /// No `TUNDEV`.
    #[error("no tunnel device: TUNDEV is not set (not run from vpnc-script?)")]
    NoDevice,
    /// The device name is not one the kernel would accept.
    #[error("TUNDEV={0:?} is not a valid interface name")]
    BadDevice(String),
    /// A phase vpnfix does not know.
    #[error("unknown vpnc-script phase {0:?} (expected one of {phases})", phases = PHASES.join(", "))]
    BadPhase(String),
}

/// The event of a phase: post-connect is the connect (every route is in place), disconnect the
/// disconnect (before vpnc-script deletes its routes); the others need nothing.
pub fn event_of(phase: &str) -> Option<Event> {
    match phase {
        "post-connect" => Some(Event::Connect),
        "disconnect" => Some(Event::Disconnect),
        _ => None,
    }
}

/// Parses vpnc-script's environment in hook phase `phase` (`None`: a bundle's `env`, whose
/// phase is unknown; its `reason` decides). The pushes are the split-include lists plus what
/// connect.d withheld ([`HELD`]).
pub fn parse<I, K, V>(env: I, phase: Option<&str>) -> Result<HookInput, VpncError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env: HashMap<String, String> = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let event = match phase {
        Some(p) if !PHASES.contains(&p) && !matches!(p, "reconnect" | "attempt-reconnect") => {
            return Err(VpncError::BadPhase(p.to_string()))
        }
        Some(p) => event_of(p),
        None => match env.get("reason").map(String::as_str) {
            Some("connect") => Some(Event::Connect),
            Some("disconnect") => Some(Event::Disconnect),
            _ => None,
        },
    };
    let dev = env.get("TUNDEV").filter(|d| !d.is_empty()).ok_or(VpncError::NoDevice)?;
    if !crate::net::valid_ifname(dev) {
        return Err(VpncError::BadDevice(dev.clone()));
    }
    let mut skipped = Vec::new();
    let tunnel = tunnel(&env, dev, &mut skipped);
    let mut pushes = split_includes(&env, false, &mut skipped);
    pushes.extend(split_includes(&env, true, &mut skipped));
    pushes.extend(held(&env, &mut skipped));
    let mut seen = std::collections::HashSet::new();
    pushes.retain(|p| seen.insert(p.dst));
    Ok(HookInput {
        script_type: phase.map(|p| format!("vpnc {p}")).or_else(|| env.get("reason").cloned()),
        event,
        tunnel,
        pushes,
        skipped,
        redirect_gateway: None,
        connection: None,
    })
}

fn tunnel(env: &HashMap<String, String>, dev: &str, skipped: &mut Vec<Skipped>) -> Tunnel {
    let mut get = |key: &str| -> Option<IpAddr> {
        let v = env.get(key).filter(|v| !v.is_empty())?;
        // INTERNAL_IP6_NETMASK is `addr/len` where it is set.
        let v = v.split('/').next().unwrap_or(v);
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                skipped.push(Skipped::new(format!("{key}={v:?}"), "malformed; ignored"));
                None
            }
        }
    };
    let v4 = match get("INTERNAL_IP4_ADDRESS") {
        Some(IpAddr::V4(a)) => Some(IpNet::V4(Ipv4Net::from(a))),
        _ => None,
    };
    let v6 = match get("INTERNAL_IP6_ADDRESS") {
        Some(IpAddr::V6(a)) => Some(IpNet::V6(Ipv6Net::from(a))),
        _ => None,
    };
    Tunnel { dev: dev.to_string(), kind: TunnelKind::Tun, local_v4: v4, local_v6: v6, ..Tunnel::default() }
}

/// The most split-includes vpnfix reads of one list (a server cannot make it loop for long).
const MAX_SPLITS: usize = 65_536;

/// One split-include list: exactly as many entries as its count says, each checked.
fn split_includes(env: &HashMap<String, String>, v6: bool, skipped: &mut Vec<Skipped>) -> Vec<Push> {
    let list = if v6 { "CISCO_IPV6_SPLIT_INC" } else { "CISCO_SPLIT_INC" };
    let Some(count) = env.get(list).filter(|v| !v.is_empty()) else { return Vec::new() };
    let Ok(count) = count.trim().parse::<usize>() else {
        skipped.push(Skipped::new(format!("{list}={count:?}"), "not a count; the list is ignored"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for n in 0..count.min(MAX_SPLITS) {
        if !env.contains_key(&format!("{list}_{n}_ADDR")) {
            let why = format!("missing; it and the rest of the {count} the count says are ignored");
            skipped.push(Skipped::new(format!("{list}_{n}_ADDR"), why));
            break;
        }
        match split_include(env, list, n, v6) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => {}
            Err(why) => skipped.push(why),
        }
    }
    out
}

fn split_include(env: &HashMap<String, String>, list: &str, n: usize, v6: bool) -> Result<Option<Push>, Skipped> {
    let key = |k: &str| format!("{list}_{n}_{k}");
    let var = |k: &str| env.get(&key(k)).filter(|v| !v.is_empty());
    let bad = |k: &str, v: &str, why: &str| Skipped::new(format!("{}={v:?}", key(k)), format!("{why}; route skipped"));
    let origin = key("ADDR");
    let addr = var("ADDR").ok_or_else(|| Skipped::new(key("ADDR"), "missing; route skipped"))?;
    let len = match var("MASKLEN") {
        Some(l) => l.parse::<u8>().map_err(|_| bad("MASKLEN", l, "not a prefix length"))?,
        // vpnc sets MASK; MASKLEN is openconnect's addition.
        None if !v6 => {
            let m = var("MASK").ok_or_else(|| Skipped::new(key("MASKLEN"), "missing; route skipped"))?;
            let m = m.parse::<Ipv4Addr>().map_err(|_| bad("MASK", m, "not a netmask"))?;
            crate::cidr::netmask_len(m).ok_or_else(|| bad("MASK", &m.to_string(), "not a contiguous netmask"))?
        }
        None => return Err(Skipped::new(key("MASKLEN"), "missing; route skipped")),
    };
    let dst = if v6 {
        let a = addr.parse::<Ipv6Addr>().map_err(|_| bad("ADDR", addr, "not an IPv6 address"))?;
        IpNet::V6(Ipv6Net::new(a, len).map_err(|_| bad("MASKLEN", &len.to_string(), "longer than 128"))?)
    } else {
        let a = addr.parse::<Ipv4Addr>().map_err(|_| bad("ADDR", addr, "not an IPv4 address"))?;
        IpNet::V4(Ipv4Net::new(a, len).map_err(|_| bad("MASKLEN", &len.to_string(), "longer than 32"))?)
    };
    if dst.trunc() != dst {
        return Err(bad("ADDR", addr, "has host bits set for its length"));
    }
    // vpnc-script makes 0.0.0.0 (any length) and an IPv6 /0 the default route: never a push
    // that contests a bridge.
    if dst.prefix_len() == 0 || (!v6 && dst.addr().is_unspecified()) {
        return Ok(None);
    }
    Ok(Some(Push { dst, gateway: None, metric: None, origin }))
}

/// The pushes connect.d withheld from vpnc-script.
fn held(env: &HashMap<String, String>, skipped: &mut Vec<Skipped>) -> Vec<Push> {
    let Some(v) = env.get(HELD) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in v.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        match item.parse::<IpNet>() {
            Ok(n) if n.trunc() == n => {
                out.push(Push { dst: n, gateway: None, metric: None, origin: format!("{HELD} {}", i + 1) })
            }
            _ => skipped.push(Skipped::new(format!("{HELD} item {item:?}"), "not a prefix; ignored")),
        }
    }
    out
}

/// The pushes connect.d must take out of vpnc-script's list: each IPv4 one whose prefix is a
/// bridge's own directly connected route (`ip route replace` of the same prefix and metric would
/// take its place). Pure: the kernel's `routes` and `links` as gathered.
pub fn to_withhold(pushes: &[Push], routes: &[crate::net::Route], links: &[crate::net::Link]) -> Vec<IpNet> {
    let bridge_route = |dst: &IpNet| {
        routes.iter().any(|r| {
            r.dst == *dst && r.is_on_link() && r.dev.as_deref().is_some_and(|d| crate::bridges::is_bridge(links, d))
        })
    };
    pushes.iter().map(|p| p.dst).filter(|d| d.addr().is_ipv4() && bridge_route(d)).collect()
}

/// What connect.d hands back to vpnc-script: the IPv4 split-include list without `withheld`
/// (renumbered, in its order), and [`HELD`] naming what was taken out, as `sh` assignments for
/// `eval`. Every value is vpnfix's own rendering of a parsed address, never the server's text.
/// `None` when nothing is withheld: vpnc-script's list stays as it is.
pub fn withheld(input: &HookInput, withheld: &[IpNet]) -> Option<String> {
    if withheld.is_empty() {
        return None;
    }
    let keep: Vec<&Push> =
        input.pushes.iter().filter(|p| p.dst.addr().is_ipv4() && !withheld.contains(&p.dst)).collect();
    let mut sh = String::new();
    let _ = writeln!(sh, "CISCO_SPLIT_INC={}", keep.len());
    for (i, p) in keep.iter().enumerate() {
        let IpNet::V4(n) = p.dst else { continue };
        let _ = writeln!(
            sh,
            "CISCO_SPLIT_INC_{i}_ADDR={}\nCISCO_SPLIT_INC_{i}_MASK={}\nCISCO_SPLIT_INC_{i}_MASKLEN={}",
            n.network(),
            n.netmask(),
            n.prefix_len()
        );
    }
    let held: Vec<String> = withheld.iter().map(ToString::to_string).collect();
    let _ = writeln!(sh, "{HELD}={}", held.join(","));
    let _ = writeln!(sh, "export CISCO_SPLIT_INC {HELD}");
    Some(sh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<(String, String)> {
        let text = match name {
            "connect" => include_str!("../../tests/fixtures/openconnect-9.01/connect.env"),
            "post-connect" => include_str!("../../tests/fixtures/openconnect-9.01/post-connect.env"),
            "disconnect" => include_str!("../../tests/fixtures/openconnect-9.01/disconnect.env"),
            _ => unreachable!(),
        };
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn openconnect_9_01_environments_parse() {
        for (name, phase, event) in [
            ("connect", "connect", None),
            ("post-connect", "post-connect", Some(Event::Connect)),
            ("disconnect", "disconnect", Some(Event::Disconnect)),
        ] {
            let i = parse(fixture(name), Some(phase)).unwrap();
            assert_eq!(i.event, event, "{name}");
            assert_eq!(i.tunnel.dev, "ocwtun0");
            assert_eq!(i.tunnel.local_v4, Some("10.9.0.240/32".parse().unwrap()));
            let dsts: Vec<String> = i.pushes.iter().map(|p| p.dst.to_string()).collect();
            assert_eq!(dsts, ["172.20.0.0/16", "fd00:ac14::/64"], "{name}");
            assert_eq!(i.pushes[0].origin, "CISCO_SPLIT_INC_0_ADDR");
            assert!(i.skipped.is_empty(), "{:?}", i.skipped);
        }
        // A bundle's env: `reason` decides.
        assert_eq!(parse(fixture("post-connect"), None).unwrap().event, Some(Event::Connect));
    }

    #[test]
    fn connect_withholds_a_push_and_post_connect_gets_it_back() {
        let i = parse(fixture("connect"), Some("connect")).unwrap();
        let sh = withheld(&i, &["172.20.0.0/16".parse().unwrap()]).unwrap();
        assert_eq!(sh, "CISCO_SPLIT_INC=0\nVPNFIX_VPNC_HELD=172.20.0.0/16\nexport CISCO_SPLIT_INC VPNFIX_VPNC_HELD\n");
        // What post-connect.d sees after the eval.
        let mut env = fixture("post-connect");
        env.retain(|(k, _)| !k.starts_with("CISCO_SPLIT_INC"));
        env.push(("CISCO_SPLIT_INC".into(), "0".into()));
        env.push((HELD.into(), "172.20.0.0/16".into()));
        let back = parse(env, Some("post-connect")).unwrap();
        let dsts: Vec<String> = back.pushes.iter().map(|p| p.dst.to_string()).collect();
        assert_eq!(dsts, ["fd00:ac14::/64", "172.20.0.0/16"]);
        assert!(withheld(&i, &[]).is_none());
    }

    #[test]
    fn only_ipv4_pushes_of_a_bridges_own_prefix_are_withheld() {
        use crate::net::{Link, Proto, Route, RouteKind};
        let on_link = |dst: &str, dev: &str| Route {
            dst: dst.parse().unwrap(),
            dev: Some(dev.into()),
            gateway: None,
            metric: 0,
            protocol: Proto(2),
            scope: crate::net::SCOPE_LINK,
            kind: RouteKind::Unicast,
        };
        let link = |index, name: &str, kind: Option<&str>| Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            tap: false,
            up: true,
        };
        let routes =
            [on_link("172.20.0.0/16", "br-x"), on_link("192.168.1.0/24", "eth0"), on_link("fd00:ac14::/64", "br-x")];
        let links = [link(2, "br-x", Some("bridge")), link(3, "eth0", None)];
        let i = parse(fixture("connect"), Some("connect")).unwrap();
        let mut pushes = i.pushes.clone();
        pushes.push(Push { dst: "192.168.1.0/24".parse().unwrap(), gateway: None, metric: None, origin: "x".into() });
        pushes.push(Push { dst: "172.20.2.0/24".parse().unwrap(), gateway: None, metric: None, origin: "y".into() });
        // Not the physical LAN's, not one inside the bridge's range, not IPv6 (metric 1024 never
        // replaces the bridge's 256).
        assert_eq!(to_withhold(&pushes, &routes, &links), ["172.20.0.0/16".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn other_pushes_stay_in_the_list_renumbered() {
        let env = [
            ("TUNDEV", "tun0"),
            ("reason", "connect"),
            ("CISCO_SPLIT_INC", "3"),
            ("CISCO_SPLIT_INC_0_ADDR", "10.1.0.0"),
            ("CISCO_SPLIT_INC_0_MASK", "255.255.0.0"),
            ("CISCO_SPLIT_INC_0_MASKLEN", "16"),
            ("CISCO_SPLIT_INC_1_ADDR", "172.20.0.0"),
            ("CISCO_SPLIT_INC_1_MASKLEN", "16"),
            ("CISCO_SPLIT_INC_2_ADDR", "192.168.7.0"),
            ("CISCO_SPLIT_INC_2_MASK", "255.255.255.0"),
        ];
        let i = parse(env, Some("connect")).unwrap();
        let sh = withheld(&i, &["172.20.0.0/16".parse().unwrap()]).unwrap();
        assert!(sh.starts_with("CISCO_SPLIT_INC=2\nCISCO_SPLIT_INC_0_ADDR=10.1.0.0\nCISCO_SPLIT_INC_0_MASK=255.255.0.0\nCISCO_SPLIT_INC_0_MASKLEN=16\nCISCO_SPLIT_INC_1_ADDR=192.168.7.0\nCISCO_SPLIT_INC_1_MASK=255.255.255.0\nCISCO_SPLIT_INC_1_MASKLEN=24\n"), "{sh}");
    }

    #[test]
    fn hostile_values_are_skipped_with_a_line_and_never_echoed() {
        let env = [
            ("TUNDEV", "tun0"),
            ("CISCO_SPLIT_INC", "4"),
            ("CISCO_SPLIT_INC_0_ADDR", "172.20.0.0; rm -rf /"),
            ("CISCO_SPLIT_INC_0_MASKLEN", "16"),
            ("CISCO_SPLIT_INC_1_ADDR", "172.20.0.1"),
            ("CISCO_SPLIT_INC_1_MASKLEN", "16"),
            ("CISCO_SPLIT_INC_2_ADDR", "0.0.0.0"),
            ("CISCO_SPLIT_INC_2_MASKLEN", "0"),
            ("CISCO_IPV6_SPLIT_INC", "99999999999"),
        ];
        let i = parse(env, Some("connect")).unwrap();
        assert!(i.pushes.is_empty());
        let why: Vec<String> = i.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(why.len(), 4, "{why:#?}");
        assert!(why[0].contains("not an IPv4 address") && why[1].contains("host bits"), "{why:#?}");
        assert!(why[2].contains("CISCO_SPLIT_INC_3_ADDR: missing; it and the rest of the 4"), "{why:#?}");
        // A count past any real list stops at its first missing entry: one line, not millions.
        assert!(why[3].starts_with("CISCO_IPV6_SPLIT_INC_0_ADDR: missing"), "{why:#?}");
        assert_eq!(parse([("TUNDEV", "x y")], None).unwrap_err(), VpncError::BadDevice("x y".into()));
        assert_eq!(parse([("reason", "connect")], None).unwrap_err(), VpncError::NoDevice);
        assert!(matches!(parse([("TUNDEV", "tun0")], Some("sideways")), Err(VpncError::BadPhase(_))));
    }
}
