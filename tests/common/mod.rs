//! Test hosts in private network namespaces: made per test, removed on drop even when the test
//! fails. Nothing here touches the machine's own namespace, and no packet leaves the ones made.
#![allow(dead_code)] // each test binary uses part of this

mod dockerd;
pub mod e2e;
pub mod fake_docker;
pub mod fourhost;
pub mod kernel_ns;
pub mod laptop;
pub mod openconnect;
pub mod ovpn;
pub mod podman;
pub mod wireguard;

pub use dockerd::{run_with_timeout, Dockerd};

/// DESIGN.md's seed plan on the tunnel: push = bridge = 172.20.0.0/16, .1–.4 used, so
/// 172.20.0.0/24 stays local and these 8 blocks go to the VPN.
pub const SEED_VPN: [&str; 8] = [
    "172.20.1.0/24",
    "172.20.2.0/23",
    "172.20.4.0/22",
    "172.20.8.0/21",
    "172.20.16.0/20",
    "172.20.32.0/19",
    "172.20.64.0/18",
    "172.20.128.0/17",
];

/// The seed plan once 172.20.9.0/24 is kept too: 172.20.8.0/21 splits around it.
pub const WITH_9_VPN: [&str; 10] = [
    "172.20.1.0/24",
    "172.20.2.0/23",
    "172.20.4.0/22",
    "172.20.8.0/24",
    "172.20.10.0/23",
    "172.20.12.0/22",
    "172.20.16.0/20",
    "172.20.32.0/19",
    "172.20.64.0/18",
    "172.20.128.0/17",
];

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Root tests (network namespaces) are marked `#[ignore = "needs root"]`: a plain `cargo test`
/// counts them as ignored, and `cargo test -- --include-ignored` as root runs them, as CI does.
/// Run without root, they fail here: a test never passes by skipping.
pub fn require_root(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} needs root to make network namespaces: run `cargo test -- --include-ignored` as root"
    );
}

/// Mount points at or below `dir` as this process sees them, deepest first (from
/// /proc/self/mountinfo, whose octal escapes are undone): what a drop guard unmounts.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let marker = dir.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))
        .filter(|m| m == &marker || m.starts_with(&format!("{marker}/")))
        .collect();
    v.sort();
    v.reverse();
    v
}

/// Kills (SIGKILL, by pid) every process but this one whose `/proc/PID` directory `matches`:
/// what a drop guard leaves of the engines it started.
pub fn kill_where(matches: impl Fn(&Path) -> bool) {
    for pid in pids_where(matches) {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}

/// The processes (but this one) whose `/proc/PID` satisfies `matches`.
pub fn pids_where(matches: impl Fn(&Path) -> bool) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok() && name != me && matches(&e.path()) {
            out.push(name);
        }
    }
    out
}

/// Whether the process of `/proc/PID` names `marker` on its command line.
pub fn cmdline_names(proc: &Path, marker: &str) -> bool {
    String::from_utf8_lossy(&std::fs::read(proc.join("cmdline")).unwrap_or_default()).contains(marker)
}

