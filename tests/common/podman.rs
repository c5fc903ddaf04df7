//! A real, private Podman 4.3 (Debian 12: netavark 1.4 or CNI) inside a test namespace, as
//! `Dockerd` is for Docker. Nothing of it is shared with the machine or with another `Podman`:
//!
//! * One holder process owns private namespaces: `nsenter --net=/run/netns/NS` first (so the
//!   test's namespace file is still reachable), then `unshare --mount --propagation private
//!   --pid --fork --mount-proc`. In that mount namespace: a tmpfs over `/run` (netavark's
//!   `/run/containers/networks`, aardvark-dns, `/run/netns/netns-*` of the containers,
//!   `/run/crun`, libmount's `/run/mount`), a tmpfs over `/dev/shm` (the `libpod_lock` segment),
//!   overlays over `/etc` and `/var` whose upper layers are in our directory (CNI's
//!   `/var/lib/cni`, `/var/lib/containers/cache`, `/var/cache/containers`: every stray write
//!   lands there), and `/sys/fs/cgroup/unified` unmounted (crun refuses a hybrid hierarchy
//!   whose cgroup2 has controllers). The holder is PID 1 of the PID namespace and reaps
//!   orphans (conmon double-forks).
//! * Every podman (CLI and `system service`) runs in those namespaces (`nsenter -t INIT -m -n
//!   -p`) with a cleared environment, `CONTAINERS_CONF`/`CONTAINERS_STORAGE_CONF`/
//!   `CONTAINERS_REGISTRIES_CONF` of ours, `--root --runroot --tmpdir --network-config-dir`
//!   in our directory, `--storage-driver vfs --cgroup-manager cgroupfs --events-backend file`,
//!   and `cgroups = "disabled"` (no cgroup is made anywhere).
//! * Teardown, even on panic: containers removed (`rm -f -t 0 --all`), the service stopped,
//!   then the PID namespace's init SIGKILLed, which kills every process left in it (conmon,
//!   aardvark-dns, containers); the mount namespace and the containers' network namespaces
//!   die with it. Leftovers naming our directory or in our mount namespace are killed by pid,
//!   and the directory is removed without crossing file systems. If the test process dies
//!   without unwinding, `setpriv --pdeathsig` and `unshare --kill-child` end it all anyway
//!   (create and drop a `Podman` on the same thread).

use super::{run, run_with_timeout, NEXT};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The network backend Podman is configured with (`network_backend` in containers.conf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// netavark 1.4 (`/usr/lib/podman/netavark`, aardvark-dns beside it): bridges `podmanN`.
    Netavark,
    /// containernetworking-plugins in `/usr/lib/cni`: bridges `cni-podmanN`.
    Cni,
}

impl Backend {
    /// `netavark` or `cni`, as containers.conf and `--network-backend` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Netavark => "netavark",
            Backend::Cni => "cni",
        }
    }
}

