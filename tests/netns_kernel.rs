//! The kernel adapter against the real kernel, each test in a private network namespace (root only).
//!
//! The machine's own namespace is never touched: setup runs `ip -n NAME …`, and the adapter runs in
//! a thread that first joins the namespace (a netlink socket belongs to the namespace of the thread
//! that opens it) and then builds its own current-thread runtime. A guard deletes the namespace
//! even when a test panics. The scenario mirrors the seed case: a Docker-like bridge br-test
//! 172.20.0.0/16 (fd42:20::/64) and an OpenVPN-like tun0 10.0.1.65 peer 10.0.1.66 (fd00:8::2/64).

mod common;

use common::kernel_ns::{Ip, KernelNs};
use std::process::Command;
use vpnfix::kernel::{Added, Deleted, Kernel, KernelError, RouteSpec, MAIN_TABLE};
use vpnfix::net::{Route, RouteKind};

const PROTO: u8 = 86;

fn spec(dst: &str, dev: &str, gateway: Option<&str>, protocol: u8) -> RouteSpec {
    RouteSpec {
        dst: dst.parse().expect("test prefix"),
        dev: dev.to_string(),
        gateway: gateway.map(|g| g.parse().expect("test address")),
        table: MAIN_TABLE,
        protocol,
    }
}

fn find<'a>(routes: &'a [Route], dst: &str) -> Vec<&'a Route> {
    routes.iter().filter(|r| r.dst.to_string() == dst).collect()
}

fn sorted<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|i| format!("{i:?}")).collect();
    v.sort();
    v
}

/// What `vpnfix plan --from` would read from the same moment's `ip -j` dumps.
fn bundle_routes(ip: &Ip) -> Vec<Route> {
    let mut out = Vec::new();
    for (args, v6) in [("route show table main", false), ("-6 route show table main", true)] {
        let raws: Vec<vpnfix::bundle::RawRoute> =
            serde_json::from_value(ip.json(args)).expect("ip -j route JSON reads as RawRoute");
        out.extend(raws.iter().map(|r| vpnfix::bundle::route(r, v6).expect("ip's routes parse")));
    }
    out
}

#[test]
#[ignore = "needs root"]
fn dumps_read_the_kernel_as_ip_json_does() {
    let ns = KernelNs::new("dumps_read_the_kernel_as_ip_json_does");
    ns.scenario();
    for cmd in [
        "tuntap add dev tap0 mode tap",
        "route add 10.9.0.0/16 proto static nexthop via 172.20.0.2 dev br-test nexthop via 10.0.1.66 dev tun0",
        "route add 10.8.0.0/16 via 172.20.0.3 dev br-test metric 50",
        "route add unreachable 10.10.0.0/16",
        "-6 route add blackhole fd99::/64",
        "route add 192.0.2.0/24 dev tun0 table 1000",
        "neigh add 172.20.0.2 lladdr 02:00:00:00:00:02 dev br-test nud permanent",
        "neigh add 172.20.0.3 lladdr 02:00:00:00:00:03 dev br-test nud stale",
        "neigh add fd42:20::2 lladdr 02:00:00:00:00:02 dev br-test nud reachable",
    ] {
        ns.ip.run(cmd);
    }
    ns.with_kernel(|k, ip| {
        routes_match_ip_json(&k, &ip);
        links_match_ip_json(&k, &ip);
        addrs_match_ip_json(&k, &ip);
        neighbours_match_ip_json(&k, &ip);
    });
}

