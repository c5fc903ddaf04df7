//! Real OpenVPN worlds for the end-to-end tests: offices behind VPN servers, and a laptop that
//! runs a real dockerd and the OpenVPN client, each in a network namespace made per test and
//! removed on drop even when the test fails. Nothing touches the machine's own namespace, and
//! no namespace has a default route, so no packet leaves the ones made here.
//!
//! Site n (0 or 1) meets the laptop on 192.0.2.0/24 (n = 0) or 198.51.100.0/24 (n = 1), server
//! .10, laptop .20 (`wan<n>` on the laptop). Its VPN is 10.(8+n).0.0/24 and, when the site has
//! IPv6, fd00:(8+n)::/64; the client's device is `tun<n>`. The office hosts share one veth
//! behind the server, which owns the first address of each office subnet and forwards.

mod docker;
mod probe;

use super::{run, vpnfix_copy, Dockerd, Netns, TempDir, NEXT};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What OpenVPN prints once the tunnel and its routes (and route-up) are done.
const READY: &str = "Initialization Sequence Completed";

/// Server and laptop addresses of each site's link.
const WANS: [(&str, &str); 2] = [("192.0.2.10", "192.0.2.20"), ("198.51.100.10", "198.51.100.20")];

impl Netns {
    /// Creates `vfe-<pid>-<n>-<role>` with loopback up (named for `ip netns list`).
    pub fn tagged(role: &str) -> Netns {
        let name = format!("vfe-{}-{}-{role}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name, children: Vec::new() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (net.* sysctls are per namespace).
    pub fn sysctl(&self, setting: &str) {
        run(self.cmd("sysctl").args(["-qw", setting]));
    }

    /// The names of its links.
    pub fn links(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap();
        v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
    }
}

/// vpnfix's routes (protocol 86) in the main table, IPv4 then IPv6, as sorted `dst dev` lines.
pub fn own_routes(ns: &Netns) -> Vec<String> {
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        let out = ns.ip(&["-j", fam, "route", "show", "table", "main", "proto", "86"]);
        let routes: serde_json::Value = serde_json::from_str(&out).unwrap();
        for r in routes.as_array().unwrap() {
            // `ip` prints host routes without their length.
            let dst = r["dst"].as_str().unwrap();
            let len = match (dst.contains('/'), fam) {
                (true, _) => "",
                (false, "-4") => "/32",
                (false, _) => "/128",
            };
            v.push(format!("{dst}{len} {}", r["dev"].as_str().unwrap()));
        }
    }
    v.sort();
    v
}

/// The first address of `addr`'s subnet of length `len` (the server's side of an office subnet).
fn first_host(addr: &str, len: u32) -> String {
    match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Ipv4Addr::from((u32::from(a) & m) + 1).to_string()
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Ipv6Addr::from((u128::from(a) & m) + 1).to_string()
        }
    }
}

/// Makes `ca.crt`, `server.{crt,key}` (serverAuth) and `client.{crt,key}` (clientAuth) in
/// `dir`, all EC prime256v1, valid two days.
pub fn make_pki(dir: &Path) {
    let openssl = |args: String| run(Command::new("openssl").current_dir(dir).args(args.split(' ')));
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(format!("req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=vpnfix-e2e-ca"));
    for (name, eku) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={eku}\n");
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
        let ca = "-CA ca.crt -CAkey ca.key -CAcreateserial -days 2";
        openssl(format!("x509 -req -in {name}.csr {ca} -out {name}.crt -extfile {name}.ext"));
    }
}

// ----------------------------------------------------------------------------- OpenVPN ----

/// An `openvpn` process we started (not daemonized: `ip netns exec` execs it, so the child is
/// OpenVPN itself). SIGTERMed, then SIGKILLed, on drop.
pub struct Openvpn {
    child: Child,
    /// Its `--log` file (OpenVPN's lines and the scripts' stderr).
    pub log: PathBuf,
    /// Its tun device.
    pub dev: String,
    exited: bool,
}

