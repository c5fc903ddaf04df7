//! Synthetic host facts at scale, for the planner's benchmark (`benches/plan.rs`) and for the
//! bundle that `vpnfix plan --from` reads in `scripts/bench/run.sh` (`examples/synth_bundle.rs`).
//! Both include this file, so the benchmark and the whole-process measurement plan the same host.
//!
//! The host is a busy laptop or CI runner, made from a fixed seed:
//! - `networks` Docker bridge networks of /16 to /24 (Docker's default pools 172.17–31.0.0/16
//!   and 192.168.0.0/16 in /20s first, then compose-style subnets, mostly /22–/24 and mostly in
//!   10.0.0.0/8), none overlapping another, each with its gateway at .1
//!   and one to six containers; every tenth also has an IPv6 /64; one in twenty is a libvirt-style
//!   bridge Docker does not describe, whose neighbour table tells the addresses in use;
//! - a main table of `routes` routes: the bridges' own, eth0's, tun0's, and a routing daemon's
//!   (proto bgp via eth0) of mixed lengths — mostly /24, some /8–/23 and host routes, one in
//!   ten IPv6 — most in public space, one in fifty in private space where it may meet a bridge
//!   or a push;
//! - `pushes` pushed routes of mixed lengths (/8–/28, mostly /16–/24, one in twenty IPv6), most
//!   in 10.0.0.0/8, some in 172.16.0.0/12 and 192.168.0.0/16, a quarter public; one in
//!   twenty-five aimed at a bridge: its own prefix, one inside it, or one containing it.

#![allow(dead_code)] // each includer uses part of it

use bollard::models::{EndpointResource, Ipam, IpamConfig, NetworkInspect};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vpnfix::config::Config;
use vpnfix::net::{Addr, Facts, Link, Neighbour, Proto, Route, RouteKind};

/// How big a host to make.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Bridge networks.
    pub networks: usize,
    /// Pushed routes.
    pub pushes: usize,
    /// Routes in the main table.
    pub routes: usize,
}

/// The case: 200 networks, 10,000 pushes, a 100,000-route table.
pub const FULL: Scale = Scale { networks: 200, pushes: 10_000, routes: 100_000 };

/// A small host of the same shape, for quick runs.
pub const SMALL: Scale = Scale { networks: 20, pushes: 1_000, routes: 10_000 };

/// A made-up host: its facts as the planner gets them, Docker's descriptions and the hook's
/// environment as a bundle holds them, and the configuration that environment gives.
pub struct Synth {
    /// The facts, with pushes and Docker networks read exactly as `plan --from` reads them.
    pub facts: Facts,
    /// `docker network inspect` of every network.
    pub inspects: Vec<vpnfix::docker::EngineNetwork>,
    /// The route-up environment (`route_network_N` …, `VPNFIX_MAX_ROUTES`).
    pub env: Vec<(String, String)>,
    /// The configuration the environment gives.
    pub config: Config,
}

/// splitmix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn hex(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from_digit(self.below(16) as u32, 16).expect("a hex digit")).collect()
    }
    /// A prefix length from weighted buckets `(weight, lo, hi)`.
    fn len(&mut self, buckets: &[(u64, u8, u8)]) -> u8 {
        let mut pick = self.below(buckets.iter().map(|b| b.0).sum());
        for &(w, lo, hi) in buckets {
            if pick < w {
                return lo + self.below(u64::from(hi - lo) + 1) as u8;
            }
            pick -= w;
        }
        unreachable!("the pick is below the total weight")
    }
    /// A random block of length `len` inside `within`.
    fn v4_in(&mut self, within: Ipv4Net, len: u8) -> Ipv4Net {
        let host_bits = 32 - u32::from(within.prefix_len());
        let offset = if host_bits == 0 { 0 } else { (self.next() as u32) & (u32::MAX >> (32 - host_bits)) };
        let addr = u32::from(within.network()) | offset;
        Ipv4Net::new(Ipv4Addr::from(addr), len).expect("len <= 32").trunc()
    }
}

const PRIVATE: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
const TUN_LOCAL: &str = "100.96.0.2";
const TUN_PEER: &str = "100.96.0.1";
const ETH_NET: &str = "192.0.2.0/24";

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a literal prefix")
}