/// Main-table routes of both families as `ip -j` reads them: kinds, metrics, multipath, and
/// nothing of other tables.
fn routes_match_ip_json(k: &Kernel, ip: &Ip) {
    let routes = k.routes().expect("routes dump");
    assert_eq!(sorted(&routes), sorted(bundle_routes(ip)), "kernel and `ip -j` dumps disagree");

    let bridge = find(&routes, "172.20.0.0/16");
    assert_eq!(bridge.len(), 1);
    assert_eq!(bridge[0].to_string(), "172.20.0.0/16 dev br-test proto kernel metric 0");
    assert!(bridge[0].is_on_link());
    let bridge6 = find(&routes, "fd42:20::/64");
    assert_eq!(bridge6[0].to_string(), "fd42:20::/64 dev br-test proto kernel metric 256");
    assert!(bridge6[0].is_on_link());
    assert_eq!(find(&routes, "10.9.0.0/16")[0].dev, None, "multipath over two devices");
    assert_eq!(find(&routes, "10.10.0.0/16")[0].kind, RouteKind::Reject);
    assert_eq!(find(&routes, "fd99::/64")[0].kind, RouteKind::Reject);
    assert_eq!(find(&routes, "10.8.0.0/16")[0].metric, 50);
    assert!(find(&routes, "192.0.2.0/24").is_empty(), "table 1000 is not the main table");
    assert!(find(&routes, "ff00::/8").is_empty(), "IPv6 table local is not the main table");
    assert!(find(&routes, "fd42:20::1/128").is_empty(), "IPv6 table local is not the main table");

    // A multipath match names no single device; route_get then asks which next hop is taken.
    let got = k.route_get("10.9.1.1".parse().unwrap()).expect("route get multipath");
    assert_eq!((got.dst.to_string().as_str(), got.protocol), ("10.9.0.0/16", 4));
    assert!(matches!(got.dev.as_deref(), Some("br-test" | "tun0")), "{got:?}");
}

/// Links with their kinds (tun, tap, bridge, veth) as `ip -j -d link` reads them.
fn links_match_ip_json(k: &Kernel, ip: &Ip) {
    let links = k.links().expect("links dump");
    let raws: Vec<vpnfix::bundle::RawLink> = serde_json::from_value(ip.json("-d link show")).expect("RawLink");
    assert_eq!(sorted(&links), sorted(raws.iter().map(vpnfix::bundle::link)));
    let by_name = |n: &str| links.iter().find(|l| l.name == n).cloned().expect("link present");
    assert!(by_name("br-test").is_bridge());
    assert_eq!((by_name("tun0").kind.as_deref(), by_name("tun0").tap), (Some("tun"), false));
    assert_eq!((by_name("tap0").kind.as_deref(), by_name("tap0").tap), (Some("tun"), true));
    assert_eq!(by_name("vfk-veth1").kind.as_deref(), Some("veth"));
    assert_eq!(by_name("lo").kind, None);
}

/// Addresses as `ip -j addr` reads them (a peer address's local side, not the peer).
fn addrs_match_ip_json(k: &Kernel, ip: &Ip) {
    let addrs = k.addrs().expect("addrs dump");
    let mut from_ip = Vec::new();
    for dev in ip.json("addr show").as_array().expect("array") {
        for a in dev["addr_info"].as_array().expect("addr_info") {
            from_ip.push(format!("{}/{} dev {}", a["local"].as_str().unwrap(), a["prefixlen"], dev["ifname"]));
        }
    }
    let from_ip = from_ip.iter().map(|s| s.replace('"', ""));
    assert_eq!(sorted(addrs.iter().map(|a| a.to_string())), sorted(from_ip));
    assert!(addrs.iter().any(|a| a.to_string() == "10.0.1.65/32 dev tun0"), "IFA_LOCAL, not the peer");
}

/// Neighbour entries with their states as `ip -j neigh` reads them.
fn neighbours_match_ip_json(k: &Kernel, ip: &Ip) {
    let neigh = k.neighbours().expect("neighbours dump");
    let from_ip = ip.json("neigh show nud all");
    let from_ip = from_ip.as_array().expect("array").iter().map(|n| {
        let state: Vec<&str> = n["state"].as_array().expect("state").iter().filter_map(|s| s.as_str()).collect();
        format!("{} dev {} {}", n["dst"].as_str().unwrap(), n["dev"].as_str().unwrap(), state.join(","))
    });
    assert_eq!(sorted(neigh.iter().map(|n| n.to_string())), sorted(from_ip));
    let state = |a: &str| neigh.iter().find(|n| n.addr.to_string() == a).map(|n| n.state.clone());
    assert_eq!(state("172.20.0.2"), Some(vec!["PERMANENT".to_string()]));
    assert_eq!(state("172.20.0.3"), Some(vec!["STALE".to_string()]));
    assert_eq!(state("fd42:20::2"), Some(vec!["REACHABLE".to_string()]));
}

