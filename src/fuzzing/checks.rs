//! The invariants the fuzz entry points assert: what each parser and the planner promise about
//! their output, checked cheaply (no second implementation of the rule).

use crate::bundle::Bundle;
use crate::config::{Config, Policy, KEYS, NOT_SETTINGS};
use crate::hook::{nm, openvpn, HookInput};
use crate::net::{Facts, Push, RouteKind, Skipped};
use crate::plan::{Plan, Side};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// The variables OpenVPN's tunnel description comes from; their problems are reported as
/// `KEY="value"`.
const TUNNEL_KEYS: &[&str] = &[
    "ifconfig_local",
    "ifconfig_netmask",
    "ifconfig_remote",
    "route_vpn_gateway",
    "ifconfig_ipv6_local",
    "ifconfig_ipv6_remote",
    "ifconfig_ipv6_netbits",
];

/// The value the parsers see for a key (they collect into a map: the last one wins).
pub fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// How many of `{prefix}{first}`, `{prefix}{first + 1}` … exist: the routes a parser must
/// account for, each as a push or as a skipped item.
fn numbered(env: &[(String, String)], prefix: &str, first: usize) -> usize {
    (first..).take_while(|n| lookup(env, &format!("{prefix}{n}")).is_some()).count()
}

/// Every skipped item says what and why.
pub fn check_skipped(skipped: &[Skipped]) {
    for s in skipped {
        assert!(!s.subject.is_empty() && !s.reason.is_empty(), "skipped item without subject or reason: {s:?}");
    }
}

/// A parsed push: a real prefix, a next hop of its family, a known origin.
fn check_push(p: &Push) {
    assert_eq!(p.dst, p.dst.trunc(), "push {p} has host bits set");
    assert!(p.gateway.is_none_or(|g| g.is_ipv4() == p.dst.addr().is_ipv4()), "push {p}: next hop of another family");
    assert!(p.gateway.is_none_or(|g| !g.is_unspecified()), "push {p}: unspecified next hop kept");
    assert!(!p.origin.is_empty() && !p.to_string().is_empty());
}

/// The configuration the hook reads from the same environment: every value in range, every
/// unknown or bad `VPNFIX_*` variable reported.
pub fn check_config(env: &[(String, String)]) {
    let (c, skipped) = Config::from_layers([env]);
    check_skipped(&skipped);
    assert!(c.keep_prefix_v4 <= 32 && c.min_prefix_v4 <= 32, "{c:?}");
    assert!(c.keep_prefix_v6 <= 128 && c.min_prefix_v6 <= 128, "{c:?}");
    assert!(c.proto > 4 && c.docker_timeout_ms >= 1, "{c:?}");
    for (k, _) in env {
        if k.strip_prefix("VPNFIX_").is_some_and(|key| !KEYS.contains(&key) && !NOT_SETTINGS.contains(&key)) {
            assert!(skipped.iter().any(|s| s.subject == *k), "unknown setting {k} not reported");
        }
    }
}