impl Openvpn {
    /// `ip netns exec NS openvpn --config CONF --log LOG`.
    pub fn start(ns: &Netns, conf: &Path, log: &Path, dev: &str) -> Openvpn {
        let child = ns
            .cmd("openvpn")
            .arg("--config")
            .arg(conf)
            .arg("--log")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own, as a service manager gives it: a test can signal the
            // whole group at once, as systemd stops `openvpn-client@`.
            .process_group(0)
            .spawn()
            .expect("openvpn starts");
        Openvpn { child, log: log.to_path_buf(), dev: dev.to_string(), exited: false }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (≤ 20 s) until the log says READY `count` times; Err(why) if it exits or times out.
    pub fn wait_ready(&mut self, count: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log_text().matches(READY).count() < count {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.exited = true;
                return Err(format!("openvpn ({}) exited with {st} before ready", self.dev));
            }
            if Instant::now() > deadline {
                return Err(format!("openvpn ({}) not ready #{count} after 20 s", self.dev));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Sends a signal (`TERM`, `USR1`, …) by pid.
    pub fn signal(&self, sig: &str) {
        run(Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]));
    }

    /// Sends a signal to its whole process group (OpenVPN and whatever it started there).
    pub fn signal_group(&self, sig: &str) {
        run(Command::new("kill").args([&format!("-{sig}"), "--", &format!("-{}", self.child.id())]));
    }

    /// Waits (≤ 20 s) until OpenVPN has exited.
    pub fn wait_exit(mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "openvpn did not exit in 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.exited = true;
    }

    /// SIGTERM, and waits (≤ 20 s) while OpenVPN runs route-pre-down and down and exits.
    pub fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "openvpn did not exit in 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.exited = true;
    }

    /// `kill -9`: no down scripts; the kernel closes the tun device, and with it its routes.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for Openvpn {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------- sites ----

/// What a VPN server pushes and which office hosts sit behind it.
pub struct SiteSpec<'a> {
    /// `push` arguments, e.g. `route 172.20.0.0 255.255.0.0` or `route-ipv6 fd42:20::/48`.
    pub pushes: &'a [&'a str],
    /// Office hosts with their subnet length, e.g. `172.20.2.52/24`, `fd42:20:0:1::52/64`.
    pub hosts: &'a [&'a str],
}

impl SiteSpec<'_> {
    fn v6(&self) -> bool {
        self.pushes.iter().chain(self.hosts).any(|s| s.contains(':'))
    }
}

/// One VPN server and the office behind it.
pub struct Site {
    /// The VPN server's namespace (`wan` to the laptop, `lan` to the office).
    pub server: Netns,
    /// The office: every host address on one veth (`uplink`).
    pub office: Netns,
}

impl Site {
    /// Wires server and office to the laptop (link `wan<n>` there) with site n's addresses.
    fn build(n: usize, spec: &SiteSpec, laptop: &Netns) -> Site {
        let (server, office) = (Netns::tagged(&format!("server{n}")), Netns::tagged(&format!("office{n}")));
        let (s, l) = WANS[n];
        let wan = format!("wan{n}");
        server.ip(&["link", "add", "wan", "type", "veth", "peer", "name", &wan, "netns", &laptop.name]);
        server.ip(&["link", "add", "lan", "type", "veth", "peer", "name", "uplink", "netns", &office.name]);
        server.ip(&["addr", "add", &format!("{s}/24"), "dev", "wan"]);
        laptop.ip(&["addr", "add", &format!("{l}/24"), "dev", &wan]);
        let mut gateways: Vec<String> = Vec::new();
        for h in spec.hosts {
            let (addr, len) = h.split_once('/').unwrap();
            let gw = first_host(addr, len.parse().unwrap());
            // IPv6 without DAD: usable at once.
            let nodad: &[&str] = if gw.contains(':') { &["nodad"] } else { &[] };
            office.ip(&[&["addr", "add", h, "dev", "uplink"], nodad].concat());
            if !gateways.contains(&gw) {
                server.ip(&[&["addr", "add", &format!("{gw}/{len}"), "dev", "lan"], nodad].concat());
                gateways.push(gw);
            }
        }
        for (ns, dev) in [(&server, "wan"), (&server, "lan"), (&office, "uplink"), (laptop, wan.as_str())] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        // The office answers the VPN's clients through the server.
        if let Some(gw) = gateways.iter().find(|g| !g.contains(':')) {
            office.ip(&["route", "add", &format!("10.{}.0.0/24", 8 + n), "via", gw]);
        }
        if let Some(gw) = gateways.iter().find(|g| g.contains(':')) {
            office.ip(&["-6", "route", "add", &format!("fd00:{}::/64", 8 + n), "via", gw]);
        }
        server.sysctl("net.ipv4.ip_forward=1");
        if spec.v6() {
            server.sysctl("net.ipv6.conf.all.forwarding=1");
        }
        Site { server, office }
    }
}

