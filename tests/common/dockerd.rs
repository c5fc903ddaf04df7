//! A real Docker engine (dockerd 20.10) inside a test namespace. Lessons of
//! examples/make-bundles.sh: started with `nsenter --net` (not `ip netns exec`, which hides the
//! cgroups), no iptables/forwarding/docker0, its own socket, data and exec roots, config file,
//! cgroup parent and containerd namespace, so nothing is shared with a Docker of the machine.
//! Teardown, even on panic: containers SIGKILLed first (`sleep` as PID 1 ignores SIGTERM),
//! dockerd stopped, leftovers of ours killed by pid, mounts below its directory unmounted,
//! the directory removed without crossing file systems, its cgroups removed.

use super::{run, Netns, NEXT};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;

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
    pub(super) child: Option<Child>,
    /// Whether it runs with its iptables rules (NAT, forwarding) in its namespace.
    nat: bool,
}

/// The flags that keep dockerd's iptables rules, forwarding and masquerade out (the default),
/// or none of them (`nat`).
fn nat_flags(nat: bool) -> &'static [&'static str] {
    if nat {
        &[]
    } else {
        &["--iptables=false", "--ip-forward=false", "--ip-masq=false"]
    }
}

impl Dockerd {
    /// Starts dockerd in `ns` and waits (up to 60 s) until its socket answers.
    pub fn start(ns: &Netns) -> Dockerd {
        Dockerd::start_with(ns, false)
    }

    /// Starts dockerd in `ns` with its iptables rules on (its NAT and forwarding rules land in
    /// `ns`, checked), as a real laptop runs it.
    pub fn start_nat(ns: &Netns) -> Dockerd {
        let d = Dockerd::start_with(ns, true);
        let nat = String::from_utf8_lossy(&run(ns.cmd("iptables").args(["-t", "nat", "-S"])).stdout).into_owned();
        assert!(nat.contains("-N DOCKER"), "dockerd's NAT chain is not in the namespace:\n{nat}\n{}", d.log_tail());
        d
    }

    fn start_with(ns: &Netns, nat: bool) -> Dockerd {
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
            .args(nat_flags(nat))
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
        let mut d = Dockerd { dir, tag, started_in: std::time::Duration::ZERO, child: Some(child), nat };
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

    /// Imports a one-binary image from the static busybox (`sh`, `sleep`, `ping`, `nc` linked to it); there
    /// is no registry here.
    pub fn import_busybox(&self, image: &str) {
        let bin = self.dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for l in ["sh", "sleep", "ping", "nc"] {
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
        super::kill_where(|p| super::cmdline_names(p, &marker));
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        self.kill_leftovers();
        super::remove_private_dir(&self.dir);
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
        self.respawn(ns, config);
    }

    /// Stops this dockerd as `systemctl restart docker` does (SIGTERM: it stops its containers
    /// and removes its socket), starts it again with the same configuration and waits until it
    /// answers: containers run with `--restart always` come back.
    pub fn bounce(&mut self, ns: &Netns) {
        let mut child = self.child.take().expect("dockerd runs");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        self.respawn(ns, &self.dir.join("daemon.json"));
    }

    fn respawn(&mut self, ns: &Netns, config: &Path) {
        let log = std::fs::OpenOptions::new().append(true).create(true).open(self.dir.join("dockerd.log")).unwrap();
        let t0 = std::time::Instant::now();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg("dockerd")
            .arg("--config-file")
            .arg(config)
            .args(nat_flags(self.nat))
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
