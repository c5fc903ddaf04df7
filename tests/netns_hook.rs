//! vpnfix as OpenVPN's script on a real kernel, in private network namespaces: a bridge
//! 172.20.0.0/16 whose .2–.4 are in use, tun0 10.0.1.65 peer 10.0.1.66, and the captured route-up
//! environment pushing 172.20.0.0/16 (and fd42:20::/48), in the three states OpenVPN and
//! NetworkManager leave: pushed route absent, prepended (OpenVPN 2.6), metric 50.
//! Asserted: which device `ip route get` picks, and that down leaves the table exactly as before.

mod common;

use common::laptop::{laptop, Pushed};
use common::{env, require_root, stderr, stdout, until, Netns, TempDir};

/// The captured route-up environment (OpenVPN 2.6.14), adapted to this tunnel and push.
fn hook_env(script_type: &str, state: &TempDir) -> Vec<(String, String)> {
    common::openvpn_env(script_type, "fd42:20::/48", state.path())
}

const DOWN_ARGS: [&str; 6] = ["tun0", "1500", "0", "10.0.1.65", "10.0.1.66", "init"];

fn own_routes(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = ns
        .ip(&["route", "show", "table", "main", "proto", "86"])
        .lines()
        .chain(ns.ip(&["-6", "route", "show", "table", "main", "proto", "86"]).lines())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn connect_and_check(ns: &Netns, state: &TempDir, pushed: Pushed) {
    let log = connect_again_and_check(ns, state, pushed);
    assert!(log.contains("172.20.1.0/24 dev tun0: VPN side of 172.20.0.0/16, shared with bridge br-test"), "{log}");
}

/// A route-up, its log checked only for what must never be there, and the routing checked.
fn connect_again_and_check(ns: &Netns, state: &TempDir, pushed: Pushed) -> String {
    let out = ns.vpnfix(&hook_env("route-up", state), &[]);
    assert!(out.status.success(), "{pushed:?}: {}", stderr(&out));
    let log = stderr(&out);
    assert!(!log.contains("still leaves via"), "route get must agree with every added route: {log}");
    for (addr, dev) in [
        ("172.20.2.52", "tun0"),
        ("172.20.255.254", "tun0"),
        ("172.20.1.1", "tun0"),
        ("172.20.0.2", "br-test"),
        ("172.20.0.3", "br-test"),
        ("172.20.0.4", "br-test"),
        ("172.20.0.200", "br-test"),
        ("fd42:20::2", "br-test"),
        ("fd42:20::1:5", "tun0"),
        ("fd42:20::ffff:ffff:ffff:ffff", "tun0"),
    ] {
        assert_eq!(ns.route_get(addr), dev, "{pushed:?}: ip route get {addr}");
    }
    log
}

fn scenario(pushed: Pushed) {
    let ns = laptop(pushed);
    let state = TempDir::new("hook");
    let before = ns.table();
    connect_and_check(&ns, &state, pushed);
    let first = own_routes(&ns);
    assert_eq!(first.len(), if matches!(pushed, Pushed::Prepended) { 9 + 57 } else { 8 + 56 }, "{first:#?}");
    // Connect twice in a row (up and route-up both configured, or a reconnect): nothing doubled,
    // nothing removed and added again.
    let log = connect_again_and_check(&ns, &state, pushed);
    assert!(!log.contains("dev tun0: VPN side") && !log.contains("removing"), "{pushed:?}: churn: {log}");
    assert_eq!(own_routes(&ns), first, "{pushed:?}: a second connect changed the routes");
    let out = ns.vpnfix(&hook_env("down", &state), &DOWN_ARGS);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ns.table(), before, "{pushed:?}: down must leave the table exactly as before");
}

#[test]
#[ignore = "needs root"]
fn pushed_route_absent_like_old_openvpn() {
    require_root("pushed_route_absent_like_old_openvpn");
    scenario(Pushed::Absent);
}

#[test]
#[ignore = "needs root"]
fn pushed_route_prepended_like_openvpn_26() {
    require_root("pushed_route_prepended_like_openvpn_26");
    scenario(Pushed::Prepended);
}

