//! End to end with WireGuard, nothing faked: `wg-quick` (wireguard-tools) bringing up the
//! userspace `wireguard-go` against a wireguard-go server, in network namespaces made here
//! (tests/common/wireguard.rs), the laptop with a Linux bridge `wgt-br0` 172.20.0.1/16 +
//! fd00:ac14::1/64 and a container on it at 172.20.0.2 / fd00:ac14::2, the office host at
//! 172.20.2.52 / fd00:ac14::2:52 behind the server.
//!
//! Lines starting `OBSERVED` (run with `--nocapture`) record what each case looked like.

mod common;

use common::e2e::timing;
use common::require_root;
use common::wireguard::*;
use std::process::Output;
use std::time::Instant;

/// stderr of a run.
fn err(o: &Output) -> String {
    common::stderr(o)
}

/// What users see without vpnfix when the VPN's AllowedIPs cover a Docker subnet: with the
/// default `Table = auto`, wg-quick's `ip -4 route add 172.20.0.0/16 dev wg0` meets the bridge's
/// own route and fails (`RTNETLINK answers: File exists`), so wg-quick deletes wg0 and gives up:
/// no tunnel at all, the table as before. The tunnel itself works (AllowedIPs of the office
/// host only, which no route is in the way of), and `Table = off` comes up but sends nothing
/// from AllowedIPs into the tunnel.
#[test]
#[ignore = "needs root"]
fn wg_quick_without_vpnfix_fails_on_a_docker_subnet() {
    require_root("wg_quick_without_vpnfix_fails_on_a_docker_subnet");
    let t0 = Instant::now();
    let w = WgWorld::new();
    let (laptop, container) = (&w.laptop, &w.container);
    timing("world up (namespaces, keys, server listening)", t0);

    // 1. Before: the container answers the laptop over the bridge.
    for addr in [CONTAINER, CONTAINER6] {
        assert_eq!(laptop.route_dev(addr), BRIDGE, "before, {addr}");
        assert!(laptop.reaches(addr), "before, the laptop does not reach the container at {addr}");
    }
    assert!(container.reaches("172.20.0.1"), "before, the container does not reach the laptop");
    let before = w.laptop_table();
    assert!(before.lines().any(|l| l == BRIDGE_ROUTE), "no bridge route before:\n{before}");
    eprintln!("OBSERVED before: {CONTAINER} and {CONTAINER6} via {BRIDGE}, both answer; table:\n{before}");

    // 2. AllowedIPs = the Docker subnet, Table = auto: wg-quick fails and removes wg0.
    let t1 = Instant::now();
    let conf = w.write_conf(&w.client_conf(&[], DOCKER_ALLOWED_IPS));
    let out = w.up(&conf);
    timing("wg-quick up (fails)", t1);
    let stderr = err(&out);
    eprintln!(
        "OBSERVED wg-quick up, AllowedIPs = {DOCKER_ALLOWED_IPS}, Table = auto: {}; stderr:\n{stderr}",
        out.status
    );
    assert!(!out.status.success(), "wg-quick up succeeded over the bridge's route:{}", w.logs());
    let lines: Vec<&str> = stderr.lines().collect();
    let failed = lines.iter().position(|l| *l == "RTNETLINK answers: File exists");
    let failed = failed.unwrap_or_else(|| panic!("no `RTNETLINK answers: File exists` in:\n{stderr}"));
    assert_eq!(
        lines[..failed].iter().rev().find(|l| l.starts_with("[#] ")),
        Some(&"[#] ip -4 route add 172.20.0.0/16 dev wg0"),
        "the command that failed:\n{stderr}"
    );
    // The IPv6 route went in first (wg-quick adds the longest prefixes first; a kernel /64 at
    // metric 256 does not block one at metric 1024), then everything was deleted with wg0.
    assert!(stderr.contains("[#] ip -6 route add fd00:ac14::/64 dev wg0\n"), "{stderr}");
    assert!(stderr.contains(&format!("[#] ip link delete dev {IFACE}\n")), "{stderr}");
    assert!(!w.has_wg0(), "wg0 survived the failed wg-quick up");
    assert!(w.laptop_wireguard_go().is_empty(), "wireguard-go survived the failed wg-quick up");
    let after = w.laptop_table();
    assert_eq!(after, before, "the table after the failed wg-quick up");
    assert!(laptop.reaches(CONTAINER), "after the failed up, the container does not answer");
    assert_eq!(laptop.route_dev(OFFICE), BRIDGE, "after the failed up, {OFFICE}");
    eprintln!("OBSERVED after the failed up: no {IFACE}, no wireguard-go, the table exactly as before");

    // 3. Control: the office host alone (a /32 and a /128, which no route is in the way of).
    let t2 = Instant::now();
    let office_only = format!("{OFFICE}/32, {OFFICE6}/128");
    let conf = w.write_conf(&w.client_conf(&[], &office_only));
    let out = w.up(&conf);
    timing("wg-quick up (office host only)", t2);
    assert!(out.status.success(), "wg-quick up, AllowedIPs = {office_only}: {}\n{}", out.status, w.logs());
    assert!(w.has_wg0(), "no wg0 after wg-quick up");
    let during = w.laptop_table();
    eprintln!("OBSERVED wg-quick up, AllowedIPs = {office_only}: {}; table:\n{during}", out.status);
    for addr in [OFFICE, OFFICE6] {
        assert_eq!(laptop.route_dev(addr), IFACE, "AllowedIPs = {office_only}, {addr}");
        assert!(laptop.reaches(addr), "the office host {addr} does not answer over wg0:{}", w.logs());
    }
    for addr in [CONTAINER, CONTAINER6] {
        assert_eq!(laptop.route_dev(addr), BRIDGE, "AllowedIPs = {office_only}, {addr}");
        assert!(laptop.reaches(addr), "AllowedIPs = {office_only}, the container {addr} does not answer");
    }
    let handshake = common::stdout(&w.wg_show(&["latest-handshakes"]));
    let hs: u64 = handshake.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or(0);
    assert!(hs > 0, "no handshake: {handshake}");
    eprintln!("OBSERVED the office host {OFFICE} and {OFFICE6} answer over {IFACE}; the container still answers");
    let t3 = Instant::now();
    let out = w.down(&conf);
    timing("wg-quick down", t3);
    assert!(out.status.success(), "wg-quick down: {}\n{}", out.status, w.logs());
    assert!(!w.has_wg0(), "wg0 after wg-quick down");
    assert_eq!(w.laptop_table(), before, "the table after wg-quick down (office host only)");
    eprintln!("OBSERVED wg-quick down: {}; the table exactly as before", out.status);

    // 4. Table = off with the Docker subnet: up, but nothing from AllowedIPs is routed to wg0.
    let conf = w.write_conf(&w.client_conf(&["Table = off"], DOCKER_ALLOWED_IPS));
    let out = w.up(&conf);
    assert!(out.status.success(), "wg-quick up, Table = off: {}\n{}", out.status, w.logs());
    assert!(w.has_wg0(), "no wg0 after wg-quick up (Table = off)");
    let allowed = common::stdout(&w.wg_show(&["allowed-ips"]));
    assert_eq!(allowed.trim(), format!("{}\t172.20.0.0/16 fd00:ac14::/64", w.server_public), "wg show wg0 allowed-ips");
    let during = w.laptop_table();
    eprintln!(
        "OBSERVED wg-quick up, Table = off: {}; wg show wg0 allowed-ips: {allowed:?}; table:\n{during}",
        out.status
    );
    assert!(!during.lines().any(|l| l.starts_with("172.20.") && l.contains(IFACE)), "{during}");
    for addr in [OFFICE, OFFICE6] {
        let dev = laptop.route_dev(addr);
        assert_eq!(dev, BRIDGE, "Table = off, {addr}");
        assert!(!laptop.ping_once(addr), "Table = off, the office host {addr} answers");
        eprintln!("OBSERVED Table = off: route get {addr} -> {dev}; the office host does not answer");
    }
    assert!(laptop.reaches(CONTAINER), "Table = off, the container does not answer");
    let out = w.down(&conf);
    assert!(out.status.success(), "wg-quick down (Table = off): {}\n{}", out.status, w.logs());
    assert!(!w.has_wg0(), "wg0 after wg-quick down (Table = off)");
    assert_eq!(w.laptop_table(), before, "the table after wg-quick down (Table = off)");
    eprintln!("OBSERVED wg-quick down (Table = off): {}; the table exactly as before", out.status);
    timing("wg-quick without vpnfix", t0);
}

