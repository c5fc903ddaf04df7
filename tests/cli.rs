//! The built binary, offline: `vpnfix plan --from` on the bundles captured from real OpenVPN 2.6 +
//! Docker 20.10 laptops and on the examples, against golden files; bad input and exit codes.
//! Goldens are rewritten with `VPNFIX_UPDATE_GOLDEN=1 cargo test --test cli`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A configuration file of the test's own (absent) and no syslog: never the machine's.
const OWN: [(&str, &str); 2] = [("VPNFIX_CONF_FILE", "/nonexistent/vpnfix.conf"), ("VPNFIX_SYSLOG", "off")];

fn vpnfix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpnfix")).args(args).env_clear().envs(OWN).output().expect("vpnfix runs")
}

fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("VPNFIX_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden {}", path.display()));
    assert_eq!(actual, want, "{name} differs from its golden file");
}

const BUNDLES: &[&str] = &[
    "tests/fixtures/bundles/seed-openvpn26",
    "tests/fixtures/bundles/seed-route-noexec",
    "tests/fixtures/bundles/shop-ipv6-aggregate",
    "examples/laptop-bridge",
    "examples/laptop-docker",
];

#[test]
fn plans_of_every_bundle_match_their_goldens() {
    for b in BUNDLES {
        let dir = root().join(b);
        let name = Path::new(b).file_name().unwrap().to_str().unwrap();
        let text = vpnfix(&["plan", "--from", dir.to_str().unwrap()]);
        assert!(text.status.success(), "{b}: {}", String::from_utf8_lossy(&text.stderr));
        golden(&format!("{name}.txt"), &String::from_utf8(text.stdout).unwrap());
        let json = vpnfix(&["plan", "--json", "--from", dir.to_str().unwrap()]);
        assert!(json.status.success());
        golden(&format!("{name}.json"), &String::from_utf8(json.stdout).unwrap());
    }
}

