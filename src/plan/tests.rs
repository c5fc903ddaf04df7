//! Planner tests: DESIGN.md's cases with hand-built facts, and a property test that checks the
//! plan against an independent, address-by-address reading of the rule.

use super::*;
use crate::net::{Addr, Container, DockerNetwork, IpamPool, Link, Neighbour, Proto, RouteKind, Tunnel};
use ipnet::IpNet;
use std::net::IpAddr;

mod property;

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A route of the table: `dst dev [via gw] [metric]`, on-link when there is no gateway.
pub(super) fn route(dst: &str, dev: &str, gw: Option<&str>, metric: u32) -> Route {
    let dst = net(dst);
    Route {
        dst,
        dev: Some(dev.into()),
        gateway: gw.map(ip),
        metric,
        protocol: Proto(if gw.is_none() { 2 } else { 3 }),
        scope: if gw.is_none() && dst.addr().is_ipv4() { 253 } else { 0 },
        kind: RouteKind::Unicast,
    }
}

pub(super) fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link { index, name: name.into(), kind: kind.map(str::to_string), tap: false, up: true }
}

pub(super) fn push(dst: &str) -> Push {
    Push { dst: net(dst), gateway: None, metric: None, origin: format!("test {dst}") }
}

/// The seed laptop: milvus 172.20.0.0/16 on br-milvus (bridge .1, containers .2–.4), tun0 up.
fn seed() -> Facts {
    Facts {
        tunnel: Tunnel { dev: "tun0".into(), ..Tunnel::default() },
        pushes: vec![push("172.20.0.0/16")],
        routes: vec![
            route("0.0.0.0/0", "eth0", Some("192.168.1.1"), 100),
            route("192.168.1.0/24", "eth0", None, 100),
            route("10.8.0.0/24", "tun0", None, 0),
            route("172.20.0.0/16", "br-milvus", None, 0),
        ],
        links: vec![link(1, "eth0", None), link(2, "br-milvus", Some("bridge")), link(3, "tun0", Some("tun"))],
        addrs: vec![Addr { dev: "br-milvus".into(), addr: ip("172.20.0.1"), prefix_len: 16 }],
        neighbours: vec![],
        docker: Some(vec![DockerNetwork {
            engine: crate::net::Engine::Docker,
            egress: crate::net::Egress::Masquerade,
            host: None,
            name: "milvus".into(),
            id: "0123456789abcdef".into(),
            bridge: "br-milvus".into(),
            compose_project: Some("milvus".into()),
            compose_network: None,
            ipam: vec![IpamPool { subnet: net("172.20.0.0/16"), gateway: Some(ip("172.20.0.1")), ip_range: None }],
            containers: ["etcd", "minio", "standalone"]
                .iter()
                .zip(2..)
                .map(|(n, i)| Container {
                    id: String::new(),
                    name: format!("milvus-{n}"),
                    addrs: vec![ip(&format!("172.20.0.{i}"))],
                })
                .collect(),
        }]),
        skipped: vec![],
        engines: Vec::new(),
    }
}

fn lines(p: &Plan) -> Vec<String> {
    p.add.iter().map(|r| format!("{} dev {}", r.dst, r.dev)).collect()
}

const SEED_VPN: [&str; 8] = [
    "172.20.1.0/24 dev tun0",
    "172.20.2.0/23 dev tun0",
    "172.20.4.0/22 dev tun0",
    "172.20.8.0/21 dev tun0",
    "172.20.16.0/20 dev tun0",
    "172.20.32.0/19 dev tun0",
    "172.20.64.0/18 dev tun0",
    "172.20.128.0/17 dev tun0",
];

#[test]
fn seed_pushed_route_missing_gives_eight_tunnel_routes() {
    let p = plan(&seed(), &Config::default());
    assert_eq!(lines(&p), SEED_VPN);
    assert_eq!(
        p.add[0].to_string(),
        "172.20.1.0/24 dev tun0: VPN side of 172.20.0.0/16, shared with docker network milvus"
    );
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(p.conflicts[0].kept, vec![net("172.20.0.0/24")]);
    assert_eq!(p.conflicts[0].local.containers.len(), 3);
    assert!(p.skipped.is_empty());
}

