//! The phases and worlds of the end-to-end tests (tests/e2e_*.rs): connect without vpnfix and
//! show the failure, connect with it and show the fix, disconnect and compare the table; the
//! seed world of compose project milvus behind site 0.

use super::ovpn::{own_routes, Openvpn, SiteSpec, World};
use super::SEED_VPN;
use std::time::Instant;

/// The seed push and the office host behind it.
pub const PUSH_172_20: &str = "route 172.20.0.0 255.255.0.0";
pub const OFFICE: &str = "172.20.2.52";
pub const MILVUS: &str = "milvus_default";

/// Runs as OpenVPN's `user nobody` / `group nogroup` (down scripts run unprivileged).
pub const NOBODY: [&str; 2] = ["user nobody", "group nogroup"];

/// `dst dev` lines for blocks on one device, sorted as `own_routes` gives them.
pub fn on(dev: &str, blocks: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = blocks.iter().map(|b| format!("{b} {dev}")).collect();
    v.sort();
    v
}

/// The seed blocks of another /16 (`172.18.` for 172.18.0.0/16).
pub fn seed_blocks_of(net: &str) -> Vec<String> {
    SEED_VPN.iter().map(|b| b.replacen("172.20.", net, 1)).collect()
}

pub fn timing(name: &str, t0: Instant) {
    eprintln!("TIMING {name}: {:.1} s", t0.elapsed().as_secs_f64());
}

// ----------------------------------------------------------------------------- phases ----

/// Pings every (address, device) before any VPN (which also fills the neighbour table) and
/// returns the laptop's table that every disconnect must restore.
pub fn baseline(w: &World, local: &[(&str, &str)]) -> String {
    w.assert_reached(local);
    w.laptop.table()
}

