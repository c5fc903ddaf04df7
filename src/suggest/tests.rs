//! `suggest` with hand-built facts and the captured bundles: the seed, the shop aggregate,
//! `--prefer`, an existing daemon.json, IPv6, docker0, bridges Docker does not describe, no room;
//! the daemon.json reader and writer. A property test checks the search against the rules.

use super::*;
use crate::config::Config;
use crate::net::{Addr, Container, IpamPool, Link, Proto, Push, Route, RouteKind, Tunnel};
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;

mod property;

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A route: on-link when there is no gateway.
pub(super) fn route(dst: &str, dev: &str, gw: Option<&str>) -> Route {
    let dst = net(dst);
    Route {
        dst,
        dev: Some(dev.into()),
        gateway: gw.map(ip),
        metric: 0,
        protocol: Proto(if gw.is_none() { 2 } else { 3 }),
        scope: if gw.is_none() && dst.addr().is_ipv4() { 253 } else { 0 },
        kind: RouteKind::Unicast,
    }
}

pub(super) fn push(dst: &str) -> Push {
    Push { dst: net(dst), gateway: None, metric: None, origin: format!("test {dst}") }
}

pub(super) fn bridge_link(index: u32, name: &str) -> Link {
    Link { index, name: name.into(), kind: Some("bridge".into()), tap: false, up: true }
}

/// A Docker network on `bridge` with one subnet and a container at its .2.
pub(super) fn docker_net(name: &str, bridge: &str, project: Option<&str>, subnet: &str) -> DockerNetwork {
    let s = net(subnet);
    let host = |n: u32| match s {
        IpNet::V4(v) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v.network()) + n)),
        IpNet::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v.network()) + n as u128)),
    };
    DockerNetwork {
        engine: crate::net::Engine::Docker,
        egress: crate::net::Egress::Masquerade,
        host: None,
        name: name.into(),
        id: format!("{name}0123456789"),
        bridge: bridge.into(),
        compose_project: project.map(str::to_string),
        compose_network: None,
        ipam: vec![IpamPool { subnet: s, gateway: Some(host(1)), ip_range: None }],
        containers: vec![Container { id: String::new(), name: format!("{name}-c"), addrs: vec![host(2)] }],
    }
}

/// The seed laptop: milvus_default 172.20.0.0/16 on br-milvus, docker0 172.17.0.0/16, a home
/// LAN 192.168.1.0/24, tun0 10.8.0.0/24, push 172.20.0.0/16.
fn seed() -> Facts {
    Facts {
        tunnel: Tunnel { dev: "tun0".into(), ..Tunnel::default() },
        pushes: vec![push("172.20.0.0/16")],
        routes: vec![
            route("0.0.0.0/0", "eth0", Some("192.168.1.1")),
            route("192.168.1.0/24", "eth0", None),
            route("10.8.0.0/24", "tun0", None),
            route("172.17.0.0/16", "docker0", None),
            route("172.20.0.0/16", "br-milvus", None),
        ],
        links: vec![bridge_link(2, "br-milvus"), bridge_link(3, "docker0")],
        addrs: vec![
            Addr { dev: "eth0".into(), addr: ip("192.168.1.20"), prefix_len: 24 },
            Addr { dev: "br-milvus".into(), addr: ip("172.20.0.1"), prefix_len: 16 },
            Addr { dev: "docker0".into(), addr: ip("172.17.0.1"), prefix_len: 16 },
        ],
        neighbours: vec![],
        docker: Some(vec![
            docker_net("bridge", "docker0", None, "172.17.0.0/16"),
            docker_net("milvus_default", "br-milvus", Some("milvus"), "172.20.0.0/16"),
        ]),
        skipped: vec![],
        engines: Vec::new(),
    }
}

pub(super) fn run(facts: &Facts, prefer: &[&str], daemon: Option<Value>) -> Suggestion {
    let plan = crate::plan::plan(facts, &Config::default());
    suggest(&SuggestInput { facts, plan: &plan, prefer: prefer.iter().map(|p| net(p)).collect(), daemon_json: daemon })
}