/// The `[Interface]` lines of examples/wireguard/wg0.conf that vpnfix needs (`Table = off`,
/// `PostUp`, `PreDown`), calling the binary under test with the test's own state directory, no
/// configuration file, no syslog, no engine and no watcher; with `piped`, PostUp as the kernel
/// module's users write it (`wg show %i allowed-ips | vpnfix wg-quick up %i -`).
fn vpnfix_lines(w: &WgWorld, piped: bool) -> Vec<String> {
    let shipped = include_str!("../examples/wireguard/wg0.conf");
    let call = format!(
        "VPNFIX_STATE_DIR={} VPNFIX_CONF_FILE=/nonexistent/vpnfix.conf VPNFIX_SYSLOG=off VPNFIX_WATCH=false \
         DOCKER_HOST=unix:///nonexistent/docker.sock {}",
        w.path("state").display(),
        common::vpnfix_bin()
    );
    let mut lines: Vec<String> = shipped
        .lines()
        .filter(|l| l.starts_with("Table") || l.starts_with("PostUp") || l.starts_with("PreDown"))
        .map(|l| l.replace("/usr/local/bin/vpnfix", &call))
        .collect();
    assert_eq!(lines.len(), 3, "examples/wireguard/wg0.conf lost a line: {lines:?}");
    if piped {
        lines[1] = format!("PostUp = wg show %i allowed-ips | {call} wg-quick up %i -");
    }
    lines
}

