//! End to end with vpnfix as OpenVPN's plugin (`plugin vpnfix.so`), nothing faked: a real
//! OpenVPN 2.6 server and client that loads the library under test, whose helper is the binary
//! under test, and a real Docker engine. The client drops to `user nobody` / `group nogroup`
//! with `persist-tun` and has no `script-security` at all; the helper, started at open while
//! OpenVPN is root, keeps CAP_NET_ADMIN, so disconnect leaves the table exactly as before —
//! the bridge route included, which script mode under `user nobody` cannot remove (shown first).
//! Also: SIGUSR1 with and without `persist-tun`, `kill -9` (the helper cleans up when OpenVPN's
//! socket closes), two tunnels with the plugin at once, and a helper that cannot start.

mod common;

use common::e2e::*;
use common::ovpn::{own_routes, Openvpn, SiteSpec, World};
use common::{cmdline_names, env, pids_where, require_root, stderr, until};
use std::time::Instant;

/// The client lines: the plugin (no watcher: the plugin's own cleanup is what is tested), the
/// unprivileged user with `persist-key` (as nobody, a restart could not read the key again),
/// and `extra`.
fn plugin_conf(w: &World, settings: &[&str], extra: &[&str]) -> Vec<String> {
    let mut lines = w.plugin_lines(settings);
    lines.extend(NOBODY.iter().map(|l| l.to_string()));
    lines.push("persist-key".into());
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines
}

/// The pids of the plugin's helpers running in the laptop's namespace.
fn helpers(w: &World) -> Vec<String> {
    w.laptop
        .pids()
        .into_iter()
        .filter(|p| cmdline_names(std::path::Path::new(&format!("/proc/{p}")), "plugin-helper"))
        .collect()
}

/// (address, device) pairs as the world's assertions take them.
fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A capability set of a process (`CapEff` …), from /proc.
fn caps(pid: &str, set: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(&format!("{set}:\t"))).unwrap_or_default().to_string()
}

/// Connects site 0 with the plugin, asserts OpenVPN really runs as nobody and its helper keeps
/// CAP_NET_ADMIN, and that vpnfix's routes are `routes` and `reach` answers.
fn connect_plugin(w: &World, lines: &[String], routes: &[String], reach: &[(&str, &str)]) -> Openvpn {
    let c = w.connect(0, false, &strs(lines));
    let log = c.log_text();
    assert_quiet(&log, true);
    assert!(!log.contains("script-security"), "{log}");
    assert_eq!(own_routes(&w.laptop), routes, "vpnfix's routes with the plugin\n{}", w.logs());
    w.assert_reached(reach);
    let openvpn = pids_where(|p| cmdline_names(p, &c.log.display().to_string()));
    assert_eq!(openvpn.len(), 1, "{openvpn:?}");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", openvpn[0])).unwrap();
    assert!(uid.lines().any(|l| l.starts_with("Uid:\t65534\t65534")), "OpenVPN did not drop to nobody:\n{uid}");
    let h = helpers(w);
    assert_eq!(h.len(), 1, "one helper per OpenVPN: {h:?}");
    // CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21) and CAP_SYS_PTRACE (19) for the routes inside
    // containers; nothing else.
    assert_eq!(caps(&h[0], "CapEff"), "0000000000281000", "the helper's capabilities");
    c
}