/// The server configuration of site n (a TLS server, `topology subnet`, the site's pushes).
fn server_conf(n: usize, spec: &SiteSpec, pki: &Path) -> String {
    let mut c = format!(
        "dev tun0\ntopology subnet\nserver 10.{v}.0.0 255.255.255.0\nproto udp\nport 1194\nlocal {s}\n\
         ca {p}/ca.crt\ncert {p}/server.crt\nkey {p}/server.key\ndh none\nverb 3\n",
        v = 8 + n,
        s = WANS[n].0,
        p = pki.display()
    );
    if spec.v6() {
        c += &format!("server-ipv6 fd00:{}::/64\n", 8 + n);
    }
    for p in spec.pushes {
        c += &format!("push \"{p}\"\n");
    }
    c
}

// ------------------------------------------------------------------------------- world ----

/// A laptop with a real dockerd, the sites it can connect to, and their running servers.
/// Field order is drop order: servers, dockerd, the laptop, the sites, the files.
pub struct World {
    servers: Vec<Openvpn>,
    /// The laptop's dockerd.
    pub docker: Dockerd,
    /// The laptop.
    pub laptop: Netns,
    /// The sites, by number.
    pub sites: Vec<Site>,
    /// Certificates, configurations, logs and vpnfix's state directory.
    pub dir: TempDir,
    /// Container processes left running after dockerd was killed: killed by pid on drop.
    orphans: Vec<String>,
    configs: Cell<usize>,
    /// Whether a failure message already carries the logs (then drop does not repeat them).
    logs_shown: Cell<bool>,
}

impl World {
    /// The laptop (dockerd running, busybox imported as `local/busybox`) and one running
    /// OpenVPN server per site.
    pub fn new(specs: &[SiteSpec]) -> World {
        World::build(specs, false)
    }

    /// The same, with the laptop's dockerd running its iptables rules (NAT and forwarding), as a
    /// real laptop's does: what containers need to reach anything beyond the host.
    pub fn with_docker_nat(specs: &[SiteSpec]) -> World {
        World::build(specs, true)
    }

    fn build(specs: &[SiteSpec], nat: bool) -> World {
        let dir = TempDir::new("e2e");
        let laptop = Netns::tagged("laptop");
        let docker = if nat { Dockerd::start_nat(&laptop) } else { Dockerd::start(&laptop) };
        docker.import_busybox("local/busybox");
        make_pki(dir.path());
        let sites = specs.iter().enumerate().map(|(n, s)| Site::build(n, s, &laptop)).collect();
        let mut w = World {
            servers: Vec::new(),
            docker,
            laptop,
            sites,
            dir,
            orphans: Vec::new(),
            configs: Cell::new(0),
            logs_shown: Cell::new(false),
        };
        for (n, spec) in specs.iter().enumerate() {
            let conf = w.dir.path().join(format!("server{n}.conf"));
            std::fs::write(&conf, server_conf(n, spec, w.dir.path())).unwrap();
            let log = w.dir.path().join(format!("server{n}.log"));
            let mut s = Openvpn::start(&w.sites[n].server, &conf, &log, "tun0");
            let ready = s.wait_ready(1);
            w.servers.push(s);
            ready.unwrap_or_else(|e| panic!("server {n}: {e}\n{}", w.logs()));
        }
        w
    }

