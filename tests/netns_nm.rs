//! vpnfix as a NetworkManager dispatcher script on a real kernel, in a private namespace, with
//! environments built as NetworkManager builds them (shared/reference §5, §8): NM installs the VPN
//! routes at metric 50 first, then runs `vpn-up`; `vpn-pre-down` still carries the routes;
//! `vpn-down` carries none, so vpnfix works from its state. Same kernel outcome as under OpenVPN.

mod common;

use common::laptop::{laptop, Pushed};
use common::{env, require_root, stderr, stdout, until, Netns, TempDir};

fn nm_env(action: &str, state: &TempDir, with_routes: bool) -> Vec<(String, String)> {
    let mut e = env(&[
        ("NM_DISPATCHER_ACTION", action),
        ("CONNECTION_ID", "office"),
        ("CONNECTION_UUID", "6f1f3c7e-2b7a-4d0c-9a5e-0c1d2e3f4a5b"),
        ("DEVICE_IFACE", "eth0"),
        ("DEVICE_IP_IFACE", "eth0"),
        ("VPN_IP_IFACE", "tun0"),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ]);
    if with_routes {
        e.extend(env(&[
            ("VPN_IP4_ADDRESS_0", "10.0.1.65/32 0.0.0.0"),
            ("VPN_IP4_NUM_ADDRESSES", "1"),
            ("VPN_IP4_GATEWAY", "0.0.0.0"),
            ("VPN_IP4_ROUTE_0", "172.20.0.0/16 10.0.1.66 50"),
            ("VPN_IP4_NUM_ROUTES", "1"),
            ("VPN_IP6_ADDRESS_0", "fd00:8::2/64 ::"),
            ("VPN_IP6_ROUTE_0", "fd42:20::/48 :: 50"),
            ("VPN_IP6_NUM_ROUTES", "1"),
        ]));
    } else {
        e.push(("VPN_IP4_NUM_ROUTES".into(), "0".into()));
    }
    e.push(("VPNFIX_STATE_DIR".into(), state.path().join("state").display().to_string()));
    e
}

fn dispatch(ns: &Netns, action: &str, state: &TempDir, with_routes: bool) -> std::process::Output {
    let out = ns.vpnfix(&nm_env(action, state, with_routes), &["tun0", action]);
    assert_eq!(out.status.code(), Some(0), "{action}: {}", stderr(&out));
    out
}

fn check_routing(ns: &Netns) {
    for (addr, dev) in [
        ("172.20.2.52", "tun0"),
        ("172.20.0.2", "br-test"),
        ("172.20.0.4", "br-test"),
        ("fd42:20::2", "br-test"),
        ("fd42:20::1:5", "tun0"),
    ] {
        assert_eq!(ns.route_get(addr), dev, "ip route get {addr}");
    }
}

/// What NetworkManager does around the dispatcher: its own routes at metric 50 come and go.
fn nm_routes(ns: &Netns, verb: &str) {
    ns.ip(&["route", verb, "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun0", "metric", "50"]);
    ns.ip(&["-6", "route", verb, "fd42:20::/48", "dev", "tun0", "metric", "50"]);
}