/// With vpnfix (`Table = off`, its PostUp and PreDown): wg-quick comes up, the office host answers
/// over wg0 in both families, the container over the bridge, and `wg-quick down` leaves the table
/// exactly as before; the same with AllowedIPs piped in from `wg show`.
#[test]
#[ignore = "needs root"]
fn wg_quick_with_vpnfix_reaches_both_sides_and_restores_the_table() {
    require_root("wg_quick_with_vpnfix_reaches_both_sides_and_restores_the_table");
    let t0 = Instant::now();
    let w = WgWorld::new();
    let laptop = &w.laptop;
    for addr in [CONTAINER, CONTAINER6] {
        assert!(laptop.reaches(addr), "before, the laptop does not reach the container at {addr}");
    }
    let before = w.laptop_table();
    let state = w.path("state");
    for piped in [false, true] {
        let lines = vpnfix_lines(&w, piped);
        let conf =
            w.write_conf(&w.client_conf(&lines.iter().map(String::as_str).collect::<Vec<_>>(), DOCKER_ALLOWED_IPS));
        let up = w.up(&conf);
        let log = err(&up);
        assert!(up.status.success(), "wg-quick up (piped {piped}) failed:\n{log}\n{}", w.logs());
        common::e2e::assert_no_failure(&log);
        let during = w.laptop_table();
        eprintln!("OBSERVED wg-quick up with vpnfix (piped {piped}), table:\n{during}");
        assert!(during.lines().any(|l| l == BRIDGE_ROUTE), "the bridge lost its route:\n{during}");
        for (addr, dev) in [(CONTAINER, BRIDGE), (CONTAINER6, BRIDGE), (OFFICE, IFACE), (OFFICE6, IFACE)] {
            assert_eq!(laptop.route_dev(addr), dev, "ip route get {addr}\n{during}\n{log}");
            assert!(laptop.reaches(addr), "{addr} does not answer over {dev}\n{log}\n{}", w.logs());
        }
        assert!(state.join("wg0.json").exists(), "no record for wg0:\n{log}");
        let down = w.down(&conf);
        assert!(down.status.success(), "wg-quick down failed:\n{}", err(&down));
        common::e2e::assert_no_failure(&err(&down));
        assert_eq!(w.laptop_table(), before, "the table after wg-quick down (piped {piped})\n{}", err(&down));
        assert!(!state.join("wg0.json").exists(), "wg0's record outlives wg-quick down");
    }
    timing("wg-quick with vpnfix", t0);
}
