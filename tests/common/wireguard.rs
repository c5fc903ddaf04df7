//! A real WireGuard world for the end-to-end tests: the userspace `wireguard-go` (this kernel
//! has no WireGuard module) driven by `wg` and `wg-quick` from wireguard-tools, a server behind
//! which an office lives, and a laptop with a Linux bridge and a container on it. Every piece
//! lives in network namespaces made here and removed on drop, even when the test panics; none
//! has a link to the machine's own namespace, so no packet leaves them.
//!
//! ```text
//!  container           laptop                           server                  office
//!  eth0 172.20.0.2/16 ─ wgt-c0, a port of the bridge
//!  fd00:ac14::2/64      wgt-br0 172.20.0.1/16
//!                               fd00:ac14::1/64
//!                       wgt-l0 198.18.2.2/30 ─────────── wan 198.18.2.1/30
//!                       wg0 (wg-quick) 10.7.0.2/24       wgs0 10.7.0.1/24, fd00:7::1/64
//!                                  fd00:7::2/64          (wireguard-go, UDP 51820)
//!                                                        lan 172.20.2.1/24 ────── uplink 172.20.2.52/24
//!                                                            fd00:ac14::2:1/64           fd00:ac14::2:52/64
//! ```
//!
//! The server's peer is the laptop (AllowedIPs 10.7.0.2/32, fd00:7::2/128); it forwards (in its
//! namespace only) to the office, which routes 10.7.0.0/24 and fd00:7::/64 back through it. The
//! laptop has no default route: the server's link is all it knows besides its bridge.
//!
//! wireguard-go and `wg` meet over the UAPI socket `/var/run/wireguard/<iface>.sock`, and
//! wg-quick would write `/etc/resolv.conf` were DNS set (the harness never sets it). So every
//! WireGuard command runs in a private mount namespace with a fresh tmpfs on `/run`: one per
//! side, held by a `sleep` that `ip netns exec NS unshare --mount` started, and entered with
//! `nsenter --target PID --mount --net` (so the laptop's `wg show` finds the socket of the
//! wireguard-go that `wg-quick up` daemonized). Configurations are files in the test's temporary
//! directory, given to wg-quick by full path. The mount namespaces die with their last process
//! (the namespaces' drop kills every one): the test's own mount table never changes, and the
//! machine's `/etc`, `/run` and network namespace are never touched.

use super::{pids_where, run, Netns, TempDir};
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The interface wg-quick makes on the laptop (the name of every configuration file).
pub const IFACE: &str = "wg0";
/// The server's WireGuard interface.
pub const SERVER_IFACE: &str = "wgs0";
/// The laptop's bridge (the container network).
pub const BRIDGE: &str = "wgt-br0";
/// The laptop's link to the VPN server.
pub const WAN: &str = "wgt-l0";
/// The VPN server's address on its link to the laptop (the client's endpoint).
pub const SERVER: &str = "198.18.2.1";
/// The UDP port the server listens on.
pub const PORT: u16 = 51820;
/// The container and the office host, in both families (tests/common/fourhost.rs).
#[allow(unused_imports)] // not every test crate uses each
pub use super::fourhost::{CONTAINER, CONTAINER6, OFFICE, OFFICE6};
/// The client's addresses on the tunnel (`Address =` of its configuration).
pub const CLIENT_ADDRESSES: &str = "10.7.0.2/24, fd00:7::2/64";
/// The VPN routes the Docker subnet, both families: the AllowedIPs that users have trouble with.
pub const DOCKER_ALLOWED_IPS: &str = "172.20.0.0/16, fd00:ac14::/64";
/// The bridge's own (kernel) IPv4 route, as `ip route` prints it.
pub const BRIDGE_ROUTE: &str = "172.20.0.0/16 dev wgt-br0 proto kernel scope link src 172.20.0.1";

/// How long the harness waits for a daemon (the server listening, wireguard-go exiting).
const PATIENCE: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A private mount namespace (fresh tmpfs on `/run`, and on `/var/run` if it is not a symlink)
/// inside a network namespace, held open by a `sleep` (the process `ip netns exec` started: it
/// execs `unshare`, which execs `sh`, which execs `sleep`). Killed on drop; the mount namespace
/// goes with the last process in it.
struct PrivateMounts {
    child: Child,
}

