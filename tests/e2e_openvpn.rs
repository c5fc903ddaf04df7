//! End to end, nothing faked: a real OpenVPN 2.6 server and client and a real Docker engine,
//! each in network namespaces made here, with vpnfix as the client's route-up, route-pre-down
//! and down script exactly as openvpn/vpnfix.conf ships it. Every scenario first connects
//! WITHOUT vpnfix and asserts the failure users see (so the test can tell), then WITH vpnfix and
//! asserts with real pings and `ip route get` that each office host answers over the tunnel and
//! each container from its bridge, and that once the VPN is gone the laptop's main table (IPv4
//! and IPv6, `ip -j route`) is exactly what it was before connect.
//!
//! Lines starting `OBSERVED` (run with `--nocapture`) record what each failure looked like.

mod common;

use common::ovpn::{own_routes, Openvpn, SiteSpec, World};
use common::{env, root_or_skip, stderr, SEED_VPN, WITH_9_VPN};
use std::net::Ipv6Addr;
use std::time::Instant;

/// The seed push and the office host behind it.
const PUSH_172_20: &str = "route 172.20.0.0 255.255.0.0";
const OFFICE: &str = "172.20.2.52";
const MILVUS: &str = "milvus_default";

/// Runs as OpenVPN's `user nobody` / `group nogroup` (down scripts run unprivileged).
const NOBODY: [&str; 2] = ["user nobody", "group nogroup"];

/// `dst dev` lines for blocks on one device, sorted as `own_routes` gives them.
fn on(dev: &str, blocks: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = blocks.iter().map(|b| format!("{b} {dev}")).collect();
    v.sort();
    v
}

/// The seed blocks of another /16 (`172.18.` for 172.18.0.0/16).
fn seed_blocks_of(net: &str) -> Vec<String> {
    SEED_VPN.iter().map(|b| b.replacen("172.20.", net, 1)).collect()
}

fn timing(name: &str, t0: Instant) {
    eprintln!("TIMING {name}: {:.1} s", t0.elapsed().as_secs_f64());
}

// ----------------------------------------------------------------------------- phases ----

/// Pings every (address, device) before any VPN (which also fills the neighbour table) and
/// returns the laptop's table that every disconnect must restore.
fn baseline(w: &World, local: &[(&str, &str)]) -> String {
    w.assert_reached(local);
    w.laptop.table()
}

/// Connects site n WITHOUT vpnfix: each (address, device) of `cut_off` leaves via that wrong
/// device and gets no answer, while each of `fine` is reached (so the tunnel itself works).
/// Prints what was seen, disconnects, checks OpenVPN alone restored the table, and returns the
/// routes (`ip route`, `ip -6 route`, without link-local ones) as they were while connected.
fn without_vpnfix(
    w: &World,
    label: &str,
    extra: &[&str],
    cut_off: &[(&str, &str)],
    fine: &[(&str, &str)],
    before: &str,
) -> Vec<String> {
    let c = w.connect(0, false, extra);
    let table = observe_routes(w, label);
    assert_cut_off(w, label, cut_off);
    w.assert_reached(fine);
    c.stop();
    assert_eq!(w.laptop.table(), before, "[{label}] OpenVPN alone did not restore the table\n{}", w.logs());
    table
}

/// Asserts that no address answers and each leaves via the device named with it.
fn assert_cut_off(w: &World, label: &str, cut_off: &[(&str, &str)]) {
    let addrs: Vec<&str> = cut_off.iter().map(|(a, _)| *a).collect();
    for (p, (_, dev)) in w.assert_cut_off(label, &addrs).iter().zip(cut_off) {
        assert_eq!(&p.dev, dev, "[{label}] without vpnfix: {p}\n{}", w.logs());
    }
}

