//! Table tests of the OpenVPN parser, and the environments a real OpenVPN 2.6.14 client gave.

use super::*;
use crate::config::parse_kv_lines;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openvpn-2.6.14-client");

fn fixture(name: &str) -> (Vec<(String, String)>, Vec<String>) {
    let env = std::fs::read_to_string(format!("{FIXTURES}/{name}.env")).unwrap();
    let args = std::fs::read_to_string(format!("{FIXTURES}/{name}.args")).unwrap_or_default();
    let args = args.split_whitespace().map(str::to_string).collect();
    (parse_kv_lines(&env), args)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn expected_pushes() -> Vec<Push> {
    vec![
        Push {
            dst: net("172.20.0.0/16"),
            gateway: Some(ip("10.8.0.1")),
            metric: None,
            origin: "route_network_1".into(),
        },
        Push {
            dst: net("172.21.5.0/24"),
            gateway: Some(ip("10.8.0.1")),
            metric: Some(200),
            origin: "route_network_2".into(),
        },
        Push {
            dst: net("fd42:20::/48"),
            gateway: Some(ip("fd00:8::1")),
            metric: None,
            origin: "route_ipv6_network_1".into(),
        },
    ]
}

#[test]
fn every_captured_hook_parses_into_the_same_tunnel_and_pushes() {
    let cases = [
        ("up", Some(Event::Connect), None),
        ("route-up", Some(Event::Connect), Some(true)),
        ("route-pre-down", Some(Event::Disconnect), Some(true)),
        ("down", Some(Event::Disconnect), Some(true)),
    ];
    for (name, event, redirect) in cases {
        let (env, args) = fixture(name);
        let h = parse(env, &args, None).unwrap();
        assert_eq!(h.script_type.as_deref(), Some(name));
        assert_eq!(h.event, event, "{name}");
        assert_eq!(h.redirect_gateway, redirect, "{name}");
        assert_eq!(h.tunnel.dev, "tun0");
        assert_eq!(h.tunnel.kind, TunnelKind::Tun);
        assert_eq!(h.tunnel.gateway_v4, Some("10.8.0.1".parse().unwrap()));
        assert_eq!(h.tunnel.gateway_v6, Some("fd00:8::1".parse().unwrap()));
        assert_eq!(h.tunnel.local_v4, Some(net("10.8.0.2/24")));
        assert_eq!(h.tunnel.local_v6, Some(net("fd00:8::1000/64")));
        assert_eq!(h.pushes, expected_pushes(), "{name}");
        assert!(h.skipped.is_empty(), "{name}: {:?}", h.skipped);
    }
}

#[test]
fn down_root_mode_names_the_hook_when_openvpn_does_not() {
    let (mut env, args) = fixture("down");
    env.retain(|(k, _)| k != "script_type" && k != "dev");
    let h = parse(env, &args, Some("down")).unwrap();
    assert_eq!(h.event, Some(Event::Disconnect));
    assert_eq!(h.tunnel.dev, "tun0", "taken from the first positional argument");
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn base() -> Vec<(String, String)> {
    env(&[
        ("script_type", "route-up"),
        ("dev", "tun0"),
        ("ifconfig_local", "10.8.0.2"),
        ("ifconfig_netmask", "255.255.255.0"),
        ("route_vpn_gateway", "10.8.0.1"),
        ("route_net_gateway", "192.168.1.1"),
        ("net_gateway_ipv6", "fe80::1"),
    ])
}

fn with(extra: &[(&str, &str)]) -> HookInput {
    let mut e = base();
    e.extend(env(extra));
    parse(e, &[], None).unwrap()
}

#[test]
fn malformed_routes_are_skipped_one_line_each() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("route_network_1", "10.20.0.0"), ("route_netmask_1", "255.0.255.0")], "route_netmask_1=\"255.0.255.0\": netmask is not contiguous; route skipped"),
        (&[("route_network_1", "vpn.example"), ("route_netmask_1", "255.255.0.0")], "route_network_1=\"vpn.example\": not an IPv4 address; route skipped"),
        (&[("route_network_1", "10.20.0.1"), ("route_netmask_1", "255.255.0.0")], "route_network_1=\"10.20.0.1\": has host bits set for /16; route skipped"),
        (&[("route_network_1", "10.20.0.0"), ("route_netmask_1", "255.255.0.0"), ("route_metric_1", "-1")], "route_metric_1=\"-1\": not a whole number; route skipped"),
        (&[("route_network_1", "10.20.0.0"), ("route_netmask_1", "255.255.0.0"), ("route_gateway_1", "192.168.1.1")], "10.20.0.0/16 (route_network_1): gateway 192.168.1.1 is not on the tunnel tun0; not a tunnel route, left alone"),
        (&[("route_ipv6_network_1", "fd00::/129")], "route_ipv6_network_1=\"fd00::/129\": not an IPv6 prefix; route skipped"),
        (&[("route_ipv6_network_1", "2001:db8::10/128"), ("route_ipv6_gateway_1", "fe80::1"), ("route_ipv6_metric_1", "1")], "2001:db8::10/128 (route_ipv6_network_1): goes via the local IPv6 gateway, not the tunnel; left alone"),
        (&[("route_ipv6_network_1", "::ffff:172.20.0.0/112")], "::ffff:172.20.0.0/112 (route_ipv6_network_1): IPv4-mapped IPv6 addresses are never routed; route skipped"),
        (&[("route_vpn_gateway", "10.8.0.1.5")], "route_vpn_gateway=\"10.8.0.1.5\": malformed; ignored"),
    ];
    for (extra, line) in cases {
        let h = with(extra);
        assert!(h.pushes.is_empty(), "{line}: {:?}", h.pushes);
        assert_eq!(h.skipped.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![line.to_string()]);
    }
}