/// Makes the host for `scale` from `seed`.
pub fn synth(scale: Scale, seed: u64) -> Synth {
    let mut rng = Rng(seed);
    let subnets = bridge_subnets(&mut rng, scale.networks);
    let mut links = vec![link(1, "lo", None), link(2, "eth0", None), link(3, "tun0", Some("tun"))];
    let mut addrs = vec![addr("eth0", "192.0.2.10", 24), addr("tun0", TUN_LOCAL, 32)];
    let mut routes = base_routes();
    let (mut inspects, mut neighbours) = (Vec::new(), Vec::new());
    for (i, subnet) in subnets.iter().enumerate() {
        let v6 = (i % 10 == 0).then(|| Ipv6Net::new(Ipv6Addr::new(0xfd00, i as u16, 0, 0, 0, 0, 0, 0), 64).unwrap());
        let libvirt = i % 20 == 19;
        let id = rng.hex(64);
        let bridge = if libvirt { format!("virbr{i}") } else { format!("br-{}", &id[..12]) };
        links.push(link(10 + i as u32, &bridge, Some("bridge")));
        let gw = nth(*subnet, 1);
        addrs.push(addr(&bridge, &gw.to_string(), subnet.prefix_len()));
        routes.push(on_link(IpNet::V4(*subnet), &bridge));
        if let Some(v6) = v6 {
            routes.push(on_link(IpNet::V6(v6), &bridge));
        }
        let used = used_addresses(&mut rng, *subnet);
        if libvirt {
            neighbours.extend(used.iter().map(|a| Neighbour {
                dev: bridge.clone(),
                addr: IpAddr::V4(*a),
                state: vec!["REACHABLE".into()],
            }));
        } else {
            inspects.push(inspect(i, &id, *subnet, v6, &used));
        }
    }
    routes.extend(daemon_routes(&mut rng, scale.routes.saturating_sub(routes.len())));
    let env = hook_env(&pushes(&mut rng, scale.pushes, &subnets));
    let input = vpnfix::hook::openvpn::parse(env.clone(), &[], None).expect("the synthetic environment parses");
    let (config, skipped) = Config::from_layers([env.as_slice()]);
    assert!(skipped.is_empty() && input.skipped.is_empty(), "{skipped:?} {:?}", input.skipped);
    let mut dropped = Vec::new();
    let inspects: Vec<vpnfix::docker::EngineNetwork> = inspects
        .into_iter()
        .map(|inspect| vpnfix::docker::EngineNetwork { engine: vpnfix::net::Engine::Docker, inspect, host: None })
        .collect();
    let docker = inspects.iter().filter_map(|n| vpnfix::docker::from_inspect(n, &mut dropped)).collect();
    assert!(dropped.is_empty(), "{dropped:?}");
    let facts = Facts {
        tunnel: input.tunnel,
        pushes: input.pushes,
        routes,
        links,
        addrs,
        neighbours,
        docker: Some(docker),
        engines: vec![vpnfix::net::Engine::Docker],
        skipped: Vec::new(),
    };
    Synth { facts, inspects, env, config }
}

/// Docker's default pools first, then compose-style subnets, none overlapping.
fn bridge_subnets(rng: &mut Rng, n: usize) -> Vec<Ipv4Net> {
    let mut taken: Vec<Ipv4Net> = vec![net(ETH_NET), net("100.96.0.0/16")];
    let defaults = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let second = (0..16).map(|k| Ipv4Net::new(Ipv4Addr::new(192, 168, k * 16, 0), 20).unwrap());
    let mut out: Vec<Ipv4Net> = defaults.chain(second).take(n).collect();
    taken.extend(&out);
    while out.len() < n {
        // Compose subnets: 10.0.0.0/8 mostly, /16 sometimes, /20–/24 usually.
        let pool = net(if rng.chance(5) { PRIVATE[1 + rng.below(2) as usize] } else { PRIVATE[0] });
        let len = rng.len(&[(1, 16, 16), (3, 17, 21), (6, 22, 24)]).max(pool.prefix_len());
        let cand = rng.v4_in(pool, len);
        if !taken.iter().any(|t| t.contains(&cand) || cand.contains(t)) {
            taken.push(cand);
            out.push(cand);
        }
    }
    out
}