/// One answer of the service: status code, head (status line and headers) and body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl ApiResponse {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A private Podman in a test namespace, stopped and wiped on drop. Drop it before the
/// namespace (declare it after the `Netns`).
pub struct Podman {
    /// Its private directory: storage, run root, tmp, network configs, socket, logs, overlays.
    pub dir: PathBuf,
    pub backend: Backend,
    /// The network namespace (name under /run/netns) it runs in.
    pub netns: String,
    /// How long `start` took (namespaces, service answering, image imported).
    pub started_in: Duration,
    /// `unshare` (a child of ours), parent of the PID namespace's init.
    holder: Option<Child>,
    /// The init of the private PID namespace (pid as the machine sees it).
    init: u32,
    /// `/proc/INIT/ns/mnt` of the private mount namespace, to find leftovers.
    mnt_ns: String,
    /// `nsenter … podman system service` (a child of ours).
    service: Option<Child>,
    /// One private Podman at a time per test binary: two at once (each in its own namespaces)
    /// made crun fail now and then here ("write to sync socket: Broken pipe", a container
    /// "not running" after its start). Dropped last, after everything is stopped.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// See [`Podman::_one_at_a_time`].
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Mounts the private views, then becomes a reaping PID 1. `$1` is our directory.
const HOLDER_SCRIPT: &str = r#"set -e
D="$1"
mount -n -t tmpfs -o mode=755 vft-podman-run /run
mount -n -t tmpfs -o mode=1777 vft-podman-shm /dev/shm
mount -n -t overlay vft-podman-etc -o "lowerdir=/etc,upperdir=$D/ovl/etc/up,workdir=$D/ovl/etc/work" /etc
mount -n -t overlay vft-podman-var -o "lowerdir=/var,upperdir=$D/ovl/var/up,workdir=$D/ovl/var/work" /var
if mountpoint -q /sys/fs/cgroup/unified; then umount -n /sys/fs/cgroup/unified; fi
echo ready > "$D/holder.ready"
exec perl -e '$0 = "vft-podman-init"; while (1) { sleep 1 if waitpid(-1, 0) < 0 }'
"#;

impl Podman {
    /// Starts a private Podman with `backend` in the network namespace `/run/netns/<netns>`:
    /// its API service on `sock()` (waits up to 60 s until `/_ping` answers) and the image
    /// `local/busybox` (static busybox; `sh sleep ping ip …` linked to it).
    pub fn start(netns: &str, backend: Backend) -> Podman {
        // A test that failed while holding it leaves it poisoned; the Podman it guarded is gone.
        let one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = Instant::now();
        let tag = format!("vft-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(format!("{tag}-podman"));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["root", "runroot", "tmp", "net", "home", "ovl/etc/up", "ovl/etc/work", "ovl/var/up", "ovl/var/work"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        write_configs(&dir, backend);

        let log = std::fs::File::create(dir.join("holder.log")).unwrap();
        let holder = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "nsenter"])
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(["sh", "-c", HOLDER_SCRIPT, "vft-podman-holder"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("setpriv … nsenter … unshare starts");
        let mut p = Podman {
            dir,
            backend,
            netns: netns.to_string(),
            started_in: Duration::ZERO,
            holder: Some(holder),
            init: 0,
            mnt_ns: String::new(),
            service: None,
            _one_at_a_time: one_at_a_time,
        };
        p.wait_for_holder();
        p.start_service();
        p.import_busybox("local/busybox");
        p.started_in = t0.elapsed();
        p
    }

    fn wait_for_holder(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let unshare = self.holder.as_ref().unwrap().id();
        loop {
            if self.dir.join("holder.ready").exists() {
                if let Some(init) = children_of(unshare).first() {
                    self.init = *init;
                    self.mnt_ns = std::fs::read_link(format!("/proc/{init}/ns/mnt"))
                        .map(|l| l.display().to_string())
                        .unwrap_or_default();
                    return;
                }
            }
            let exited = self.holder.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "podman's namespace holder {} (exit {exited:?}); its log:\n{}",
                if exited.is_some() { "exited" } else { "not ready in 20 s" },
                std::fs::read_to_string(self.dir.join("holder.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_service(&mut self) {
        let log = std::fs::File::create(self.dir.join("service.log")).unwrap();
        let child = self
            .cli()
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", self.sock().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nsenter … podman system service starts");
        self.service = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.try_get("/_ping").is_ok_and(|r| r.status == 200 && r.body == "OK") {
                return;
            }
            let exited = self.service.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "podman system service {} (exit {exited:?}); its log:\n{}",
                if exited.is_some() { "exited" } else { "did not answer in 60 s" },
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("podman.sock")
    }

    /// `unix:///…/podman.sock`, for `DOCKER_HOST` or `podman --url`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// The last lines of the service's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A command run inside Podman's namespaces (network, private mounts, private PIDs) with
    /// its private environment; `program` is looked up in the standard PATH.
    pub fn ns_cmd(&self, program: &str) -> Command {
        let d = &self.dir;
        let mut c = Command::new("nsenter");
        c.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .args(["-t", &self.init.to_string(), "-m", "-n", "-p", "--", program]);
        c
    }

    /// The podman CLI with the private settings, inside the namespaces.
    pub fn cli(&self) -> Command {
        let d = &self.dir;
        let mut c = self.ns_cmd("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .args(["--network-backend", self.backend.name()])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    }

    /// `podman …` (killed after 120 s); its output whatever the exit status.
    pub fn podman(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cli().args(args), 120).unwrap_or_else(|| panic!("podman {args:?} hung (120 s)"))
    }

    /// `podman …`, which must succeed; its stdout, trimmed.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman network create [--ipv6] --subnet SUBNET [--subnet V6] NAME`; its id. (With
    /// Podman 4 an IPv6-only request also gets an IPv4 subnet, 10.89.x.0/24.)
    pub fn network_create(&self, name: &str, subnet: &str, ipv6_subnet: Option<&str>) -> String {
        let mut args = vec!["network", "create", "--subnet", subnet];
        if let Some(v6) = ipv6_subnet {
            args.extend(["--ipv6", "--subnet", v6]);
        }
        args.push(name);
        self.podman_ok(&args);
        self.podman_ok(&["network", "inspect", "-f", "{{.ID}}", name])
    }

    /// `podman run -d --name NAME --network NETWORK [--ip IP] local/busybox sleep 3600`; its id.
    pub fn run(&self, name: &str, network: &str, ip: Option<&str>) -> String {
        match ip {
            Some(ip) => self.run_args(name, network, &["--ip", ip]),
            None => self.run_args(name, network, &[]),
        }
    }

    /// As `run`, with more `podman run` options (e.g. `--ip6 fd00::10`) before the image.
    ///
    /// crun 1.8 here now and then loses a container while starting it ("write to sync socket:
    /// Broken pipe", "container … is not running" after `crun start`), seen about once in ten
    /// runs of the suite and never twice in a row: such a start is retried, twice at most, after
    /// removing what it left. Any other failure fails at once.
    pub fn run_args(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend(extra);
        args.extend(["local/busybox", "sleep", "3600"]);
        let mut attempt = 1;
        let out = loop {
            let out = self.podman(&args);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let lost = err.contains("sync socket") || err.contains("is not running");
            if out.status.success() || !lost || attempt == 3 {
                break out;
            }
            eprintln!("podman run {name}: crun lost the container (attempt {attempt}), retrying: {err}");
            let _ = self.podman(&["rm", "-f", "-t", "0", name]);
            attempt += 1;
        };
        assert!(out.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A container's IPv4 address on a network.
    pub fn container_ip(&self, container: &str, network: &str) -> String {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.podman_ok(&["inspect", "-f", &f, container])
    }

    /// The Linux bridge of a network (`podmanN` with netavark, `cni-podmanN` with CNI). It
    /// exists in the namespace once a container on the network has started.
    pub fn bridge_of(&self, network: &str) -> String {
        self.podman_ok(&["network", "inspect", "-f", "{{.NetworkInterface}}", network])
    }

    /// `GET path` on the service's socket (HTTP/1.1, chunked bodies decoded).
    pub fn api_get(&self, path: &str) -> ApiResponse {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.sock().display()))
    }

    fn try_get(&self, path: &str) -> std::io::Result<ApiResponse> {
        let mut s = std::os::unix::net::UnixStream::connect(self.sock())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: podman\r\nUser-Agent: vpnfix-tests\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP answer");
        let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        let mut r = ApiResponse { status, head: head.to_string(), body: body.to_string() };
        if r.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            r.body = dechunk(body).ok_or_else(bad)?;
        }
        Ok(r)
    }

    /// Imports a one-binary image from the static busybox; there is no registry here.
    fn import_busybox(&self, image: &str) {
        let bin = self.dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for l in [
            "sh", "sleep", "ping", "ping6", "ip", "ifconfig", "route", "cat", "ls", "ps", "hostname", "nc", "wget",
            "true",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(l)).unwrap();
        }
        let tar = self.dir.join("busybox.tar");
        run(Command::new("tar").arg("-C").arg(self.dir.join("rootfs")).arg("-cf").arg(&tar).arg("."));
        self.podman_ok(&["import", "-q", &tar.display().to_string(), image]);
    }

    fn stop(&mut self) {
        if self.init != 0 && pid_alive(self.init) {
            let _ = run_with_timeout(self.cli().args(["rm", "-f", "-t", "0", "--all"]), 60);
        }
        if let Some(mut svc) = self.service.take() {
            // nsenter forked: the service is its child.
            for pid in children_of(svc.id()) {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            for _ in 0..50 {
                if svc.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = svc.kill();
            let _ = svc.wait();
        }
        if self.init != 0 {
            // SIGKILL of a PID namespace's init kills every process in it.
            let _ = Command::new("kill").args(["-KILL", &self.init.to_string()]).status();
        }
        if let Some(mut holder) = self.holder.take() {
            for _ in 0..100 {
                if holder.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }

    /// Processes naming our directory or living in our mount namespace: killed by pid.
    fn kill_leftovers(&self) {
        let marker = self.dir.display().to_string();
        let ns = |p: &std::path::Path| std::fs::read_link(p.join("ns/mnt")).map(|l| l.display().to_string());
        super::kill_where(|p| {
            super::cmdline_names(p, &marker) || (!self.mnt_ns.is_empty() && ns(p).ok().as_ref() == Some(&self.mnt_ns))
        });
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.stop();
        self.kill_leftovers();
        super::remove_private_dir(&self.dir);
    }
}

/// containers.conf, storage.conf and an empty registries.conf in `dir`.
fn write_configs(dir: &Path, backend: Backend) {
    let d = dir.display();
    let conf = format!(
        r#"# A private Podman for vpnfix's tests: nothing in /etc, /var/lib/containers or /run.
[containers]
cgroups = "disabled"

[network]
network_backend = "{backend}"
network_config_dir = "{d}/net"
cni_plugin_dirs = ["/usr/lib/cni"]
default_network = "podman"
default_subnet = "10.88.0.0/16"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
image_copy_tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
helper_binaries_dir = ["/usr/lib/podman"]
runtime = "crun"
conmon_env_vars = [
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "HOME={d}/home",
  "TMPDIR={d}/tmp",
  "CONTAINERS_CONF={d}/containers.conf",
  "CONTAINERS_STORAGE_CONF={d}/storage.conf",
  "CONTAINERS_REGISTRIES_CONF={d}/registries.conf",
]
"#,
        backend = backend.name()
    );
    std::fs::write(dir.join("containers.conf"), conf).unwrap();
    let storage = format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n");
    std::fs::write(dir.join("storage.conf"), storage).unwrap();
    std::fs::write(dir.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
}

/// Pids whose parent is `ppid` (from /proc/*/stat).
fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut v = Vec::new();
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(ppid) {
            v.push(pid);
        }
    }
    v
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
}

/// Decodes a chunked HTTP body.
fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n..)?.strip_prefix("\r\n")?;
    }
}