/// OpenVPN: a valid device, the event of the script type, every numbered route accounted for.
pub fn openvpn_input(h: &HookInput, env: &[(String, String)], mode: Option<&str>) {
    assert!(openvpn::valid_ifname(&h.tunnel.dev), "device {:?} accepted", h.tunnel.dev);
    let script_type = mode.or(lookup(env, "script_type"));
    assert_eq!(h.script_type.as_deref(), script_type);
    assert_eq!(h.event, script_type.and_then(openvpn::event_of));
    assert_eq!(h.redirect_gateway, lookup(env, "redirect_gateway").map(|v| v == "1"));
    assert!(
        h.tunnel.local_v4.is_none_or(|n| n.addr().is_ipv4()) && h.tunnel.local_v6.is_none_or(|n| n.addr().is_ipv6())
    );
    assert!(!h.tunnel.to_string().is_empty());
    let mut seen = HashSet::new();
    for p in &h.pushes {
        check_push(p);
        assert!(seen.insert(p.dst), "duplicate push {p}");
        let v6 = p.origin.starts_with("route_ipv6_network_");
        assert!(v6 || p.origin.starts_with("route_network_"), "push {p}: unknown origin");
        assert_eq!(p.dst.addr().is_ipv6(), v6, "push {p}: family differs from its variable's");
        assert!(lookup(env, &p.origin).is_some(), "push {p}: no such variable");
        if let IpNet::V6(n) = p.dst {
            assert!(n.network().to_ipv4_mapped().is_none() || n.prefix_len() < 96, "IPv4-mapped push {p}");
        }
    }
    check_skipped(&h.skipped);
    let tunnel_skips =
        h.skipped.iter().filter(|s| TUNNEL_KEYS.iter().any(|k| s.subject.starts_with(&format!("{k}=")))).count();
    let routes = numbered(env, "route_network_", 1) + numbered(env, "route_ipv6_network_", 1);
    assert_eq!(h.pushes.len() + h.skipped.len() - tunnel_skips, routes, "a pushed route was neither used nor reported");
}

/// NetworkManager: a valid device, the action's event, every numbered route accounted for and
/// a wrong count reported.
pub fn nm_input(h: &HookInput, env: &[(String, String)], args: &[String]) {
    assert!(openvpn::valid_ifname(&h.tunnel.dev), "device {:?} accepted", h.tunnel.dev);
    let action = args.get(1).map(String::as_str).or(lookup(env, "NM_DISPATCHER_ACTION"));
    assert_eq!(h.script_type.as_deref(), action);
    assert_eq!(h.event, action.and_then(nm::event_of));
    assert_eq!(h.redirect_gateway, None);
    let t = &h.tunnel;
    assert!(t.local_v4.is_none_or(|n| n.addr().is_ipv4()), "VPN_IP4_ADDRESS_0 gave {:?}", t.local_v4);
    assert!(t.local_v6.is_none_or(|n| n.addr().is_ipv6()), "VPN_IP6_ADDRESS_0 gave {:?}", t.local_v6);
    check_skipped(&h.skipped);
    for (family, v6) in [("VPN_IP4", false), ("VPN_IP6", true)] {
        let route = format!("{family}_ROUTE_");
        let n = numbered(env, &route, 0);
        let pushes: Vec<&Push> = h.pushes.iter().filter(|p| p.origin.starts_with(&route)).collect();
        for p in &pushes {
            check_push(p);
            assert_eq!(p.dst.addr().is_ipv6(), v6, "push {p}: family differs from its variable's");
        }
        let skips = h.skipped.iter().filter(|s| s.subject.starts_with(&route)).count();
        assert_eq!(pushes.len() + skips, n, "{family}: a route was neither used nor reported");
        let count = format!("{family}_NUM_ROUTES");
        let wrong = lookup(env, &count).is_some_and(|c| c.parse::<usize>().ok() != Some(n));
        let reported = h.skipped.iter().any(|s| s.subject.starts_with(&format!("{count}=")));
        assert_eq!(wrong, reported, "{count}: a wrong count must be reported, a right one not");
    }
    assert_eq!(h.pushes.len(), h.pushes.iter().filter(|p| p.origin.starts_with("VPN_IP")).count());
}

/// A bundle: prefixes without host bits, IPv4 routes first, Docker's bridges named, the
/// environment's keys clean, every problem reported with a reason.
pub fn bundle(b: &Bundle, files: &[(&str, &[u8])]) {
    for r in &b.host.routes {
        assert_eq!(r.dst, r.dst.trunc(), "route {r} has host bits set");
        assert!(r.kind == RouteKind::Unicast || r.dev.is_none(), "reject route {r} has a device");
        assert!(!r.to_string().is_empty());
    }
    assert!(b.host.routes.windows(2).all(|w| w[0].dst.addr().is_ipv4() || w[1].dst.addr().is_ipv6()));
    assert_eq!(b.host.docker.is_some(), files.iter().any(|(n, _)| *n == "docker.json"));
    for n in b.host.docker.iter().flatten() {
        assert!(!n.bridge.is_empty(), "network {} has no bridge name", n.name);
        assert!(n.ipam.iter().all(|p| p.subnet == p.subnet.trunc()), "network {}: pool with host bits", n.name);
        assert!(n.containers.windows(2).all(|w| w[0].name <= w[1].name), "network {}: containers unsorted", n.name);
    }
    for (k, v) in &b.env {
        assert!(k.trim() == k && !k.starts_with('#') && !k.contains('='), "env key {k:?}");
        assert!(!k.contains('\n') && !v.contains('\n'), "env {k:?}={v:?} spans lines");
    }
    check_skipped(&b.host.skipped);
}