/// The gateway's neighbours: .2 up to .7, and now and then one further in.
fn used_addresses(rng: &mut Rng, subnet: Ipv4Net) -> Vec<Ipv4Addr> {
    let mut used: Vec<Ipv4Addr> = (0..1 + rng.below(6)).map(|k| nth_v4(subnet, 2 + k as u32)).collect();
    if rng.chance(3) {
        let size = 1u32 << (32 - subnet.prefix_len());
        used.push(nth_v4(subnet, 2 + (rng.next() as u32) % (size - 3)));
    }
    used.sort();
    used.dedup();
    used
}

fn inspect(i: usize, id: &str, subnet: Ipv4Net, v6: Option<Ipv6Net>, used: &[Ipv4Addr]) -> NetworkInspect {
    let mut config = vec![IpamConfig {
        subnet: Some(subnet.to_string()),
        gateway: Some(nth(subnet, 1).to_string()),
        ..Default::default()
    }];
    if let Some(v6) = v6 {
        config.push(IpamConfig {
            subnet: Some(v6.to_string()),
            gateway: Some(nth6(v6, 1).to_string()),
            ..Default::default()
        });
    }
    let containers = used
        .iter()
        .enumerate()
        .map(|(k, a)| {
            let ep = EndpointResource {
                name: Some(format!("proj{i}-svc{k}-1")),
                ipv4_address: Some(format!("{a}/{}", subnet.prefix_len())),
                ipv6_address: v6.map(|n| format!("{}/64", nth6(n, 2 + k as u128))),
                ..Default::default()
            };
            (format!("{id}{k:02}"), ep)
        })
        .collect();
    NetworkInspect {
        name: Some(format!("proj{i}_default")),
        id: Some(id.to_string()),
        driver: Some("bridge".into()),
        scope: Some("local".into()),
        ipam: Some(Ipam { driver: Some("default".into()), config: Some(config), ..Default::default() }),
        labels: Some(HashMap::from([("com.docker.compose.project".to_string(), format!("proj{i}"))])),
        options: Some(HashMap::new()),
        containers: Some(containers),
        ..Default::default()
    }
}

fn base_routes() -> Vec<Route> {
    let route = |dst: &str, dev: &str, gw: Option<&str>, metric, protocol, scope| Route {
        dst: dst.parse().unwrap(),
        dev: Some(dev.into()),
        gateway: gw.map(|g| g.parse().unwrap()),
        metric,
        protocol: Proto(protocol),
        scope,
        kind: RouteKind::Unicast,
    };
    vec![
        route("0.0.0.0/0", "eth0", Some("192.0.2.1"), 100, 16, 0),
        route(ETH_NET, "eth0", None, 100, 2, 253),
        route(&format!("{TUN_PEER}/32"), "tun0", None, 0, 2, 253),
        route("::/0", "eth0", Some("fe80::1"), 1024, 9, 0),
        route("fe80::/64", "eth0", None, 256, 2, 0),
    ]
}

fn on_link(dst: IpNet, dev: &str) -> Route {
    let v6 = dst.addr().is_ipv6();
    Route {
        dst,
        dev: Some(dev.into()),
        gateway: None,
        metric: if v6 { 256 } else { 0 },
        protocol: Proto(2),
        scope: if v6 { 0 } else { 253 },
        kind: RouteKind::Unicast,
    }
}