#[test]
#[ignore = "needs root"]
fn ipv4_adds_exclusively_and_deletes_exactly() {
    let ns = KernelNs::new("ipv4_adds_exclusively_and_deletes_exactly");
    ns.scenario();
    let before = ns.ip.json("route show table main");
    ns.with_kernel(|k, ip| {
        let r = spec("172.20.1.0/24", "tun0", None, PROTO);
        assert_eq!(k.add(&r).expect("add"), Added::Added);
        assert_eq!(k.add(&r).expect("add again"), Added::Unchanged);
        assert_eq!(ip.run("route show 172.20.1.0/24").trim(), "172.20.1.0/24 dev tun0 proto 86 scope link linkdown");

        others_routes_are_never_added_over_or_deleted(&k, &ip);

        let got = k.route_get("172.20.1.5".parse().unwrap()).expect("route get");
        assert_eq!((got.dev.as_deref(), got.protocol, got.table), (Some("tun0"), PROTO, MAIN_TABLE));
        assert_eq!(got.dst.to_string(), "172.20.1.0/24");
        let got = k.route_get("172.20.0.2".parse().unwrap()).expect("route get");
        assert_eq!(
            (got.dev.as_deref(), got.protocol, got.dst.to_string()),
            (Some("br-test"), 2, "172.20.0.0/16".into())
        );

        gateways_are_part_of_a_routes_identity(&k);
        other_tables_do_not_clash_with_main(&k, &ip, &r);

        assert_eq!(k.delete(&r).expect("delete"), Deleted::Deleted);
        assert_eq!(k.delete(&r).expect("delete again"), Deleted::Unchanged);
        let got = k.route_get("172.20.1.5".parse().unwrap()).expect("route get");
        assert_eq!(got.dev.as_deref(), Some("br-test"));
    });
    assert_eq!(ns.ip.json("route show table main"), before, "the main table is back as it was");
}

/// A route of someone else's holds its place: EEXIST names it, and vpnfix never deletes it.
fn others_routes_are_never_added_over_or_deleted(k: &Kernel, ip: &Ip) {
    // Same dst and metric as the bridge's kernel route: EEXIST, and the bridge's route named.
    let over = spec("172.20.0.0/16", "tun0", None, PROTO);
    let e = k.add(&over).expect_err("the bridge's route holds the place");
    let KernelError::Foreign { existing, .. } = &e else { panic!("not Foreign: {e:?}") };
    assert_eq!(existing, "172.20.0.0/16 dev br-test proto kernel metric 0");
    assert_eq!(
        e.to_string(),
        "cannot add 172.20.0.0/16 dev tun0 proto 86: already routed by 172.20.0.0/16 dev br-test proto kernel \
         metric 0; not replaced"
    );

    // Same dst and device but another protocol is someone else's route: never ours, never deleted.
    ip.run("route add 172.20.3.0/24 dev tun0 proto static");
    let theirs = spec("172.20.3.0/24", "tun0", None, PROTO);
    let e = k.add(&theirs).expect_err("a static route holds the place");
    assert!(matches!(&e, KernelError::Foreign { existing, .. } if existing.contains("proto static")), "{e:?}");
    assert_eq!(k.delete(&theirs).expect("delete"), Deleted::Unchanged);
    assert_eq!(k.delete(&spec("172.20.0.0/16", "br-test", None, PROTO)).expect("del"), Deleted::Unchanged);
    assert_eq!(k.delete(&spec("172.20.0.0/16", "br-test", None, 4)).expect("del"), Deleted::Unchanged);
    assert!(ip.run("route show 172.20.3.0/24").contains("proto static"));
    assert!(ip.run("route show 172.20.0.0/16").contains("dev br-test proto kernel"));
    ip.run("route del 172.20.3.0/24 dev tun0 proto static");
}

