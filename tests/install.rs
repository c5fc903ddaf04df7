//! `vpnfix install` into temporary roots: modes, owners, the pre-down link, idempotence, dry
//! runs, foreign and edited files, and an uninstall that leaves the root exactly as it was.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use vpnfix::install::*;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vpnfix-install-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A root to install into and a stand-in binary outside it.
struct Setup {
    root: Temp,
    _bin_dir: Temp,
    binary: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let bin_dir = Temp::new(&format!("{tag}-bin"));
        let binary = bin_dir.0.join("vpnfix");
        fs::write(&binary, b"\x7fELF stand-in for vpnfix\n").unwrap();
        Setup { root: Temp::new(tag), _bin_dir: bin_dir, binary }
    }

    fn opts(&self) -> InstallOptions {
        InstallOptions {
            root: self.root.0.clone(),
            prefix: "/usr/local".into(),
            binary: self.binary.clone(),
            dry_run: false,
            uninstall: false,
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.0.join(path.trim_start_matches('/'))
    }

    fn install(&self) -> Report {
        install(&self.opts()).unwrap()
    }

    fn uninstall(&self) -> Report {
        install(&InstallOptions { uninstall: true, ..self.opts() }).unwrap()
    }
}

/// Every path under `root` with its kind, mode, owner and content (or link target).
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".into()
            } else {
                format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            };
            let line = format!("{:o} {}:{} {what}", m.mode(), m.uid(), m.gid());
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), line);
        }
    }
    out
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn a_fresh_install_puts_every_file_in_place_with_its_mode_and_owner() {
    let s = Setup::new("fresh");
    let report = s.install();
    let text = report.to_string();
    assert!(text.contains("create /usr/local/bin/vpnfix (0755)\n"), "{text}");
    assert!(text.contains(&format!("create {PRE_DOWN_LINK} -> ../90-vpnfix\n")), "{text}");
    assert!(text.ends_with("config /etc/openvpn/vpnfix.conf\n"), "{text}");
    assert!(text.contains("NetworkManager needs nothing more"), "{text}");
    assert_eq!(report.failed(), 0);

    for (path, mode) in [("/usr/local/bin/vpnfix", 0o755), (DISPATCHER, 0o755), (SNIPPET, 0o644)] {
        let m = fs::symlink_metadata(s.at(path)).unwrap();
        assert!(m.is_file(), "{path}");
        assert_eq!(m.mode() & 0o7777, mode, "{path}");
        assert_eq!((m.uid(), m.gid()), (euid(), if euid() == 0 { 0 } else { m.gid() }), "{path}");
    }
    assert_eq!(fs::read(s.at("/usr/local/bin/vpnfix")).unwrap(), fs::read(&s.binary).unwrap());
    assert_eq!(fs::read_link(s.at(PRE_DOWN_LINK)).unwrap(), Path::new("../90-vpnfix"));
    for dir in ["/usr/local/share/vpnfix", "/etc/NetworkManager/dispatcher.d/pre-down.d", "/etc/openvpn"] {
        assert_eq!(fs::metadata(s.at(dir)).unwrap().mode() & 0o7777, 0o755, "{dir}");
    }
    let manifest = fs::read_to_string(s.at("/usr/local/share/vpnfix/installed")).unwrap();
    for path in ["/usr/local/bin/vpnfix", DISPATCHER, PRE_DOWN_LINK, SNIPPET, "/etc/openvpn", "/usr/local/share/vpnfix"]
    {
        assert!(manifest.contains(&format!("\t{path}\n")), "{path} not in\n{manifest}");
    }
    // vpnc-script's hook files (OpenConnect): sourced, so 0644, calling the installed binary.
    for (path, _) in vpnfix::install::VPNC_HOOKS {
        let m = fs::symlink_metadata(s.at(path)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644, "{path}");
        let text = fs::read_to_string(s.at(path)).unwrap();
        assert!(text.contains("/usr/local/bin/vpnfix vpnc "), "{path}: {text}");
        assert!(manifest.contains(&format!("\t{path}\n")), "{path} not in\n{manifest}");
    }
}

#[test]
fn the_dispatcher_script_meets_networkmanagers_rules_through_both_paths() {
    let s = Setup::new("nm");
    s.install();
    // nm-dispatcher.c: after following links, a regular non-empty file, owned by uid 0, not
    // group/other-writable, not setuid, owner-executable.
    for path in [DISPATCHER, PRE_DOWN_LINK] {
        let m = fs::metadata(s.at(path)).unwrap();
        assert!(m.is_file() && m.len() > 0, "{path}");
        if euid() == 0 {
            assert_eq!(m.uid(), 0, "{path}");
        }
        assert_eq!(m.mode() & 0o022, 0, "{path}");
        assert_eq!(m.mode() & 0o4000, 0, "{path}");
        assert_ne!(m.mode() & 0o100, 0, "{path}");
    }
    let script = fs::read_to_string(s.at(DISPATCHER)).unwrap();
    assert!(script.contains("exec /usr/local/bin/vpnfix \"$@\"\n"), "{script}");
}

