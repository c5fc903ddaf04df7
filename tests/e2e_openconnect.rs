//! End to end with OpenConnect, nothing faked: a real ocserv 1.1 and a real openconnect 9 client
//! running Debian's vpnc-script, in network namespaces made here (tests/common/openconnect.rs),
//! the laptop with a Linux bridge `ocw-br0` 172.20.0.1/16 + fd00:ac14::1/64 and a container on it
//! at 172.20.0.2 / fd00:ac14::2, the server pushing 172.20.0.0/16 and fd00:ac14::/64.
//!
//! Lines starting `OBSERVED` (run with `--nocapture`) record what each failure looked like; the
//! captures in tests/fixtures/openconnect-9.01/ show the same tables.

mod common;

use common::e2e::timing;
use common::openconnect::*;
use common::{require_root, run, until};
use std::process::Command;
use std::time::Instant;

/// The lines of `a` that `b` lacks.
fn minus<'a>(a: &'a str, b: &str) -> Vec<&'a str> {
    a.lines().filter(|l| !b.lines().any(|m| m == *l)).collect()
}

/// What users see without vpnfix: vpnc-script's `ip route replace 172.20.0.0/16 dev ocwtun0`
/// takes the bridge's own route, so the laptop and its container lose each other while the office
/// answers over the tunnel; its IPv6 route (metric 1024) loses to the bridge's (256), so the
/// office's IPv6 host is sent to the bridge; and its disconnect deletes the route it put in the
/// bridge's place, leaving the container cut off after the VPN is gone.
#[test]
#[ignore = "needs root"]
fn openconnect_without_vpnfix_breaks_the_bridge() {
    require_root("openconnect_without_vpnfix_breaks_the_bridge");
    let t0 = Instant::now();
    let w = OcWorld::new();
    let (laptop, container) = (&w.laptop, &w.container);
    timing("world up (namespaces, ocserv)", t0);

    // 1. Before connect: the container answers the laptop over the bridge, both families.
    for addr in [CONTAINER, CONTAINER6] {
        assert_eq!(laptop.route_dev(addr), BRIDGE, "before connect, {addr}");
        assert!(laptop.reaches(addr), "before connect, the laptop does not reach the container at {addr}");
    }
    assert!(container.reaches("172.20.0.1"), "before connect, the container does not reach the laptop");
    let before = w.laptop_table();
    assert!(before.lines().any(|l| l == BRIDGE_ROUTE), "no bridge route before connect:\n{before}");
    eprintln!("OBSERVED before connect: {CONTAINER} and {CONTAINER6} via {BRIDGE}, both answer; table:\n{before}");

    // 2. Connected.
    let t1 = Instant::now();
    let c = w.connect();
    timing("connect (to post-connect)", t1);
    let during = w.laptop_table();
    eprintln!("OBSERVED connected, table:\n{during}");
    let logs = || w.logs();
    // IPv4: vpnc-script's route replaced the bridge's.
    assert!(during.lines().any(|l| l == "172.20.0.0/16 dev ocwtun0 scope link"), "{during}");
    assert!(!during.lines().any(|l| l == BRIDGE_ROUTE), "the bridge's route survived connect:\n{during}");
    let dev = laptop.route_dev(CONTAINER);
    assert_eq!(dev, TUN, "connected, {CONTAINER}");
    assert!(!laptop.ping_once(CONTAINER), "connected, the container {CONTAINER} still answers the laptop");
    assert!(!container.ping_once("172.20.0.1"), "connected, the laptop still answers the container");
    eprintln!("OBSERVED connected: route get {CONTAINER} -> {dev}; the container does not answer (nor the laptop it)");
    let dev = laptop.route_dev(OFFICE);
    assert_eq!(dev, TUN, "connected, {OFFICE}");
    assert!(laptop.reaches(OFFICE), "connected, the office host {OFFICE} does not answer:{}", logs());
    eprintln!("OBSERVED connected: route get {OFFICE} -> {dev}; the office host answers over the tunnel");
    // IPv6: vpnc-script's route sits beside the bridge's at metric 1024 and loses.
    let tun6 = "fd00:ac14::/64 dev ocwtun0 metric 1024";
    let br6 = "fd00:ac14::/64 dev ocw-br0 proto kernel metric 256";
    for route in [tun6, br6] {
        assert!(during.lines().any(|l| l.starts_with(route)), "connected, no `{route}`:\n{during}");
    }
    let dev = laptop.route_dev(OFFICE6);
    assert_eq!(dev, BRIDGE, "connected, {OFFICE6}");
    assert!(!laptop.ping_once(OFFICE6), "connected, the office host {OFFICE6} answers");
    assert_eq!(laptop.route_dev(CONTAINER6), BRIDGE, "connected, {CONTAINER6}");
    assert!(laptop.reaches(CONTAINER6), "connected, the container {CONTAINER6} does not answer");
    eprintln!(
        "OBSERVED connected: route get {OFFICE6} -> {dev} (`{tun6}` loses to `{br6}`); the office host does not \
         answer; the container {CONTAINER6} still does"
    );

    // 3. After disconnect: the bridge's own route is gone with vpnc-script's.
    let t2 = Instant::now();
    let status = c.disconnect();
    timing("disconnect (to exit)", t2);
    let after = w.laptop_table();
    let (missing, added) = (minus(&before, &after), minus(&after, &before));
    eprintln!(
        "OBSERVED after disconnect (openconnect {status}): missing {missing:?}, added {added:?}; table:\n{after}"
    );
    assert_ne!(after, before, "the table is back as it was");
    assert_eq!(missing, [BRIDGE_ROUTE], "after disconnect, before:\n{before}\nafter:\n{after}");
    assert!(added.is_empty(), "after disconnect, new routes {added:?}");
    let dev = laptop.route_dev(CONTAINER);
    assert_eq!(dev, WAN, "after disconnect, {CONTAINER} goes the default route");
    assert!(!laptop.ping_once(CONTAINER), "after disconnect, the container {CONTAINER} answers");
    assert!(!container.ping_once("172.20.0.1"), "after disconnect, the laptop answers the container");
    assert!(laptop.reaches(CONTAINER6), "after disconnect, the container {CONTAINER6} does not answer");
    eprintln!(
        "OBSERVED after disconnect: route get {CONTAINER} -> {dev} (the default route); the container is \
         unreachable over IPv4 (IPv6 still fine)"
    );
    timing("openconnect without vpnfix", t0);
}