#[test]
fn openvpn26_prepended_route_adds_the_bridge_block_too() {
    let mut f = seed();
    f.routes.insert(0, route("172.20.0.0/16", "tun0", Some("10.8.0.1"), 0));
    let p = plan(&f, &Config::default());
    let mut want = vec!["172.20.0.0/24 dev br-milvus".to_string()];
    want.extend(SEED_VPN.iter().map(|s| s.to_string()));
    assert_eq!(lines(&p), want);
    assert_eq!(p.add[0].side, Side::Local);
}

#[test]
fn network_manager_and_dco_metrics_lose_to_docker_so_the_plan_is_the_seed_plan() {
    for metric in [50, 200] {
        let mut f = seed();
        f.routes.push(route("172.20.0.0/16", "tun0", Some("10.8.0.1"), metric));
        assert_eq!(lines(&plan(&f, &Config::default())), SEED_VPN, "metric {metric}");
    }
}

#[test]
fn a_longer_push_over_a_new_container_keeps_exactly_that_container() {
    let mut f = seed();
    f.pushes = vec![push("172.20.2.0/24")];
    f.routes.push(route("172.20.2.0/24", "tun0", Some("10.8.0.1"), 0));
    let docker = f.docker.as_mut().unwrap();
    docker[0].containers.push(Container { id: String::new(), name: "late".into(), addrs: vec![ip("172.20.2.10")] });
    let p = plan(&f, &Config::default());
    assert_eq!(lines(&p), ["172.20.2.10/32 dev br-milvus"]);
}

#[test]
fn an_aggregate_push_over_two_compose_networks() {
    let mut f = seed();
    f.pushes = vec![push("172.16.0.0/12")];
    f.routes.push(route("172.16.0.0/12", "tun0", Some("10.8.0.1"), 0));
    f.routes.push(route("172.18.0.0/16", "br-shop", None, 0));
    f.links.push(link(4, "br-shop", Some("bridge")));
    f.addrs.push(Addr { dev: "br-shop".into(), addr: ip("172.18.0.1"), prefix_len: 16 });
    f.docker.as_mut().unwrap().push(DockerNetwork {
        engine: crate::net::Engine::Docker,
        egress: crate::net::Egress::Masquerade,
        host: None,
        name: "shop_default".into(),
        id: "fedcba9876543210".into(),
        bridge: "br-shop".into(),
        compose_project: Some("shop".into()),
        compose_network: None,
        ipam: vec![IpamPool { subnet: net("172.18.0.0/16"), gateway: None, ip_range: Some(net("172.18.64.0/20")) }],
        containers: vec![Container { id: String::new(), name: "shop-api-1".into(), addrs: vec![ip("172.18.200.7")] }],
    });
    let p = plan(&f, &Config::default());
    let shop: Vec<String> = lines(&p).into_iter().filter(|l| l.starts_with("172.18.")).collect();
    // Kept: 172.18.0.0/24 (bridge), 172.18.64.0/20 (IPAM range), 172.18.200.0/24 (container).
    assert_eq!(
        shop,
        [
            "172.18.1.0/24 dev tun0",
            "172.18.2.0/23 dev tun0",
            "172.18.4.0/22 dev tun0",
            "172.18.8.0/21 dev tun0",
            "172.18.16.0/20 dev tun0",
            "172.18.32.0/19 dev tun0",
            "172.18.80.0/20 dev tun0",
            "172.18.96.0/19 dev tun0",
            "172.18.128.0/18 dev tun0",
            "172.18.192.0/21 dev tun0",
            "172.18.201.0/24 dev tun0",
            "172.18.202.0/23 dev tun0",
            "172.18.204.0/22 dev tun0",
            "172.18.208.0/20 dev tun0",
            "172.18.224.0/19 dev tun0",
        ]
    );
    assert_eq!(lines(&p).len(), 23, "and the seed's 8 for milvus");
    assert_eq!(p.conflicts.len(), 2);
}