#[test]
fn numbering_stops_at_the_first_gap_and_duplicates_go() {
    let h = with(&[
        ("route_network_1", "10.20.0.0"),
        ("route_netmask_1", "255.255.0.0"),
        ("route_network_2", "10.20.0.0"),
        ("route_netmask_2", "255.255.0.0"),
        ("route_network_4", "10.40.0.0"),
        ("route_netmask_4", "255.255.0.0"),
    ]);
    assert_eq!(h.pushes.len(), 1);
    assert_eq!(h.skipped[0].reason, "duplicate of route_network_1; ignored");
}

#[test]
fn missing_netmask_means_a_host_route_and_metrics_are_optional() {
    let h = with(&[("route_network_1", "10.20.0.7"), ("route_metric_1", "50")]);
    assert_eq!(h.pushes[0].dst, net("10.20.0.7/32"));
    assert_eq!(h.pushes[0].metric, Some(50));
}

#[test]
fn tap_and_p2p_tunnels() {
    let h = with(&[("dev_type", "tap")]);
    assert_eq!(h.tunnel.kind, TunnelKind::Tap);
    assert_eq!(h.tunnel.next_hop(false), Some(ip("10.8.0.1")));
    let h = parse(
        env(&[
            ("dev", "tun1"),
            ("ifconfig_local", "10.0.1.65"),
            ("ifconfig_remote", "10.0.1.66"),
            ("route_network_1", "172.20.0.0"),
            ("route_netmask_1", "255.255.0.0"),
            ("route_gateway_1", "10.0.1.66"),
        ]),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(h.tunnel.remote_v4, Some("10.0.1.66".parse().unwrap()));
    assert_eq!(h.pushes.len(), 1, "the p2p peer is on the tunnel: {:?}", h.skipped);
    assert_eq!(h.tunnel.next_hop(false), None);
    assert_eq!(h.event, None, "no script_type, no mode: nothing to do");
}

#[test]
fn six_positional_arguments_with_empty_ones() {
    let args: Vec<String> = ["tun3", "1500", "0", "", "", "init"].iter().map(|s| s.to_string()).collect();
    let h = parse(env(&[("script_type", "up")]), &args, None).unwrap();
    assert_eq!(h.tunnel.dev, "tun3");
    assert_eq!(h.tunnel.local_v4, None);
}

#[test]
fn a_tunnel_must_be_named_and_named_sanely() {
    assert_eq!(parse(env(&[("script_type", "up")]), &[], None), Err(HookError::NoDevice));
    assert_eq!(parse(env(&[("dev", "../etc")]), &[], None), Err(HookError::BadDevice("../etc".into())));
    assert_eq!(
        parse(env(&[("dev", "a-very-long-interface")]), &[], None),
        Err(HookError::BadDevice("a-very-long-interface".into()))
    );
}

#[test]
fn hook_invocations_are_told_from_commands() {
    use crate::hook::{detect, Invocation, Source};
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let ovpn = env(&[("script_type", "down"), ("dev", "tun0")]);
    let cmds = ["plan", "apply", "cleanup"];
    let openvpn = |args: &[&str]| Some(Invocation { source: Source::OpenVpn { mode: None }, args: s(args) });
    let updown = ["tun0", "1500", "0", "10.8.0.2", "255.255.255.0", "init"];
    assert_eq!(detect(&s(&updown), &ovpn, &cmds), openvpn(&updown));
    assert_eq!(detect(&[], &ovpn, &cmds), openvpn(&[]));
    let down_root = Invocation { source: Source::OpenVpn { mode: Some("down".into()) }, args: s(&["tun0"]) };
    assert_eq!(detect(&s(&["down", "tun0"]), &[], &cmds), Some(down_root));
    let nm = env(&[("NM_DISPATCHER_ACTION", "vpn-up")]);
    let dispatcher = Invocation { source: Source::NetworkManager, args: s(&["tun0", "vpn-up"]) };
    assert_eq!(detect(&s(&["tun0", "vpn-up"]), &nm, &cmds), Some(dispatcher));
    assert_eq!(
        detect(&s(&["plan"]), &ovpn, &cmds),
        None,
        "a manual command inside a hook environment is still a command"
    );
    assert_eq!(detect(&s(&["plan"]), &[], &cmds), None);
    assert_eq!(detect(&[], &[], &cmds), None);
}