/// The seed case under `user nobody`, `group nogroup`, `persist-tun`, no `script-security`:
/// office and containers reached; disconnect exact, bridge route included. Script mode under
/// the same user (and no watcher) leaves the bridge route behind: shown first. Last, the same
/// with the watcher the helper starts.
#[test]
#[ignore = "needs root"]
fn the_plugin_cleans_up_exactly_after_dropping_privileges() {
    require_root("the_plugin_cleans_up_exactly_after_dropping_privileges");
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());

    // Script mode, `user nobody`, no watcher: the bridge route stays.
    let c = with_vpnfix(w, &[NOBODY[0], NOBODY[1], "persist-tun"], &m.both_sides(), &m.seed_routes(), true);
    c.stop();
    assert_eq!(own_routes(&w.laptop), vec![format!("172.20.0.0/24 {}", m.bridge)], "script mode under nobody");
    let state = w.state_dir().display().to_string();
    let out = w.laptop.vpnfix(&env(&[("VPNFIX_STATE_DIR", &state)]), &["cleanup", "--dev", "tun0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.laptop.table(), before);

    // The plugin: the same routes, and an exact disconnect.
    let c = connect_plugin(w, &plugin_conf(w, &[], &["persist-tun"]), &m.seed_routes(), &m.both_sides());
    let log = disconnect(w, c, &before);
    assert!(
        log.contains("vpnfix: removing 172.20.0.0/24 dev"),
        "the bridge route was not removed by the plugin:\n{log}"
    );
    assert!(until(|| helpers(w).is_empty()), "the helper outlives OpenVPN: {:?}", helpers(w));

    // With the watcher (a plugin-line setting over the test's `setenv VPNFIX_WATCH false`): the
    // helper's route-up starts it, with the helper's privileges; it ends with the tunnel.
    let c =
        connect_plugin(w, &plugin_conf(w, &["VPNFIX_WATCH=true"], &["persist-tun"]), &m.seed_routes(), &m.both_sides());
    assert!(until(|| watchers(w).len() == 1), "the helper started no watcher\n{}", w.logs());
    assert_eq!(caps(&watchers(w)[0], "CapEff"), "0000000000281000", "the watcher's capabilities");
    disconnect(w, c, &before);
    assert!(until(|| helpers(w).is_empty() && watchers(w).is_empty()), "{:?} {:?}", helpers(w), watchers(w));
    timing("the_plugin_cleans_up_exactly_after_dropping_privileges", t0);
}

/// SIGUSR1 with `persist-tun` (OpenVPN keeps the tun and its routes, calls no hook) and without
/// (route-pre-down and down as nobody, then up and route-up again: the helper removes and adds);
/// `kill -9` (no hook at all: the helper sees OpenVPN's socket close and removes the routes).
/// Each ends with the table exactly as before and no helper left.
#[test]
#[ignore = "needs root"]
fn restarts_and_kill_9_leave_nothing_behind() {
    require_root("restarts_and_kill_9_leave_nothing_behind");
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    let exact = |label: &str| assert_ended(w, &before, label, || helpers(w));

    for persist in [true, false] {
        let label = if persist { "SIGUSR1 with persist-tun" } else { "SIGUSR1 without persist-tun" };
        let extra: &[&str] = if persist { &["persist-tun"] } else { &[] };
        let mut c = connect_plugin(w, &plugin_conf(w, &[], extra), &m.seed_routes(), &m.both_sides());
        c.signal("USR1");
        w.wait_ready(&mut c, 2);
        assert_eq!(own_routes(&w.laptop), m.seed_routes(), "[{label}] vpnfix's routes after the restart\n{}", w.logs());
        w.assert_reached(&m.both_sides());
        let log = c.log_text();
        let removals = log.matches("vpnfix: removing 172.20.0.0/24 dev").count();
        assert_eq!(removals, usize::from(!persist), "[{label}] removals at the restart:\n{log}");
        disconnect(w, c, &before);
        exact(label);
    }

    let c = connect_plugin(w, &plugin_conf(w, &[], &["persist-tun"]), &m.seed_routes(), &m.both_sides());
    let log = c.log.clone();
    c.kill9();
    exact("kill -9");
    let log = std::fs::read_to_string(log).unwrap();
    // No hook ran: the bridge route (which the kernel keeps when tun0 goes) was the helper's doing.
    assert!(!log.contains("PLUGIN_DOWN status=") && !log.contains("PLUGIN_ROUTE_PREDOWN status="), "{log}");
    timing("restarts_and_kill_9_leave_nothing_behind", t0);
}

/// Two tunnels with the plugin at once (two OpenVPN processes, two helpers): each adds and
/// removes only its own routes, in both orders; then a plugin line naming a helper that does
/// not exist stops OpenVPN at open with one clear line.
#[test]
#[ignore = "needs root"]
fn two_tunnels_with_the_plugin_and_a_helper_that_cannot_start() {
    require_root("two_tunnels_with_the_plugin_and_a_helper_that_cannot_start");
    let t0 = Instant::now();
    let w = World::new(&[
        SiteSpec { pushes: &[PUSH_172_20], hosts: &["172.20.2.52/24"] },
        SiteSpec { pushes: &["route 172.18.0.0 255.255.0.0"], hosts: &["172.18.3.3/24"] },
    ]);
    let nets =
        [("milvus", MILVUS, "172.20.", OFFICE, "tun0"), ("shop", "shop_default", "172.18.", "172.18.3.3", "tun1")];
    let mut all_routes = Vec::new();
    let mut reach: Vec<(String, String)> = Vec::new();
    let mut local: Vec<(String, String)> = Vec::new();
    for (project, net, prefix, office, dev) in nets {
        let bridge = w.network(project, net, &["--subnet", &format!("{prefix}0.0/16")]);
        let mut routes = on(dev, &strs(&seed_blocks_of(prefix)));
        routes.push(format!("{prefix}0.0/24 {bridge}"));
        all_routes.push(routes);
        let c = w.container(project, net, &format!("{project}-a"), &[]);
        reach.push((office.to_string(), dev.to_string()));
        local.push((c.clone(), bridge.clone()));
        reach.push((c, bridge));
    }
    let before = baseline(&w, &refs(&local));
    let conf = plugin_conf(&w, &[], &["persist-tun"]);
    for order in [[0, 1], [1, 0]] {
        let mut clients: [Option<Openvpn>; 2] = [None, None];
        for i in order {
            let c = w.connect(i, false, &strs(&conf));
            assert_quiet(&c.log_text(), true);
            clients[i] = Some(c);
        }
        let mut want: Vec<String> = all_routes.concat();
        want.sort();
        assert_eq!(own_routes(&w.laptop), want, "{order:?}: both tunnels' routes\n{}", w.logs());
        assert_eq!(helpers(&w).len(), 2, "one helper per OpenVPN");
        w.assert_reached(&refs(&reach));
        let first = order[0];
        let c = clients[first].take().unwrap();
        let log = c.log.clone();
        c.stop();
        let mut left = all_routes[1 - first].clone();
        left.sort();
        assert_eq!(own_routes(&w.laptop), left, "{order:?}: after tun{first} went\n{}", w.logs());
        let log = std::fs::read_to_string(log).unwrap();
        let other = format!("dev {} ", ["tun0", "tun1"][1 - first]);
        assert!(!log.lines().any(|l| l.contains("vpnfix: removing") && l.contains(&other)), "{log}");
        clients[1 - first].take().unwrap().stop();
        assert_eq!(w.laptop.table(), before, "{order:?}: the table after both disconnects");
        assert!(until(|| helpers(&w).is_empty()), "helpers left: {:?}", helpers(&w));
    }

    // A helper that cannot start: OpenVPN stops at open, saying why in one line.
    let mut bad = plugin_conf(&w, &[], &[]);
    bad[0] = format!("plugin {} /nonexistent/vpnfix", w.dir.path().join("bin/vpnfix.so").display());
    let conf = w.dir.path().join("bad.conf");
    std::fs::write(&conf, w.client_conf(0, false, &strs(&bad))).unwrap();
    let log = w.dir.path().join("bad.log");
    let c = Openvpn::start(&w.laptop, &conf, &log, "tun0");
    c.wait_exit();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = "PLUGIN vpnfix: cannot start the helper /nonexistent/vpnfix: No such file or directory (os error 2); plugin not loaded";
    assert_eq!(text.matches(line).count(), 1, "{text}");
    assert!(text.contains("plugin initialization function failed"), "{text}");
    assert_eq!(w.laptop.table(), before);
    timing("two_tunnels_with_the_plugin_and_a_helper_that_cannot_start", t0);
}

/// The helper keeps the engines' answers while their events say nothing changed: a container
/// started while connected (no watcher) must be seen by the next route-up, after a SIGUSR1
/// restart without `persist-tun` — its address kept on the bridge, not sent into the tunnel.
#[test]
#[ignore = "needs root"]
fn a_container_started_while_connected_is_seen_at_the_next_route_up() {
    require_root("a_container_started_while_connected_is_seen_at_the_next_route_up");
    let t0 = Instant::now();
    let mut m = milvus(&[PUSH_172_20]);
    let before = baseline(&m.w, &m.local());
    let mut c = connect_plugin(&m.w, &plugin_conf(&m.w, &[], &[]), &m.seed_routes(), &m.both_sides());
    m.add("milvus-late", &["--ip", "172.20.5.10"]);
    // No watcher: the late container leaves via tun0 until the next route-up.
    assert_eq!(m.w.route_get("172.20.5.10"), "tun0");
    c.signal("USR1");
    m.w.wait_ready(&mut c, 2);
    let mut wanted = m.seed_routes();
    wanted.retain(|r| !r.starts_with("172.20.4.0/22"));
    wanted.extend(["172.20.4.0/24 tun0".to_string(), "172.20.6.0/23 tun0".to_string()]);
    wanted.push(format!("172.20.5.0/24 {}", m.bridge));
    wanted.sort();
    assert_eq!(own_routes(&m.w.laptop), wanted, "route-up after the restart\n{}", m.w.logs());
    m.w.assert_reached(&m.both_sides());
    // Gone again before the disconnect, so the table to restore is the one before connect (its
    // veth's link-local IPv6 route goes with it).
    m.w.docker.docker(&["rm", "-f", "milvus-late"]);
    disconnect(&m.w, c, &before);
    assert!(until(|| helpers(&m.w).is_empty()), "helpers left: {:?}", helpers(&m.w));
    timing("a_container_started_while_connected_is_seen_at_the_next_route_up", t0);
}

/// SIGHUP after `user nobody`: OpenVPN tears the tunnel down — the helper, still root, removes
/// vpnfix's routes exactly — closes its plugins and reads its configuration again, as nobody. It
/// cannot read its own key any more and exits (OpenVPN's limit under `user nobody`, which its
/// manual names): whatever it does next, the table is as before and no helper is left.
#[test]
#[ignore = "needs root"]
fn sighup_after_dropping_privileges_leaves_nothing_behind() {
    require_root("sighup_after_dropping_privileges_leaves_nothing_behind");
    let t0 = Instant::now();
    let m = milvus(&[PUSH_172_20]);
    let w = &m.w;
    let before = baseline(w, &m.local());
    let c = connect_plugin(w, &plugin_conf(w, &[], &[]), &m.seed_routes(), &m.both_sides());
    let log = c.log.clone();
    c.signal("HUP");
    c.wait_exit();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("SIGHUP[hard,] received, process restarting"), "{log}");
    assert!(log.contains("vpnfix: removing 172.20.0.0/24 dev"), "the bridge route was not removed at SIGHUP:\n{log}");
    assert_no_failure(&log);
    assert_ended(w, &before, "SIGHUP", || helpers(w));
    timing("sighup_after_dropping_privileges_leaves_nothing_behind", t0);
}