#[test]
fn ipv6_keeps_a_120_around_used_addresses() {
    let mut f = seed();
    f.pushes = vec![push("fd42:20::/48")];
    f.routes.push(route("fd42:20::/64", "br-milvus", None, 256));
    f.routes.push(route("fd42:20::/48", "tun0", None, 1024));
    f.addrs.push(Addr { dev: "br-milvus".into(), addr: ip("fd42:20::1"), prefix_len: 64 });
    let p = plan(&f, &Config::default());
    assert_eq!(p.add.len(), 56, "/120 siblings up to the /65");
    assert_eq!(lines(&p).first().unwrap(), "fd42:20::100/120 dev tun0");
    assert_eq!(lines(&p).last().unwrap(), "fd42:20:0:0:8000::/65 dev tun0");
    assert!(p.add.iter().all(|r| r.dev == "tun0"));
}

#[test]
fn policies_vpn_and_local() {
    let mut f = seed();
    f.routes.insert(0, route("172.20.0.0/16", "tun0", Some("10.8.0.1"), 0));
    let vpn = Config { policy: Policy::Vpn, ..Config::default() };
    assert_eq!(lines(&plan(&f, &vpn)), ["172.20.0.0/17 dev tun0", "172.20.128.0/17 dev tun0"]);
    let local = Config { policy: Policy::Local, ..Config::default() };
    let p = plan(&f, &local);
    assert_eq!(lines(&p), ["172.20.0.0/17 dev br-milvus", "172.20.128.0/17 dev br-milvus"]);
    assert!(p.notes.iter().any(|n| n.starts_with("policy local: the VPN cannot reach 172.20.0.0/16")));
}

#[test]
fn user_keep_and_vpn_lists() {
    let cfg = Config { keep: vec![net("172.20.9.0/24")], vpn: vec![net("172.20.0.0/24")], ..Config::default() };
    let p = plan(&seed(), &cfg);
    let l = lines(&p);
    // .1–.4 stay (used addresses always do), the rest of .0/24 goes to the VPN, .9/24 stays.
    assert!(l.contains(&"172.20.0.0/32 dev tun0".to_string()), "{l:#?}");
    assert!(l.contains(&"172.20.0.5/32 dev tun0".to_string()));
    assert!(l.contains(&"172.20.8.0/24 dev tun0".to_string()));
    assert!(!l.iter().any(|r| r.starts_with("172.20.9.")));
}

#[test]
fn short_pushes_default_halves_and_physical_overlaps_are_reported_not_used() {
    let mut f = seed();
    f.pushes = vec![push("0.0.0.0/1"), push("128.0.0.0/1"), push("172.0.0.0/6"), push("192.168.1.0/24")];
    let p = plan(&f, &Config::default());
    assert!(p.add.is_empty());
    let why: Vec<String> = p.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(why.len(), 4, "{why:#?}");
    assert!(why[0].ends_with("a default route (or half of one) never contests a local network"));
    assert!(why[2].contains("shorter than /8 (VPNFIX_MIN_PREFIX_V4)"));
    assert!(why[3].contains("overlaps 192.168.1.0/24 on eth0, which is not a bridge"));
}

#[test]
fn the_cap_drops_a_whole_range_and_says_why() {
    let cfg = Config { max_routes: 7, ..Config::default() };
    let p = plan(&seed(), &cfg);
    assert!(p.add.is_empty());
    assert_eq!(p.skipped[0].to_string(), "172.20.0.0/16: needs 8 routes, more than the 7 left of the cap of 7 (VPNFIX_MAX_ROUTES); none added for this range");
}

#[test]
fn without_docker_the_neighbour_table_names_used_addresses() {
    let mut f = seed();
    f.docker = None;
    f.neighbours = vec![
        Neighbour { dev: "br-milvus".into(), addr: ip("172.20.7.9"), state: vec!["STALE".into()] },
        Neighbour { dev: "br-milvus".into(), addr: ip("172.20.8.9"), state: vec!["FAILED".into()] },
    ];
    let p = plan(&f, &Config::default());
    assert_eq!(p.conflicts[0].kept, vec![net("172.20.0.0/24"), net("172.20.7.0/24")]);
    assert!(p.notes[0].starts_with("Docker's networks are unknown"));
}

