//! Property test: over random tables, pushes (absent, prepended, metric 50 or 200), local
//! networks, used addresses and settings inside one /24 (or /120), an independent reading of
//! the rule, address by address over all 256 addresses, must give exactly the planner's routes;
//! and longest-prefix match over table ∪ plan must give desired(a) for every contested address
//! and the old answer for every other one.

use super::{ip, link, route};
use crate::config::{Config, Policy};
use crate::net::{Addr, Container, DockerNetwork, Facts, IpamPool, Neighbour, Push, Route, Tunnel};
use crate::plan::plan;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A block inside the universe: first offset (0..256) and length relative to /24 (0..=8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct B {
    start: u32,
    rel: u32,
}

impl B {
    fn new(off: u32, rel: u32) -> B {
        B { start: off & !((1u32 << (8 - rel)) - 1), rel }
    }
    fn has(self, a: u32) -> bool {
        a >> (8 - self.rel) == self.start >> (8 - self.rel)
    }
    fn overlaps(self, o: B) -> bool {
        self.has(o.start) || o.has(self.start)
    }
    fn addrs(self) -> std::ops::Range<u32> {
        self.start..self.start + (1 << (8 - self.rel))
    }
    fn text(self, v6: bool) -> String {
        if v6 {
            format!("fd00::{:x}/{}", self.start, 120 + self.rel)
        } else {
            format!("10.0.0.{}/{}", self.start, 24 + self.rel)
        }
    }
}

fn addr_text(v6: bool, a: u32) -> String {
    if v6 {
        format!("fd00::{a:x}")
    } else {
        format!("10.0.0.{a}")
    }
}

#[derive(Clone, Debug)]
struct TRoute {
    b: B,
    dev: &'static str,
    metric: u32,
    gw: bool,
}

#[derive(Clone, Debug)]
struct World {
    v6: bool,
    table: Vec<TRoute>,
    locals: Vec<(B, &'static str)>,
    pushes: Vec<B>,
    containers: Vec<u32>,
    ip_range: Option<B>,
    neighbours: Vec<(u32, bool)>,
    policy: Policy,
    keep_rel: u32,
    user_keep: Option<B>,
    user_vpn: Option<B>,
}

fn block() -> impl Strategy<Value = B> {
    (0u32..256, 0u32..=8).prop_map(|(o, r)| B::new(o, r))
}

fn world() -> impl Strategy<Value = World> {
    let locals = prop::collection::vec((0u32..256, 0u32..=6, prop::bool::ANY), 1..=3);
    let pushes = prop::collection::vec((block(), 0u8..4), 1..=4);
    let extra = prop::collection::vec((block(), 0usize..4, 0usize..3), 0..=4);
    let used = (
        prop::collection::vec(0u32..256, 0..=4),
        prop::option::of(block()),
        prop::collection::vec((0u32..256, prop::bool::ANY), 0..=3),
    );
    let settings = (prop::bool::ANY, 0u8..6, 0u32..=8, prop::option::of(block()), prop::option::of(block()));
    (locals, pushes, extra, used, settings).prop_map(|(locals, pushes, extra, used, settings)| {
        let (v6, policy, keep_rel, user_keep, user_vpn) = settings;
        let bridge_metric = if v6 { 256 } else { 0 };
        let mut w = World {
            v6,
            table: Vec::new(),
            locals: Vec::new(),
            pushes: Vec::new(),
            containers: used.0,
            ip_range: used.1,
            neighbours: used.2,
            policy: match policy {
                0 => Policy::Vpn,
                1 => Policy::Local,
                _ => Policy::Split,
            },
            keep_rel,
            user_keep,
            user_vpn,
        };
        for (o, r, second) in locals {
            let b = B::new(o, r);
            if w.locals.iter().all(|(l, _)| *l != b) {
                let dev = if second { "br1" } else { "br0" };
                w.locals.push((b, dev));
                w.table.push(TRoute { b, dev, metric: bridge_metric, gw: false });
            }
        }
        for (b, state) in pushes {
            if w.pushes.contains(&b) {
                continue;
            }
            w.pushes.push(b);
            let metric = [None, Some(bridge_metric), Some(50), Some(200)][state as usize];
            if let Some(metric) = metric {
                // OpenVPN 2.6 prepends, so the tunnel's route comes first in the dump.
                w.table.insert(0, TRoute { b, dev: "tun0", metric, gw: true });
            }
        }
        for (b, dev, metric) in extra {
            let dev = ["eth0", "tun1", "tun0", "br0"][dev];
            w.table.push(TRoute { b, dev, metric: [0, 50, 256][metric], gw: true });
        }
        w
    })
}

impl World {
    fn facts(&self) -> Facts {
        let v6 = self.v6;
        let routes: Vec<Route> = self
            .table
            .iter()
            .map(|r| {
                route(&r.b.text(v6), r.dev, r.gw.then_some(if v6 { "fd00::ffff:1" } else { "10.1.0.1" }), r.metric)
            })
            .collect();
        let addrs = self
            .locals
            .iter()
            .map(|(l, dev)| Addr { dev: dev.to_string(), addr: ip(&addr_text(v6, l.start + 1)), prefix_len: 24 })
            .collect();
        let docker_subnet = if v6 { "fd00::/120" } else { "10.0.0.0/24" };
        Facts {
            tunnel: Tunnel { dev: "tun0".into(), ..Tunnel::default() },
            pushes: self
                .pushes
                .iter()
                .map(|b| Push { dst: b.text(v6).parse().unwrap(), gateway: None, metric: None, origin: "p".into() })
                .collect(),
            routes,
            links: vec![
                link(1, "eth0", None),
                link(2, "br0", Some("bridge")),
                link(3, "br1", Some("bridge")),
                link(4, "tun0", Some("tun")),
                link(5, "tun1", Some("tun")),
            ],
            addrs,
            neighbours: self
                .neighbours
                .iter()
                .map(|(a, live)| Neighbour {
                    dev: "br1".into(),
                    addr: ip(&addr_text(v6, *a)),
                    state: vec![if *live { "STALE" } else { "FAILED" }.into()],
                })
                .collect(),
            docker: Some(vec![DockerNetwork {
                engine: crate::net::Engine::Docker,
                egress: crate::net::Egress::Masquerade,
                host: None,
                name: "net0".into(),
                id: "x".into(),
                bridge: "br0".into(),
                compose_project: None,
                compose_network: None,
                ipam: vec![IpamPool {
                    subnet: docker_subnet.parse().unwrap(),
                    gateway: None,
                    ip_range: self.ip_range.map(|b| b.text(v6).parse().unwrap()),
                }],
                containers: self
                    .containers
                    .iter()
                    .map(|a| Container {
                        id: String::new(),
                        name: format!("c{a}"),
                        addrs: vec![ip(&addr_text(v6, *a))],
                    })
                    .collect(),
            }]),
            skipped: vec![],
            engines: Vec::new(),
        }
    }

    fn config(&self) -> Config {
        let base = if self.v6 { 120 } else { 24 };
        let list = |b: Option<B>| b.map(|b| vec![b.text(self.v6).parse().unwrap()]).unwrap_or_default();
        Config {
            policy: self.policy,
            keep_prefix_v4: 24 + self.keep_rel as u8,
            keep_prefix_v6: base + self.keep_rel as u8,
            keep: list(self.user_keep),
            vpn: list(self.user_vpn),
            container_routes_v6: true,
            ..Config::default()
        }
    }
}

/// current(a) over a route list: (relative length, sorted distinct devices) of the winners.
fn current(table: &[TRoute], a: u32) -> Option<(u32, Vec<&'static str>)> {
    let best_len = table.iter().filter(|r| r.b.has(a)).map(|r| r.b.rel).max()?;
    let tied: Vec<&TRoute> = table.iter().filter(|r| r.b.has(a) && r.b.rel == best_len).collect();
    let best_metric = tied.iter().map(|r| r.metric).min()?;
    let devs: BTreeSet<&'static str> = tied.iter().filter(|r| r.metric == best_metric).map(|r| r.dev).collect();
    Some((best_len, devs.into_iter().collect()))
}

/// The rule, read literally for one address: `Some(device)` when `a` is wrong and wants it.
fn wants(w: &World, a: u32) -> Option<&'static str> {
    let (l, ldev) = *w.locals.iter().filter(|(l, _)| l.has(a)).max_by_key(|(l, _)| l.rel)?;
    let p = *w.pushes.iter().filter(|p| p.has(a)).max_by_key(|p| p.rel)?;
    let cur = current(&w.table, a);
    if let Some((len, devs)) = &cur {
        if *len > p.rel && *len > l.rel && devs.iter().all(|d| *d != "tun0" && *d != ldev) {
            return None;
        }
    }
    let keep = match w.policy {
        Policy::Vpn => false,
        Policy::Local => true,
        Policy::Split => kept(w, a, l, ldev, p.rel < w.keep_rel),
    };
    let desired = if keep { ldev } else { "tun0" };
    match cur {
        Some((_, devs)) if devs == [desired] => None,
        _ => Some(desired),
    }
}

fn kept(w: &World, a: u32, l: B, ldev: &str, broad: bool) -> bool {
    // The bridge's own addresses: one at .1 of each of its local networks, where inside l.
    let mut used: Vec<u32> =
        w.locals.iter().filter(|(o, d)| *d == ldev && l.has(o.start + 1)).map(|(o, _)| o.start + 1).collect();
    if ldev == "br0" {
        used.extend(w.containers.iter().filter(|c| l.has(**c)));
    } else {
        used.extend(w.neighbours.iter().filter(|(n, live)| *live && l.has(*n)).map(|(n, _)| *n));
    }
    let in_l = |b: Option<B>| b.is_some_and(|b| b.has(a) && b.overlaps(l));
    if used.contains(&a) || in_l(w.user_keep) {
        return true;
    }
    let widened = used.iter().any(|u| B::new(*u, w.keep_rel.max(l.rel)).has(a));
    let range = ldev == "br0" && in_l(w.ip_range);
    broad && (widened || range) && !in_l(w.user_vpn)
}

/// The minimal construction: the maximal aligned blocks of each device's wrong set, each split
/// until strictly longer than every table route overlapping it. Returns (routes, unresolvable).
fn construction(w: &World) -> (BTreeSet<(B, &'static str)>, BTreeSet<B>) {
    let want: Vec<Option<&'static str>> = (0..256).map(|a| wants(w, a)).collect();
    let mut routes = BTreeSet::new();
    let mut stuck = BTreeSet::new();
    for rel in 0..=8u32 {
        for start in (0..256).step_by(1 << (8 - rel)) {
            let b = B { start, rel };
            let Some(dev) = want[start as usize] else { continue };
            let all = |b: B| b.addrs().all(|a| want[a as usize] == Some(dev));
            if all(b) && (rel == 0 || !all(B::new(start, rel - 1))) {
                split(w, b, dev, &mut routes, &mut stuck);
            }
        }
    }
    (routes, stuck)
}

fn split(w: &World, b: B, dev: &'static str, routes: &mut BTreeSet<(B, &'static str)>, stuck: &mut BTreeSet<B>) {
    if !w.table.iter().any(|r| r.b.overlaps(b) && r.b.rel >= b.rel) {
        routes.insert((b, dev));
    } else if b.rel == 8 {
        stuck.insert(b);
    } else {
        split(w, B::new(b.start, b.rel + 1), dev, routes, stuck);
        split(w, B::new(b.start + (1 << (7 - b.rel)), b.rel + 1), dev, routes, stuck);
    }
}

fn run(w: &World) -> Result<(), TestCaseError> {
    let p = plan(&w.facts(), &w.config());
    let got: BTreeSet<(String, String)> = p.add.iter().map(|r| (r.dst.to_string(), r.dev.clone())).collect();
    let (routes, stuck) = construction(w);
    let want: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(b, d)| (b.text(w.v6).parse::<ipnet::IpNet>().unwrap().to_string(), d.to_string()))
        .collect();
    prop_assert_eq!(&got, &want, "plan differs from the minimal construction");
    let sorted = p.add.windows(2).all(|x| x[0].dst < x[1].dst);
    prop_assert!(sorted, "plan not sorted");
    let stuck_got = p.skipped.iter().filter(|s| s.reason.contains("cannot be out-specified")).count();
    prop_assert_eq!(stuck_got, stuck.len());
    // Longest-prefix match over T ∪ plan.
    let mut after = w.table.clone();
    after.extend(routes.iter().map(|(b, dev)| TRoute { b: *b, dev, metric: 0, gw: false }));
    for a in 0..256 {
        let before = current(&w.table, a);
        let now = current(&after, a);
        match wants(w, a) {
            Some(dev) if !stuck.iter().any(|s| s.has(a)) => {
                prop_assert_eq!(now.map(|c| c.1), Some(vec![dev]), "address {}", a)
            }
            _ => prop_assert_eq!(now, before, "address {} changed but was not wrong", a),
        }
    }
    inside(w, &p)
}

