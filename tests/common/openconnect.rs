//! A real OpenConnect world for the end-to-end tests: `ocserv` 1.1 (Debian 12) behind which an
//! office lives, and a laptop with a Linux bridge and a container on it that runs the real
//! `openconnect` 9 client with Debian's `vpnc-script`. Every piece lives in network namespaces
//! made here and removed on drop, even when the test panics; none has a link to the machine's
//! own namespace, so no packet leaves them.
//!
//! ```text
//!  container           laptop                           server                  office
//!  eth0 172.20.0.2/16 ─ ocw-c0, a port of the bridge
//!  fd00:ac14::2/64      ocw-br0 172.20.0.1/16
//!                               fd00:ac14::1/64
//!                       ocw-l0 198.18.1.2/30 ─────────── wan 198.18.1.1/30
//!                       (default via 198.18.1.1)         ocserv on :443
//!                                                        lan 172.20.2.1/24 ────── uplink 172.20.2.52/24
//!                                                            fd00:ac14::2:1/64           fd00:ac14::2:52/64
//! ```
//!
//! ocserv (TCP and UDP port 443 on 198.18.1.1, password auth, a self-signed EC certificate)
//! gives clients 10.9.0.0/24 and fd00:9::/64 and pushes `route = 172.20.0.0/255.255.0.0` and
//! `route = fd00:ac14::/64`, no DNS; it forwards (in its namespace only) to the office, which
//! routes both client pools back through it.
//!
//! openconnect runs in the laptop's namespace AND in a private mount namespace, because
//! vpnc-script writes `/var/run/vpnc` and (were DNS pushed) `/etc/resolv.conf`, and sources
//! `/etc/vpnc/<phase>.d/*`: there `/etc` is an overlay whose upper directory sits in the test's
//! temporary directory ([`OcWorld::hook_file`] writes into it) and `/run` is a fresh tmpfs. ocserv
//! gets a private tmpfs `/run` too. Both mount namespaces die with their processes: the test's
//! own mount table never changes.

use super::{run, Netns, TempDir};
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The tun device openconnect makes on the laptop.
pub const TUN: &str = "ocwtun0";
/// The laptop's bridge (the container network).
pub const BRIDGE: &str = "ocw-br0";
/// The laptop's link to the VPN server.
pub const WAN: &str = "ocw-l0";
/// The VPN server's address (and the gateway of the laptop's default route).
pub const SERVER: &str = "198.18.1.1";
/// The TCP and UDP port ocserv listens on.
pub const PORT: u16 = 443;
/// The container and the office host, in both families (tests/common/fourhost.rs).
#[allow(unused_imports)] // not every test crate uses each
pub use super::fourhost::{CONTAINER, CONTAINER6, OFFICE, OFFICE6};
/// The bridge's own (kernel) IPv4 route, as `ip route` prints it.
pub const BRIDGE_ROUTE: &str = "172.20.0.0/16 dev ocw-br0 proto kernel scope link src 172.20.0.1";

const USER: &str = "user";
const PASSWORD: &str = "vfe-secret";
const VPNC_SCRIPT: &str = "/usr/share/vpnc-scripts/vpnc-script";
/// The harness's own hook in post-connect.d and post-disconnect.d: sorts after any a test
/// writes (vpnc-script sources `/etc/vpnc/<phase>.d/*` in glob order), so its marker means the
/// whole phase, the test's hooks included, is done.
const MARKER_HOOK: &str = "zzzz-vfe-harness";
/// How long connect and disconnect may take before the harness gives up.
const PATIENCE: Duration = Duration::from_secs(20);

/// The namespaces, ocserv running, and the files (certificate, configuration, password file,
/// the overlay's upper directory, logs). Field order is drop order: ocserv, then the
/// namespaces (which kills whatever still runs in them), then the directory.
pub struct OcWorld {
    ocserv: Option<Child>,
    /// The container: `eth0` on the laptop's bridge.
    pub container: Netns,
    /// The laptop: `ocw-l0` to the server, bridge `ocw-br0`, openconnect's `ocwtun0`.
    pub laptop: Netns,
    /// The office: 172.20.2.52/24 and fd00:ac14::2:52/64 on `uplink`.
    pub office: Netns,
    /// The VPN server: `wan` to the laptop, `lan` to the office, ocserv.
    pub server: Netns,
    /// Everything on disk; removed last.
    pub dir: TempDir,
    /// `pin-sha256:…` of the server's public key, for `--servercert`.
    pin: String,
    connects: Cell<usize>,
    connected: Cell<bool>,
    /// Whether a failure message already carries the logs (then drop does not repeat them).
    logs_shown: Cell<bool>,
}