impl PrivateMounts {
    /// Starts the holder in `ns` and waits (≤ 20 s) until it is `sleep`, its mounts done; its
    /// stderr goes to `log`.
    fn start(ns: &Netns, log: &Path) -> PrivateMounts {
        let mut child = ns
            .cmd("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                "set -e; mount -t tmpfs -o mode=0755 vfe-run /run; ",
                "[ -L /var/run ] || mount -t tmpfs -o mode=0755 vfe-run /var/run; ",
                "exec sleep 86400"
            ))
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("unshare starts");
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + PATIENCE;
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("the mount namespace's holder exited with {st}: {}", std::fs::read_to_string(log).unwrap());
            }
            assert!(Instant::now() < deadline, "the mount namespace's holder not ready after {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        PrivateMounts { child }
    }

    /// `program` in the holder's network and mount namespaces, with an environment of only
    /// PATH and LANG=C.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.child.id())).args(["--mount", "--net", "--", program]);
        c.env_clear().env("PATH", PATH).env("LANG", "C");
        c
    }

    /// The pids of the processes whose command is `comm` in this mount namespace.
    fn pids(&self, comm: &str) -> Vec<String> {
        let Ok(me) = std::fs::metadata(format!("/proc/{}/ns/mnt", self.child.id())) else { return Vec::new() };
        pids_where(|p| {
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::metadata(p.join("ns/mnt")).is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev())
        })
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The namespaces, the keys, the server's wireguard-go running and configured, and the files
/// (configurations, logs). Field order is drop order: the server's wireguard-go, the mount
/// namespaces' holders, then the network namespaces (whose drop kills whatever still runs in
/// them: the laptop's daemonized wireguard-go), then the directory.
pub struct WgWorld {
    server_wg: Option<Child>,
    server_mounts: PrivateMounts,
    laptop_mounts: PrivateMounts,
    /// The container: `eth0` on the laptop's bridge.
    pub container: Netns,
    /// The laptop: `wgt-l0` to the server, bridge `wgt-br0`, and wg-quick's `wg0` while up.
    pub laptop: Netns,
    /// The office: 172.20.2.52/24 and fd00:ac14::2:52/64 on `uplink`.
    pub office: Netns,
    /// The VPN server: `wan` to the laptop, `lan` to the office, wireguard-go's `wgs0`.
    pub server: Netns,
    /// Everything on disk; removed last.
    pub dir: TempDir,
    /// The laptop's private key (`wg genkey`), for a configuration a test writes itself.
    pub client_private: String,
    /// The laptop's public key.
    pub client_public: String,
    /// The server's public key (the laptop's `[Peer] PublicKey`).
    pub server_public: String,
    confs: Cell<usize>,
    runs: Cell<usize>,
    /// Whether a failure message already carries the logs (then drop does not repeat them).
    logs_shown: Cell<bool>,
}

impl WgWorld {
    /// Builds the four namespaces and their links (addresses without DAD, so usable at once),
    /// makes both key pairs, starts `wireguard-go -f wgs0` (LOG_LEVEL=verbose, into
    /// `server-wireguard-go.log`) in the server's namespace and private mounts, configures it
    /// (`wg setconf`, addresses, up) and waits (≤ 20 s) until it listens on UDP 51820; starts
    /// the laptop's private mount namespace. Panics with the logs if anything fails.
    pub fn new() -> WgWorld {
        let super::fourhost::Hosts { dir, server, office, laptop, container } = super::fourhost::hosts("wg", &WIRING);
        let (client_private, client_public) = keypair();
        let (server_private, server_public) = keypair();
        let server_mounts = PrivateMounts::start(&server, &dir.path().join("server-mounts.log"));
        let laptop_mounts = PrivateMounts::start(&laptop, &dir.path().join("laptop-mounts.log"));
        let mut w = WgWorld {
            server_wg: None,
            server_mounts,
            laptop_mounts,
            container,
            laptop,
            office,
            server,
            dir,
            client_private,
            client_public,
            server_public,
            confs: Cell::new(0),
            runs: Cell::new(0),
            logs_shown: Cell::new(false),
        };
        w.start_server(&server_private);
        w
    }