/// Unmounts whatever is mounted at or below `dir`, then removes it without crossing into
/// another file system.
pub fn remove_private_dir(dir: &Path) {
    for m in mounts_below(dir) {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    let _ = Command::new("rm").arg("-rf").arg("--one-file-system").arg(dir).status();
}

/// OpenVPN 2.6.14's route-up environment as captured, for tun0 (10.0.1.65 peer 10.0.1.66,
/// fd00:8::2/64), pushing 172.20.0.0/16 and `ipv6_push`, with the state in `state/`;
/// `script_type` empty leaves it out.
pub fn openvpn_env(script_type: &str, ipv6_push: &str, state: &Path) -> Vec<(String, String)> {
    let mut e = env(&[
        ("dev", "tun0"),
        ("dev_type", "tun"),
        ("tun_mtu", "1500"),
        ("script_context", "init"),
        ("ifconfig_local", "10.0.1.65"),
        ("ifconfig_remote", "10.0.1.66"),
        ("ifconfig_ipv6_local", "fd00:8::2"),
        ("ifconfig_ipv6_netbits", "64"),
        ("ifconfig_ipv6_remote", "fd00:8::1"),
        ("route_vpn_gateway", "10.0.1.66"),
        ("route_network_1", "172.20.0.0"),
        ("route_netmask_1", "255.255.0.0"),
        ("route_gateway_1", "10.0.1.66"),
        ("route_ipv6_network_1", ipv6_push),
        ("route_ipv6_gateway_1", "fd00:8::1"),
        ("VPNFIX_POLICY", "split"),
    ]);
    if !script_type.is_empty() {
        e.push(("script_type".into(), script_type.into()));
    }
    e.push(("VPNFIX_STATE_DIR".into(), state.join("state").display().to_string()));
    e
}

/// What every run of vpnfix in a test gets unless the test sets it itself: a configuration file
/// of its own (which does not exist) instead of the machine's /etc/vpnfix.conf, no syslog
/// instead of the machine's /dev/log, and no watcher.
pub fn own_config_and_syslog(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = env.to_vec();
    let conf = std::env::temp_dir().join(format!("vft-no-conf-{}/vpnfix.conf", std::process::id()));
    let own = [
        ("VPNFIX_CONF_FILE", conf.display().to_string()),
        ("VPNFIX_SYSLOG", "off".to_string()),
        // A connect hook starts no watcher unless the test asks for one (tests/e2e_watch.rs).
        ("VPNFIX_WATCH", "false".to_string()),
    ];
    for (k, v) in own {
        if !out.iter().any(|(key, _)| key == k) {
            out.push((k.to_string(), v));
        }
    }
    out
}

/// The vpnfix binary under test.
pub fn vpnfix_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vpnfix")
}

/// The plugin under test: the library's `cdylib`. `cargo test` builds the library with all its
/// crate types into `deps/`, beside the binary's directory (only `cargo build` copies it up
/// next to the binary, where it may be older).
pub fn plugin_so() -> PathBuf {
    let so = Path::new(vpnfix_bin()).with_file_name("deps").join("libvpnfix.so");
    assert!(so.is_file(), "{} is missing: cargo builds the library's cdylib with the tests", so.display());
    so
}