impl OcWorld {
    /// Builds the four namespaces and their links (addresses without DAD, so usable at once),
    /// makes the certificate and the password file, starts `ocserv -f` in the server namespace,
    /// and waits (≤ 20 s) until it says it listens on TCP 198.18.1.1:443 and its sec-mod is
    /// ready (panics with its log if it exits first or time runs out).
    pub fn new() -> OcWorld {
        let super::fourhost::Hosts { dir, server, office, laptop, container } = super::fourhost::hosts("oc", &WIRING);
        let pin = make_server_files(dir.path());
        let mut w = OcWorld {
            ocserv: None,
            container,
            laptop,
            office,
            server,
            dir,
            pin,
            connects: Cell::new(0),
            connected: Cell::new(false),
            logs_shown: Cell::new(false),
        };
        w.start_ocserv();
        w
    }

    fn start_ocserv(&mut self) {
        let conf = self.path("ocserv.conf");
        let log = self.path("ocserv.log");
        let out = File::create(&log).unwrap();
        let child = self
            .server
            .cmd("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                "set -e; mount -t tmpfs -o mode=0755 vfe-run /run; ",
                "[ -L /var/run ] || mount -t tmpfs -o mode=0755 vfe-run /var/run; ",
                "exec ocserv -f -c \"$1\""
            ))
            .arg("sh")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("ocserv starts");
        self.ocserv = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.ocserv_log();
            if log.contains(&format!("listening (TCP) on {SERVER}:{PORT}")) && log.contains("sec-mod initialized") {
                return;
            }
            if let Some(st) = self.ocserv.as_mut().unwrap().try_wait().unwrap() {
                panic!("ocserv exited with {st} before it listened\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "ocserv not listening after {PATIENCE:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A file in the world's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The overlay's upper directory: what openconnect's private `/etc` adds to the machine's.
    pub fn etc_upper(&self) -> PathBuf {
        self.path("etc-upper")
    }

    /// Writes `text` as `/etc/vpnc/<phase>.d/<name>` (mode 0755) of openconnect's private
    /// `/etc` (its overlay's upper directory), for the next [`OcWorld::connect`]: vpnc-script
    /// SOURCES every file there with /bin/sh (`. FILE`) at the start of `phase` (`pre-init`,
    /// `connect`, `disconnect`, `attempt-reconnect`, `reconnect`) or at its end (`post-connect`,
    /// `post-disconnect`, `post-attempt-reconnect`), so an `exit` in it ends vpnc-script. Names
    /// must sort before `zzzz-vfe-harness` to run before the harness's marker. Panics while a
    /// client is connected (an overlay's upper directory must not change under it).
    pub fn hook_file(&self, phase: &str, name: &str, text: &str) -> PathBuf {
        assert!(!self.connected.get(), "hook_file({phase}, {name}) while connected: write hooks before connect()");
        assert!(!name.contains('/') && !phase.contains('/'), "bad hook {phase}/{name}");
        self.write_hook(phase, name, text)
    }

    fn write_hook(&self, phase: &str, name: &str, text: &str) -> PathBuf {
        let d = self.etc_upper().join(format!("vpnc/{phase}.d"));
        std::fs::create_dir_all(&d).unwrap();
        for p in [self.etc_upper().join("vpnc"), d.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        f
    }

    fn marker(&self, phase: &str) -> PathBuf {
        self.path(&format!("marker-{phase}"))
    }

    /// Starts `openconnect --protocol=anyconnect --servercert pin-sha256:… --user user
    /// --passwd-on-stdin --non-inter --script /usr/share/vpnc-scripts/vpnc-script --interface
    /// ocwtun0 https://198.18.1.1:443` in the laptop namespace and a private mount namespace
    /// (overlay `/etc`, tmpfs `/run`), with the password on stdin and an environment of only
    /// PATH, LANG=C and HOME (the directory), its output in `openconnect-<n>.log`. Waits (≤ 20 s)
    /// until vpnc-script's post-connect phase has finished (the harness's post-connect.d hook
    /// ran, after every route and the test's own hooks); panics with the logs if openconnect exits
    /// first or time runs out. One client at a time (they would share `ocwtun0`).
    pub fn connect(&self) -> OcClient<'_> {
        assert!(!self.connected.get(), "connect() while another client is connected");
        for phase in ["post-connect", "post-disconnect"] {
            let _ = std::fs::remove_file(self.marker(phase));
            let touch = format!("touch '{}'\n", self.marker(phase).display());
            self.write_hook(phase, MARKER_HOOK, &touch);
        }
        let (upper, work) = (self.etc_upper(), self.path("etc-work"));
        std::fs::create_dir_all(&work).unwrap();
        let n = self.connects.replace(self.connects.get() + 1);
        let log = self.path(&format!("openconnect-{n}.log"));
        let out = File::create(&log).unwrap();
        let mut cmd = self.laptop.cmd("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                "set -e; mount -t overlay vfe-etc -o \"lowerdir=/etc,upperdir=$1,workdir=$2\" /etc; ",
                "mount -t tmpfs -o mode=0755 vfe-run /run; ",
                "[ -L /var/run ] || mount -t tmpfs -o mode=0755 vfe-run /var/run; ",
                "shift 2; exec openconnect \"$@\""
            ))
            .arg("sh")
            .arg(&upper)
            .arg(&work)
            .arg("--protocol=anyconnect")
            .arg(format!("--servercert=pin-sha256:{}", self.pin))
            .args(["--user", USER, "--passwd-on-stdin", "--non-inter", "--script", VPNC_SCRIPT, "--interface", TUN])
            .arg(format!("https://{SERVER}:{PORT}"))
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // `ip netns exec`, `unshare` (no --fork) and `sh` each exec the next: the child IS openconnect.
        let mut child = cmd.spawn().expect("openconnect starts");
        self.connected.set(true);
        let mut stdin = child.stdin.take().unwrap();
        let _ = writeln!(stdin, "{PASSWORD}");
        drop(stdin);
        let mut c = OcClient { world: self, child, log, exited: false };
        let deadline = Instant::now() + PATIENCE;
        while !self.marker("post-connect").exists() {
            if let Some(st) = c.child.try_wait().unwrap() {
                c.exited = true;
                panic!("openconnect exited with {st} before post-connect\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "openconnect not connected after {PATIENCE:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// The laptop's main table, `ip -4 route show table main` then `ip -6 …`, one route a line
    /// (trailing blanks trimmed), link-local `fe80::/64` routes left out, sorted: what "the same
    /// as before connect" compares.
    pub fn laptop_table(&self) -> String {
        table(&self.laptop)
    }

    /// ocserv's output so far.
    pub fn ocserv_log(&self) -> String {
        std::fs::read_to_string(self.path("ocserv.log")).unwrap_or_default()
    }

    /// The last 60 lines of ocserv's log and of every openconnect log (openconnect's lines and
    /// vpnc-script's stderr), for failure messages.
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        super::log_tails(self.dir.path())
    }
}

impl Drop for OcWorld {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("logs of the failed OpenConnect world:{}", self.logs());
        }
        if let Some(mut c) = self.ocserv.take() {
            stop(&mut c, Duration::from_secs(3));
        }
        // Then the namespaces go (their drop kills whatever still runs in them), then the
        // directory. No mount of this world ever is in the test's own mount namespace.
    }
}

/// A running openconnect (the process itself, not a wrapper), borrowed from its world.
pub struct OcClient<'w> {
    world: &'w OcWorld,
    child: Child,
    /// Its output (openconnect's lines and vpnc-script's stderr).
    pub log: PathBuf,
    exited: bool,
}

impl OcClient<'_> {
    /// openconnect's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT, as Ctrl-C in a terminal: openconnect says BYE to the server and runs vpnc-script
    /// with `reason=disconnect`, then exits. Waits (≤ 20 s) until it exited and checks that
    /// vpnc-script's post-disconnect phase finished (the harness's post-disconnect.d hook ran).
    /// Returns openconnect's exit status.
    pub fn disconnect(mut self) -> ExitStatus {
        run(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "openconnect still runs {PATIENCE:?} after SIGINT\n{}",
                self.world.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.exited = true;
        self.world.connected.set(false);
        assert!(
            self.world.marker("post-disconnect").exists(),
            "openconnect exited ({status}) without vpnc-script's post-disconnect\n{}",
            self.world.logs()
        );
        status
    }
}

impl Drop for OcClient<'_> {
    fn drop(&mut self) {
        if !self.exited {
            stop(&mut self.child, Duration::from_secs(5));
        }
        self.world.connected.set(false);
    }
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`; reaped either way.
fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The links and addresses of the world (see the module's picture), forwarding in the server.
const WIRING: super::fourhost::Wiring = super::fourhost::Wiring {
    wan: WAN,
    bridge: BRIDGE,
    port: "ocw-c0",
    server: SERVER,
    laptop: "198.18.1.2",
    pool: "10.9.0.0/24",
    pool6: "fd00:9::/64",
    default_route: true,
};

/// Writes the server's certificate and key (EC prime256v1, self-signed, two days), the password
/// file (`ocpasswd`), the overlay's upper directory (mode 0755: it becomes the private `/etc`'s
/// root) and `ocserv.conf` into `dir`; returns the pin of the certificate's public key.
fn make_server_files(dir: &Path) -> String {
    let d = dir.display();
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-subj",
        &format!("/CN={SERVER}"),
    ]));
    let pin_cmd = "openssl x509 -in server.crt -pubkey -noout | openssl pkey -pubin -outform der \
                   | openssl dgst -sha256 -binary | base64";
    let pin = String::from_utf8(run(Command::new("sh").current_dir(dir).args(["-c", pin_cmd])).stdout).unwrap();
    let pin = pin.trim().to_string();
    assert_eq!(pin.len(), 44, "pin {pin:?}");
    let mut ocpasswd = Command::new("ocpasswd")
        .arg("-c")
        .arg(dir.join("ocpasswd"))
        .arg(USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ocpasswd starts");
    write!(ocpasswd.stdin.take().unwrap(), "{PASSWORD}\n{PASSWORD}\n").unwrap();
    let out = ocpasswd.wait_with_output().unwrap();
    assert!(out.status.success(), "ocpasswd: {}", String::from_utf8_lossy(&out.stderr));
    let upper = dir.join("etc-upper");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Every path in the namespace's temporary directory: nothing in the machine's /run or /var
    // (ocserv's private /run hides it anyway). No run-as-user: the workers stay root, which
    // reach these files. isolate-workers = false: no seccomp filter in the workers (true works on
    // Debian 12 too; false keeps the filter's syscall list out of the picture on other systems).
    let conf = format!(
        "auth = \"plain[passwd={d}/ocpasswd]\"\n\
         listen-host = {SERVER}\n\
         tcp-port = {PORT}\n\
         udp-port = {PORT}\n\
         server-cert = {d}/server.crt\n\
         server-key = {d}/server.key\n\
         socket-file = {d}/ocserv.sock\n\
         occtl-socket-file = {d}/occtl.sock\n\
         use-occtl = false\n\
         pid-file = {d}/ocserv.pid\n\
         isolate-workers = false\n\
         use-utmp = false\n\
         max-clients = 8\n\
         max-same-clients = 0\n\
         max-ban-score = 0\n\
         rate-limit-ms = 0\n\
         keepalive = 32400\n\
         dpd = 90\n\
         mobile-dpd = 1800\n\
         try-mtu-discovery = false\n\
         auth-timeout = 240\n\
         cookie-timeout = 300\n\
         deny-roaming = false\n\
         log-level = 1\n\
         device = vpns\n\
         predictable-ips = true\n\
         ping-leases = false\n\
         ipv4-network = 10.9.0.0\n\
         ipv4-netmask = 255.255.255.0\n\
         ipv6-network = fd00:9::/64\n\
         route = 172.20.0.0/255.255.0.0\n\
         route = fd00:ac14::/64\n"
    );
    std::fs::write(dir.join("ocserv.conf"), conf).unwrap();
    pin
}

/// The main table of `ns`, both families, without fe80 routes, sorted lines.
fn table(ns: &Netns) -> String {
    let text = ns.ip(&["-4", "route", "show", "table", "main"]) + &ns.ip(&["-6", "route", "show", "table", "main"]);
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.starts_with("fe80:")).collect();
    lines.sort();
    lines.join("\n")
}