/// Routes inside the containers, read literally per local network l of the Docker network (on
/// br0): via the gateway exactly the addresses of l a push covers that are not kept for l, but
/// the gateway (the bridge's lowest address in l); nothing under `local`.
fn inside(w: &World, p: &crate::plan::Plan) -> Result<(), TestCaseError> {
    for (l, ldev) in w.locals.iter().filter(|(_, d)| *d == "br0") {
        let subnet: ipnet::IpNet = l.text(w.v6).parse().unwrap();
        let got: BTreeSet<u32> = p
            .inside
            .iter()
            .filter(|i| i.subnet == subnet)
            .flat_map(|i| i.routes.iter())
            .flat_map(|r| l.addrs().filter(move |a| r.contains(&ip(&addr_text(w.v6, *a)))))
            .collect();
        let gw = w.locals.iter().filter(|(o, d)| d == ldev && l.has(o.start + 1)).map(|(o, _)| o.start + 1).min();
        let want: BTreeSet<u32> = l
            .addrs()
            .filter(|a| Some(*a) != gw)
            .filter(|a| {
                let Some(push) = w.pushes.iter().filter(|p| p.has(*a)).max_by_key(|p| p.rel) else { return false };
                match w.policy {
                    Policy::Vpn => true,
                    Policy::Local => false,
                    Policy::Split => !kept(w, *a, *l, ldev, push.rel < w.keep_rel),
                }
            })
            .collect();
        prop_assert_eq!(got, want, "inside the containers of {}", subnet);
    }
    Ok(())
}

/// The number of random worlds; `VPNFIX_PROPTEST_CASES` raises it for long runs.
fn cases() -> u32 {
    std::env::var("VPNFIX_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_plan_is_the_minimal_construction_and_makes_every_address_right(w in world()) {
        run(&w)?;
    }
}
