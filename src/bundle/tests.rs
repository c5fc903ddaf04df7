//! Bundle reading and writing, on hand-written files and round trips.

use super::*;

fn raw(json: &str) -> RawRoute {
    serde_json::from_str(json).unwrap()
}

#[test]
fn routes_as_iproute2_prints_them() {
    let r = route(&raw(r#"{"dst":"172.20.0.0/16","gateway":"10.8.0.1","dev":"tun0","flags":[]}"#), false).unwrap();
    assert_eq!(r.to_string(), "172.20.0.0/16 via 10.8.0.1 dev tun0 proto boot metric 0");
    let r = route(&raw(r#"{"dst":"172.20.0.0/16","dev":"br-x","protocol":"kernel","scope":"link","prefsrc":"172.20.0.1","flags":[]}"#), false).unwrap();
    assert!(r.is_on_link());
    let r = route(&raw(r#"{"dst":"10.0.1.66","dev":"tun0","protocol":"kernel","scope":"link","flags":[]}"#), false)
        .unwrap();
    assert_eq!(r.dst.to_string(), "10.0.1.66/32");
    let r =
        route(&raw(r#"{"dst":"default","gateway":"fe80::1","dev":"eth0","metric":1024,"flags":[]}"#), true).unwrap();
    assert_eq!(r.dst.to_string(), "::/0");
    let r = route(&raw(r#"{"type":"unreachable","dst":"10.0.0.0/8","protocol":"86","flags":[]}"#), false).unwrap();
    assert_eq!((r.kind, r.dev, r.protocol), (RouteKind::Reject, None, Proto(86)));
    let r = route(&raw(r#"{"dst":"10.9.0.0/16","nexthops":[{"gateway":"10.0.0.1","dev":"eth0"},{"gateway":"10.1.0.1","dev":"eth1"}],"flags":[]}"#), false).unwrap();
    assert_eq!(r.dev, None, "multipath over two devices has no single device");
}

#[test]
fn bad_route_entries_say_what_is_wrong() {
    let cases = [
        (r#"{"dst":"172.20.0.0/33","flags":[]}"#, "dst \"172.20.0.0/33\" is not a prefix"),
        (r#"{"dst":"172.20.0.1/16","flags":[]}"#, "dst \"172.20.0.1/16\" is not a prefix"),
        (r#"{"dst":"fd00::/64","flags":[]}"#, "dst \"fd00::/64\" is not a prefix"),
        (r#"{"dst":"10.0.0.0/8","gateway":"x","flags":[]}"#, "gateway \"x\" is not an address"),
        (r#"{"dst":"10.0.0.0/8","protocol":"martian","flags":[]}"#, "protocol \"martian\" is unknown"),
    ];
    for (json, why) in cases {
        assert_eq!(route(&raw(json), false).unwrap_err(), why);
    }
}

#[test]
fn the_captured_bundles_read_completely() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bundles");
    for name in ["seed-openvpn26", "seed-route-noexec", "shop-ipv6-aggregate"] {
        let b = read(&Path::new(root).join(name)).unwrap();
        assert!(b.host.skipped.is_empty(), "{name}: {:?}", b.host.skipped);
        assert!(b.host.routes.len() >= 15, "{name}");
        let docker = b.host.docker.unwrap();
        let milvus = docker.iter().find(|n| n.name == "milvus").unwrap();
        assert_eq!(milvus.bridge, "br-2e7df30ca722");
        assert_eq!(milvus.compose_project.as_deref(), Some("milvus"));
        assert_eq!(milvus.containers.len(), 3);
        assert!(b.host.links.iter().any(|l| l.name == "br-2e7df30ca722" && l.is_bridge()));
        assert!(b.env.iter().any(|(k, v)| k == "dev" && v == "tun0"));
    }
}

#[test]
fn a_written_bundle_reads_back_to_the_same_facts() {
    let src =
        read(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bundles/shop-ipv6-aggregate"))).unwrap();
    let docker: Vec<crate::docker::EngineNetwork> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bundles/shop-ipv6-aggregate/docker.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("vpnfix-bundle-rt-{}", std::process::id()));
    let snap = Snapshot {
        routes: &src.host.routes,
        links: &src.host.links,
        addrs: &src.host.addrs,
        neighbours: &src.host.neighbours,
        docker: Some(&docker),
        env: &src.env,
    };
    write(&dir, &snap).unwrap();
    let back = read(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back.host.routes, src.host.routes);
    assert_eq!(back.host.links, src.host.links);
    assert_eq!(back.host.addrs, src.host.addrs);
    assert_eq!(back.host.neighbours, src.host.neighbours);
    assert_eq!(back.host.docker, src.host.docker);
    assert_eq!(back.env, src.env);
}

#[test]
fn environment_values_with_blanks_or_quotes_are_written_to_read_back() {
    // Found by the bundle fuzz target (fuzz/artifacts/bundle/crash-env-value-with-spaces-or-quotes).
    let env: Vec<(String, String)> = [("VPNFIX_KEEP", " 172.20.5.0/24"), ("a", "'x'"), ("b", "\"y"), ("c", "z ")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let snap = Snapshot { routes: &[], links: &[], addrs: &[], neighbours: &[], docker: None, env: &env };
    let files = to_texts(&snap);
    let (_, text) = files.iter().find(|(n, _)| *n == "env").unwrap();
    assert_eq!(String::from_utf8_lossy(text), "VPNFIX_KEEP=\" 172.20.5.0/24\"\na=\"'x'\"\nb=\"y\nc=\"z \"\n");
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    assert_eq!(from_texts(&files).unwrap().env, env);
}

#[test]
fn a_missing_directory_is_an_empty_bundle_and_bad_json_names_the_file() {
    let b = read(Path::new("/nonexistent/vpnfix-bundle")).unwrap();
    assert!(b.host.routes.is_empty() && b.host.docker.is_none() && b.env.is_empty());
    let dir = std::env::temp_dir().join(format!("vpnfix-bundle-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("route.json"), "[{\"dst\": ").unwrap();
    let err = read(&dir).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.ends_with("route.json is not the JSON that `ip -j route show table main` prints"), "{err}");
}

/// Routes stream out of route.json and route6.json as they parse: a bad entry is one skip line
/// naming the file and its place, the others are kept in order, and a text
/// that is not a JSON list is refused with the file named.
#[test]
fn route_files_are_read_entry_by_entry() {
    let v4 = br#"[{"dst":"172.20.0.0/16","dev":"br-x","protocol":"kernel","scope":"link","flags":[]},
        {"dst":"172.20.0.1/16","dev":"br-y","flags":[]},
        {"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]"#;
    let v6 = br#"[{"dst":"fd42::/64","dev":"br-x","metric":256,"flags":[]}]"#;
    let b = from_texts(&[("route.json", v4), ("route6.json", v6)]).unwrap();
    let routes: Vec<String> = b.host.routes.iter().map(|r| r.dst.to_string()).collect();
    assert_eq!(routes, ["172.20.0.0/16", "0.0.0.0/0", "fd42::/64"]);
    let skipped: Vec<String> = b.host.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].starts_with("route.json entry 2: dst \"172.20.0.1/16\" is not a prefix"), "{skipped:?}");
    for bad in [&b"{}"[..], b"[1, 2]", b"[] []"] {
        let err = from_texts(&[("route6.json", bad)]).unwrap_err().to_string();
        assert!(err.ends_with("route6.json is not the JSON that `ip -j -6 route show table main` prints"), "{err}");
    }
}