#[test]
#[ignore = "needs root"]
fn vpn_up_then_pre_down_then_down_leaves_the_table_as_before() {
    require_root("nm vpn_up_then_pre_down_then_down");
    let ns = laptop(Pushed::Absent);
    let state = TempDir::new("nm");
    let before = ns.table();
    nm_routes(&ns, "add");
    assert_eq!(ns.route_get("172.20.2.52"), "br-test", "without vpnfix the metric-50 VPN route silently loses");
    let up = dispatch(&ns, "vpn-up", &state, true);
    assert!(stderr(&up).contains("172.20.1.0/24 dev tun0: VPN side of 172.20.0.0/16"), "{}", stderr(&up));
    check_routing(&ns);
    let state_dir = state.path().join("state").display().to_string();
    let status = ns.vpnfix(&env(&[("VPNFIX_STATE_DIR", &state_dir)]), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", stderr(&status)));
    assert_eq!(v["tunnels"][0]["tunnel"], "tun0");
    assert_eq!(v["tunnels"][0]["in_sync"], true, "{}", stdout(&status));
    assert_eq!(v["tunnels"][0]["routes"].as_array().unwrap().len(), 8 + 56);
    // Unrelated dispatcher events cost nothing and say nothing.
    let quiet = ns.vpnfix(&nm_env("dhcp4-change", &state, false), &["eth0", "dhcp4-change"]);
    assert!(quiet.status.success() && quiet.stderr.is_empty(), "{}", stderr(&quiet));
    dispatch(&ns, "vpn-pre-down", &state, true);
    nm_routes(&ns, "del");
    let down = dispatch(&ns, "vpn-down", &state, false);
    assert!(down.stderr.is_empty(), "nothing left to do: {}", stderr(&down));
    assert_eq!(ns.table(), before);
}

#[test]
#[ignore = "needs root"]
fn vpn_down_alone_cleans_up_from_the_state() {
    require_root("nm vpn_down_alone");
    let ns = laptop(Pushed::Absent);
    let state = TempDir::new("nm-down");
    let before = ns.table();
    nm_routes(&ns, "add");
    dispatch(&ns, "vpn-up", &state, true);
    check_routing(&ns);
    // The VPN died: NetworkManager emits no vpn-pre-down, removes its routes, then vpn-down.
    nm_routes(&ns, "del");
    dispatch(&ns, "vpn-down", &state, false);
    assert_eq!(ns.table(), before);
}

/// A container at 172.20.2.10 and NetworkManager's pushed 172.20.2.0/24, which wins by length:
/// `vpn-up` (with `VPNFIX_WATCH` set to `watch`) gives the container's address a route of vpnfix's on the
/// bridge. Returns the table before the VPN came.
fn up_over_a_container(ns: &Netns, state: &TempDir, watch: &str) -> String {
    ns.ip(&["neigh", "add", "172.20.2.10", "lladdr", "02:42:ac:14:02:0a", "dev", "br-test", "nud", "permanent"]);
    let before = ns.table();
    ns.ip(&["route", "add", "172.20.2.0/24", "via", "10.0.1.66", "dev", "tun0", "metric", "50"]);
    let mut up = nm_env("vpn-up", state, false);
    up.retain(|(k, _)| k != "VPN_IP4_NUM_ROUTES");
    up.extend(env(&[
        ("VPN_IP4_ROUTE_0", "172.20.2.0/24 10.0.1.66 50"),
        ("VPN_IP4_NUM_ROUTES", "1"),
        ("VPNFIX_WATCH", watch),
    ]));
    let out = ns.vpnfix(&up, &["tun0", "vpn-up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ns.route_get("172.20.2.10"), "br-test", "{}", stderr(&out));
    assert!(ns.ip(&["route", "show", "proto", "86"]).contains("172.20.2.10 dev br-test"));
    before
}

/// The VPN dies under NetworkManager (openvpn killed, server gone): its tunnel goes with the
/// routes on it, no `vpn-pre-down` comes, and `vpn-down` names the *parent* device and carries
/// no `VPN_*` at all (../shared/fixtures/networkmanager-1.42/vpn-down-after-openvpn-died.env).
/// The record is found by the connection's UUID and the bridge-side route removed.
#[test]
#[ignore = "needs root"]
fn vpn_down_after_the_vpn_died_finds_the_record_by_connection() {
    require_root("nm vpn_down_after_the_vpn_died");
    let (ns, state) = (laptop(Pushed::Absent), TempDir::new("nm-died"));
    let before = up_over_a_container(&ns, &state, "false");
    // OpenVPN dies: tun0 and its routes go; NetworkManager then runs vpn-down on the parent.
    ns.ip(&["link", "del", "tun0"]);
    let mut down = nm_env("vpn-down", &state, false);
    down.retain(|(k, _)| !k.starts_with("VPN_"));
    let out = ns.vpnfix(&down, &["eth0", "vpn-down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("connection 6f1f3c7e-2b7a-4d0c-9a5e-0c1d2e3f4a5b was tun0's"), "{}", stderr(&out));
    assert_eq!(ns.ip(&["route", "show", "proto", "86"]), "", "the bridge-side route is gone");
    assert!(!state.path().join("state/tun0.json").exists(), "and the record with it");
    let now = ns.table();
    assert!(!now.contains("172.20.2.10"), "{now}");
    assert!(before.contains("br-test") && !before.contains("\"proto\":\"86\""));
}

/// The VPN dies under NetworkManager and no dispatcher script runs after it at all: the watcher
/// vpn-up started (which outlived the dispatcher's script) removes the bridge-side route and the
/// record by itself when tun0 goes.
#[test]
#[ignore = "needs root"]
fn the_watcher_vpn_up_started_cleans_up_when_the_vpn_dies_whatever_the_hooks_say() {
    require_root("nm the_watcher_vpn_up_started_cleans_up");
    let (ns, state) = (laptop(Pushed::Absent), TempDir::new("nm-watch"));
    let before = up_over_a_container(&ns, &state, "true");
    let watchers = || common::watchers_in(&ns).len();
    assert!(until(|| watchers() == 1), "vpn-up started no watcher");
    ns.ip(&["link", "del", "tun0"]);
    assert!(until(|| watchers() == 0), "the watcher outlived tun0");
    assert_eq!(ns.ip(&["route", "show", "proto", "86"]), "", "the bridge-side route is gone");
    assert!(!state.path().join("state/tun0.json").exists(), "and the record with it");
    assert!(!ns.table().contains("172.20.2.10"), "{}", ns.table());
    assert!(before.contains("br-test"));
}