    fn start_server(&mut self, private: &str) {
        let log = File::create(self.path("server-wireguard-go.log")).unwrap();
        let child = self
            .server_mounts
            .cmd("wireguard-go")
            .args(["-f", SERVER_IFACE])
            .env("LOG_LEVEL", "verbose")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("wireguard-go starts");
        self.server_wg = Some(child);
        // Up once `wg` reaches it over its UAPI socket (the device exists by then).
        self.wait_server("wgs0's UAPI socket", |w| {
            w.server_mounts.cmd("wg").args(["show", SERVER_IFACE]).output().is_ok_and(|o| o.status.success())
        });
        let conf = format!(
            "[Interface]\nPrivateKey = {private}\nListenPort = {PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.7.0.2/32, fd00:7::2/128\n",
            self.client_public
        );
        let file = self.path("server.conf");
        write_private(&file, &conf);
        let out = self.server_mounts.cmd("wg").arg("setconf").arg(SERVER_IFACE).arg(&file).output().unwrap();
        assert!(out.status.success(), "wg setconf {SERVER_IFACE}: {}{}", super::stderr(&out), self.logs());
        self.server.ip(&["addr", "add", "10.7.0.1/24", "dev", SERVER_IFACE]);
        self.server.ip(&["addr", "add", "fd00:7::1/64", "dev", SERVER_IFACE, "nodad"]);
        self.server.ip(&["link", "set", SERVER_IFACE, "up"]);
        // wireguard-go binds its UDP port when the device goes up.
        self.wait_server("UDP port 51820", |w| {
            let out = w.server.cmd("ss").args(["-Hnul", &format!("sport = :{PORT}")]).output().unwrap();
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
    }

    fn wait_server(&mut self, what: &str, mut ready: impl FnMut(&WgWorld) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready(self) {
            if let Some(st) = self.server_wg.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server's wireguard-go exited with {st} before {what}\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "no {what} after {PATIENCE:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A file in the world's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The laptop's wg-quick configuration: `[Interface]` with its private key, `Address =
    /// 10.7.0.2/24, fd00:7::2/64` and then `extra_interface_lines` (e.g. `Table = off`, `PostUp
    /// = …`), `[Peer]` with the server's public key, `Endpoint = 198.18.2.1:51820` and
    /// `AllowedIPs = allowed_ips` (e.g. [`DOCKER_ALLOWED_IPS`]). No DNS.
    pub fn client_conf(&self, extra_interface_lines: &[&str], allowed_ips: &str) -> String {
        let mut s = format!("[Interface]\nPrivateKey = {}\nAddress = {CLIENT_ADDRESSES}\n", self.client_private);
        for l in extra_interface_lines {
            s += l;
            s += "\n";
        }
        s += &format!(
            "\n[Peer]\nPublicKey = {}\nEndpoint = {SERVER}:{PORT}\nAllowedIPs = {allowed_ips}\n",
            self.server_public
        );
        s
    }

    /// Writes `text` (mode 0600, as wg-quick wants) as `conf-<n>/wg0.conf` in the world's
    /// directory, a fresh directory each call (earlier ones stay for the logs), and returns its
    /// full path: what [`WgWorld::up`] and [`WgWorld::down`] take.
    pub fn write_conf(&self, text: &str) -> PathBuf {
        let n = self.confs.replace(self.confs.get() + 1);
        let d = self.path(&format!("conf-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("{IFACE}.conf"));
        write_private(&f, text);
        f
    }

    /// `wg-quick up CONF` in the laptop's network namespace and private mounts, with an
    /// environment of only PATH, LANG=C and `WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go`
    /// (no LOG_LEVEL: the wireguard-go it daemonizes keeps no pipe of ours open). Returns when
    /// wg-quick has exited (after its PostUp hooks); when it failed, also waits (≤ 20 s) until
    /// the wireguard-go it started has exited (wg-quick deleted the interface), so the next
    /// `up` starts clean. Its output is also kept in `wg-quick-<n>-up.log`.
    pub fn up(&self, conf: &Path) -> Output {
        self.wg_quick("up", conf)
    }

    /// `wg-quick down CONF`, as [`WgWorld::up`]; waits (≤ 20 s) until the laptop's
    /// wireguard-go has exited.
    pub fn down(&self, conf: &Path) -> Output {
        self.wg_quick("down", conf)
    }

    fn wg_quick(&self, action: &str, conf: &Path) -> Output {
        let n = self.runs.replace(self.runs.get() + 1);
        let out = self
            .laptop_cmd("wg-quick")
            .arg(action)
            .arg(conf)
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("wg-quick runs");
        let record = format!(
            "wg-quick {action} {}: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            conf.display(),
            out.status,
            super::stdout(&out),
            super::stderr(&out)
        );
        std::fs::write(self.path(&format!("wg-quick-{n}-{action}.log")), record).unwrap();
        if action == "down" || !out.status.success() {
            let deadline = Instant::now() + PATIENCE;
            while !self.laptop_mounts.pids("wireguard-go").is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the laptop's wireguard-go still runs {PATIENCE:?} after wg-quick {action} ({})\n{}",
                    out.status,
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        out
    }

    /// `program` in the laptop's network namespace and private mounts (where wg-quick runs and
    /// its wireguard-go's UAPI socket lives), with an environment of only PATH and LANG=C.
    pub fn laptop_cmd(&self, program: &str) -> Command {
        self.laptop_mounts.cmd(program)
    }

    /// `wg show wg0 ARGS…` on the laptop (e.g. `&["allowed-ips"]`), whatever its exit status.
    pub fn wg_show(&self, args: &[&str]) -> Output {
        self.laptop_cmd("wg").args(["show", IFACE]).args(args).output().expect("wg runs")
    }

    /// `wg show SERVER_IFACE ARGS…` on the server, whatever its exit status.
    pub fn server_wg_show(&self, args: &[&str]) -> Output {
        self.server_mounts.cmd("wg").args(["show", SERVER_IFACE]).args(args).output().expect("wg runs")
    }

    /// Whether the laptop has a link `wg0`.
    pub fn has_wg0(&self) -> bool {
        self.laptop.ip_try(&["link", "show", "dev", IFACE]).status.success()
    }

    /// The pids of the wireguard-go processes in the laptop's private mounts (the daemon
    /// `wg-quick up` left running).
    pub fn laptop_wireguard_go(&self) -> Vec<String> {
        self.laptop_mounts.pids("wireguard-go")
    }

    /// The laptop's main table, `ip -4 route show table main` then `ip -6 …`, one route a line
    /// (trailing blanks trimmed), link-local `fe80::/64` routes left out, sorted: what "the same
    /// as before" compares.
    pub fn laptop_table(&self) -> String {
        let ns = &self.laptop;
        let text = ns.ip(&["-4", "route", "show", "table", "main"]) + &ns.ip(&["-6", "route", "show", "table", "main"]);
        let mut lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.starts_with("fe80:")).collect();
        lines.sort();
        lines.join("\n")
    }

    /// The server's wireguard-go log, every wg-quick run's output, `wg show` of both sides (the
    /// laptop's only while its wireguard-go runs) and the laptop's table: for failure messages.
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        let mut s = super::log_tails(self.dir.path());
        s += &format!("\n===== wg show {SERVER_IFACE} (server) =====\n");
        s += &show(&self.server_wg_show(&[]));
        if !self.laptop_wireguard_go().is_empty() {
            s += &format!("\n===== wg show {IFACE} (laptop) =====\n");
            s += &show(&self.wg_show(&[]));
        }
        s += "\n===== the laptop's table =====\n";
        s += &self.laptop_table();
        s
    }
}

impl Drop for WgWorld {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("logs of the failed WireGuard world:{}", self.logs());
        }
        if let Some(mut c) = self.server_wg.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Then the holders (fields), then the namespaces (their drop kills whatever still runs
        // in them, the laptop's wireguard-go too), then the directory.
    }
}

/// stdout and stderr of `out`, for a log.
fn show(out: &Output) -> String {
    format!("{}{}", super::stdout(out), super::stderr(out))
}

/// A fresh `(private, public)` key pair from `wg genkey` and `wg pubkey`.
fn keypair() -> (String, String) {
    let private = String::from_utf8(run(Command::new("wg").arg("genkey")).stdout).unwrap().trim().to_string();
    let mut c = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wg pubkey starts");
    writeln!(c.stdin.take().unwrap(), "{private}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "wg pubkey: {}", super::stderr(&out));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!((private.len(), public.len()), (44, 44), "keys {private:?} {public:?}");
    (private, public)
}

/// Writes `text` to `file`, mode 0600 (a key is in it).
fn write_private(file: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The links and addresses of the world (see the module's picture), forwarding in the server.
const WIRING: super::fourhost::Wiring = super::fourhost::Wiring {
    wan: WAN,
    bridge: BRIDGE,
    port: "wgt-c0",
    server: SERVER,
    laptop: "198.18.2.2",
    pool: "10.7.0.0/24",
    pool6: "fd00:7::/64",
    default_route: false,
};
