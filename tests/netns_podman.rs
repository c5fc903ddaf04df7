//! vpnfix against a real, private Podman 4.3 (netavark and CNI backends) in a laptop namespace,
//! and vpnfix's manual mode (tunnels and pushes read from the kernel).
//!
//! Proved here:
//! - a Podman network is matched to its Linux bridge (`podman1` / `cni-podman1`) by the kernel's
//!   facts: with OpenVPN 2.6's pushed 172.20.0.0/16 and fd00:ac14::/48 over Podman's
//!   172.20.0.0/16 + fd00:ac14::/64, the container at 172.20.5.10 (outside the /24 around the
//!   gateway) stays on the bridge and answers a real ping, while 172.20.2.52 goes to tun0;
//!   `plan --json` names `podman network pdtnet` and its containers; route-down restores the
//!   tables exactly;
//! - the control: without the engine's facts (dead DOCKER_HOST) the same route-up sends
//!   172.20.5.10 into the tunnel, which is what users saw before;
//! - manual mode: `vpnfix plan` with no flags and no hook environment plans the routes the
//!   kernel has through tun0 (not its default half), as `--dev tun0 --route …` does; with no
//!   tunnel up it says so in one line, and `suggest --route` still proposes a move;
//! - `suggest` gives Podman's commands (`podman network rm/create`) and no Docker advice;
//! - with no `DOCKER_HOST`, Docker's and Podman's usual sockets are both asked.
//!
//! Everything lives in namespaces made here; Podman, its containers and directories are removed
//! by drop guards even when an assertion fails.

mod common;

use common::laptop::bridge_host;
use common::podman::{Backend, Podman};
use common::{env, require_root, stderr, stdout, Netns, TempDir};

/// OpenVPN's arguments to its down script for this tunnel.
const DOWN_ARGS: [&str; 6] = ["tun0", "1500", "0", "10.0.1.65", "10.0.1.66", "init"];

/// A laptop: tun0 (10.0.1.65 peer 10.0.1.66, fd00:8::2/64) and a private Podman with network
/// pdtnet. Field order is drop order: Podman goes before its namespace.
struct World {
    podman: Podman,
    ns: Netns,
    tmp: TempDir,
}

/// The world with containers pdt-c1 (address Podman picks) and pdt-c3 (172.20.5.10,
/// fd00:ac14::5:10), then the pushed routes as OpenVPN 2.6 installs them (the IPv4 one
/// prepended to the bridge's identical route).
fn world(backend: Backend) -> World {
    let mut ns = Netns::new();
    ns.tun("tun0");
    ns.ip(&["addr", "add", "10.0.1.65", "peer", "10.0.1.66", "dev", "tun0"]);
    ns.ip(&["addr", "add", "fd00:8::2/64", "dev", "tun0", "nodad"]);
    let podman = Podman::start(&ns.name, backend);
    eprintln!("podman ({backend:?}) in {} answered after {:?}", ns.name, podman.started_in);
    podman.network_create("pdtnet", "172.20.0.0/16", Some("fd00:ac14::/64"));
    podman.run("pdt-c1", "pdtnet", None);
    // Both backends give a static IPv6 address (CNI's host-local too): both families are real.
    podman.run_args("pdt-c3", "pdtnet", &["--ip", "172.20.5.10", "--ip6", "fd00:ac14::5:10"]);
    ns.ip(&["route", "prepend", "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun0"]);
    ns.ip(&["-6", "route", "add", "fd00:ac14::/48", "dev", "tun0", "metric", "256"]);
    World { podman, ns, tmp: TempDir::new("podman") }
}

impl World {
    /// The captured route-up environment (OpenVPN 2.6.14) for this tunnel and these pushes,
    /// with `DOCKER_HOST` set to `docker_host`. `script_type` empty leaves it out.
    fn hook_env(&self, script_type: &str, docker_host: &str) -> Vec<(String, String)> {
        let mut e = common::openvpn_env(script_type, "fd00:ac14::/48", self.tmp.path());
        e.push(("DOCKER_HOST".into(), docker_host.into()));
        e
    }