/// A plan: sorted, one route per destination, within the cap, each route inside a push and a
/// local network, on the right side; and under `split` no address a local network uses is
/// routed into the tunnel.
pub fn plan(p: &Plan, facts: &Facts, config: &Config) {
    assert_eq!(p.tunnel, facts.tunnel.dev);
    assert!(p.add.len() <= config.max_routes, "{} routes over the cap of {}", p.add.len(), config.max_routes);
    assert!(p.add.windows(2).all(|w| w[0].dst < w[1].dst), "plan unsorted or with two routes to one destination");
    let pushes: HashSet<IpNet> = facts.pushes.iter().map(|p| p.dst).collect();
    for r in &p.add {
        assert_eq!(r.dst, r.dst.trunc(), "{r}: host bits");
        assert!(r.push.contains(&r.dst) && pushes.contains(&r.push), "{r}: not inside a push");
        assert!(r.local.contains(&r.dst), "{r}: not inside its local network");
        match r.side {
            Side::Vpn | Side::Pushed => assert_eq!(r.dev, facts.tunnel.dev, "{r}"),
            Side::Local => assert!(!r.dev.is_empty() && r.dev != facts.tunnel.dev, "{r}"),
        }
        assert!(r.gateway.is_none_or(|g| g.is_ipv4() == r.dst.addr().is_ipv4()), "{r}: next hop of another family");
    }
    for c in &p.conflicts {
        assert!(c.push.dst.contains(&c.contested) && c.local.dst.contains(&c.contested), "{c}");
        assert!(c.kept.iter().all(|k| c.contested.contains(k)), "{c}: keeps outside the contested range");
        assert!(c.routes <= p.add.len(), "{c}");
    }
    check_skipped(&p.skipped);
    assert!(p.notes.iter().all(|n| !n.is_empty()));
    if config.policy == Policy::Split {
        used_stay_local(p);
    }
}

/// DESIGN.md: under `split`, addresses that local containers use are never routed into the
/// tunnel. Checked for each used address of the one most specific local network holding it
/// (two bridges with the same prefix: the kernel, and so the planner, picks one; skipped).
fn used_stay_local(p: &Plan) {
    let locals: Vec<(IpNet, &str)> = p.conflicts.iter().map(|c| (c.local.dst, c.local.dev.as_str())).collect();
    let owner = |a: &IpAddr| {
        let holding: HashSet<(IpNet, &str)> = locals.iter().copied().filter(|(n, _)| n.contains(a)).collect();
        let longest = holding.iter().map(|(n, _)| n.prefix_len()).max()?;
        let mut at: Vec<_> = holding.into_iter().filter(|(n, _)| n.prefix_len() == longest).collect();
        (at.len() == 1).then(|| at.pop().expect("one"))
    };
    for c in &p.conflicts {
        for u in c.local.used.iter().filter(|u| c.contested.contains(&u.addr)) {
            if owner(&u.addr) != Some((c.local.dst, c.local.dev.as_str())) {
                continue;
            }
            for r in p.add.iter().filter(|r| r.side == Side::Vpn) {
                assert!(!r.dst.contains(&u.addr), "{} (used by {}) routed into the tunnel by {r}", u.addr, u.by);
            }
        }
    }
}
