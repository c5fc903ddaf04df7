//! End to end, nothing faked (as tests/e2e_openvpn.rs): a real OpenVPN 2.6 server and client,
//! a real Docker engine and vpnfix as route-up, route-pre-down and down script, in network
//! namespaces made here. The ways a VPN goes away — SIGTERM as `user nobody`, a `persist-tun`
//! restart, kill -9, two tunnels in both orders — and Docker changing under a live tunnel
//! (network removed, daemon gone): each ends with the laptop's table exactly as before connect,
//! or with exactly the routes named.

mod common;

use common::e2e::*;
use common::ovpn::{own_routes, Openvpn, SiteSpec, World};
use common::{env, require_root, stderr, SEED_VPN, WITH_9_VPN};
use std::time::Instant;

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
    assert_kept_not_redone(w, &c.log_text(), &m.bridge);
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
/// next connect takes it over as it is, and the final disconnect restores the table exactly.
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
    assert_kept_not_redone(w, &c.log_text(), &m.bridge);
    disconnect(w, c, before);
}

/// The bridge route an earlier run left (still recorded for tun0) is wanted again: the next
/// connect keeps it as it is (no delete, no add: the containers' block is never without its
/// route) and records it, so the final disconnect removes it.
fn assert_kept_not_redone(w: &World, log: &str, bridge: &str) {
    let block = format!("172.20.0.0/24 dev {bridge}");
    assert!(!log.contains(&format!("removing {block}")) && !log.contains(&format!("{block}: ")), "{log}");
    let state = std::fs::read_to_string(w.state_dir().join("tun0.json")).unwrap();
    assert!(state.contains("172.20.0.0/24"), "the kept route is recorded: {state}");
}

/// 7b, 7c, 7d on one seed world.
#[test]
#[ignore = "needs root"]
fn disconnects_unprivileged_persist_tun_and_kill_9() {
    require_root("disconnects_unprivileged_persist_tun_and_kill_9");
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

/// Every route a tunnel's hooks removed (stale or recorded) was its own: on its tun or bridge,
/// or inside a container of its network (via that network's gateway, the office's /16 + .0.1).
fn assert_touches_only_its_own(log: &str, t: &Tunnel) {
    let (tun, bridge) = (format!(" dev {} ", t.dev), format!(" dev {} ", t.bridge));
    let prefix: Vec<&str> = t.office.split('.').take(2).collect();
    let inside = format!(" via {}.0.1 dev eth0 ", prefix.join("."));
    for l in log.lines().filter(|l| l.contains("vpnfix: removing")) {
        let own = l.contains(&tun) || l.contains(&bridge) || (l.contains(" in container ") && l.contains(&inside));
        assert!(own, "{} touched another tunnel's route: {l}\n{log}", t.dev);
    }
}

/// Scenario 7e: tun0 (site 0: 172.20.0.0/16 over milvus_default) and tun1 (site 1: 172.18.0.0/16
/// over shop_default) connect and disconnect in both orders without touching each other's routes.
#[test]
#[ignore = "needs root"]
fn two_tunnels_come_and_go_in_both_orders() {
    require_root("two_tunnels_come_and_go_in_both_orders");
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
#[ignore = "needs root"]
fn docker_network_removed_while_connected() {
    require_root("docker_network_removed_while_connected");
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
#[ignore = "needs root"]
fn docker_daemon_gone_before_connect() {
    require_root("docker_daemon_gone_before_connect");
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