    /// Runs the hook; it must exit 0. Its stderr.
    fn hook(&self, script_type: &str, docker_host: &str, args: &[&str]) -> String {
        let out = self.ns.vpnfix(&self.hook_env(script_type, docker_host), args);
        assert!(out.status.success(), "{script_type}: {:?} {}", out.status, stderr(&out));
        stderr(&out)
    }

    /// `ip ARGS` inside a container's network namespace (entered from Podman's namespaces, whose
    /// /proc numbers processes as its inspect does; the image has no `ip`).
    fn inside(&self, container: &str, args: &[&str]) -> String {
        let pid = self.podman.podman_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
        let mut c = self.podman.ns_cmd("nsenter");
        let out = common::run(c.arg(format!("--net=/proc/{pid}/ns/net")).arg("ip").args(args));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Whether a real ping from the laptop reaches `addr` (IPv6 may still be in DAD: retried).
    fn pings(&self, addr: &str) -> bool {
        (0..10).any(|_| {
            let ok = self.ns.cmd("ping").args(["-c1", "-W1", addr]).output().unwrap().status.success();
            ok || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                false
            }
        })
    }
}

/// Every route of every table, both families, sorted: what "exactly as before" compares. Waits
/// until no IPv6 address is tentative: the kernel adds their local routes when DAD ends.
fn tables(ns: &Netns) -> Vec<String> {
    for _ in 0..100 {
        if ns.ip(&["-6", "addr", "show", "tentative"]).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = ns.ip(&["-4", "route", "show", "table", "all"]) + &ns.ip(&["-6", "route", "show", "table", "all"]);
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

// ------------------------------------------------------------- 1 and 2: Podman, hook ----

/// A laptop with Podman network pdtnet on the VPN's 172.20.0.0/16: after route-up the host
/// still reaches pdt-c3 at 172.20.5.10 (and fd00:ac14::5:10) on Podman's bridge, the VPN's
/// hosts go to tun0, the plan names the Podman network and its containers, and disconnect
/// leaves the tables as they were. Without Podman's facts the same hook cuts pdt-c3 off.
fn podman_network_is_matched_to_its_bridge(backend: Backend) {
    let w = world(backend);
    let bridge = w.podman.bridge_of("pdtnet");
    let want = if backend == Backend::Netavark { "podman1" } else { "cni-podman1" };
    assert_eq!(bridge, want, "podman's bridge");
    let c1 = w.podman.container_ip("pdt-c1", "pdtnet");
    let before = tables(&w.ns);
    let inside_before = w.inside("pdt-c3", &["route", "show", "table", "main"]);
    let neigh = || w.ns.ip(&["neigh", "show"]);

    // Control: without the engine's facts .5.10 is not known to be in use and goes to the VPN.
    let dead = "unix:///nonexistent/podman.sock";
    let log = w.hook("route-up", dead, &[]);
    assert!(log.contains("kernel's facts only"), "{log}");
    assert_eq!(w.ns.route_get("172.20.5.10"), "tun0", "control, neighbours:\n{}{log}", neigh());
    w.hook("down", dead, &DOWN_ARGS);
    assert_eq!(tables(&w.ns), before, "control: down must restore the tables");

    let url = w.podman.url();
    let log = w.hook("route-up", &url, &[]);
    assert!(!log.contains("kernel's facts only"), "Podman was not asked: {log}");
    assert!(!log.contains("no bridge"), "pdtnet unmatched: {log}");
    assert!(log.contains("podman network pdtnet"), "{log}");
    for (addr, dev) in [
        ("172.20.5.10", bridge.as_str()),
        (c1.as_str(), bridge.as_str()),
        ("172.20.2.52", "tun0"),
        ("172.20.255.254", "tun0"),
        ("fd00:ac14::5:10", bridge.as_str()),
        ("fd00:ac14::1:52", "tun0"),
        ("fd00:ac14:0:1::52", "tun0"),
    ] {
        assert_eq!(w.ns.route_get(addr), dev, "ip route get {addr}; log:\n{log}");
    }
    assert!(w.pings("172.20.5.10"), "ping 172.20.5.10 fails after route-up");
    assert!(w.pings("fd00:ac14::5:10"), "ping fd00:ac14::5:10 fails after route-up");
    // Inside Podman's containers too (entered through the process Podman's inspect names): the
    // VPN side via the gateway, pdt-c3's own block on-link; IPv6 is skipped with its line.
    for c in ["pdt-c1", "pdt-c3"] {
        let get = |a: &str| w.inside(c, &["route", "get", a]);
        assert!(get("172.20.2.52").contains("via 172.20.0.1 dev eth0"), "{c}: {}\n{log}", get("172.20.2.52"));
        assert!(!get("172.20.5.10").contains("via"), "{c}: {}", get("172.20.5.10"));
        // The same blocks as the host's VPN side of 172.20.0.0/16, each via the gateway.
        let dsts = |t: String| -> Vec<String> {
            let mut v: Vec<String> =
                t.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
            v.sort();
            v
        };
        let host = dsts(w.ns.ip(&["-4", "route", "show", "proto", "86", "dev", "tun0"]));
        let own = w.inside(c, &["route", "show", "proto", "86"]);
        assert_eq!(dsts(own.clone()), host, "{c}'s routes from vpnfix:\n{own}");
        assert!(own.lines().all(|l| l.contains(" via 172.20.0.1 dev eth0")), "{own}");
        assert!(w.inside(c, &["-6", "route", "show", "proto", "86"]).is_empty(), "IPv6 inside {c}");
    }
    let v6 = "containers of podman network pdtnet (fd00:ac14::/64): IPv6: Podman does not say whether it NATs IPv6";
    assert_eq!(log.matches(v6).count(), 1, "{log}");

    let out = w.ns.vpnfix(&w.hook_env("", &url), &["plan", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let conflicts = v["conflicts"].as_array().unwrap_or_else(|| panic!("{json}"));
    assert!(conflicts.len() >= 2, "an IPv4 and an IPv6 conflict: {json}");
    for c in conflicts {
        assert_eq!(c["local"]["engine"], "podman", "{c}");
        assert_eq!(c["local"]["network"], "pdtnet", "{c}");
        let names: Vec<&str> =
            c["local"]["containers"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert!(names.contains(&"pdt-c1") && names.contains(&"pdt-c3"), "{c}");
    }
    let kept: Vec<&str> =
        conflicts.iter().flat_map(|c| c["kept"].as_array().unwrap()).filter_map(|k| k.as_str()).collect();
    for k in ["172.20.5.0/24", "fd00:ac14::5:0/120"] {
        assert!(kept.contains(&k), "{k} (pdt-c3) is not kept: {json}");
    }
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{json}");
    assert!(skipped[0]["reason"].as_str().unwrap().starts_with("IPv6: Podman does not say"), "{json}");
    assert_eq!(v["inside"][0]["network"], "pdtnet", "{json}");
    let owners: Vec<&str> = v["add"].as_array().unwrap().iter().filter_map(|r| r["owner"].as_str()).collect();
    assert!(!owners.is_empty() && owners.iter().all(|o| *o == "podman network pdtnet"), "{json}");

    // The permanent fix in Podman's words: its commands and containers.conf, no Docker advice.
    let out = w.ns.vpnfix(&w.hook_env("", &url), &["suggest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in ["podman network pdtnet", "`podman network rm pdtnet && podman network create --ipv6 --subnet "] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("docker") && !text.contains("daemon.json"), "Docker advice for Podman:\n{text}");

    w.hook("down", &url, &DOWN_ARGS);
    assert_eq!(tables(&w.ns), before, "down must leave the tables exactly as before");
    let after = w.inside("pdt-c3", &["route", "show", "table", "main"]);
    assert_eq!(after, inside_before, "down must leave pdt-c3's table exactly as before");
}

/// Podman with netavark (bridge podman1).
#[test]
#[ignore = "needs root"]
fn podman_netavark_network_is_matched_to_its_bridge() {
    require_root("podman_netavark_network_is_matched_to_its_bridge");
    podman_network_is_matched_to_its_bridge(Backend::Netavark);
}

/// Podman with CNI (bridge cni-podman1).
#[test]
#[ignore = "needs root"]
fn podman_cni_network_is_matched_to_its_bridge() {
    require_root("podman_cni_network_is_matched_to_its_bridge");
    podman_network_is_matched_to_its_bridge(Backend::Cni);
}

// ------------------------------------------------------------------- 3: manual mode ----

/// `vpnfix plan --json ARGS` with no hook environment and no engine; its `add` list.
fn manual_adds(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let out = ns.vpnfix(&no_engine(), &[&["plan", "--json"][..], args].concat());
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["add"].clone()
}

fn no_engine() -> Vec<(String, String)> {
    env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
}

/// On a laptop where the VPN is up and nobody says what it pushed, `vpnfix plan` alone reads
/// the routes through tun0 from the kernel (not its 0.0.0.0/1) and plans what
/// `--dev tun0 --route …` plans: the container at 172.20.2.10 goes back to the bridge. With no
/// tunnel up it says so in one line and exits 0; `suggest --route` still proposes a move.
#[test]
#[ignore = "needs root"]
fn manual_mode_reads_tunnels_and_pushes_from_the_kernel() {
    require_root("manual_mode_reads_tunnels_and_pushes_from_the_kernel");
    let ns = bridge_host();
    for r in ["172.20.2.0/24", "10.99.0.0/16", "0.0.0.0/1"] {
        ns.ip(&["route", "add", r, "dev", "tun0"]);
    }
    ns.ip(&["neigh", "add", "172.20.2.10", "lladdr", "02:00:00:00:00:10", "dev", "br-test", "nud", "permanent"]);

    let discovered = manual_adds(&ns, &[]);
    let given = manual_adds(&ns, &["--dev", "tun0", "--route", "172.20.2.0/24", "--route", "10.99.0.0/16"]);
    assert_eq!(discovered, given, "kernel's pushes vs --route");
    let adds: Vec<String> = discovered
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["dst"].as_str().unwrap(), r["dev"].as_str().unwrap()))
        .collect();
    assert_eq!(adds, ["172.20.2.10/32 br-test"]);

    let out = ns.vpnfix(&no_engine(), &["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("== tun0 (pushes: 10.99.0.0/16, 172.20.2.0/24)\n"), "{text}");
    assert!(text.contains("note: pushes were read from the kernel's table"), "{text}");
    assert!(!text.contains("0.0.0.0/1"), "a default half is no push: {text}");

    ns.ip(&["link", "del", "tun0"]);
    let out = ns.vpnfix(&no_engine(), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("no VPN tunnel is up here"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");

    let out = ns.vpnfix(&no_engine(), &["suggest", "--route", "172.20.0.0/16"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("bridge br-test 172.20.0.0/16") && text.contains("move it to"), "{text}");
}

/// With no `DOCKER_HOST`, Docker's and Podman's usual sockets are both asked, at once: the plan
/// knows the networks and containers of each engine. vpnfix runs in a private mount namespace
/// whose `/run` holds the two test engines' sockets at `/var/run/docker.sock` and
/// `/run/podman/podman.sock`; the machine's `/run` is never touched.
#[test]
#[ignore = "needs root"]
fn docker_and_podman_are_both_found_at_their_usual_sockets() {
    require_root("docker_and_podman_are_both_found_at_their_usual_sockets");
    let mut ns = Netns::new();
    ns.tun("tun0");
    let podman = Podman::start(&ns.name, Backend::Netavark);
    podman.network_create("pdtnet", "172.20.0.0/16", None);
    podman.run("pdt-c1", "pdtnet", None);
    let docker = common::Dockerd::start(&ns);
    docker.import_busybox("local/busybox");
    docker.docker(&["network", "create", "--subnet", "172.21.0.0/16", "dknet"]);
    docker.docker(&["run", "-d", "--network", "dknet", "--name", "dk-c1", "local/busybox", "sleep", "3600"]);
    let script = format!(
        "mount -n -t tmpfs tmpfs /run && mkdir -p /run/podman && touch /run/docker.sock /run/podman/podman.sock \
         && mount -n --bind {} /var/run/docker.sock && mount -n --bind {} /run/podman/podman.sock \
         && exec env -i VPNFIX_SYSLOG=off VPNFIX_CONF_FILE=/nonexistent/vpnfix.conf {} plan --json --dev tun0 --route 172.16.0.0/12",
        docker.sock().display(),
        podman.sock().display(),
        common::vpnfix_bin()
    );
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "both engines answered");
    let json = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let mut seen: Vec<String> = v["conflicts"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .map(|c| {
            let l = &c["local"];
            format!("{} {} {}", l["engine"].as_str().unwrap_or("-"), l["network"], l["containers"][0]["name"])
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["docker \"dknet\" \"dk-c1\"", "podman \"pdtnet\" \"pdt-c1\""], "{json}");
}

// ------------------------------------------------------------------ the watcher, Podman ----

/// The watcher follows Podman's events as Docker's (through its compatible API): with the hook's
/// watcher running, a container started after connect at 172.20.5.10 (outside the kept block)
/// moves off the tunnel onto podman1 and answers; when it is removed its block returns to the
/// tunnel; the watcher ends with tun0, taking vpnfix's routes with it.
#[test]
#[ignore = "needs root"]
fn the_watcher_follows_podman_containers_started_after_connect() {
    require_root("the_watcher_follows_podman");
    let mut ns = Netns::new();
    ns.tun("tun0");
    ns.ip(&["addr", "add", "10.0.1.65", "peer", "10.0.1.66", "dev", "tun0"]);
    let podman = Podman::start(&ns.name, Backend::Netavark);
    podman.network_create("pdtnet", "172.20.0.0/16", None);
    podman.run("pdt-c1", "pdtnet", None);
    ns.ip(&["route", "prepend", "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun0"]);
    let tmp = TempDir::new("podwatch");
    let mut e = common::openvpn_env("route-up", "fd00:ac14::/48", tmp.path());
    e.extend(env(&[("DOCKER_HOST", &podman.url()), ("VPNFIX_WATCH", "true")]));
    let out = ns.vpnfix(&e, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(common::until(|| common::watchers_in(&ns).len() == 1), "no watcher: {}", stderr(&out));
    assert_eq!(ns.route_get("172.20.5.10"), "tun0", "nothing there yet: the VPN's");
    podman.run("pdt-c3", "pdtnet", Some("172.20.5.10"));
    assert!(common::until(|| ns.route_get("172.20.5.10") == "podman1"), "the watcher missed Podman's start");
    let ping = ns.cmd("ping").args(["-c1", "-W2", "172.20.5.10"]).output().unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let rm = podman.podman(&["rm", "-f", "-t", "0", "pdt-c3"]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert!(common::until(|| ns.route_get("172.20.5.10") == "tun0"), "the block did not return to the VPN");
    ns.ip(&["link", "del", "tun0"]);
    assert!(common::until(|| common::watchers_in(&ns).is_empty()), "the watcher outlived tun0");
    assert_eq!(ns.ip(&["route", "show", "proto", "86"]), "");
}