    /// vpnfix's state directory for every tunnel of the laptop.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The client configuration for site n: its pushes pulled into `tun<n>`, `extra` lines,
    /// and with `vpnfix` the lines of openvpn/vpnfix.conf (the binary under test) plus the
    /// test's state directory and dockerd.
    pub fn client_conf(&self, n: usize, vpnfix: bool, extra: &[&str]) -> String {
        let p = self.dir.path().display();
        let mut c = format!(
            "client\ndev tun{n}\nproto udp\nremote {} 1194\nnobind\nca {p}/ca.crt\ncert {p}/client.crt\n\
             key {p}/client.key\nremote-cert-tls server\nverb 3\n",
            WANS[n].0
        );
        for l in extra {
            c += &format!("{l}\n");
        }
        if vpnfix {
            // OpenVPN runs the hooks as `user nobody` in some scenarios: a copy that user reaches.
            // Copied once: a later copy over it could meet a hook still running it (ETXTBSY).
            let mut bin = self.dir.path().join("bin/vpnfix");
            if !bin.exists() {
                bin = vpnfix_copy(&self.dir.path().join("bin"));
            }
            let bin = bin.display().to_string();
            let shipped = include_str!("../../openvpn/vpnfix.conf");
            for l in shipped.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
                c += &format!("{}\n", l.replace("/usr/local/bin/vpnfix", &bin));
            }
            for hook in ["route-up", "route-pre-down", "down"] {
                let line = format!("\n{hook} {bin}\n");
                assert!(c.contains(&line), "openvpn/vpnfix.conf no longer has `{hook} /usr/local/bin/vpnfix`");
            }
            c += &format!("setenv VPNFIX_STATE_DIR {}\n", self.state_dir().display());
            let set: Vec<(String, String)> = extra
                .iter()
                .filter_map(|l| l.strip_prefix("setenv ")?.split_once(' '))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, v) in super::own_config_and_syslog(&set).into_iter().skip(set.len()) {
                c += &format!("setenv {k} {v}\n");
            }
            c += &format!("setenv DOCKER_HOST {}\n", self.docker.host());
        }
        c
    }

    /// The client lines that load vpnfix as OpenVPN's plugin instead of its scripts: the library
    /// under test with the binary under test as its helper and `settings` (`VPNFIX_KEY=value`)
    /// on the `plugin` line; the world's state directory, a configuration file and syslog of the
    /// test's own, and the world's dockerd as `setenv` lines. No `script-security`: a plugin
    /// needs none. Both are copies that `user nobody` may read, as a package installs them (a
    /// SIGHUP makes OpenVPN load its plugins again after the drop).
    pub fn plugin_lines(&self, settings: &[&str]) -> Vec<String> {
        let mut bin = self.dir.path().join("bin/vpnfix");
        if !bin.exists() {
            bin = vpnfix_copy(&self.dir.path().join("bin"));
        }
        let so = self.dir.path().join("bin/vpnfix.so");
        if !so.exists() {
            std::fs::copy(super::plugin_so(), &so).unwrap();
        }
        let mut lines = vec![format!("plugin {} {} {}", so.display(), bin.display(), settings.join(" "))];
        lines.push(format!("setenv VPNFIX_STATE_DIR {}", self.state_dir().display()));
        for (k, v) in super::own_config_and_syslog(&[]) {
            lines.push(format!("setenv {k} {v}"));
        }
        lines.push(format!("setenv DOCKER_HOST {}", self.docker.host()));
        lines
    }

    /// Starts the laptop's client for site n and waits for "Initialization Sequence Completed".
    pub fn connect(&self, n: usize, vpnfix: bool, extra: &[&str]) -> Openvpn {
        let k = self.configs.replace(self.configs.get() + 1);
        let conf = self.dir.path().join(format!("client{n}-{k}.conf"));
        std::fs::write(&conf, self.client_conf(n, vpnfix, extra)).unwrap();
        let log = self.dir.path().join(format!("client{n}-{k}.log"));
        let mut c = Openvpn::start(&self.laptop, &conf, &log, &format!("tun{n}"));
        if let Err(e) = c.wait_ready(1) {
            panic!("client {n}: {e}\n{}", self.logs());
        }
        c
    }

    /// Waits for the READY line number `count` (after a SIGUSR1 restart, say).
    pub fn wait_ready(&self, c: &mut Openvpn, count: usize) {
        if let Err(e) = c.wait_ready(count) {
            panic!("{e}\n{}", self.logs());
        }
    }

    /// The last 60 lines of every OpenVPN log (servers and clients), for failure messages.
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        super::log_tails(self.dir.path())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("OpenVPN logs of the failed world:{}", self.logs());
        }
        for pid in &self.orphans {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}