/// With a gateway (a tap tunnel's routes): the gateway is part of the identity.
fn gateways_are_part_of_a_routes_identity(k: &Kernel) {
    let via = spec("172.20.2.0/24", "tun0", Some("10.0.1.66"), PROTO);
    assert_eq!(k.add(&via).expect("add via"), Added::Added);
    assert_eq!(k.add(&via).expect("add via again"), Added::Unchanged);
    let routes = k.routes().expect("routes");
    assert_eq!(find(&routes, "172.20.2.0/24")[0].to_string(), "172.20.2.0/24 via 10.0.1.66 dev tun0 proto 86 metric 0");
    let e = k.add(&spec("172.20.2.0/24", "tun0", None, PROTO)).expect_err("differs in gateway");
    assert!(matches!(e, KernelError::Foreign { .. }), "{e:?}");
    let wrong_gw = spec("172.20.2.0/24", "tun0", Some("10.0.1.67"), PROTO);
    assert_eq!(k.delete(&wrong_gw).expect("delete"), Deleted::Unchanged);
    assert_eq!(k.delete(&via).expect("delete via"), Deleted::Deleted);
}

/// Another table (> 255 needs RTA_TABLE): no clash with main.
fn other_tables_do_not_clash_with_main(k: &Kernel, ip: &Ip, r: &RouteSpec) {
    let other = RouteSpec { table: 1000, ..r.clone() };
    assert_eq!(k.add(&other).expect("add table 1000"), Added::Added);
    assert!(ip.run("route show table 1000").contains("172.20.1.0/24 dev tun0 proto 86"));
    assert_eq!(k.delete(&other).expect("delete table 1000"), Deleted::Deleted);
}

#[test]
#[ignore = "needs root"]
fn ipv6_adds_exclusively_and_deletes_exactly() {
    let ns = KernelNs::new("ipv6_adds_exclusively_and_deletes_exactly");
    ns.scenario();
    let before = ns.ip.json("-6 route show table main");
    ns.with_kernel(|k, ip| {
        let r = spec("fd42:20::100/120", "tun0", None, PROTO);
        assert_eq!(k.add(&r).expect("add"), Added::Added);
        assert_eq!(k.add(&r).expect("add again"), Added::Unchanged);
        let got = k.route_get("fd42:20::105".parse().unwrap()).expect("route get");
        assert_eq!((got.dev.as_deref(), got.protocol, got.metric), (Some("tun0"), PROTO, 1024));
        let got = k.route_get("fd42:20::5".parse().unwrap()).expect("route get");
        assert_eq!((got.dev.as_deref(), got.protocol, got.metric), (Some("br-test"), 2, 256));

        // IPv6 EEXIST is same dst and metric, whatever the device (fib6_add_rt2node).
        ip.run("-6 route add fd42:20::200/120 dev br-test proto static");
        let e = k.add(&spec("fd42:20::200/120", "tun0", None, PROTO)).expect_err("static route in the way");
        let KernelError::Foreign { existing, .. } = &e else { panic!("not Foreign: {e:?}") };
        assert_eq!(existing, "fd42:20::200/120 dev br-test proto static metric 1024");
        ip.run("-6 route del fd42:20::200/120 dev br-test proto static");

        // The kernel's prefix route has metric 256, ours 1024: no EEXIST, both live, the kernel's
        // wins. Deleting ours leaves the kernel's; a delete that names the bridge with our protocol
        // finds nothing.
        let same_dst = spec("fd42:20::/64", "tun0", None, PROTO);
        assert_eq!(k.add(&same_dst).expect("add"), Added::Added);
        let got = k.route_get("fd42:20::5".parse().unwrap()).expect("route get");
        assert_eq!(got.dev.as_deref(), Some("br-test"));
        assert_eq!(k.delete(&spec("fd42:20::/64", "br-test", None, PROTO)).expect("del"), Deleted::Unchanged);
        assert_eq!(k.delete(&same_dst).expect("delete"), Deleted::Deleted);
        assert!(ip.run("-6 route show fd42:20::/64").contains("dev br-test proto kernel"));

        let via = spec("fd42:20::300/120", "tun0", Some("fd00:8::1"), PROTO);
        assert_eq!(k.add(&via).expect("add via"), Added::Added);
        assert_eq!(k.add(&via).expect("add via again"), Added::Unchanged);
        assert_eq!(k.delete(&via).expect("delete via"), Deleted::Deleted);

        assert_eq!(k.delete(&r).expect("delete"), Deleted::Deleted);
        assert_eq!(k.delete(&r).expect("delete again"), Deleted::Unchanged);
    });
    assert_eq!(ns.ip.json("-6 route show table main"), before, "the main table is back as it was");
}

