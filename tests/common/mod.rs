//! Test hosts in private network namespaces: made per test, removed on drop even when the test
//! fails. Nothing here touches the machine's own namespace, and no packet leaves the ones made.
#![allow(dead_code)] // each test binary uses part of this

pub mod laptop;
pub mod ovpn;

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

/// Whether root tests can run here. Without root they print a loud SKIPPED line, except under
/// CI, where they must not skip and fail instead.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test} needs root and must not skip in CI");
    eprintln!("SKIPPED (not root): {test} needs root to make network namespaces");
    false
}

/// The vpnfix binary under test.
pub fn vpnfix_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vpnfix")
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

    /// Runs vpnfix inside the namespace with exactly this environment (no PATH, as OpenVPN).
    pub fn vpnfix(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let mut c = self.cmd("env");
        c.arg("-i");
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(vpnfix_bin()).args(args);
        c.output().unwrap()
    }

    /// Runs vpnfix inside the namespace as uid/gid 65534 (OpenVPN's `user nobody`).
    pub fn vpnfix_unprivileged(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let mut c = self.cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i"]);
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(vpnfix_bin()).args(args);
        c.output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
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

// ------------------------------------------------------------------------------------------
// A real Docker engine (dockerd 20.10) inside a test namespace. Lessons of
// examples/make-bundles.sh: started with `nsenter --net` (not `ip netns exec`, which hides the
// cgroups), no iptables/forwarding/docker0, its own socket, data and exec roots, config file,
// cgroup parent and containerd namespace, so nothing is shared with a Docker of the machine.
// Teardown, even on panic: containers SIGKILLed first (`sleep` as PID 1 ignores SIGTERM),
// dockerd stopped, leftovers of ours killed by pid, mounts below its directory unmounted,
// the directory removed without crossing file systems, its cgroups removed.

/// The Debian client, which matches dockerd 20.10 (the newer /usr/local/bin one needs
/// DOCKER_API_VERSION=1.41, which is set anyway).
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// Runs a command, killing it (by its pid) when it takes longer than `secs`; `None` then, or
/// when it could not be started. For teardown, where a hung dockerd must not hang the test.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Option<Output> {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.ok(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let _ = rx.recv();
            None
        }
    }
}

/// A dockerd running in a test namespace, stopped and wiped on drop. Drop it before the
/// namespace (declare it after the `Netns`, or put it first in a struct).
pub struct Dockerd {
    /// Its private directory: socket, data and exec roots, config, log, client config.
    pub dir: PathBuf,
    /// Unique name of its cgroup parent and containerd namespace.
    pub tag: String,
    /// How long it took to answer on its socket.
    pub started_in: std::time::Duration,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in `ns` and waits (up to 60 s) until its socket answers.
    pub fn start(ns: &Netns) -> Dockerd {
        let tag = format!("vft-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(format!("{tag}-dockerd"));
        for d in ["data", "exec", "client"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("daemon.json"), "{}\n").unwrap(); // not /etc/docker/daemon.json
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let t0 = std::time::Instant::now();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            .args(["--bridge=none", "--storage-driver=vfs"])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--cgroup-parent")
            .arg(format!("/{tag}"))
            .args(["--containerd-namespace", &tag])
            .args(["--containerd-plugins-namespace", &format!("{tag}-plugins")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nsenter … dockerd starts");
        let mut d = Dockerd { dir, tag, started_in: std::time::Duration::ZERO, child: Some(child) };
        d.wait_until_answering();
        d.started_in = t0.elapsed();
        d
    }

    fn wait_until_answering(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if run_with_timeout(self.cli().arg("version"), 5).is_some_and(|o| o.status.success()) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "dockerd {} (exit {exited:?}); its log:\n{}",
                if exited.is_some() { "exited" } else { "did not answer in 60 s" },
                self.log_tail()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The last lines of dockerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `DOCKER_HOST` for it: `unix:///…/docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// The docker client talking to this daemon only (no context, no ~/.docker).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        c.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_API_VERSION", "1.41")
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .arg("-H")
            .arg(self.host());
        c
    }

    /// `docker …`, which must succeed; its stdout, trimmed.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = run(self.cli().args(args));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Imports a one-binary image from the static busybox (`sh`, `sleep` linked to it); there
    /// is no registry here.
    pub fn import_busybox(&self, image: &str) {
        let bin = self.dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for l in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(l)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(self.dir.join("rootfs"))
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = Stdio::from(tar.stdout.take().unwrap());
        run(self.cli().args(["import", "-", image]).stdin(input));
        assert!(tar.wait().unwrap().success(), "tar of the busybox rootfs");
    }

    /// An address of a container on a network (`docker inspect`).
    pub fn container_ip(&self, container: &str, network: &str) -> String {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.docker(&["inspect", "-f", &f, container])
    }

    /// The Linux bridge Docker made for a network: `br-` + the first 12 characters of its id.
    pub fn bridge_of(&self, network: &str) -> String {
        let id = self.docker(&["network", "inspect", "-f", "{{.Id}}", network]);
        format!("br-{}", &id[..12])
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if child.try_wait().ok().flatten().is_none() {
            let ids = run_with_timeout(self.cli().args(["ps", "-aq"]), 20)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = run_with_timeout(self.cli().args(["rm", "-f"]).args(&ids), 60);
            }
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..300 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Processes still naming our directory (its containerd, shims after a crash): killed by pid.
    fn kill_leftovers(&self) {
        let marker = self.dir.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = Command::new("kill").args(["-KILL", &name]).status();
            }
        }
    }

    /// Mount points at or below our directory, deepest first (from /proc/self/mountinfo).
    fn mounts_below(&self) -> Vec<String> {
        let marker = self.dir.display().to_string();
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
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        self.kill_leftovers();
        for m in self.mounts_below() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = Command::new("rm").arg("-rf").arg("--one-file-system").arg(&self.dir).status();
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                rmdir_tree(&c.path().join(&self.tag));
            }
        }
    }
}

/// Removes a cgroup directory and its child cgroups, deepest first. `rmdir` only: a cgroup that
/// still has tasks stays, and nothing else is ever deleted.
fn rmdir_tree(p: &Path) {
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

// ------------------------------------------------------------------------------------------
// Restarting a test dockerd with another daemon.json (used by netns_suggest.rs).

impl Dockerd {
    /// Stops this dockerd (its containers are removed first, as on drop; its networks stay in
    /// its data root) and starts it again in `ns` with the same directories, socket and
    /// containerd namespace but `--config-file config`; waits (up to 60 s) until it answers.
    pub fn restart_with_config(&mut self, ns: &Netns, config: &Path) {
        self.stop();
        let log = std::fs::OpenOptions::new().append(true).create(true).open(self.dir.join("dockerd.log")).unwrap();
        let t0 = std::time::Instant::now();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg("dockerd")
            .arg("--config-file")
            .arg(config)
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            .args(["--bridge=none", "--storage-driver=vfs"])
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .arg("--cgroup-parent")
            .arg(format!("/{}", self.tag))
            .args(["--containerd-namespace", &self.tag])
            .args(["--containerd-plugins-namespace", &format!("{}-plugins", self.tag)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nsenter … dockerd starts");
        self.child = Some(child);
        self.wait_until_answering();
        self.started_in = t0.elapsed();
    }
}