/// The binary under test copied to `dir/vpnfix` (mode 0755, `dir` 0755 too), for whatever runs
/// it as another user: OpenVPN's hooks under `user nobody`, `setpriv`. The checkout may sit in
/// a directory only root may enter (/root, a `mktemp -d`), where nobody cannot run it in place.
pub fn vpnfix_copy(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join("vpnfix");
    std::fs::copy(vpnfix_bin(), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under /tmp.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "vft-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace and the processes started in it.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    /// Creates `vft-<pid>-<n>` with loopback up.
    pub fn new() -> Netns {
        let name = format!("vft-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name, children: Vec::new() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS …`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ip -n NS …`, returning its output whatever happens.
    pub fn ip_try(&self, args: &[&str]) -> Output {
        Command::new("ip").arg("-n").arg(&self.name).args(args).output().unwrap()
    }

    /// A command inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts a long-running process inside the namespace; it is killed on drop.
    pub fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = self.cmd(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        self.children.push(child);
    }

    /// A tun device with a process holding it open, as OpenVPN does (without one it has no
    /// carrier and its routes are "linkdown"). The holder never reads or sends a packet.
    pub fn tun(&mut self, dev: &str) {
        self.ip(&["tuntap", "add", "dev", dev, "mode", "tun"]);
        let script = format!(
            r#"open(my $f, "+<", "/dev/net/tun") or die "tun: $!"; my $r = pack("a16 s x22", "{dev}", 0x1001); ioctl($f, 0x400454ca, $r) or die "TUNSETIFF: $!"; sleep 600;"#
        );
        self.spawn("perl", &["-e", &script]);
        self.ip(&["link", "set", dev, "up"]);
        for _ in 0..100 {
            if self.ip(&["link", "show", dev]).contains("LOWER_UP") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{dev} never got carrier");
    }

    /// The main table, IPv4 and IPv6, as `ip -j` prints it: what "exactly as before" compares.
    pub fn table(&self) -> String {
        self.ip(&["-j", "route", "show", "table", "main"]) + &self.ip(&["-j", "-6", "route", "show", "table", "main"])
    }

    /// The device the kernel picks for an address (`ip route get`).
    pub fn route_get(&self, addr: &str) -> String {
        let out = self.ip(&["-j", "route", "get", addr]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["dev"].as_str().unwrap_or("(none)").to_string()
    }

    /// The device the kernel picks for `addr` (`ip route get`), or `unreachable` when there is
    /// no route.
    pub fn route_dev(&self, addr: &str) -> String {
        let out = self.ip_try(&["-j", "route", "get", addr]);
        if !out.status.success() {
            return "unreachable".into();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["dev"].as_str().unwrap_or("unreachable").to_string()
    }

    /// Whether ONE echo request to `addr` is answered within 2 s (`ping -c1 -W2`): for what must
    /// fail (one try proves it).
    pub fn ping_once(&self, addr: &str) -> bool {
        self.cmd("ping").args(["-c1", "-W2", "-n", addr]).output().is_ok_and(|o| o.status.success())
    }

    /// Whether `addr` answers one of up to three pings: for what must succeed (the first packet
    /// into a tunnel may wait for its handshake).
    pub fn reaches(&self, addr: &str) -> bool {
        (0..3).any(|_| self.ping_once(addr))
    }

    /// Runs vpnfix inside the namespace with exactly this environment (no PATH, as OpenVPN).
    pub fn vpnfix(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let mut c = self.cmd("env");
        c.arg("-i");
        c.args(own_config_and_syslog(env).iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(vpnfix_bin()).args(args);
        c.output().unwrap()
    }

    /// Runs vpnfix inside the namespace as uid/gid 65534 (OpenVPN's `user nobody`), from a copy
    /// that user can reach ([`vpnfix_copy`]).
    pub fn vpnfix_unprivileged(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let bin = TempDir::new("bin");
        let mut c = self.cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i"]);
        c.args(own_config_and_syslog(env).iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(vpnfix_copy(bin.path())).args(args);
        c.output().unwrap()
    }
}

impl Netns {
    /// The processes (but this one) that run in it.
    pub fn pids(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let Ok(ns) = std::fs::metadata(format!("/run/netns/{}", self.name)) else { return Vec::new() };
        pids_where(|p| std::fs::metadata(p.join("ns/net")).is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever else runs in it (a watcher a hook started, a daemon's child) would keep the
        // namespace, and its devices, alive after `ip netns del`.
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// `KEY=value` pairs from literals.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Text of an output's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Text of an output's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether `f` holds within 10 seconds (asked every 20 ms): for what another process (a
/// watcher, an engine) does in its own time.
pub fn until(mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// The pids of the watchers (`vpnfix watch`) running in `ns`.
pub fn watchers_in(ns: &Netns) -> Vec<String> {
    ns.pids().into_iter().filter(|p| cmdline_names(&PathBuf::from(format!("/proc/{p}")), "watch")).collect()
}

/// The last 60 lines of every `*.log` file in `dir`, each under its name, sorted by name: what a
/// world prints when a test fails.
pub fn log_tails(dir: &Path) -> String {
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "log"));
    names.sort();
    let mut s = String::new();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        s += &format!("\n===== {} =====\n", p.file_name().unwrap().to_string_lossy());
        s += &lines[lines.len().saturating_sub(60)..].join("\n");
    }
    s
}