/// vpnfix's hook files as `vpnfix install` puts them in /etc/vpnc (examples/openconnect/), calling
/// the binary under test with the test's own state directory, no configuration file, no syslog,
/// no container engine (the container is known from the bridge's neighbour table) and no watcher.
fn install_vpnfix_hooks(w: &OcWorld) -> std::path::PathBuf {
    let state = w.path("state");
    let call = format!(
        "VPNFIX_STATE_DIR={} VPNFIX_CONF_FILE=/nonexistent/vpnfix.conf VPNFIX_SYSLOG=off VPNFIX_WATCH=false \
         DOCKER_HOST=unix:///nonexistent/docker.sock {}",
        state.display(),
        common::vpnfix_bin()
    );
    for (path, text) in vpnfix::install::VPNC_HOOKS {
        let phase = path.trim_start_matches("/etc/vpnc/").trim_end_matches(".d/vpnfix");
        assert!(text.contains("/usr/local/bin/vpnfix vpnc "), "{path} no longer calls vpnfix: {text}");
        w.hook_file(phase, "vpnfix", &text.replace("/usr/local/bin/vpnfix", &call));
    }
    state
}

/// With vpnfix's hook files: the bridge keeps its own route (connect.d withholds the push that
/// vpnc-script would have put in its place), post-connect gives the VPN side of both families to
/// the tunnel and keeps the container's addresses on the bridge, both sides answer, and after
/// disconnect the table is exactly as before, the bridge's route included.
#[test]
#[ignore = "needs root"]
fn openconnect_with_vpnfix_reaches_both_sides_and_restores_the_table() {
    require_root("openconnect_with_vpnfix_reaches_both_sides_and_restores_the_table");
    let t0 = Instant::now();
    let w = OcWorld::new();
    let laptop = &w.laptop;
    // Before: the container answers (which also makes it a live neighbour of the bridge: with no
    // engine, that is how vpnfix knows the address is in use).
    for addr in [CONTAINER, CONTAINER6] {
        assert!(laptop.reaches(addr), "before connect, the laptop does not reach the container at {addr}");
    }
    let before = w.laptop_table();
    let state = install_vpnfix_hooks(&w);

    let c = w.connect();
    let log = c.log_text();
    let during = w.laptop_table();
    eprintln!("OBSERVED connected with vpnfix, table:\n{during}");
    assert!(during.lines().any(|l| l == BRIDGE_ROUTE), "the bridge lost its route:\n{during}\n{log}");
    assert!(!during.lines().any(|l| l.starts_with("172.20.0.0/16 dev ocwtun0")), "{during}");
    assert!(
        log.contains("172.20.0.0/16: a bridge's own route; withheld from vpnc-script"),
        "connect.d did not withhold the push:\n{log}"
    );
    for (addr, dev) in [(CONTAINER, BRIDGE), (CONTAINER6, BRIDGE), (OFFICE, TUN), (OFFICE6, TUN)] {
        assert_eq!(laptop.route_dev(addr), dev, "ip route get {addr}\n{during}\n{log}");
        assert!(laptop.reaches(addr), "{addr} does not answer over {dev}\n{log}{}", w.logs());
    }
    assert!(w.container.reaches("172.20.0.1"), "the container does not reach the laptop");
    let own: Vec<&str> = during.lines().filter(|l| l.contains(" proto 86")).collect();
    assert!(own.iter().any(|l| l.starts_with("172.20.1.0/24 dev ocwtun0")), "{own:#?}");
    assert!(own.iter().any(|l| l.starts_with("fd00:ac14::100/120 dev ocwtun0")), "{own:#?}");
    assert!(state.join("ocwtun0.json").exists(), "no record for ocwtun0");
    common::e2e::assert_no_failure(&log);
    assert!(!log.contains("not a vpnfix setting"), "a variable of vpnfix's own was taken for a setting:\n{log}");
    timing("connected with vpnfix", t0);

    let status = c.disconnect();
    let after = w.laptop_table();
    assert_eq!(after, before, "the table after disconnect (openconnect {status})\n{}", w.logs());
    assert!(!state.join("ocwtun0.json").exists(), "ocwtun0's record outlives the disconnect");
    assert!(laptop.reaches(CONTAINER), "after disconnect the container does not answer");

    // A disconnect vpnfix never sees (openconnect killed: no vpnc-script at all): the tunnel's
    // routes die with its device, the bridge never lost its own, and `vpnfix cleanup` forgets
    // the record that is left.
    let c = w.connect();
    assert!(state.join("ocwtun0.json").exists(), "no record for ocwtun0 after the second connect");
    run(Command::new("kill").args(["-KILL", &c.pid().to_string()]));
    assert!(until(|| laptop.route_dev(OFFICE) != TUN), "{OFFICE} still goes to {TUN} after kill -9");
    drop(c);
    // vpnc-script's host route to the VPN server stays (its disconnect never ran): its own, not
    // vpnfix's, and the only difference.
    let killed = w.laptop_table();
    let server_route = format!("{SERVER} dev {WAN} scope link src 198.18.1.2");
    assert_eq!(minus(&killed, &before), [server_route.as_str()], "after kill -9:\n{killed}");
    assert!(minus(&before, &killed).is_empty(), "after kill -9 a route is missing:\n{killed}");
    let env = common::env(&[("VPNFIX_STATE_DIR", &state.display().to_string())]);
    let out = laptop.vpnfix(&env, &["cleanup"]);
    assert!(out.status.success(), "cleanup: {}", common::stderr(&out));
    assert!(!state.join("ocwtun0.json").exists(), "cleanup left ocwtun0's record");
    assert_eq!(w.laptop_table(), killed, "cleanup changed the table");
    timing("openconnect with vpnfix", t0);
}