#[test]
fn a_longer_route_through_a_third_device_is_left_alone_and_own_routes_are_ignored() {
    let mut f = seed();
    f.routes.push(route("172.20.77.0/24", "eth0", Some("192.168.1.9"), 0));
    let mut own = route("172.20.1.0/24", "tun0", None, 0);
    own.protocol = Proto(crate::net::DEFAULT_PROTO);
    f.routes.push(own);
    let l = lines(&plan(&f, &Config::default()));
    assert!(l.contains(&"172.20.1.0/24 dev tun0".to_string()), "own routes are swept before planning");
    assert!(l.contains(&"172.20.76.0/24 dev tun0".to_string()));
    assert!(l.contains(&"172.20.78.0/23 dev tun0".to_string()));
    assert!(!l.iter().any(|r| r.starts_with("172.20.77.")), "{l:#?}");
}

#[test]
fn a_hostile_host_route_on_a_container_cannot_be_outdone_and_is_reported() {
    let mut f = seed();
    f.pushes = vec![push("172.20.0.2/32")];
    f.routes.push(route("172.20.0.2/32", "tun0", Some("10.8.0.1"), 0));
    let p = plan(&f, &Config::default());
    assert!(p.add.is_empty());
    assert!(p.skipped[0].to_string().starts_with("172.20.0.2/32: a route of the same length is already in the table"));
}

#[test]
fn tap_tunnels_route_through_the_vpn_gateway() {
    let mut f = seed();
    f.tunnel.kind = crate::net::TunnelKind::Tap;
    f.tunnel.gateway_v4 = Some("10.8.0.1".parse().unwrap());
    let p = plan(&f, &Config::default());
    assert!(p.add.iter().all(|r| r.gateway == Some(ip("10.8.0.1"))));
}