/// Prints and returns the laptop's routes, without link-local ones.
fn observe_routes(w: &World, label: &str) -> Vec<String> {
    let table = w.laptop.ip(&["route"]) + &w.laptop.ip(&["-6", "route"]);
    let lines: Vec<String> =
        table.lines().filter(|l| !l.starts_with("fe80::")).map(|l| l.trim_end().to_string()).collect();
    for l in &lines {
        eprintln!("OBSERVED [{label}] without vpnfix, table: {l}");
    }
    lines
}

/// Connects site n WITH vpnfix and asserts: vpnfix's routes are exactly `routes`, every
/// (address, device) of `reach` leaves there and answers, and route-up logged no trouble.
/// With `docker_up` false, exactly one line must say that Docker could not be asked.
fn with_vpnfix(w: &World, extra: &[&str], reach: &[(&str, &str)], routes: &[String], docker_up: bool) -> Openvpn {
    let c = w.connect(0, true, extra);
    assert_quiet(&c.log_text(), docker_up);
    assert_eq!(own_routes(&w.laptop), routes, "vpnfix's routes\n{}", w.logs());
    w.assert_reached(reach);
    c
}

/// The client log shows no failed or unverified route and (unless `docker_up` is false, when
/// exactly one is expected) no warning that Docker could not be asked.
fn assert_quiet(log: &str, docker_up: bool) {
    assert_no_failure(log);
    let kernel_only = log.matches("planning with the kernel's facts only").count();
    assert_eq!(kernel_only, usize::from(!docker_up), "Docker warnings:\n{log}");
}

/// No vpnfix line of the log reports a failure.
fn assert_no_failure(log: &str) {
    for bad in ["still leaves via", "cannot add", "cannot delete", "cannot verify", "internal error", "refusing"] {
        assert!(!log.contains(bad), "vpnfix said {bad:?}:\n{log}");
    }
}

/// SIGTERM (route-pre-down, OpenVPN's deletes, down): the table must be exactly `before`, the
/// tunnel's state gone, and no removal may have failed. Returns the client's whole log.
fn disconnect(w: &World, c: Openvpn, before: &str) -> String {
    let (log, dev) = (c.log.clone(), c.dev.clone());
    c.stop();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(
        w.laptop.table(),
        before,
        "the table after disconnect differs from before connect; vpnfix's routes now: {:?}\n{log}",
        own_routes(&w.laptop),
    );
    assert!(!w.state_dir().join(format!("{dev}.json")).exists(), "{dev}'s state outlives the disconnect");
    assert_no_failure(&log);
    log
}

// ------------------------------------------------------------------------------ worlds ----

/// The seed world: compose project milvus, network milvus_default 172.20.0.0/16 with
/// milvus-etcd, milvus-minio and milvus-standalone; site 0 pushes `pushes`, and the office
/// host 172.20.2.52/24 sits behind it.
struct Milvus {
    w: World,
    bridge: String,
    containers: Vec<String>,
}

fn milvus(pushes: &[&str]) -> Milvus {
    let w = World::new(&[SiteSpec { pushes, hosts: &["172.20.2.52/24"] }]);
    let bridge = w.network("milvus", MILVUS, &["--subnet", "172.20.0.0/16"]);
    let mut m = Milvus { w, bridge, containers: Vec::new() };
    for svc in ["etcd", "minio", "standalone"] {
        m.add(&format!("milvus-{svc}"), &[]);
    }
    m
}

impl Milvus {
    /// Starts another milvus container (`--ip` and such in `extra`).
    fn add(&mut self, name: &str, extra: &[&str]) {
        let ip = self.w.container("milvus", MILVUS, name, extra);
        self.containers.push(ip);
    }

    /// Every container over the bridge.
    fn local(&self) -> Vec<(&str, &str)> {
        self.containers.iter().map(|c| (c.as_str(), self.bridge.as_str())).collect()
    }