/// A routing daemon's routes: Internet-like lengths, public space mostly.
fn daemon_routes(rng: &mut Rng, n: usize) -> Vec<Route> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (dst, gateway, metric) = if rng.chance(10) {
            let len = rng.len(&[(6, 32, 32), (3, 33, 47), (8, 48, 48), (1, 49, 64)]);
            let addr = (0x2000u128 << 112) | (u128::from(rng.next()) << 64 >> 3);
            let dst = IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc());
            (dst, IpAddr::V6("fe80::1".parse().unwrap()), 1024)
        } else {
            let len = rng.len(&[(3, 8, 15), (20, 16, 21), (20, 22, 23), (55, 24, 24), (2, 25, 32)]);
            let within = if rng.chance(50) { net(PRIVATE[rng.below(3) as usize]) } else { net("0.0.0.0/0") };
            let dst = rng.v4_in(within, len.max(within.prefix_len()));
            let first = dst.network().octets()[0];
            if first == 0 || first == 127 || first >= 224 || first == 100 {
                continue;
            }
            (IpNet::V4(dst), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + rng.below(4) as u8)), 20)
        };
        if seen.insert(dst) {
            let kind = RouteKind::Unicast;
            out.push(Route {
                dst,
                dev: Some("eth0".into()),
                gateway: Some(gateway),
                metric,
                protocol: Proto(186),
                scope: 0,
                kind,
            });
        }
    }
    out
}

/// Pushed routes: private and public space, some aimed at bridges.
fn pushes(rng: &mut Rng, n: usize, bridges: &[Ipv4Net]) -> Vec<IpNet> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = if rng.chance(25) {
            let b = bridges[rng.below(bridges.len() as u64) as usize];
            let len = match rng.below(3) {
                0 => b.prefix_len(),
                1 => (b.prefix_len() + 1 + rng.below(8) as u8).min(30),
                _ => b.prefix_len().saturating_sub(1 + rng.below(6) as u8).max(8),
            };
            IpNet::V4(rng.v4_in(b, len))
        } else if rng.chance(20) {
            let len = rng.len(&[(1, 40, 47), (6, 48, 48), (3, 56, 64)]);
            let addr = (0xfd00u128 << 112) | (u128::from(rng.next() & 0x00ff_ffff_ffff) << 64);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
        } else {
            let len = rng.len(&[(1, 8, 15), (25, 16, 21), (20, 22, 23), (45, 24, 24), (9, 25, 28)]);
            // A company's networks: 10.0.0.0/8 mostly, now and then 172.16.0.0/12 or 192.168.0.0/16
            // (where Docker's default pools are), one in four public.
            let within = match rng.below(20) {
                0..=4 => net("0.0.0.0/0"),
                5 => net(PRIVATE[1]),
                6 => net(PRIVATE[2]),
                _ => net(PRIVATE[0]),
            };
            let dst = rng.v4_in(within, len.max(within.prefix_len()));
            let first = dst.network().octets()[0];
            if first == 0 || first == 127 || first >= 224 || first == 100 {
                continue;
            }
            IpNet::V4(dst)
        };
        if seen.insert(p) {
            out.push(p);
        }
    }
    out
}

/// OpenVPN 2.6's route-up environment for these pushes (net30 tunnel), with the route cap
/// raised so that every contested range is planned in full.
fn hook_env(pushes: &[IpNet]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("script_type", "route-up"),
        ("dev", "tun0"),
        ("dev_type", "tun"),
        ("ifconfig_local", TUN_LOCAL),
        ("ifconfig_remote", TUN_PEER),
        ("route_vpn_gateway", TUN_PEER),
        ("VPNFIX_MAX_ROUTES", "1000000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut n4, mut n6) = (0, 0);
    for p in pushes {
        match p {
            IpNet::V4(p) => {
                n4 += 1;
                env.push((format!("route_network_{n4}"), p.network().to_string()));
                env.push((format!("route_netmask_{n4}"), p.netmask().to_string()));
                env.push((format!("route_gateway_{n4}"), TUN_PEER.to_string()));
            }
            IpNet::V6(p) => {
                n6 += 1;
                env.push((format!("route_ipv6_network_{n6}"), p.to_string()));
                env.push((format!("route_ipv6_gateway_{n6}"), "fd00:8::1".to_string()));
            }
        }
    }
    env
}

fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link { index, name: name.into(), kind: kind.map(str::to_string), tap: false, up: true }
}

fn addr(dev: &str, a: &str, prefix_len: u8) -> Addr {
    Addr { dev: dev.into(), addr: a.parse().unwrap(), prefix_len }
}

fn nth_v4(n: Ipv4Net, k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + k)
}

fn nth(n: Ipv4Net, k: u32) -> IpAddr {
    IpAddr::V4(nth_v4(n, k))
}

fn nth6(n: Ipv6Net, k: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(n.network()) + k)
}