#[test]
fn a_hundred_thousand_hostile_pushes_are_capped_and_never_take_a_used_address() {
    let mut f = seed();
    // Every other address of two /16s: none merges with its neighbour, so each is one route.
    f.routes.push(route("172.21.0.0/16", "br-milvus", None, 0));
    f.pushes = (0..100_000u32)
        .map(|i| push(&format!("172.{}.{}.{}/32", 20 + i / 32768, i / 128 % 256, i % 128 * 2)))
        .chain(["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "172.20.0.0/16"].map(push))
        .collect();
    let p = plan(&f, &Config::default());
    assert!(p.add.len() <= 1024, "the cap holds: {}", p.add.len());
    assert!(p.skipped.iter().any(|s| s.reason.contains("VPNFIX_MAX_ROUTES")), "and says so");
    for used in ["172.20.0.1", "172.20.0.2", "172.20.0.3", "172.20.0.4"] {
        let a = ip(used);
        assert!(!p.add.iter().any(|r| r.dst.contains(&a) && r.dev == "tun0"), "{used} never routed into the tunnel");
    }
}

/// The contested ranges and roots, against the plain reading: every (push, local network) pair
/// that intersects, and a table route kept exactly when it overlaps some contested range. Both
/// families in one world, two networks on one prefix, pushes containing networks and inside them.
#[test]
fn contest_pairs_every_overlap_and_keeps_exactly_the_overlapping_routes() {
    let nets = ["172.20.0.0/16", "172.20.0.0/16", "10.1.2.0/24", "10.9.0.0/16", "fd42:20::/64", "192.168.5.0/24"];
    let pushes: Vec<Push> =
        ["172.20.2.0/24", "10.0.0.0/8", "10.9.128.0/17", "fd42::/16", "172.21.0.0/16", "0.0.0.0/1", "fd42:20::/80"]
            .into_iter()
            .map(push)
            .collect();
    let pushes: Vec<&Push> = pushes.iter().collect();
    let mut locals = LpmTable::default();
    for (i, n) in nets.iter().enumerate() {
        locals.insert(Prefix::from(net(n)), i);
    }
    let contest = Contest::new(&pushes, &locals);
    let mut plain = Vec::new();
    for (pi, p) in pushes.iter().enumerate() {
        for (li, l) in nets.iter().enumerate() {
            if let Some(c) = Prefix::from(p.dst).intersect(Prefix::from(net(l))) {
                plain.push((c, pi, li));
            }
        }
    }
    plain.sort();
    assert_eq!(contest.ranges, plain);
    assert!(contest.ranges.len() >= 9, "the world has overlaps of every kind: {:?}", contest.ranges);
    for r in ["172.0.0.0/8", "172.20.2.128/25", "172.20.3.0/24", "172.21.0.0/16", "10.1.0.0/16", "10.1.2.7/32"]
        .into_iter()
        .chain(["10.9.0.0/17", "10.9.200.0/24", "0.0.0.0/0", "fd42:20::/48", "fd42:20::5/128", "fd42:21::/64"])
        .chain(["fd42:20:0:0:1::/80", "192.168.5.0/24", "::/0", "11.0.0.0/8"])
    {
        let p = Prefix::from(net(r));
        let plain = contest.ranges.iter().any(|(c, _, _)| c.overlaps(p));
        assert_eq!(contest.overlaps(p), plain, "{r}");
    }
}

// ------------------------------------------------------------- routes inside containers ----

fn inside_lines(p: &Plan) -> Vec<String> {
    p.inside.iter().flat_map(|i| i.routes.iter().map(move |r| format!("{r} via {}", i.gateway))).collect()
}

fn skipped_lines(p: &Plan) -> Vec<String> {
    p.skipped.iter().map(ToString::to_string).collect()
}

#[test]
fn containers_get_the_vpn_side_via_their_gateway() {
    let p = plan(&seed(), &Config::default());
    let want: Vec<String> = SEED_VPN.iter().map(|s| s.replace(" dev tun0", " via 172.20.0.1")).collect();
    assert_eq!(inside_lines(&p), want);
    let i = &p.inside[0];
    assert_eq!((i.network.as_str(), i.subnet, i.bridge.as_str()), ("milvus", net("172.20.0.0/16"), "br-milvus"));
    assert_eq!(i.containers.len(), 3);
    // They reach the VPN now: no note says they cannot.
    assert!(p.notes.iter().all(|n| !n.contains("still cannot reach")), "{:?}", p.notes);
    assert!(p.skipped.is_empty());
}

#[test]
fn a_push_the_host_already_routes_still_goes_inside_the_containers() {
    // OpenVPN's /24 wins on the host by length: the host needs nothing, the containers do.
    let mut f = seed();
    f.pushes = vec![push("172.20.2.0/24")];
    f.routes.push(route("172.20.2.0/24", "tun0", Some("10.8.0.1"), 0));
    let p = plan(&f, &Config::default());
    assert!(p.add.is_empty());
    assert_eq!(inside_lines(&p), ["172.20.2.0/24 via 172.20.0.1"]);
}

#[test]
fn under_vpn_the_containers_lose_what_the_host_loses_but_the_gateway() {
    let config = Config { policy: Policy::Vpn, ..Config::default() };
    let p = plan(&seed(), &config);
    let blocks = &p.inside[0].routes;
    let gw = ip("172.20.0.1");
    assert!(blocks.iter().all(|b| !b.contains(&gw) && b.prefix_len() > 16), "{blocks:?}");
    for a in ["172.20.0.0", "172.20.0.2", "172.20.0.3", "172.20.200.1", "172.20.255.255"] {
        assert!(blocks.iter().any(|b| b.contains(&ip(a))), "{a} is not routed via the gateway");
    }
    assert_eq!(blocks.len(), 16, "the /16 but one address: one block per bit");
}

#[test]
fn under_local_or_when_turned_off_nothing_goes_inside() {
    for config in
        [Config { policy: Policy::Local, ..Config::default() }, Config { container_routes: false, ..Config::default() }]
    {
        let p = plan(&seed(), &config);
        assert!(p.inside.is_empty(), "{config:?}");
        assert!(p.skipped.is_empty());
    }
}

#[test]
fn internal_and_unmasqueraded_networks_are_skipped_with_one_line() {
    for (egress, why) in [
        (crate::net::Egress::Internal, "the network is internal"),
        (crate::net::Egress::NoMasquerade, "the network does not masquerade"),
    ] {
        let mut f = seed();
        f.docker.as_mut().unwrap()[0].egress = egress;
        let p = plan(&f, &Config::default());
        assert!(p.inside.is_empty());
        let said = skipped_lines(&p);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("containers of docker network milvus (172.20.0.0/16): "), "{}", said[0]);
        assert!(said[0].contains(why), "{}", said[0]);
        // The host's plan does not change.
        assert_eq!(lines(&p), SEED_VPN);
    }
}

#[test]
fn ipv6_goes_inside_only_where_the_user_says_the_engine_nats_it() {
    let mut f = seed();
    f.pushes.push(push("fd00:ac14::/64"));
    f.routes.push(route("fd00:ac14::/64", "br-milvus", None, 256));
    f.addrs.push(Addr { dev: "br-milvus".into(), addr: ip("fd00:ac14::1"), prefix_len: 64 });
    let p = plan(&f, &Config::default());
    assert_eq!(p.inside.len(), 1, "IPv4 only");
    let lines = skipped_lines(&p);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("containers of docker network milvus (fd00:ac14::/64): IPv6: Docker does not say"));
    let p = plan(&f, &Config { container_routes_v6: true, ..Config::default() });
    assert_eq!(p.inside.len(), 2);
    let v6 = &p.inside[1];
    assert_eq!(v6.gateway, ip("fd00:ac14::1"));
    assert!(v6.routes.iter().all(|b| b.prefix_len() > 64 && !b.contains(&ip("fd00:ac14::1"))));
}