fn moves(s: &Suggestion) -> Vec<String> {
    s.networks
        .iter()
        .map(|f| format!("{} -> {}", f.current, f.proposed.map_or("none".into(), |p| p.to_string())))
        .collect()
}

fn pools(s: &Suggestion) -> Vec<String> {
    s.default_address_pools.iter().map(ToString::to_string).collect()
}

#[test]
fn seed_moves_milvus_to_the_first_free_docker_default() {
    let s = run(&seed(), &[], None);
    assert_eq!(moves(&s), ["172.20.0.0/16 -> 172.18.0.0/16"], "172.17 is docker0's, 172.20 the push's");
    let f = &s.networks[0];
    assert_eq!(
        (f.owner, f.compose_network.as_deref(), f.bridge.as_str()),
        (Owner::Compose, Some("default"), "br-milvus")
    );
    assert_eq!(
        s.compose[0].yaml,
        "# docker-compose.yml of project \"milvus\"\nnetworks:\n  default:          # Docker network milvus_default\n    ipam:\n      config:\n        - subnet: 172.18.0.0/16\n"
    );
    // Pools: docker0's own /16 stays, the push's and the proposal's go, the LAN is cut out of
    // 192.168.0.0/16, and a /16 of /24s makes up for the lost room.
    assert_eq!(
        pools(&s),
        [
            "172.17.0.0/16 in /16s",
            "172.19.0.0/16 in /16s",
            "172.21.0.0/16 in /16s",
            "172.22.0.0/15 in /16s",
            "172.24.0.0/13 in /16s",
            "192.168.16.0/20 in /20s",
            "192.168.32.0/19 in /20s",
            "192.168.64.0/18 in /20s",
            "192.168.128.0/17 in /20s",
            "10.0.0.0/16 in /24s",
        ]
    );
    assert!(s.daemon_json_changed);
    assert_eq!(s.daemon_json[pools::POOLS_KEY][9], json!({"base": "10.0.0.0/16", "size": 24}));
    let text = render_text(&s);
    for want in [
        "docker network milvus_default (compose project milvus) 172.20.0.0/16 on br-milvus collides with VPN route 172.20.0.0/16: move it to 172.18.0.0/16\n",
        "# /etc/docker/daemon.json",
        "`docker compose down && docker compose up -d`",
        "`systemctl restart docker`",
        "note: default-address-pools apply only to networks created after the restart",
        "note: an explicit compose subnet bypasses the pools",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// Facts from a captured bundle, as `plan --from` makes them.
fn bundle_facts(name: &str) -> Facts {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bundles").join(name);
    let b = crate::bundle::read(&dir).unwrap();
    let input = crate::hook::openvpn::parse(b.env.clone(), &[], None).unwrap();
    b.into_facts(input, Vec::new())
}

#[test]
fn the_shop_aggregate_leaves_no_room_in_172_16_so_16s_go_to_10_8() {
    let s = run(&bundle_facts("shop-ipv6-aggregate"), &[], None);
    assert_eq!(
        moves(&s),
        ["172.20.0.0/16 -> 10.0.0.0/16", "172.22.0.0/16 -> 10.1.0.0/16", "fd42:22::/64 -> fd00::/64"]
    );
    let shop = &s.networks[1];
    assert_eq!(shop.collides_with, [net("172.16.0.0/12"), net("172.22.9.0/24")]);
    assert_eq!(shop.ip_range, Some(net("10.1.5.0/24")), "the IPAM range moves along");
    let yaml = &s.compose.iter().find(|c| c.project == "shop").unwrap().yaml;
    assert_eq!(
        yaml,
        "# docker-compose.yml of project \"shop\"\nnetworks:\n  default:          # Docker network shop_default\n    enable_ipv6: true\n    ipam:\n      config:\n        - subnet: 10.1.0.0/16\n          ip_range: 10.1.5.0/24\n        - subnet: fd00::/64\n"
    );
    // Docker's network "milvus" does not follow <project>_<key>, but compose's label names its key.
    assert!(!s.notes.iter().any(|n| n.contains("is not named <project>_<key>")), "{:?}", s.notes);
    let milvus = &s.compose.iter().find(|c| c.project == "milvus").unwrap().yaml;
    assert!(milvus.contains("\n  milvus:"), "{milvus}");
    assert_eq!(pools(&s), ["192.168.0.0/16 in /20s", "10.2.0.0/16 in /24s"]);
}

#[test]
fn prefer_takes_subnets_and_the_first_pool_from_the_chosen_range() {
    let s = run(&seed(), &["10.0.0.0/8"], None);
    assert_eq!(moves(&s), ["172.20.0.0/16 -> 10.0.0.0/16"]);
    assert_eq!(pools(&s)[0], "10.1.0.0/16 in /24s", "the preferred pool comes first");
    assert!(!pools(&s).contains(&"10.0.0.0/16 in /24s".to_string()));
    // A preferred range with no room: the defaults, and a note saying so.
    let s = run(&seed(), &["172.20.0.0/16"], None);
    assert_eq!(moves(&s), ["172.20.0.0/16 -> 172.18.0.0/16"]);
    assert!(s.notes.iter().any(|n| n.contains("no free /16 in 172.20.0.0/16")), "{:?}", s.notes);
    let s = run(&seed(), &["8.0.0.0/8"], None);
    assert_eq!(moves(&s), ["172.20.0.0/16 -> 8.0.0.0/16"]);
    assert!(s.notes.iter().any(|n| n.contains("--prefer 8.0.0.0/8 is not a private range")));
}

#[test]
fn an_existing_daemon_json_is_merged_keeping_every_other_key_and_pool() {
    let existing = json!({
        "insecure-registries": ["registry.local:5000"],
        "log-driver": "journald",
        "default-address-pools": [{"base": "172.20.0.0/14", "size": 24}, {"base": "10.10.0.0/16", "size": 24}]
    });
    let s = run(&seed(), &[], Some(existing.clone()));
    assert_eq!(s.daemon_json["insecure-registries"], existing["insecure-registries"]);
    assert_eq!(s.daemon_json["log-driver"], "journald");
    assert_eq!(
        s.daemon_json[pools::POOLS_KEY],
        json!([
            {"base": "172.21.0.0/16", "size": 24},
            {"base": "172.22.0.0/15", "size": 24},
            {"base": "10.10.0.0/16", "size": 24},
            {"base": "172.19.0.0/16", "size": 24}
        ]),
        "the pushed 172.20.0.0/16 is cut out, 10.10.0.0/16 kept once, the lost room made up"
    );
    // Applying the suggestion and asking again changes nothing.
    let again = run(&seed(), &[], Some(s.daemon_json.clone()));
    assert!(!again.daemon_json_changed, "{}", render_text(&again));
    assert_eq!(again.daemon_json, s.daemon_json);
    assert!(render_text(&again).contains("no change"));
    // Pools already clear of the VPN: the file is left exactly as it is.
    let clear = json!({"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}], "debug": true});
    let s = run(&seed(), &[], Some(clear.clone()));
    assert_eq!((s.daemon_json_changed, &s.daemon_json), (false, &clear));
}

#[test]
fn a_malformed_daemon_json_is_reported_not_trusted() {
    let s = run(&seed(), &[], Some(json!({"default-address-pools": [{"base": "nonsense", "size": 24}]})));
    assert!(s.notes.iter().any(|n| n.contains("is not {\"base\": CIDR")), "{:?}", s.notes);
    assert_eq!(s.default_address_pools[0].to_string(), "172.17.0.0/16 in /16s", "Docker's defaults apply");
    let s = run(&seed(), &[], Some(json!(["not", "an", "object"])));
    assert!(s.notes.iter().any(|n| n.contains("not a JSON object")));
    assert!(s.daemon_json.is_object());
}

fn v6_facts() -> Facts {
    Facts {
        tunnel: Tunnel { dev: "tun0".into(), local_v6: Some(net("fd00:8::1000/64")), ..Tunnel::default() },
        pushes: vec![push("fd42:22::/48")],
        routes: vec![
            route("fd00::/64", "eth0", None),
            route("fd00:0:0:1::/64", "tun0", Some("fd00::1")),
            route("fd42:22::/64", "br-shop", None),
        ],
        links: vec![bridge_link(2, "br-shop")],
        addrs: vec![Addr { dev: "br-shop".into(), addr: ip("fd42:22::1"), prefix_len: 64 }],
        neighbours: vec![],
        docker: Some(vec![docker_net("shop_default", "br-shop", Some("shop"), "fd42:22::/64")]),
        engines: Vec::new(),
        skipped: vec![],
    }
}

#[test]
fn ipv6_networks_move_to_the_lowest_free_ula_block() {
    let s = run(&v6_facts(), &[], None);
    assert_eq!(moves(&s), ["fd42:22::/64 -> fd00:0:0:2::/64"]);
    assert!(s.compose[0].yaml.contains("    enable_ipv6: true\n"));
    let s = run(&v6_facts(), &["fd42::/16"], None);
    assert_eq!(moves(&s), ["fd42:22::/64 -> fd42::/64"]);
    assert!(!s.daemon_json_changed, "IPv4 pools are untouched by an IPv6 conflict");
}

#[test]
fn docker0_moves_through_bip() {
    let mut facts = seed();
    facts.pushes = vec![push("172.17.0.0/16")];
    let s = run(&facts, &[], None);
    assert_eq!(moves(&s), ["172.17.0.0/16 -> 172.18.0.0/16"]);
    assert_eq!(s.networks[0].owner, Owner::DefaultBridge);
    assert_eq!(s.daemon_json["bip"], "172.18.0.1/16");
    assert!(s.compose.is_empty());
    assert!(s.steps[0].contains("this also moves docker0 to 172.18.0.0/16"), "{:?}", s.steps);
    assert!(s.notes.iter().any(|n| n.contains("--bip")));
}

#[test]
fn without_docker_bridges_are_named_by_device_and_pools_still_proposed() {
    let mut facts = seed();
    facts.docker = None;
    let s = run(&facts, &[], None);
    assert_eq!(moves(&s), ["172.20.0.0/16 -> 172.18.0.0/16"]);
    assert_eq!((s.networks[0].owner, s.networks[0].name.as_deref()), (Owner::Bridge, None));
    assert!(s.daemon_json_changed && !s.default_address_pools.is_empty());
    assert!(s.notes.iter().any(|n| n.starts_with("no container engine could be asked")));
    assert!(s.steps.iter().any(|n| n.starts_with("bridge br-milvus: move 172.20.0.0/16 to 172.18.0.0/16")));
}

#[test]
fn a_hand_made_network_gets_rm_and_create_commands() {
    let mut facts = seed();
    facts.docker.as_mut().unwrap()[1] = docker_net("tools", "br-milvus", None, "172.20.0.0/16");
    let s = run(&facts, &[], None);
    assert_eq!(s.networks[0].owner, Owner::Network);
    let step = s.steps.iter().find(|x| x.starts_with("docker network tools")).unwrap();
    assert!(step.contains("disconnect its containers (tools-c)"), "{step}");
    assert!(step.contains("`docker network rm tools && docker network create --subnet 172.18.0.0/16 tools`"), "{step}");
}

#[test]
fn no_free_subnet_gives_a_note_and_no_proposal() {
    let facts = Facts {
        tunnel: Tunnel { dev: "tun0".into(), ..Tunnel::default() },
        pushes: vec![push("10.0.0.0/8")],
        routes: vec![route("10.0.0.0/8", "br-big", None)],
        links: vec![bridge_link(2, "br-big")],
        docker: Some(vec![docker_net("big", "br-big", None, "10.0.0.0/8")]),
        engines: Vec::new(),
        ..Facts::default()
    };
    let s = run(&facts, &[], None);
    assert_eq!(moves(&s), ["10.0.0.0/8 -> none"]);
    assert!(s.notes.iter().any(|n| n.starts_with("no free /8 for docker network big 10.0.0.0/8")), "{:?}", s.notes);
    assert!(render_text(&s).contains(": no free /8 (see notes)"));
}

#[test]
fn no_conflict_says_so() {
    let mut facts = seed();
    facts.pushes = vec![push("10.99.0.0/16")];
    let s = run(&facts, &[], None);
    assert!(s.networks.is_empty() && s.compose.is_empty());
    // The home LAN (a route) still cuts into Docker's 192.168.0.0/16 pool.
    assert!(s.daemon_json_changed);
    assert_eq!(s.steps.len(), 1, "{:?}", s.steps);
    assert!(render_text(&s).starts_with("no local network collides with a VPN route: nothing to move\n"));
    facts.routes.retain(|r| r.dst != net("192.168.1.0/24"));
    facts.addrs.retain(|a| a.dev != "eth0");
    let s = run(&facts, &[], None);
    assert!(!s.daemon_json_changed && s.steps.is_empty() && s.daemon_json == json!({}));
    assert_eq!(
        pools(&s),
        [
            "172.17.0.0/16 in /16s",
            "172.18.0.0/15 in /16s",
            "172.20.0.0/14 in /16s",
            "172.24.0.0/13 in /16s",
            "192.168.0.0/16 in /20s"
        ]
    );
}

#[test]
fn json_has_the_documented_shape() {
    let v = serde_json::to_value(run(&seed(), &[], None)).unwrap();
    let n = &v["networks"][0];
    assert_eq!(n["name"], "milvus_default");
    assert_eq!(n["bridge"], "br-milvus");
    assert_eq!(n["compose_project"], "milvus");
    assert_eq!(n["current"], "172.20.0.0/16");
    assert_eq!(n["proposed"], "172.18.0.0/16");
    assert_eq!(v["default_address_pools"][0], json!({"base": "172.17.0.0/16", "size": 16}));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vpnfix-suggest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn write_daemon_json_backs_up_and_replaces_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("write");
    let path = dir.join("daemon.json");
    // No file yet: written, no backup.
    assert_eq!(write_daemon_json(&path, &json!({"a": 1})).unwrap(), None);
    assert_eq!(read_daemon_json(&path).unwrap(), Some(json!({"a": 1})));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let backup = write_daemon_json(&link, &json!({"a": 2})).unwrap().unwrap();
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("daemon.json.vpnfix-backup-"), "{name}");
    assert_eq!(read_daemon_json(&backup).unwrap(), Some(json!({"a": 1})));
    assert_eq!(read_daemon_json(&path).unwrap(), Some(json!({"a": 2})), "the link's target is replaced");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "the mode is kept");
    // A second write in the same second keeps both backups.
    let second = write_daemon_json(&path, &json!({"a": 3})).unwrap().unwrap();
    assert_ne!(second, backup);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left behind");
    let err = write_daemon_json(&dir.join("missing/daemon.json"), &json!({})).unwrap_err();
    assert!(err.to_string().contains("missing/daemon.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_daemon_json_names_a_bad_file() {
    let dir = temp_dir("read");
    assert_eq!(read_daemon_json(&dir.join("none.json")).unwrap(), None);
    std::fs::write(dir.join("empty.json"), "\n").unwrap();
    assert_eq!(read_daemon_json(&dir.join("empty.json")).unwrap(), Some(json!({})));
    std::fs::write(dir.join("bad.json"), "{\"bip\": ").unwrap();
    let err = read_daemon_json(&dir.join("bad.json")).unwrap_err().to_string();
    assert!(err.ends_with("bad.json is not JSON"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn daemon_json_text_keeps_one_pool_a_line_and_reads_back() {
    let v = json!({
        "default-address-pools": [{"base": "10.0.0.0/16", "size": 24}, {"base": "192.168.0.0/16", "size": 20}],
        "insecure-registries": ["registry.local:5000"],
        "log-opts": {"max-size": "10m"},
        "debug": true
    });
    let text = daemon_json_text(&v);
    assert_eq!(
        text,
        "{\n  \"debug\": true,\n  \"default-address-pools\": [\n    {\"base\": \"10.0.0.0/16\", \"size\": 24},\n    {\"base\": \"192.168.0.0/16\", \"size\": 20}\n  ],\n  \"insecure-registries\": [\n    \"registry.local:5000\"\n  ],\n  \"log-opts\": {\n    \"max-size\": \"10m\"\n  }\n}\n"
    );
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    assert_eq!(daemon_json_text(&json!({})), "{}\n");
}

#[test]
fn a_project_with_two_dual_stack_networks_gets_each_once() {
    let mut facts = v6_facts();
    let mut shop = docker_net("shop_default", "br-shop", Some("shop"), "172.22.0.0/16");
    shop.ipam.extend(facts.docker.as_ref().unwrap()[0].ipam.clone());
    let mut back = docker_net("shop_back", "br-back", Some("shop"), "172.23.0.0/16");
    back.ipam.push(IpamPool { subnet: net("fd42:22:0:1::/64"), gateway: None, ip_range: None });
    facts.docker = Some(vec![shop, back]);
    facts.pushes.push(push("172.22.0.0/15"));
    for r in ["172.22.0.0/16 br-shop", "172.23.0.0/16 br-back", "fd42:22:0:1::/64 br-back"] {
        let (dst, dev) = r.split_once(' ').unwrap();
        facts.routes.push(route(dst, dev, None));
    }
    facts.links.push(bridge_link(3, "br-back"));
    let s = run(&facts, &[], None);
    assert_eq!(s.networks.len(), 4, "{:?}", moves(&s));
    assert_eq!(s.compose.len(), 1);
    let yaml = &s.compose[0].yaml;
    assert_eq!(yaml.matches("  back:").count() + yaml.matches("  default:").count(), 2, "{yaml}");
    assert_eq!(yaml.matches("- subnet:").count(), 4, "{yaml}");
    assert!(yaml.find("  back:").unwrap() < yaml.find("  default:").unwrap());
}

/// The seed laptop with its network described by Podman instead of Docker.
fn podman_seed(push: &str) -> Facts {
    let mut facts = seed();
    facts.pushes = vec![crate::net::Push { dst: net(push), gateway: None, metric: None, origin: "t".into() }];
    for n in facts.docker.iter_mut().flatten() {
        n.engine = crate::net::Engine::Podman;
    }
    facts.docker.as_mut().unwrap().retain(|n| n.bridge == "br-milvus");
    facts.docker.as_mut().unwrap()[0].compose_project = None;
    facts.engines = vec![crate::net::Engine::Podman];
    facts
}

#[test]
fn podman_users_get_podmans_commands_and_no_daemon_json() {
    let s = run(&podman_seed("172.20.0.0/16"), &[], None);
    assert_eq!(s.networks[0].engine, Some(crate::net::Engine::Podman));
    assert!(!s.daemon_json_changed && s.default_address_pools.is_empty(), "no Docker here: no daemon.json");
    let step = s.steps.iter().find(|t| t.starts_with("podman network ")).expect("a podman step");
    assert!(
        step.contains("`podman network rm ") && step.contains("podman network create --subnet 172.18.0.0/16"),
        "{step}"
    );
    assert!(s.steps.iter().all(|t| !t.contains("docker") && !t.contains("daemon.json")), "{:?}", s.steps);
    let text = render_text(&s);
    assert!(
        text.contains("containers.conf: Podman's address pools already stay clear") && !text.contains("daemon.json"),
        "{text}"
    );
}

#[test]
fn podmans_pools_move_off_a_vpn_route_and_proposals_avoid_them() {
    // The office pushes 10.64.0.0/10: Podman's pools from 10.89.0.0/16 up collide.
    let mut facts = podman_seed("10.64.0.0/10");
    facts.pushes.push(crate::net::Push { dst: net("172.20.0.0/16"), gateway: None, metric: None, origin: "t".into() });
    let s = run(&facts, &["10.0.0.0/8"], None);
    let conf = s.containers_conf.as_deref().expect("a containers.conf block");
    assert!(conf.contains("default_subnet_pools = [") && !conf.contains("10.96.0.0/11"), "{conf}");
    let proposed = Prefix::from(s.networks[0].proposed.unwrap());
    for r in crate::suggest::podman::reserved() {
        assert!(!r.overlaps(proposed), "{proposed} lies in Podman's own {r}");
    }
    assert!(s
        .steps
        .iter()
        .any(|t| t.starts_with("merge the [network] block above into /etc/containers/containers.conf")));
}
