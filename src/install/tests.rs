//! Table tests of the pure decisions; `tests/install.rs` runs whole installs in a temp root.

use super::decide::{decide, Content, Decision};
use super::fsops::Found;
use super::*;

fn file(bytes: &[u8], mode: u32, uid: u32) -> Found {
    Found::File { bytes: bytes.to_vec(), mode, uid, gid: uid }
}

fn link(target: &str) -> Found {
    Found::Link { target: target.into() }
}

#[test]
fn decide_creates_keeps_replaces_only_its_own_and_skips_the_rest() {
    let want = Content::File { bytes: b"new".to_vec(), mode: 0o755 };
    let old = Entry::File { hash: fnv1a64(b"old") };
    let same = Entry::File { hash: fnv1a64(b"new") };
    // (case, what is there, what the manifest recorded, running as root, expected decision)
    type Case<'a> = (&'a str, Option<Found>, Option<&'a Entry>, bool, &'a str);
    let cases: [Case; 9] = [
        ("missing", None, None, true, "create"),
        ("identical, foreign", Some(file(b"new", 0o755, 0)), None, true, "keep"),
        ("identical, not root: owner ignored", Some(file(b"new", 0o755, 1000)), None, false, "keep"),
        ("identical, wrong mode, ours", Some(file(b"new", 0o644, 0)), Some(&same), true, "replace"),
        ("identical, wrong owner, foreign", Some(file(b"new", 0o755, 1000)), None, true, "skip"),
        ("older version of ours", Some(file(b"old", 0o755, 0)), Some(&old), true, "replace"),
        ("ours, edited by the admin", Some(file(b"edited", 0o755, 0)), Some(&old), true, "skip"),
        ("foreign file", Some(file(b"theirs", 0o755, 0)), None, true, "skip"),
        ("a directory", Some(Found::Other { kind: "a directory" }), None, true, "skip"),
    ];
    for (name, found, recorded, as_root, want_kind) in cases {
        let kind = match decide(&want, found.as_ref(), recorded, as_root) {
            Decision::Create => "create",
            Decision::Replace(_) => "replace",
            Decision::Keep(_) => "keep",
            Decision::Skip(_) => "skip",
        };
        assert_eq!(kind, want_kind, "{name}");
    }
}

#[test]
fn decide_on_links() {
    let want = Content::Link { target: "../90-vpnfix".into() };
    let ours = Entry::Link { target: "../other".into() };
    assert_eq!(decide(&want, Some(&link("../90-vpnfix")), None, true), Decision::Keep("already installed".into()));
    assert!(matches!(decide(&want, Some(&link("../other")), Some(&ours), true), Decision::Replace(_)));
    match decide(&want, Some(&link("/dev/null")), None, true) {
        Decision::Skip(why) => assert!(why.contains("disable"), "{why}"),
        d => panic!("{d:?}"),
    }
    assert!(matches!(decide(&want, Some(&file(b"x", 0o755, 0)), Some(&ours), true), Decision::Skip(_)));
}

#[test]
fn prefixes_must_be_plain_absolute_paths() {
    for ok in ["/usr/local", "/opt/vpnfix-1.2", "/"] {
        assert!(check_prefix(Path::new(ok)).is_ok(), "{ok}");
    }
    for bad in ["usr/local", "/opt/../etc", "/opt/my vpn", "/opt/$x", "/opt/\"q\"", "/opt/a\nb"] {
        assert!(check_prefix(Path::new(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn shipped_files_name_the_binary_and_guard_the_events() {
    assert!(DISPATCHER_TEXT.starts_with("#!/bin/sh\n"));
    assert!(DISPATCHER_TEXT.contains(&format!("exec {SHIPPED_BIN} \"$@\"")));
    assert!(DISPATCHER_TEXT.contains("vpn-up | vpn-pre-down | vpn-down) ;;"));
    for hook in ["route-up", "route-pre-down", "down"] {
        assert!(SNIPPET_TEXT.contains(&format!("\n{hook} {SHIPPED_BIN}\n")), "{hook}");
    }
}

#[test]
fn actions_read_as_the_report_lines() {
    let p = PathBuf::from("/usr/local/bin/vpnfix");
    assert_eq!(
        Action::Create { path: p.clone(), what: What::File { mode: 0o755 } }.to_string(),
        "create /usr/local/bin/vpnfix (0755)"
    );
    let l = Action::Create { path: PRE_DOWN_LINK.into(), what: What::Link { target: PRE_DOWN_TARGET.into() } };
    assert_eq!(l.to_string(), format!("create {PRE_DOWN_LINK} -> ../90-vpnfix"));
    assert_eq!(Action::Remove { path: p }.to_string(), "remove /usr/local/bin/vpnfix");
}