#[test]
#[ignore = "needs root"]
fn pushed_route_at_metric_50_like_network_manager() {
    require_root("pushed_route_at_metric_50_like_network_manager");
    scenario(Pushed::Metric50);
}

#[test]
#[ignore = "needs root"]
fn explain_agrees_with_the_kernel_on_both_sides() {
    require_root("explain_agrees_with_the_kernel");
    let ns = laptop(Pushed::Prepended);
    let state = TempDir::new("explain");
    let e = env(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("VPNFIX_STATE_DIR", &state.path().join("s").display().to_string()),
    ]);
    let explain = |addrs: &[&str]| {
        let mut args = vec!["explain", "--json", "--dev", "tun0", "--route", "172.20.0.0/16"];
        args.extend(addrs);
        let out = ns.vpnfix(&e, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = explain(&["172.20.2.52", "172.20.0.2"]);
    for a in before["addresses"].as_array().unwrap() {
        assert!(a["why"].as_str().unwrap().contains("vpnfix would add"), "{a}");
    }
    connect_and_check(&ns, &state, Pushed::Prepended);
    let after = explain(&["172.20.2.52", "172.20.0.2"]);
    for (a, dev) in after["addresses"].as_array().unwrap().iter().zip(["tun0", "br-test"]) {
        let addr = a["addr"].as_str().unwrap();
        assert_eq!(a["pick"]["dev"], dev, "{a}");
        assert_eq!(ns.route_get(addr), dev);
        assert_eq!(a["routes"][0]["installer"], "vpnfix", "{a}");
        assert!(a["why"].as_str().unwrap().contains("vpnfix added"), "{a}");
    }
    assert!(ns.vpnfix(&hook_env("down", &state), &DOWN_ARGS).status.success());
}

#[test]
#[ignore = "needs root"]
fn unprivileged_down_says_so_exits_0_and_cleanup_restores_the_table() {
    require_root("unprivileged_down");
    let ns = laptop(Pushed::Absent);
    let state = TempDir::new("unpriv");
    let before = ns.table();
    connect_and_check(&ns, &state, Pushed::Absent);
    let out = ns.vpnfix_unprivileged(&hook_env("down", &state), &DOWN_ARGS);
    assert_eq!(out.status.code(), Some(0), "down must never fail OpenVPN");
    let log = stderr(&out);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains("running unprivileged") && log.contains("vpnfix cleanup"), "{log}");
    assert!(!own_routes(&ns).is_empty(), "unprivileged, nothing could be removed");
    let mut root_env = hook_env("down", &state);
    root_env.retain(|(k, _)| k == "VPNFIX_STATE_DIR");
    let out = ns.vpnfix(&root_env, &["cleanup", "--dev", "tun0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ns.table(), before);
}

#[test]
#[ignore = "needs root"]
fn a_vanished_tunnel_leaves_bridge_routes_that_the_next_connect_adopts() {
    require_root("a_vanished_tunnel");
    let mut ns = laptop(Pushed::Prepended);
    let state = TempDir::new("vanish");
    let before = ns.table();
    connect_and_check(&ns, &state, Pushed::Prepended);
    // OpenVPN killed with -9: no down; its device goes, and with it every route through it.
    ns.ip(&["link", "del", "tun0"]);
    assert!(own_routes(&ns).iter().any(|r| r.contains("br-test")), "the bridge route outlives the tunnel");
    ns.tun("tun1");
    ns.ip(&["addr", "add", "10.0.1.65", "peer", "10.0.1.66", "dev", "tun1"]);
    ns.ip(&["route", "prepend", "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun1"]);
    let mut e = hook_env("route-up", &state);
    e.iter_mut().filter(|(k, _)| k == "dev").for_each(|(_, v)| *v = "tun1".into());
    let out = ns.vpnfix(&e, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // tun1 wants the bridge route tun0 left: adopted as it is, neither removed nor added again.
    let log = stderr(&out);
    assert!(log.contains("adopting 172.20.0.0/24 dev br-test proto 86: left by an earlier vpnfix run"), "{log}");
    assert!(!log.contains("removing stale 172.20.0.0/24") && !log.contains("172.20.0.0/24 dev br-test: "), "{log}");
    // tun0's IPv6 bridge block was needed only against tun0's prepended fd42:20::/64: stale now.
    assert!(log.contains("removing stale fd42:20::/120 dev br-test proto 86"), "{log}");
    assert_eq!(ns.route_get("172.20.0.2"), "br-test");
    assert_eq!(ns.route_get("172.20.2.52"), "tun1");
    let mut down = hook_env("down", &state);
    down.iter_mut().filter(|(k, _)| k == "dev").for_each(|(_, v)| *v = "tun1".into());
    assert!(ns.vpnfix(&down, &[]).status.success());
    assert!(own_routes(&ns).is_empty(), "{:#?}", own_routes(&ns));
    assert!(before.contains("br-test"));
}

#[test]
#[ignore = "needs root"]
fn malformed_and_hostile_pushes_are_reported_and_route_up_still_exits_0() {
    require_root("malformed_and_hostile_pushes");
    let ns = laptop(Pushed::Absent);
    let state = TempDir::new("hostile");
    let before = ns.table();
    let mut e = hook_env("route-up", &state);
    e.retain(|(k, _)| !k.starts_with("route_"));
    e.extend(env(&[
        ("route_vpn_gateway", "10.0.1.66"),
        ("route_network_1", "0.0.0.0"),
        ("route_netmask_1", "128.0.0.0"),
        ("route_network_2", "128.0.0.0"),
        ("route_netmask_2", "128.0.0.0"),
        ("route_network_3", "172.20.0.0"),
        ("route_netmask_3", "255.0.255.0"),
        ("route_network_4", "not-an-address"),
        ("VPNFIX_MAX_ROUTES", "4"),
    ]));
    for i in 0..3000 {
        e.push((format!("route_network_{}", i + 5), format!("172.20.{}.{}", i / 250 % 256, (i % 250) + 1)));
    }
    let out = ns.vpnfix(&e, &[]);
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(log.contains("0.0.0.0/1 (route_network_1): a default route (or half of one) never contests"), "{log}");
    assert!(log.contains("route_netmask_3=\"255.0.255.0\": netmask is not contiguous; route skipped"), "{log}");
    assert!(log.contains("route_network_4=\"not-an-address\": not an IPv4 address; route skipped"), "{log}");
    assert!(log.contains("of the cap of 4 (VPNFIX_MAX_ROUTES); none added for them"), "{log}");
    assert!(log.lines().count() <= 12, "a hostile push is reported in a few lines, not thousands: {log}");
    assert!(own_routes(&ns).len() <= 4);
    // Used addresses never go into the tunnel, whatever was pushed.
    for a in ["172.20.0.2", "172.20.0.3", "172.20.0.4"] {
        assert_eq!(ns.route_get(a), "br-test", "{a}");
    }
    let out = ns.vpnfix(&hook_env("down", &state), &DOWN_ARGS);
    assert!(out.status.success());
    assert_eq!(ns.table(), before);
}

#[test]
#[ignore = "needs root"]
fn the_live_dry_run_changes_nothing_and_explains() {
    require_root("the_live_dry_run");
    let ns = laptop(Pushed::Prepended);
    let before = ns.table();
    let e = env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let out = ns.vpnfix(&e, &["plan", "--dev", "tun0", "--route", "172.20.0.0/16"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("add 9 routes:"), "{text}");
    assert!(text.contains("172.20.0.0/24 dev br-test: local side of 172.20.0.0/16, kept for bridge br-test"), "{text}");
    let warn = stderr(&out);
    assert_eq!(warn.lines().count(), 1, "one warning line for the dead socket: {warn}");
    assert!(warn.contains("planning with the kernel's facts only"), "{warn}");
    assert_eq!(ns.table(), before, "a dry run never changes anything");
}

/// What `ip monitor route` reports in the namespace of vpnfix's routes (protocol 86) while `f`
/// runs: one line per change (vpnfix's route lookups change nothing and report nothing). The
/// kernel's own notifications (a veth's link-local address finishing DAD) are not vpnfix's.
fn route_events(ns: &Netns, f: impl FnOnce()) -> Vec<String> {
    let mut mon = std::process::Command::new("ip")
        .args(["-n", &ns.name, "monitor", "route"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200)); // subscribed before the change
    f();
    std::thread::sleep(std::time::Duration::from_millis(300)); // the last notifications arrive
    let _ = mon.kill();
    let out = mon.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| l.contains(" proto 86 ")).map(str::to_string).collect()
}

/// A second route-up with nothing changed (OpenVPN's SIGUSR1 with persist-tun, `vpnfix apply`
/// twice) sends the kernel no route change at all, so the pushed route never captures the
/// containers' addresses in between; when a container appears, only the difference changes,
/// and its addresses are routed throughout.
#[test]
#[ignore = "needs root"]
fn a_repeated_connect_changes_nothing_and_a_changed_plan_only_the_difference() {
    require_root("a_repeated_connect_changes_nothing");
    let ns = laptop(Pushed::Prepended);
    let state = TempDir::new("churn");
    let before = ns.table();
    connect_and_check(&ns, &state, Pushed::Prepended);
    let first = ns.table();
    let again = || {
        let out = ns.vpnfix(&hook_env("route-up", &state), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    assert_eq!(route_events(&ns, again), Vec::<String>::new(), "a repeated connect changed routes");
    assert_eq!(ns.table(), first);
    // A container appears at 172.20.9.9: 172.20.8.0/21 splits around 172.20.9.0/24, which goes
    // to the bridge; nothing else is touched.
    ns.ip(&["neigh", "add", "172.20.9.9", "lladdr", "02:42:ac:14:09:09", "dev", "br-test", "nud", "permanent"]);
    let events = route_events(&ns, again);
    let mut changed: Vec<String> = events.iter().map(|l| l.split(" proto").next().unwrap().to_string()).collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            "172.20.10.0/23 dev tun0",
            "172.20.12.0/22 dev tun0",
            "172.20.8.0/24 dev tun0",
            "172.20.9.0/24 dev br-test",
            "Deleted 172.20.8.0/21 dev tun0",
        ],
        "{events:#?}"
    );
    let add_at = |dst: &str| events.iter().position(|l| l.starts_with(dst)).unwrap();
    let del_at = events.iter().position(|l| l.starts_with("Deleted")).unwrap();
    assert!(add_at("172.20.8.0/24") < del_at, "adds before the delete: every address stays routed");
    assert_eq!(ns.route_get("172.20.9.9"), "br-test");
    assert_eq!(ns.route_get("172.20.8.1"), "tun0");
    let out = ns.vpnfix(&hook_env("down", &state), &DOWN_ARGS);
    assert!(out.status.success(), "{}", stderr(&out));
    ns.ip(&["neigh", "del", "172.20.9.9", "dev", "br-test"]);
    assert_eq!(ns.table(), before, "down must leave the table exactly as before");
}

/// Under policy routing of someone's own (`ip rule`), the main table alone does not say what the
/// kernel picks: vpnfix asks the kernel for each block instead, and says so where a rule sends
/// addresses elsewhere. Without such rules one dump of the table proves every block.
#[test]
#[ignore = "needs root"]
fn verification_follows_policy_rules() {
    require_root("verification_follows_policy_rules");
    let ns = laptop(Pushed::Prepended);
    let state = TempDir::new("rules");
    ns.ip(&["rule", "add", "to", "172.20.2.0/24", "lookup", "100", "pref", "50"]);
    ns.ip(&["route", "add", "172.20.2.0/24", "dev", "br-test", "table", "100"]);
    let out = ns.vpnfix(&hook_env("route-up", &state), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("172.20.2.0/23 dev tun0 proto 86: 172.20.2.0 still leaves via br-test, though vpnfix added it"),
        "the rule's table wins for 172.20.2.0/24, and vpnfix says so: {log}"
    );
    assert_eq!(log.matches("still leaves via").count(), 1, "every other block verified: {log}");
    assert_eq!(ns.route_get("172.20.3.1"), "tun0");
    ns.ip(&["rule", "del", "pref", "50"]);
    let out = ns.vpnfix(&hook_env("down", &state), &DOWN_ARGS);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `vpnfix watch` keeps the rule while the tunnel is up: a container appearing after connect
/// (here a neighbour on the bridge) gets its block on the bridge, a route of vpnfix's deleted by
/// hand comes back, and when the tunnel goes every recorded route goes with it and the watch
/// ends by itself.
#[test]
#[ignore = "needs root"]
fn the_watcher_follows_the_host_and_ends_with_the_tunnel() {
    require_root("the_watcher_follows_the_host");
    let ns = laptop(Pushed::Prepended);
    let state = TempDir::new("watch");
    std::fs::create_dir_all(state.path().join("state")).unwrap();
    std::fs::set_permissions(state.path().join("state"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let log = state.path().join("watch.log");
    let mut e = common::own_config_and_syslog(&hook_env("", &state));
    e.retain(|(k, _)| k != "script_type");
    let mut watcher = Watcher(
        ns.cmd("env")
            .arg("-i")
            .args(e.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(common::vpnfix_bin())
            .args(["watch", "--dev", "tun0"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    // Started before the connect (as a service is): it waits for the tunnel's record.
    assert!(until(|| said().contains("waiting for tun0 to connect")), "{}", said());
    assert!(watcher.0.try_wait().unwrap().is_none(), "{}", said());
    connect_and_check(&ns, &state, Pushed::Prepended);
    assert!(until(|| said().contains("watching tun0")), "{}", said());
    ns.ip(&["neigh", "add", "172.20.9.9", "lladdr", "02:42:ac:14:09:09", "dev", "br-test", "nud", "permanent"]);
    assert!(until(|| ns.route_get("172.20.9.9") == "br-test"), "the new container is not kept: {}", said());
    assert_eq!(ns.route_get("172.20.8.1"), "tun0");
    ns.ip(&["route", "del", "172.20.1.0/24", "dev", "tun0", "proto", "86"]);
    assert!(until(|| own_routes(&ns).iter().any(|r| r.starts_with("172.20.1.0/24 dev tun0"))), "{}", said());
    // The tunnel goes (OpenVPN killed): the bridge-side routes go too, and the watch ends.
    ns.ip(&["link", "del", "tun0"]);
    assert!(until(|| watcher.0.try_wait().unwrap().is_some()), "the watch did not end: {}", said());
    assert!(own_routes(&ns).is_empty(), "{:#?}\n{}", own_routes(&ns), said());
    assert!(!state.path().join("state/tun0.json").exists());
    assert!(said().contains("tun0 is gone"), "{}", said());
}

/// Kills the watcher if a test fails before it ends by itself.
struct Watcher(std::process::Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The connect hook starts the watcher by itself: detached (a process group of its own, no
/// stdin, stdout or stderr of the hook's), holding CAP_NET_ADMIN alone, shown by `status`, one
/// per tunnel however often route-up runs; it keeps the rule and ends with the tunnel.
#[test]
#[ignore = "needs root"]
fn the_connect_hook_starts_one_detached_watcher_with_net_admin_alone() {
    require_root("the_connect_hook_starts_one_detached_watcher");
    let ns = laptop(Pushed::Prepended);
    let state = TempDir::new("autowatch");
    let mut e = hook_env("route-up", &state);
    e.push(("VPNFIX_WATCH".into(), "true".into()));
    // Routes inside containers need two more (tests/e2e_inside.rs checks those).
    e.push(("VPNFIX_CONTAINER_ROUTES".into(), "false".into()));
    let out = ns.vpnfix(&e, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = state.path().join("state/tun0.watcher");
    let pid = || -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
        Some(v["pid"].as_u64()?.to_string())
    };
    assert!(until(|| pid().is_some()), "no watcher recorded: {}", stderr(&out));
    let pid = pid().unwrap();
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    assert_eq!(fields[2], pid, "the watcher leads a process group of its own: {stat}");
    for fd in 0..3 {
        assert_eq!(std::fs::read_link(proc.join(format!("fd/{fd}"))).unwrap(), std::path::Path::new("/dev/null"));
    }
    let status = std::fs::read_to_string(proc.join("status")).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    assert_eq!(field("CapEff:"), "0000000000001000", "CAP_NET_ADMIN alone\n{status}");
    assert_eq!(field("CapBnd:"), "0000000000001000", "nothing else can come back\n{status}");
    assert_eq!(field("NoNewPrivs:"), "1");

    let shown = ns.vpnfix(&own_state(&state), &["status"]);
    assert!(stdout(&shown).contains(&format!("watcher: pid {pid} since ")), "{}", stdout(&shown));
    ns.ip(&["neigh", "add", "172.20.9.9", "lladdr", "02:42:ac:14:09:09", "dev", "br-test", "nud", "permanent"]);
    assert!(until(|| ns.route_get("172.20.9.9") == "br-test"), "the watcher did not keep the new address");
    let again = ns.vpnfix(&e, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    // The second route-up's watcher finds the lock taken and leaves.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let watchers = || common::watchers_in(&ns);
    assert!(until(|| watchers() == vec![pid.clone()]), "one watcher per tunnel: {:?}", watchers());

    // Killed with SIGKILL: `status` says so, and the next connect starts another.
    common::run(std::process::Command::new("kill").args(["-KILL", &pid]));
    assert!(until(|| watchers().is_empty()));
    let shown = stdout(&ns.vpnfix(&own_state(&state), &["status"]));
    assert!(shown.contains(&format!("watcher: pid {pid} since ")) && shown.contains("(not running"), "{shown}");
    let again = ns.vpnfix(&e, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(until(|| watchers().len() == 1 && watchers() != vec![pid.clone()]), "no new watcher");

    ns.ip(&["link", "del", "tun0"]);
    assert!(until(|| watchers().is_empty()), "the watcher outlived its tunnel");
    assert!(own_routes(&ns).is_empty(), "{:#?}", own_routes(&ns));
    assert!(!record.exists(), "the watcher's record outlives it");
}

fn own_state(state: &TempDir) -> Vec<(String, String)> {
    vec![("VPNFIX_STATE_DIR".into(), state.path().join("state").display().to_string())]
}

/// A tap tunnel's routes need its gateway: the watcher plans with the tunnel the connect
/// recorded, so the routes it adds later carry `via` too, and the ones it keeps stay as they are.
#[test]
#[ignore = "needs root"]
fn the_watcher_of_a_tap_tunnel_keeps_its_gateway() {
    require_root("the_watcher_of_a_tap_tunnel_keeps_its_gateway");
    let ns = laptop(Pushed::Absent);
    let state = TempDir::new("tapwatch");
    let mut tap = ns.cmd("ip");
    tap.args(["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    common::run(&mut tap);
    ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
    let se = state.path().join("state").display().to_string();
    let e = env(&[
        ("script_type", "route-up"),
        ("dev", "tap0"),
        ("dev_type", "tap"),
        ("ifconfig_local", "10.77.0.2"),
        ("ifconfig_netmask", "255.255.255.0"),
        ("route_vpn_gateway", "10.77.0.1"),
        ("route_network_1", "172.20.0.0"),
        ("route_netmask_1", "255.255.0.0"),
        ("VPNFIX_STATE_DIR", &se),
        ("DOCKER_HOST", "unix:///x"),
        ("VPNFIX_WATCH", "true"),
    ]);
    let out = ns.vpnfix(&e, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let via = |ns: &Netns| ns.ip(&["route", "show", "proto", "86", "dev", "tap0"]);
    let before = via(&ns);
    assert!(before.lines().count() >= 8 && before.lines().all(|l| l.contains("via 10.77.0.1")), "{before}");
    assert!(until(|| common::watchers_in(&ns).len() == 1), "no watcher: {}", stderr(&out));
    ns.ip(&["neigh", "add", "172.20.9.9", "lladdr", "02:42:ac:14:09:09", "dev", "br-test", "nud", "permanent"]);
    assert!(until(|| ns.route_get("172.20.9.9") == "br-test"), "the new address is not kept");
    let after = via(&ns);
    assert!(after.lines().all(|l| l.contains("via 10.77.0.1")), "a route lost its gateway:\n{after}");
    assert_ne!(after, before, "the watcher split a tunnel route around 172.20.9.9");
    ns.ip(&["link", "del", "tap0"]);
    assert!(until(|| common::watchers_in(&ns).is_empty()), "the watcher outlived tap0");
    assert_eq!(ns.ip(&["route", "show", "proto", "86"]), "");
}