#[test]
fn a_bridge_no_engine_describes_gets_no_routes_inside() {
    let mut f = seed();
    f.docker = None;
    let p = plan(&f, &Config::default());
    assert!(p.inside.is_empty());
    assert!(skipped_lines(&p).iter().any(|l| l.contains("no container engine describes")), "{:?}", p.skipped);
}

#[test]
fn blocks_are_split_past_the_containers_own_routes() {
    let blocks = [net("172.20.2.0/23"), net("172.20.4.0/22")];
    // The container's own /16 and default are shorter: nothing to split.
    let (out, lost) = out_specify(&blocks, &[net("172.20.0.0/16"), net("0.0.0.0/0")]);
    assert_eq!((out, lost), (blocks.to_vec(), vec![]));
    // A route of its own at 172.20.2.0/24 and one of the same length as a block.
    let (out, lost) = out_specify(&blocks, &[net("172.20.2.0/24"), net("172.20.4.0/22")]);
    assert_eq!(
        out,
        ["172.20.2.0/25", "172.20.2.128/25", "172.20.3.0/24", "172.20.4.0/23", "172.20.6.0/23"].map(net).to_vec()
    );
    assert!(lost.is_empty());
    let (out, lost) = out_specify(&[net("10.0.0.1/32")], &[net("10.0.0.1/32")]);
    assert_eq!((out, lost), (vec![], vec![net("10.0.0.1/32")]));
}

#[test]
fn a_tunnel_that_routes_no_push_gets_every_push_but_where_the_rule_decides() {
    // wg-quick with Table = off: nothing of AllowedIPs is in the table.
    let mut f = seed();
    f.tunnel.unrouted = true;
    f.pushes = vec![push("172.20.0.0/16"), push("10.1.0.0/16"), push("172.16.0.0/12"), push("172.20.9.0/24")];
    let p = plan(&f, &Config::default());
    let pushed: Vec<String> =
        p.add.iter().filter(|r| r.side == Side::Pushed).map(|r| format!("{} dev {}", r.dst, r.dev)).collect();
    // Not 172.20.0.0/16 (the bridge's own prefix) nor 172.20.9.0/24 (inside it): the search's
    // blocks give the VPN its side there.
    assert_eq!(pushed, ["10.1.0.0/16 dev tun0", "172.16.0.0/12 dev tun0"]);
    let vpn: Vec<String> =
        p.add.iter().filter(|r| r.side == Side::Vpn).map(|r| format!("{} dev {}", r.dst, r.dev)).collect();
    assert_eq!(vpn, SEED_VPN);
    assert_eq!(
        p.add.iter().find(|r| r.side == Side::Pushed).unwrap().to_string(),
        "10.1.0.0/16 dev tun0: pushed, routed by vpnfix (tun0 routes no push itself)"
    );
    // A client that routes its pushes gets none of them from vpnfix.
    f.tunnel.unrouted = false;
    assert!(plan(&f, &Config::default()).add.iter().all(|r| r.side != Side::Pushed));
}