#[test]
fn the_dispatcher_script_runs_vpnfix_only_for_vpn_events() {
    let s = Setup::new("events");
    let out = s.root.0.join("ran");
    fs::write(&s.binary, format!("#!/bin/sh\necho \"$*\" >> {}\n", out.display())).unwrap();
    fs::set_permissions(&s.binary, fs::Permissions::from_mode(0o755)).unwrap();
    s.install();
    // Point the installed script at the installed stand-in, under the temp root.
    let script = fs::read_to_string(s.at(DISPATCHER)).unwrap();
    let here = s.root.0.join("dispatch.sh");
    let bin = s.at("/usr/local/bin/vpnfix");
    fs::write(&here, script.replace("/usr/local/bin/vpnfix", bin.to_str().unwrap())).unwrap();
    for (iface, action) in
        [("wlan0", "up"), ("tun0", "vpn-up"), ("tun0", "dhcp4-change"), ("tun0", "vpn-pre-down"), ("tun0", "vpn-down")]
    {
        let st = Command::new("/bin/sh").arg(&here).args([iface, action]).env_clear().status().unwrap();
        assert!(st.success(), "{action}");
    }
    assert_eq!(fs::read_to_string(&out).unwrap(), "tun0 vpn-up\ntun0 vpn-pre-down\ntun0 vpn-down\n");
}

#[test]
fn a_second_install_finds_nothing_to_do_and_changes_nothing() {
    let s = Setup::new("twice");
    s.install();
    let before = listing(&s.root.0);
    let again = s.install();
    assert_eq!(again.changes(), 0, "{again}");
    assert!(again.to_string().contains("\nnothing to do\n"), "{again}");
    assert!(again.actions.iter().all(|a| matches!(a, Action::Keep { .. })), "{again}");
    assert_eq!(listing(&s.root.0), before);
}

#[test]
fn a_dry_run_reports_the_same_actions_and_touches_nothing() {
    let s = Setup::new("dry");
    fs::create_dir_all(s.at("/etc/openvpn")).unwrap();
    let before = listing(&s.root.0);
    let dry = install(&InstallOptions { dry_run: true, ..s.opts() }).unwrap();
    assert_eq!(listing(&s.root.0), before);
    assert!(dry.to_string().contains("dry run: nothing was changed"), "{dry}");
    let real = s.install();
    assert_eq!(dry.actions, real.actions);

    let before = listing(&s.root.0);
    let dry = install(&InstallOptions { dry_run: true, uninstall: true, ..s.opts() }).unwrap();
    assert_eq!(listing(&s.root.0), before);
    assert_eq!(dry.actions, s.uninstall().actions);
}

#[test]
fn a_foreign_snippet_is_kept_reported_and_survives_uninstall() {
    let s = Setup::new("foreign");
    fs::create_dir_all(s.at("/etc/openvpn")).unwrap();
    fs::write(s.at(SNIPPET), "# the admin's own\n").unwrap();
    let before = listing(&s.root.0);
    let report = s.install();
    let skip = report.actions.iter().find(|a| matches!(a, Action::Skip { path, .. } if path == Path::new(SNIPPET)));
    let Some(Action::Skip { why, .. }) = skip else { panic!("no skip for {SNIPPET}:\n{report}") };
    assert!(why.contains("did not install"), "{why}");
    assert!(report.to_string().contains(&format!("{SNIPPET} was skipped")), "{report}");
    assert_eq!(fs::read_to_string(s.at(SNIPPET)).unwrap(), "# the admin's own\n");
    assert!(!fs::read_to_string(s.at("/usr/local/share/vpnfix/installed")).unwrap().contains(SNIPPET));
    s.uninstall();
    assert_eq!(listing(&s.root.0), before);
}

#[test]
fn an_identical_foreign_file_is_kept_and_not_claimed() {
    let s = Setup::new("identical");
    fs::create_dir_all(s.at("/usr/local/bin")).unwrap();
    fs::copy(&s.binary, s.at("/usr/local/bin/vpnfix")).unwrap();
    fs::set_permissions(s.at("/usr/local/bin/vpnfix"), fs::Permissions::from_mode(0o755)).unwrap();
    let before = listing(&s.root.0);
    let report = s.install();
    assert!(report.to_string().contains("keep /usr/local/bin/vpnfix: already installed\n"), "{report}");
    s.uninstall();
    assert_eq!(listing(&s.root.0), before, "the admin's own copy must stay");
}

#[test]
fn uninstall_leaves_the_root_exactly_as_before() {
    for prepared in [false, true] {
        let s = Setup::new("roundtrip");
        if prepared {
            fs::create_dir_all(s.at("/etc/NetworkManager/dispatcher.d/pre-down.d")).unwrap();
            fs::write(s.at("/etc/NetworkManager/dispatcher.d/01-ifupdown"), "#!/bin/sh\n").unwrap();
            fs::create_dir_all(s.at("/usr/local/bin")).unwrap();
            fs::write(s.at("/usr/local/bin/other-tool"), "x").unwrap();
        }
        let before = listing(&s.root.0);
        s.install();
        assert_ne!(listing(&s.root.0), before);
        let report = s.uninstall();
        assert_eq!(report.failed(), 0, "{report}");
        assert_eq!(listing(&s.root.0), before, "prepared: {prepared}\n{report}");
        assert!(report.to_string().ends_with("config /etc/openvpn/vpnfix.conf\n"), "{report}");
        let again = s.uninstall();
        assert!(again.to_string().contains("nothing to uninstall: no manifest"), "{again}");
    }
}