/// Connects site n WITHOUT vpnfix: each (address, device) of `cut_off` leaves via that wrong
/// device and gets no answer, while each of `fine` is reached (so the tunnel itself works).
/// Prints what was seen, disconnects, checks OpenVPN alone restored the table, and returns the
/// routes (`ip route`, `ip -6 route`, without link-local ones) as they were while connected.
pub fn without_vpnfix(
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
pub fn assert_cut_off(w: &World, label: &str, cut_off: &[(&str, &str)]) {
    let addrs: Vec<&str> = cut_off.iter().map(|(a, _)| *a).collect();
    for (p, (_, dev)) in w.assert_cut_off(label, &addrs).iter().zip(cut_off) {
        assert_eq!(&p.dev, dev, "[{label}] without vpnfix: {p}\n{}", w.logs());
    }
}

/// Prints and returns the laptop's routes, without link-local ones.
pub fn observe_routes(w: &World, label: &str) -> Vec<String> {
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
pub fn with_vpnfix(w: &World, extra: &[&str], reach: &[(&str, &str)], routes: &[String], docker_up: bool) -> Openvpn {
    let c = w.connect(0, true, extra);
    assert_quiet(&c.log_text(), docker_up);
    assert_eq!(own_routes(&w.laptop), routes, "vpnfix's routes\n{}", w.logs());
    w.assert_reached(reach);
    c
}

/// The client log shows no failed or unverified route and (unless `docker_up` is false, when
/// exactly one is expected) no warning that Docker could not be asked.
pub fn assert_quiet(log: &str, docker_up: bool) {
    assert_no_failure(log);
    let kernel_only = log.matches("planning with the kernel's facts only").count();
    assert_eq!(kernel_only, usize::from(!docker_up), "Docker warnings:\n{log}");
}

/// No vpnfix line of the log reports a failure.
pub fn assert_no_failure(log: &str) {
    for bad in ["still leaves via", "cannot add", "cannot delete", "cannot verify", "internal error", "refusing"] {
        assert!(!log.contains(bad), "vpnfix said {bad:?}:\n{log}");
    }
}

/// SIGTERM (route-pre-down, OpenVPN's deletes, down): the table must be exactly `before`, the
/// tunnel's state gone, and no removal may have failed. Returns the client's whole log.
pub fn disconnect(w: &World, c: Openvpn, before: &str) -> String {
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

/// However tun0 ended (no disconnect hook, maybe): waits until the table is exactly `before` and
/// no process of `left` (the watchers, the plugin's helpers) remains, and asserts the record is
/// gone too.
pub fn assert_ended(w: &World, before: &str, label: &str, left: impl Fn() -> Vec<String>) {
    assert!(
        super::until(|| w.laptop.table() == before && left().is_empty()),
        "[{label}] after the tunnel ended: vpnfix's routes {:#?}, processes left {:?}\n{}\n{}",
        own_routes(&w.laptop),
        left(),
        watcher_log(w),
        w.logs()
    );
    assert!(!w.state_dir().join("tun0.json").exists(), "[{label}] the record outlives the tunnel");
}

// ------------------------------------------------------------------------------ worlds ----

/// The seed world: compose project milvus, network milvus_default 172.20.0.0/16 with
/// milvus-etcd, milvus-minio and milvus-standalone; site 0 pushes `pushes`, and the office
/// host 172.20.2.52/24 sits behind it.
pub struct Milvus {
    pub w: World,
    pub bridge: String,
    pub containers: Vec<String>,
}

pub fn milvus(pushes: &[&str]) -> Milvus {
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
    pub fn add(&mut self, name: &str, extra: &[&str]) {
        let ip = self.w.container("milvus", MILVUS, name, extra);
        self.containers.push(ip);
    }

    /// Every container over the bridge.
    pub fn local(&self) -> Vec<(&str, &str)> {
        self.containers.iter().map(|c| (c.as_str(), self.bridge.as_str())).collect()
    }

    /// Every container over `dev` (where OpenVPN 2.6's prepended route sends them).
    pub fn containers_via<'a>(&'a self, dev: &'a str) -> Vec<(&'a str, &'a str)> {
        self.containers.iter().map(|c| (c.as_str(), dev)).collect()
    }

    /// The office host over tun0 and every container over the bridge.
    pub fn both_sides(&self) -> Vec<(&str, &str)> {
        let mut v = vec![(OFFICE, "tun0")];
        v.extend(self.local());
        v
    }

    /// The seed plan under OpenVPN 2.6 (pushed route prepended): the 8 tunnel blocks and the
    /// kept 172.20.0.0/24 on the bridge.
    pub fn seed_routes(&self) -> Vec<String> {
        let mut v = on("tun0", &SEED_VPN);
        v.push(format!("172.20.0.0/24 {}", self.bridge));
        v.sort();
        v
    }
}

/// Borrowed views of owned strings, for the helpers that take `&[&str]`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ----------------------------------------------------------------------------- watcher ----

/// The client lines that make route-up start the watcher, logging to a syslog socket of the
/// world's whose messages are copied to `watcher.log` (shown with OpenVPN's logs on failure).
pub fn watching(w: &World) -> Vec<String> {
    let sock = w.dir.path().join("syslog.sock");
    if !sock.exists() {
        let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        let path = w.dir.path().join("watcher.log");
        std::thread::spawn(move || {
            let mut buf = vec![0; 65536];
            while let Ok(n) = rx.recv(&mut buf) {
                use std::io::Write;
                let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) else { return };
                let _ = writeln!(f, "{}", String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    vec!["setenv VPNFIX_WATCH true".into(), format!("setenv VPNFIX_SYSLOG {}", sock.display())]
}

/// What vpnfix sent to the world's syslog so far (the watcher's lines, and the hooks').
pub fn watcher_log(w: &World) -> String {
    std::fs::read_to_string(w.dir.path().join("watcher.log")).unwrap_or_default()
}

/// The pids of the watchers running in the laptop's namespace.
pub fn watchers(w: &World) -> Vec<String> {
    super::watchers_in(&w.laptop)
}

/// The routes of `ip -j route` + `ip -j -6 route` output but those on containers' veths.
pub fn without_veths(table: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for family in serde_json::Deserializer::from_str(table).into_iter::<serde_json::Value>() {
        let serde_json::Value::Array(routes) = family.unwrap() else { panic!("not ip -j output: {table}") };
        out.extend(routes.into_iter().filter(|r| !r["dev"].as_str().unwrap_or_default().starts_with("veth")));
    }
    assert!(out.iter().any(|r| r["dev"] == "wan0"), "{table}");
    out
}