fn add_lines(dir: &str, extra: &[&str]) -> Vec<String> {
    let dir = root().join(dir);
    let mut args = vec!["plan", "--json", "--from", dir.to_str().unwrap()];
    args.extend(extra);
    let out = vpnfix(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!("{} dev {} {}", r["dst"].as_str().unwrap(), r["dev"].as_str().unwrap(), r["side"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn the_json_interface_has_the_fields_tools_rely_on() {
    let dir = root().join("tests/fixtures/bundles/seed-openvpn26");
    let out = vpnfix(&["plan", "--json", "--from", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["add", "conflicts", "skipped", "notes"] {
        assert!(v[key].is_array(), "{key}");
    }
    let first = &v["add"][0];
    assert_eq!(first["dst"], "172.20.0.0/24");
    assert_eq!(first["dev"], "br-2e7df30ca722");
    assert_eq!(first["gateway"], serde_json::Value::Null);
    assert_eq!(first["side"], "local");
    assert_eq!(v["add"][1]["side"], "vpn");
}

#[test]
fn seed_cases_give_the_plans_the_design_names() {
    let noexec = add_lines("tests/fixtures/bundles/seed-route-noexec", &[]);
    assert_eq!(noexec.len(), 8);
    assert!(noexec.iter().all(|l| l.ends_with("dev tun0 vpn")));
    assert_eq!(noexec[0], "172.20.1.0/24 dev tun0 vpn");
    assert_eq!(noexec[7], "172.20.128.0/17 dev tun0 vpn");
    let ovpn26 = add_lines("tests/fixtures/bundles/seed-openvpn26", &[]);
    assert_eq!(ovpn26[0], "172.20.0.0/24 dev br-2e7df30ca722 local");
    assert_eq!(&ovpn26[1..], &noexec[..]);
}

#[test]
fn flags_override_the_pushes_and_the_policy() {
    let vpn = add_lines("tests/fixtures/bundles/seed-openvpn26", &["--policy", "vpn"]);
    assert_eq!(vpn, ["172.20.0.0/17 dev tun0 vpn", "172.20.128.0/17 dev tun0 vpn"]);
    let routed = add_lines("tests/fixtures/bundles/seed-route-noexec", &["--route", "172.20.2.0/24"]);
    assert_eq!(routed, ["172.20.2.0/24 dev tun0 vpn"], "nothing local in that /24: all of it to the VPN");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_usage_exit() {
    let tmp = std::env::temp_dir().join(format!("vpnfix-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("route.json"), "{not json").unwrap();
    let out = vpnfix(&["plan", "--from", tmp.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vpnfix: error: /")
            && err.contains("route.json is not the JSON that `ip -j route show table main` prints: "),
        "{err}"
    );
    std::fs::remove_file(tmp.join("route.json")).unwrap();
    std::fs::write(
        tmp.join("env"),
        "route_network_1=172.20.0.0\nroute_netmask_1=255.0.255.0\ndev=tun0\nVPNFIX_POLICY=maybe\n",
    )
    .unwrap();
    let out = vpnfix(&["plan", "--from", tmp.to_str().unwrap()]);
    std::fs::remove_dir_all(&tmp).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.contains("skipped route_netmask_1=\"255.0.255.0\": netmask is not contiguous; route skipped"),
        "{text}"
    );
    assert!(text.contains("skipped VPNFIX_POLICY=\"maybe\": expected split, vpn or local"), "{text}");
    let out = vpnfix(&["plan", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "misuse is exit 2 (clap)");
}

/// A device name names a state file: one that is not a device name is refused before anything
/// reads or removes a file, by every command that takes one.
#[test]
fn device_names_are_checked_before_they_name_a_file() {
    for args in [
        &["cleanup", "--dev", "../../etc/passwd"][..],
        &["status", "--dev", "a/b"],
        &["plan", "--dev", "x y", "--from", "examples/laptop-docker"],
        &["apply", "--dev", "abcdefghijklmnop"],
    ] {
        let out = vpnfix(args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("not a device name"), "{args:?}: {err}");
    }
}

fn hook(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpnfix"))
        .args(args)
        .env_clear()
        .envs(OWN)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn hooks_never_fail_openvpn_unless_route_up_is_strict() {
    for st in ["up", "route-pre-down", "down", "route-up"] {
        let out = hook(&[("script_type", st)], &[]);
        assert_eq!(out.status.code(), Some(0), "{st}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err,
            "vpnfix: error: no tunnel device: neither the variable `dev` nor a first argument names it; nothing done\n",
            "{st}"
        );
    }
    let strict = hook(&[("script_type", "route-up"), ("VPNFIX_STRICT", "true")], &[]);
    assert_eq!(strict.status.code(), Some(1), "route-up under VPNFIX_STRICT reports failure");
    let strict_down = hook(&[("script_type", "down"), ("VPNFIX_STRICT", "true")], &[]);
    assert_eq!(strict_down.status.code(), Some(0), "down never fails, strict or not");
    let ignored = hook(&[("script_type", "ipchange"), ("dev", "tun0")], &["192.0.2.1 1194"]);
    assert_eq!(ignored.status.code(), Some(0));
    assert!(ignored.stderr.is_empty(), "quiet when there is nothing to do");
}

/// The configuration file and the syslog socket are the ones the environment names: a test's
/// own, never the machine's. The file's values count (a bad one is reported naming it), and
/// every line also reaches the syslog socket, as `vpnfix[pid]`.
#[test]
fn the_config_file_and_syslog_are_the_ones_named() {
    let dir = std::env::temp_dir().join(format!("vpnfix-cli-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("vpnfix.conf");
    std::fs::write(&conf, "# test\nVPNFIX_POLICY=sideways\nDOCKER_HOST=unix:///nonexistent/engine.sock\n").unwrap();
    let log = dir.join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&log).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpnfix"))
        .args(["plan", "--dev", "lo", "--route", "10.0.0.0/8"])
        .env_clear()
        .env("VPNFIX_CONF_FILE", &conf)
        .env("VPNFIX_SYSLOG", &log)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("VPNFIX_POLICY=\"sideways\": expected split, vpn or local"), "{err}");
    assert!(err.contains("the container engine at unix:///nonexistent/engine.sock: Socket not found"), "{err}");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a syslog line");
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(line.contains("vpnfix[") && line.contains("sideways"), "{line}");
}

/// A bundle whose `env` was captured from NetworkManager's dispatcher (`VPN_IP_IFACE`,
/// `VPN_IP4_ROUTE_N`) replays like one from OpenVPN: same tunnel, same pushes, same plan.
#[test]
fn a_bundle_from_networkmanager_replays_like_one_from_openvpn() {
    let seed = root().join("tests/fixtures/bundles/seed-openvpn26");
    let dir = std::env::temp_dir().join(format!("vpnfix-cli-nm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["route.json", "route6.json", "link.json", "addr.json", "neigh.json", "docker.json"] {
        std::fs::copy(seed.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("env"),
        "NM_DISPATCHER_ACTION=vpn-up\nCONNECTION_UUID=6f0e3a56-0000-4000-8000-00000000a002\n\
         DEVICE_IFACE=eth0\nVPN_IP_IFACE=tun0\nVPN_IP4_ADDRESS_0=10.8.0.2/24 10.8.0.1\n\
         VPN_IP4_NUM_ROUTES=1\nVPN_IP4_ROUTE_0=172.20.2.0/24 10.8.0.1 0\n",
    )
    .unwrap();
    let nm = add_lines(dir.to_str().unwrap(), &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    // The push (172.20.2.0/24) is not the route the kernel has through tun0 (172.20.0.0/16):
    // the plan is the environment's, not one read off the table.
    let ovpn = add_lines("tests/fixtures/bundles/seed-openvpn26", &["--route", "172.20.2.0/24"]);
    assert_eq!(nm, ovpn, "NetworkManager's env plans as OpenVPN's does");
    assert_ne!(nm, add_lines("tests/fixtures/bundles/seed-openvpn26", &[]));
}

/// A bundle whose `env` comes from vpnc-script (OpenConnect 9.01's post-connect, `TUNDEV`,
/// `CISCO_SPLIT_INC_N_*`) replays like one from OpenVPN with the same pushes.
#[test]
fn a_bundle_from_vpnc_script_replays_like_one_from_openvpn() {
    let seed = root().join("tests/fixtures/bundles/seed-openvpn26");
    let dir = std::env::temp_dir().join(format!("vpnfix-cli-vpnc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["route.json", "route6.json", "link.json", "addr.json", "neigh.json", "docker.json"] {
        std::fs::copy(seed.join(f), dir.join(f)).unwrap();
    }
    let env = std::fs::read_to_string(root().join("tests/fixtures/openconnect-9.01/post-connect.env")).unwrap();
    std::fs::write(dir.join("env"), env.replace("TUNDEV=ocwtun0", "TUNDEV=tun0")).unwrap();
    let text = vpnfix(&["plan", "--from", dir.to_str().unwrap()]);
    let vpnc = add_lines(dir.to_str().unwrap(), &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    let out = String::from_utf8(text.stdout).unwrap();
    assert!(out.contains("pushed 172.20.0.0/16 (CISCO_SPLIT_INC_0_ADDR)"), "{out}");
    assert!(out.contains("pushed fd00:ac14::/64 (CISCO_IPV6_SPLIT_INC_0_ADDR)"), "{out}");
    let ovpn =
        add_lines("tests/fixtures/bundles/seed-openvpn26", &["--route", "172.20.0.0/16", "--route", "fd00:ac14::/64"]);
    assert_eq!(vpnc, ovpn, "vpnc-script's env plans as OpenVPN's does");
}