    /// Every container over `dev` (where OpenVPN 2.6's prepended route sends them).
    fn containers_via<'a>(&'a self, dev: &'a str) -> Vec<(&'a str, &'a str)> {
        self.containers.iter().map(|c| (c.as_str(), dev)).collect()
    }

    /// The office host over tun0 and every container over the bridge.
    fn both_sides(&self) -> Vec<(&str, &str)> {
        let mut v = vec![(OFFICE, "tun0")];
        v.extend(self.local());
        v
    }

    /// The seed plan under OpenVPN 2.6 (pushed route prepended): the 8 tunnel blocks and the
    /// kept 172.20.0.0/24 on the bridge.
    fn seed_routes(&self) -> Vec<String> {
        let mut v = on("tun0", &SEED_VPN);
        v.push(format!("172.20.0.0/24 {}", self.bridge));
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------- 1: seed ----

/// Scenario 1 and 7a: OpenVPN 2.6 prepends 172.20.0.0/16 over Docker's: without vpnfix the office
/// answers and every container is cut off; with vpnfix both sides answer; SIGTERM restores.
#[test]
fn seed_milvus_push_equals_the_docker_subnet() {
    if !root_or_skip("seed_milvus_push_equals_the_docker_subnet") {
        return;
    }
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    let seen = without_vpnfix(w, "seed", &[], &m.containers_via("tun0"), &[(OFFICE, "tun0")], &before);
    // OpenVPN 2.6 prepends: its route comes first among the two equal /16s, and wins.
    let pos = |l: &str| seen.iter().position(|s| s.starts_with(l));
    let bridge_route = format!("172.20.0.0/16 dev {} proto kernel", m.bridge);
    assert!(
        pos("172.20.0.0/16 via 10.8.0.1 dev tun0") < pos(&bridge_route) && pos(&bridge_route).is_some(),
        "{seen:#?}"
    );
    let c = with_vpnfix(w, &[], &m.both_sides(), &m.seed_routes(), true);
    let want = "172.20.1.0/24 dev tun0: VPN side of 172.20.0.0/16, shared with docker network milvus_default";
    assert!(c.log_text().contains(want), "missing {want:?}:\n{}", c.log_text());
    disconnect(w, c, &before);
    timing("seed (1, 7a)", t0);
}

// ------------------------------------------------------------- 2, 3: client route options ----

/// Scenario 2 and 3: `route-noexec` (OpenVPN installs nothing) and `route-metric 50` / `200`
/// (Docker's metric 0 wins): without vpnfix the office host is routed to the bridge and never
/// answers; with vpnfix the 8 tunnel blocks alone fix it, nothing goes on the bridge.
#[test]
fn route_noexec_and_route_metric_50_and_200() {
    if !root_or_skip("route_noexec_and_route_metric_50_and_200") {
        return;
    }
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    for opt in ["route-noexec", "route-metric 50", "route-metric 200"] {
        let t1 = Instant::now();
        let seen = without_vpnfix(w, opt, &[opt], &[(OFFICE, &m.bridge)], &m.local(), &before);
        // route-noexec: no pushed route at all; route-metric M: installed, losing to metric 0.
        let pushed: Vec<&String> = seen.iter().filter(|l| l.contains("via 10.8.0.1")).collect();
        let want = opt.strip_prefix("route-metric ").map(|m| format!("172.20.0.0/16 via 10.8.0.1 dev tun0 metric {m}"));
        assert_eq!(pushed, want.iter().collect::<Vec<_>>(), "[{opt}] {seen:#?}");
        let c = with_vpnfix(w, &[opt], &m.both_sides(), &on("tun0", &SEED_VPN), true);
        disconnect(w, c, &before);
        timing(opt, t1);
    }
    timing("route options (2, 3)", t0);
}

// ------------------------------------------------------------ 4: an aggregate over two ----

/// Scenario 4: The VPN pushes 172.16.0.0/12 over two compose projects' /16s: without vpnfix both
/// office hosts go to the bridges; with vpnfix each /16 gets its 8 tunnel blocks.
#[test]
fn pushed_aggregate_over_two_compose_projects() {
    if !root_or_skip("pushed_aggregate_over_two_compose_projects") {
        return;
    }
    let t0 = Instant::now();
    let hosts = ["172.18.3.3/24", "172.20.2.52/24"];
    let w = World::new(&[SiteSpec { pushes: &["route 172.16.0.0 255.240.0.0"], hosts: &hosts }]);
    let shop = w.network("shop", "shop_default", &["--subnet", "172.18.0.0/16"]);
    let milvus = w.network("milvus", MILVUS, &["--subnet", "172.20.0.0/16"]);
    let mut ips = Vec::new();
    for (project, net, bridge, name) in [
        ("shop", "shop_default", &shop, "shop-web"),
        ("shop", "shop_default", &shop, "shop-db"),
        ("milvus", MILVUS, &milvus, "milvus-etcd"),
        ("milvus", MILVUS, &milvus, "milvus-standalone"),
    ] {
        ips.push((w.container(project, net, name, &[]), bridge.as_str()));
    }
    let local: Vec<(&str, &str)> = ips.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    let before = baseline(&w, &local);
    let cut = [("172.18.3.3", shop.as_str()), (OFFICE, milvus.as_str())];
    without_vpnfix(&w, "172.16.0.0/12", &[], &cut, &local, &before);
    let mut reach = vec![("172.18.3.3", "tun0"), (OFFICE, "tun0")];
    reach.extend(&local);
    let blocks: Vec<String> = seed_blocks_of("172.18.").into_iter().chain(SEED_VPN.map(String::from)).collect();
    let c = with_vpnfix(&w, &[], &reach, &on("tun0", &strs(&blocks)), true);
    disconnect(&w, c, &before);
    timing("aggregate /12 (4)", t0);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ------------------------------------------------------ 5: a push longer than Docker's ----

/// Scenario 5: The VPN pushes 172.20.2.0/24 into Docker's /16 and a container runs at 172.20.2.10:
/// without vpnfix OpenVPN's /24 wins and cuts it off; with vpnfix exactly its /32 goes back
/// to the bridge and 172.20.2.52 is still reached over the tunnel.
#[test]
fn pushed_slash_24_over_a_container_inside_it() {
    if !root_or_skip("pushed_slash_24_over_a_container_inside_it") {
        return;
    }
    let t0 = Instant::now();
    let mut m = milvus(&["route 172.20.2.0 255.255.255.0"]);
    m.add("milvus-worker", &["--ip", "172.20.2.10"]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    let mut fine = vec![(OFFICE, "tun0")];
    fine.extend(m.local().into_iter().filter(|(a, _)| *a != "172.20.2.10"));
    without_vpnfix(w, "172.20.2.0/24", &[], &[("172.20.2.10", "tun0")], &fine, &before);
    let c = with_vpnfix(w, &[], &m.both_sides(), &on(&m.bridge, &["172.20.2.10/32"]), true);
    disconnect(w, c, &before);
    timing("push /24 over a container (5)", t0);
}

// ---------------------------------------------------------------------------- 6: IPv6 ----

/// The tunnel blocks of fd42:20::/64 minus the kept fd42:20::/120: one block per length
/// /65 … /120, the upper half at each.
fn v6_blocks() -> Vec<String> {
    let base = u128::from("fd42:20::".parse::<Ipv6Addr>().unwrap());
    (65..=120).map(|len| format!("{}/{len}", Ipv6Addr::from(base + (1u128 << (128 - len))))).collect()
}

/// Scenario 6: A Docker network with fd42:20::/64 (dockerd needs no `--ipv6` for a user network),
/// the VPN pushes fd42:20::/48. Docker's /64 is longer, so without vpnfix the office host
/// fd42:20::1:52 (inside the /64) goes to the bridge, while fd42:20:0:1::52 (in the /48, outside
/// the /64) is reached. With vpnfix the containers keep fd42:20::/120 (an office host there,
/// fd42:20::52 say, stays local by design) and the rest of the /64 goes to the tunnel.
#[test]
fn ipv6_push_shorter_than_the_docker_subnet() {
    if !root_or_skip("ipv6_push_shorter_than_the_docker_subnet") {
        return;
    }
    let t0 = Instant::now();
    let (inside, outside) = ("fd42:20::1:52", "fd42:20:0:1::52");
    let hosts = ["fd42:20:0:1::52/64", "fd42:20::1:52/64"];
    let w = World::new(&[SiteSpec { pushes: &["route-ipv6 fd42:20::/48"], hosts: &hosts }]);
    let args = ["--ipv6", "--subnet", "172.22.0.0/16", "--subnet", "fd42:20::/64"];
    let bridge = w.network("v6app", "v6app_default", &args);
    let mut ips = Vec::new();
    for name in ["v6app-web", "v6app-db"] {
        w.container("v6app", "v6app_default", name, &[]);
        ips.push(w.container6(name, "v6app_default"));
    }
    let local: Vec<(&str, &str)> = ips.iter().map(|a| (a.as_str(), bridge.as_str())).collect();
    let before = baseline(&w, &local);
    let mut fine = vec![(outside, "tun0")];
    fine.extend(&local);
    without_vpnfix(&w, "IPv6 /48 over /64", &[], &[(inside, &bridge)], &fine, &before);
    let mut reach = vec![(inside, "tun0"), (outside, "tun0")];
    reach.extend(&local);
    let c = with_vpnfix(&w, &[], &reach, &on("tun0", &strs(&v6_blocks())), true);
    disconnect(&w, c, &before);
    timing("IPv6 (6)", t0);
}

// ------------------------------------------------------------------------ 7: disconnects ----

/// Waits until the tunnel device is gone (the kernel closes it when OpenVPN dies).
fn wait_gone(w: &World, dev: &str) {
    for _ in 0..100 {
        if !w.laptop.links().iter().any(|l| l == dev) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{dev} outlived OpenVPN");
}

/// Scenario 7b: `user nobody`: route-pre-down and down run unprivileged and say so; the tunnel's
/// routes die with tun0, the bridge route stays until `vpnfix cleanup --dev tun0` as root, or until
/// the next connect sweeps it.
fn unprivileged_down(m: &Milvus, before: &str) {
    let w = &m.w;
    let left = vec![format!("172.20.0.0/24 {}", m.bridge)];
    without_vpnfix(w, "user nobody", &NOBODY, &m.containers_via("tun0"), &[(OFFICE, "tun0")], before);
    let c = with_vpnfix(w, &NOBODY, &m.both_sides(), &m.seed_routes(), true);
    let log = c.log.clone();
    c.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("running unprivileged") && text.contains("vpnfix cleanup"), "{text}");
    assert_eq!(own_routes(&w.laptop), left, "unprivileged, only the bridge route remains\n{text}");
    let state = w.state_dir().display().to_string();
    let out = w.laptop.vpnfix(&env(&[("VPNFIX_STATE_DIR", &state)]), &["cleanup", "--dev", "tun0"]);
    assert!(out.status.success(), "vpnfix cleanup: {}", stderr(&out));
    assert_eq!(w.laptop.table(), before, "after `vpnfix cleanup --dev tun0` as root");
    assert!(!w.state_dir().join("tun0.json").exists(), "cleanup removes the state");

    let c = with_vpnfix(w, &NOBODY, &m.both_sides(), &m.seed_routes(), true);
    c.stop();
    assert_eq!(own_routes(&w.laptop), left);
    let c = with_vpnfix(w, &[], &m.both_sides(), &m.seed_routes(), true);
    let want = format!("removing stale 172.20.0.0/24 dev {}", m.bridge);
    assert!(c.log_text().contains(&want), "the next connect must sweep: {}", c.log_text());
    disconnect(w, c, before);
}

/// Scenario 7c: `persist-tun` and SIGUSR1: the tunnel stays, so do the routes; nothing doubled or
/// lost.
fn persist_tun_restart(m: &Milvus, before: &str) {
    let w = &m.w;
    let mut c = w.connect(0, false, &["persist-tun"]);
    c.signal("USR1");
    w.wait_ready(&mut c, 2);
    assert_cut_off(w, "persist-tun, after SIGUSR1", &m.containers_via("tun0"));
    c.stop();
    assert_eq!(w.laptop.table(), before);

    let mut c = with_vpnfix(w, &["persist-tun"], &m.both_sides(), &m.seed_routes(), true);
    let (routes, table) = (w.laptop.ip(&["route", "show", "proto", "86"]), w.laptop.table());
    c.signal("USR1");
    w.wait_ready(&mut c, 2);
    let after = w.laptop.ip(&["route", "show", "proto", "86"]);
    assert_eq!(after, routes, "SIGUSR1 with persist-tun changed vpnfix's routes\n{}", c.log_text());
    assert_eq!(w.laptop.table(), table, "SIGUSR1 with persist-tun changed the table\n{}", c.log_text());
    w.assert_reached(&m.both_sides());
    disconnect(w, c, before);
}

/// Scenario 7d: `kill -9`: no down script; tun0 and its routes vanish, the bridge route stays; the
/// next connect sweeps it, and the final disconnect restores the table exactly.
fn kill_9(m: &Milvus, before: &str) {
    let w = &m.w;
    let c = w.connect(0, false, &[]);
    assert_cut_off(w, "before kill -9", &m.containers_via("tun0"));
    c.kill9();
    wait_gone(w, "tun0");
    assert_eq!(w.laptop.table(), before, "without vpnfix, kill -9 leaves nothing behind");

    let c = with_vpnfix(w, &[], &m.both_sides(), &m.seed_routes(), true);
    c.kill9();
    wait_gone(w, "tun0");
    assert_eq!(own_routes(&w.laptop), vec![format!("172.20.0.0/24 {}", m.bridge)]);
    assert!(w.state_dir().join("tun0.json").exists(), "the state outlives a kill -9");
    let c = with_vpnfix(w, &[], &m.both_sides(), &m.seed_routes(), true);
    let want = format!("removing stale 172.20.0.0/24 dev {}", m.bridge);
    assert!(c.log_text().contains(&want), "the next connect must sweep: {}", c.log_text());
    disconnect(w, c, before);
}

/// 7b, 7c, 7d on one seed world.
#[test]
fn disconnects_unprivileged_persist_tun_and_kill_9() {
    if !root_or_skip("disconnects_unprivileged_persist_tun_and_kill_9") {
        return;
    }
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let before = baseline(&m.w, &m.local());
    for (name, f) in [
        ("user nobody (7b)", unprivileged_down as fn(&Milvus, &str)),
        ("persist-tun + SIGUSR1 (7c)", persist_tun_restart),
        ("kill -9 (7d)", kill_9),
    ] {
        let t1 = Instant::now();
        f(&m, &before);
        timing(name, t1);
    }
    timing("disconnects (7b-d)", t0);
}

// ------------------------------------------------------------------- 7e: two tunnels ----

/// One of two tunnels: its office host, device, bridge, containers and vpnfix's plan.
struct Tunnel {
    office: &'static str,
    dev: &'static str,
    bridge: String,
    containers: Vec<String>,
    routes: Vec<String>,
}

/// With the tunnels marked in `up` connected: each one's routes (on its tun and its bridge)
/// are exactly its plan, or none; each connected office answers over its tun; every container
/// answers from its bridge.
fn check_tunnels(w: &World, t: &[Tunnel; 2], up: [bool; 2], step: &str) {
    let own = own_routes(&w.laptop);
    let mut reach = Vec::new();
    for (t, up) in t.iter().zip(up) {
        let mine: Vec<String> = own
            .iter()
            .filter(|r| r.ends_with(&format!(" {}", t.dev)) || r.ends_with(&format!(" {}", t.bridge)))
            .cloned()
            .collect();
        let want = if up { t.routes.clone() } else { Vec::new() };
        assert_eq!(mine, want, "{step}: routes of {}\n{}", t.dev, w.logs());
        if up {
            reach.push((t.office, t.dev));
        }
        reach.extend(t.containers.iter().map(|c| (c.as_str(), t.bridge.as_str())));
    }
    w.assert_reached(&reach);
}

/// Every route a tunnel's hooks removed (stale or recorded) was its own: on its tun or bridge.
fn assert_touches_only_its_own(log: &str, t: &Tunnel) {
    let (tun, bridge) = (format!(" dev {} ", t.dev), format!(" dev {} ", t.bridge));
    for l in log.lines().filter(|l| l.contains("vpnfix: removing")) {
        assert!(l.contains(&tun) || l.contains(&bridge), "{} touched another tunnel's route: {l}\n{log}", t.dev);
    }
}

/// Scenario 7e: tun0 (site 0: 172.20.0.0/16 over milvus_default) and tun1 (site 1: 172.18.0.0/16
/// over shop_default) connect and disconnect in both orders without touching each other's routes.
#[test]
fn two_tunnels_come_and_go_in_both_orders() {
    if !root_or_skip("two_tunnels_come_and_go_in_both_orders") {
        return;
    }
    let t0 = Instant::now();
    let w = World::new(&[
        SiteSpec { pushes: &[PUSH_172_20], hosts: &["172.20.2.52/24"] },
        SiteSpec { pushes: &["route 172.18.0.0 255.255.0.0"], hosts: &["172.18.3.3/24"] },
    ]);
    let t = [("milvus", MILVUS, "172.20.", OFFICE, "tun0"), ("shop", "shop_default", "172.18.", "172.18.3.3", "tun1")]
        .map(|(project, net, prefix, office, dev)| {
            let bridge = w.network(project, net, &["--subnet", &format!("{prefix}0.0/16")]);
            let mut routes = on(dev, &strs(&seed_blocks_of(prefix)));
            routes.push(format!("{prefix}0.0/24 {bridge}"));
            routes.sort();
            let containers = ["a", "b"].map(|x| w.container(project, net, &format!("{project}-{x}"), &[])).to_vec();
            Tunnel { office, dev, bridge, containers, routes }
        });
    let local: Vec<(String, String)> =
        t.iter().flat_map(|t| t.containers.iter().map(|c| (c.clone(), t.bridge.clone()))).collect();
    let before = baseline(&w, &local.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>());

    let (c0, c1) = (w.connect(0, false, &[]), w.connect(1, false, &[]));
    observe_routes(&w, "two tunnels");
    let cut: Vec<(&str, &str)> = t.iter().flat_map(|t| t.containers.iter().map(|c| (c.as_str(), t.dev))).collect();
    assert_cut_off(&w, "two tunnels", &cut);
    w.assert_reached(&[(OFFICE, "tun0"), ("172.18.3.3", "tun1")]);
    c0.stop();
    c1.stop();
    assert_eq!(w.laptop.table(), before);

    for order in [[0, 1], [1, 0]] {
        let mut clients: [Option<Openvpn>; 2] = [None, None];
        for i in order {
            clients[i] = Some(w.connect(i, true, &[]));
            assert_quiet(&clients[i].as_ref().unwrap().log_text(), true);
            check_tunnels(&w, &t, clients.each_ref().map(|c| c.is_some()), &format!("{order:?}: tun{i} up"));
        }
        for i in order {
            let c = clients[i].take().unwrap();
            let log = c.log.clone();
            c.stop();
            check_tunnels(&w, &t, clients.each_ref().map(|c| c.is_some()), &format!("{order:?}: tun{i} down"));
            assert_touches_only_its_own(&std::fs::read_to_string(log).unwrap(), &t[i]);
        }
        assert_eq!(w.laptop.table(), before, "{order:?}: the table after both disconnects");
    }
    timing("two tunnels (7e)", t0);
}

// -------------------------------------------------------------- 8: Docker under a tunnel ----

/// The main table as parsed JSON, IPv4 then IPv6.
fn table_json(w: &World) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        let out = w.laptop.ip(&["-j", fam, "route", "show", "table", "main"]);
        v.extend(serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap());
    }
    v
}

/// Scenario 8a: The conflicting network is removed while connected: its bridge goes, and with it
/// the bridge's routes (vpnfix's kept /24 included); the office still answers; the disconnect is
/// still exact (the table as before, less the routes of the devices Docker removed).
#[test]
fn docker_network_removed_while_connected() {
    if !root_or_skip("docker_network_removed_while_connected") {
        return;
    }
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    let (links, before_json) = (w.laptop.links(), table_json(w));
    without_vpnfix(w, "network removed (seed)", &[], &m.containers_via("tun0"), &[(OFFICE, "tun0")], &before);
    let c = with_vpnfix(w, &[], &m.both_sides(), &m.seed_routes(), true);
    w.docker.docker(&["rm", "-f", "milvus-etcd", "milvus-minio", "milvus-standalone"]);
    w.docker.docker(&["network", "rm", MILVUS]);
    let now = w.laptop.links();
    let gone: Vec<String> = links.into_iter().filter(|l| !now.contains(l)).collect();
    assert!(gone.contains(&m.bridge), "{gone:?}");
    assert_eq!(own_routes(&w.laptop), on("tun0", &SEED_VPN), "the kept /24 went with its bridge");
    w.assert_reached(&[(OFFICE, "tun0")]);
    // The table as before, less the routes of the devices Docker removed.
    let expected: Vec<serde_json::Value> =
        before_json.into_iter().filter(|r| !gone.iter().any(|g| r["dev"] == g.as_str())).collect();
    let log = c.log.clone();
    c.stop();
    assert_eq!(table_json(w), expected, "after disconnect\n{}", w.logs());
    assert_no_failure(&std::fs::read_to_string(log).unwrap());
    assert!(!w.state_dir().join("tun0.json").exists(), "the state outlives the disconnect");
    timing("network removed while connected (8a)", t0);
}

/// Scenario 8b: dockerd dies before connect (SIGKILL: its containers keep running): vpnfix warns
/// once and plans from the kernel alone, the bridge address and the neighbour entries of the
/// containers. The one at 172.20.9.9, known only from its neighbour entry, keeps its /24.
#[test]
fn docker_daemon_gone_before_connect() {
    if !root_or_skip("docker_daemon_gone_before_connect") {
        return;
    }
    let t0 = Instant::now();
    let mut m = milvus(&[PUSH_172_20]);
    m.add("milvus-extra", &["--ip", "172.20.9.9"]);
    baseline(&m.w, &m.local()); // the laptop talks to each container: neighbour entries
    m.w.kill_dockerd();
    let w = &m.w;
    let before = w.laptop.table();
    for l in w.laptop.ip(&["neigh", "show", "dev", &m.bridge]).lines() {
        eprintln!("OBSERVED [dockerd gone] neighbour: {l}");
    }
    without_vpnfix(w, "dockerd gone", &[], &m.containers_via("tun0"), &[(OFFICE, "tun0")], &before);
    let mut routes = on("tun0", &WITH_9_VPN);
    routes.extend(["172.20.0.0/24", "172.20.9.0/24"].map(|b| format!("{b} {}", m.bridge)));
    routes.sort();
    let c = with_vpnfix(w, &[], &m.both_sides(), &routes, false);
    let log = disconnect(w, c, &before);
    assert_eq!(log.matches("planning with the kernel's facts only").count(), 1, "warned once:\n{log}");
    timing("dockerd gone before connect (8b)", t0);
}