#[test]
#[ignore = "needs root"]
fn missing_devices_and_unroutable_addresses() {
    let ns = KernelNs::new("missing_devices_and_unroutable_addresses");
    ns.scenario();
    ns.ip.run("tuntap add dev vfk-gone mode tun");
    ns.ip.run("link set vfk-gone up");
    ns.with_kernel(|k, ip| {
        let e = k.add(&spec("172.20.1.0/24", "nope0", None, PROTO)).expect_err("no such device");
        assert!(e.is_no_device() && !e.is_permission(), "{e:?}");
        assert_eq!(e.to_string(), "device nope0 does not exist");
        assert_eq!(k.delete(&spec("172.20.1.0/24", "nope0", None, PROTO)).expect("del"), Deleted::Unchanged);

        // The device goes, and the kernel drops its routes with it: deleting later is no error.
        let r = spec("172.20.7.0/24", "vfk-gone", None, PROTO);
        assert_eq!(k.add(&r).expect("add"), Added::Added);
        ip.run("link del vfk-gone");
        assert_eq!(k.delete(&r).expect("delete after the device went"), Deleted::Unchanged);

        let e = k.delete(&spec("172.20.1.0/24", "tun0", None, 0)).expect_err("protocol 0");
        assert!(matches!(e, KernelError::Invalid { .. }), "{e:?}");
        let e = k.route_get("203.0.113.1".parse().unwrap()).expect_err("no default route here");
        assert_eq!(e.errno(), Some(nix::errno::Errno::ENETUNREACH as i32), "{e:?}");
    });
}

/// Drops root in a child process (uid 65534 has no CAP_NET_ADMIN) and checks that the refusal is
/// recognisable: the child is this test binary, run by `ip netns exec` with `eperm_child` selected.
#[test]
#[ignore = "needs root"]
fn unprivileged_changes_are_permission_errors() {
    let ns = KernelNs::new("unprivileged_changes_are_permission_errors");
    ns.scenario();
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.ip.0])
        .arg(exe)
        .args(["--exact", "eperm_child", "--nocapture", "--test-threads=1"])
        .env("VFK_EPERM_CHILD", "1")
        .output()
        .expect("child runs");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && log.contains("1 passed"), "child failed:\n{log}");
    assert!(!ns.ip.run("route show").contains("172.20.1.0/24"));
}

/// The child half of the test above; does nothing unless that test started it.
#[test]
fn eperm_child() {
    if std::env::var_os("VFK_EPERM_CHILD").is_none() {
        return;
    }
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::setresuid(nobody, nobody, nobody).expect("drop root");
    let k = Kernel::connect().expect("netlink connects without privileges");
    let routes = k.routes().expect("dumps need no privileges");
    assert!(!find(&routes, "172.20.0.0/16").is_empty(), "not in the test namespace");
    let r = spec("172.20.1.0/24", "tun0", None, PROTO);
    let e = k.add(&r).expect_err("add needs CAP_NET_ADMIN");
    assert!(e.is_permission(), "{e:?}");
    assert_eq!(e.to_string(), "cannot add 172.20.1.0/24 dev tun0 proto 86");
    let e = k.delete(&r).expect_err("delete needs CAP_NET_ADMIN");
    assert!(e.is_permission() && !e.is_no_device(), "{e:?}");
}