#[test]
fn an_admin_edited_file_survives_uninstall() {
    let s = Setup::new("edited");
    s.install();
    fs::write(s.at(SNIPPET), "# vpnfix, tuned by the admin\nsetenv VPNFIX_POLICY vpn\n").unwrap();
    let again = s.install();
    assert!(again.to_string().contains(&format!("skip {SNIPPET}: changed since vpnfix installed it")), "{again}");
    let report = s.uninstall();
    let text = report.to_string();
    assert!(text.contains(&format!("keep {SNIPPET}: changed since vpnfix installed it")), "{text}");
    assert!(text.contains("keep /etc/openvpn: not empty"), "{text}");
    assert!(text.contains("remove /usr/local/share/vpnfix/installed\n"), "{text}");
    assert!(fs::read_to_string(s.at(SNIPPET)).unwrap().contains("tuned by the admin"));
    let left: Vec<PathBuf> = listing(&s.root.0).into_keys().collect();
    assert_eq!(left, [PathBuf::from("etc"), "etc/openvpn".into(), "etc/openvpn/vpnfix.conf".into()]);
}

#[test]
fn a_new_binary_replaces_the_one_vpnfix_installed() {
    let s = Setup::new("upgrade");
    s.install();
    fs::write(&s.binary, b"\x7fELF vpnfix, next version\n").unwrap();
    let report = s.install();
    assert!(
        report.to_string().contains("replace /usr/local/bin/vpnfix (0755): vpnfix installed another version"),
        "{report}"
    );
    assert_eq!(report.changes(), 2, "the binary and the manifest:\n{report}");
    assert_eq!(fs::read(s.at("/usr/local/bin/vpnfix")).unwrap(), b"\x7fELF vpnfix, next version\n");
    assert_eq!(s.install().changes(), 0);
    assert!(s.uninstall().to_string().contains("remove /usr/local/bin/vpnfix\n"));
}

#[test]
fn the_running_binary_is_kept_in_place() {
    let s = Setup::new("running");
    s.install();
    let opts = InstallOptions { binary: s.at("/usr/local/bin/vpnfix"), ..s.opts() };
    let report = install(&opts).unwrap();
    assert!(report.to_string().contains("keep /usr/local/bin/vpnfix: it is the running binary"), "{report}");
    assert_eq!(report.changes(), 0, "{report}");
}

#[test]
fn the_prefix_is_written_into_the_script_and_the_snippet() {
    let s = Setup::new("prefix");
    let report = install(&InstallOptions { prefix: "/opt/vpnfix".into(), ..s.opts() }).unwrap();
    assert!(report.to_string().contains("create /opt/vpnfix/bin/vpnfix (0755)"), "{report}");
    let script = fs::read_to_string(s.at(DISPATCHER)).unwrap();
    assert!(script.contains("exec /opt/vpnfix/bin/vpnfix \"$@\""), "{script}");
    let snippet = fs::read_to_string(s.at(SNIPPET)).unwrap();
    assert!(snippet.contains("route-up /opt/vpnfix/bin/vpnfix\n") && !snippet.contains("/usr/local"), "{snippet}");
    assert!(s.at("/opt/vpnfix/share/vpnfix/installed").is_file());
    let bad = install(&InstallOptions { prefix: "/opt/my vpn".into(), ..s.opts() }).unwrap_err();
    assert!(bad.to_string().contains("--prefix /opt/my vpn"), "{bad}");
}

#[test]
fn a_pre_down_link_is_not_made_to_a_foreign_script() {
    let s = Setup::new("nmforeign");
    fs::create_dir_all(s.at("/etc/NetworkManager/dispatcher.d")).unwrap();
    fs::write(s.at(DISPATCHER), "#!/bin/sh\n# someone else's\n").unwrap();
    let report = s.install();
    assert!(!s.at(PRE_DOWN_LINK).exists() && fs::symlink_metadata(s.at(PRE_DOWN_LINK)).is_err(), "{report}");
    let text = report.to_string();
    assert!(text.contains(&format!("skip {PRE_DOWN_LINK}: it would point at {DISPATCHER}")), "{text}");
    assert!(text.contains("vpnfix misses those events"), "{text}");
}

#[test]
fn installing_into_slash_needs_root() {
    if euid() == 0 {
        eprintln!("SKIPPED (root): the refusal shows only without root");
        return;
    }
    let opts = InstallOptions { root: "/".into(), ..Setup::new("notroot").opts() };
    let e = install(&opts).unwrap_err();
    assert!(e.to_string().contains("run as root (sudo vpnfix install)"), "{e}");
}
