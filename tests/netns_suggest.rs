//! `vpnfix::suggest` against a real Docker engine (dockerd 20.10) in a private network namespace.
//!
//! The VPN pushes 172.16.0.0/12 over tun0 (installed via its gateway, as OpenVPN does) while
//! compose network milvus_default holds 172.20.0.0/16 with a container. Facts come from
//! `vpnfix snapshot` inside the namespace, the plan from `vpnfix::plan::plan`, the suggestion from
//! the library. Proved here:
//! - without the fix, Docker creates a new network inside the pushed range (moby#42598);
//! - the suggested daemon.json, written by `write_daemon_json` over an existing file (whose
//!   other keys it keeps, after a backup), loads in dockerd, and a network created afterwards
//!   without `--subnet` lands outside every VPN route;
//! - milvus_default recreated on the suggested subnet ends the conflict: the plan adds nothing,
//!   and a second suggestion has nothing to move.
//!
//! Everything lives in a namespace made here; dockerd, its containers, mounts, directories and
//! cgroups are removed by drop guards even when an assertion fails.

mod common;

use common::{env, require_root, stderr, Dockerd, Netns, TempDir};
use ipnet::IpNet;
use std::time::Instant;
use vpnfix::config::Config;
use vpnfix::net::Facts;
use vpnfix::plan::Plan;
use vpnfix::suggest::{read_daemon_json, suggest, write_daemon_json, SuggestInput, Suggestion};

/// The compose network.
const NET: &str = "milvus_default";

/// The pushed aggregate: it covers every one of Docker's 172.17–31 default pools.
const PUSH: &str = "172.16.0.0/12";

/// OpenVPN's route-up variables for the push over tun0 (10.0.1.65 peer 10.0.1.66).
const PUSH_ENV: [(&str, &str); 7] = [
    ("dev", "tun0"),
    ("route_network_1", "172.16.0.0"),
    ("route_netmask_1", "255.240.0.0"),
    ("route_gateway_1", "10.0.1.66"),
    ("route_vpn_gateway", "10.0.1.66"),
    ("ifconfig_local", "10.0.1.65"),
    ("ifconfig_remote", "10.0.1.66"),
];

/// A client host: tun0 with the push installed, dockerd, milvus_default with one container.
/// Field order is drop order: dockerd goes before its namespace.
struct World {
    docker: Dockerd,
    ns: Netns,
    tmp: TempDir,
}

fn world() -> World {
    let mut ns = Netns::new();
    ns.tun("tun0");
    ns.ip(&["addr", "add", "10.0.1.65", "peer", "10.0.1.66", "dev", "tun0"]);
    ns.ip(&["route", "add", PUSH, "via", "10.0.1.66", "dev", "tun0"]);
    let docker = Dockerd::start(&ns);
    eprintln!("dockerd in {} answered after {:?}", ns.name, docker.started_in);
    docker.import_busybox("local/busybox");
    let w = World { docker, ns, tmp: TempDir::new("suggest") };
    w.compose_network("172.20.0.0/16");
    w
}

impl World {
    /// milvus_default on `subnet`, labelled as compose makes it, with container milvus-etcd.
    fn compose_network(&self, subnet: &str) {
        let labels = ["--label", "com.docker.compose.project=milvus", "--label", "com.docker.compose.network=default"];
        let mut args = vec!["network", "create", "--subnet", subnet];
        args.extend_from_slice(&labels);
        args.push(NET);
        self.docker.docker(&args);
        let run =
            ["run", "-d", "--network", NET, "--name", "milvus-etcd", "--label", "com.docker.compose.project=milvus"];
        self.docker.docker(&[&run[..], &["local/busybox", "sleep", "3600"][..]].concat());
    }

    /// Facts via `vpnfix snapshot` in the namespace (Docker asked), and the plan made from them.
    fn facts_and_plan(&self, tag: &str) -> (Facts, Plan) {
        let dir = self.tmp.path().join(tag);
        let mut e = env(&[("DOCKER_HOST", &self.docker.host())]);
        e.extend(env(&PUSH_ENV));
        let out = self.ns.vpnfix(&e, &["snapshot", dir.to_str().unwrap()]);
        assert!(out.status.success(), "snapshot: {}", stderr(&out));
        assert!(!stderr(&out).contains("kernel's facts only"), "Docker was not asked: {}", stderr(&out));
        let b = vpnfix::bundle::read(&dir).unwrap();
        let input = vpnfix::hook::openvpn::parse(b.env.clone(), &[], None).unwrap();
        let (config, _) = Config::from_layers([b.env.as_slice()]);
        let facts = b.into_facts(input, Vec::new());
        let plan = vpnfix::plan::plan(&facts, &config);
        (facts, plan)
    }

    /// The IPv4 subnet Docker gave a network.
    fn subnet_of(&self, network: &str) -> IpNet {
        let s = self.docker.docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", network]);
        s.parse().unwrap_or_else(|e| panic!("{network}: subnet {s:?}: {e}"))
    }
}

/// The VPN's routes: every push, and every main-table route through tun0.
fn vpn_routes(facts: &Facts) -> Vec<IpNet> {
    let routes = facts.routes.iter().filter(|r| r.dev.as_deref() == Some("tun0")).map(|r| r.dst);
    facts.pushes.iter().map(|p| p.dst).chain(routes).collect()
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

/// Without the fix Docker picks its first default pool, inside the push (moby#42598: routes via
/// a gateway are not checked). The control network is removed again.
fn docker_alone_lands_inside_the_push(w: &World) {
    w.docker.docker(&["network", "create", "control"]);
    let subnet = w.subnet_of("control");
    eprintln!("without the fix, a new network got {subnet}");
    assert!(overlaps(subnet, PUSH.parse().unwrap()), "{subnet}: Docker avoided the push by itself");
    w.docker.docker(&["network", "rm", "control"]);
}

/// (1) The suggested daemon.json, written over an existing one, loads; a network created
/// afterwards without --subnet lands outside every VPN route, in a suggested pool.
fn daemon_json_keeps_new_networks_clear(w: &mut World, facts: &Facts, plan: &Plan, s: &Suggestion) {
    let path = w.tmp.path().join("daemon.json");
    let original = "{\"insecure-registries\": [\"registry.test:5000\"]}\n";
    std::fs::write(&path, original).unwrap();
    let existing = read_daemon_json(&path).unwrap();
    let merged = suggest(&SuggestInput { facts, plan, prefer: vec![], daemon_json: existing }).daemon_json;
    assert_eq!(merged["default-address-pools"], s.daemon_json["default-address-pools"]);
    let backup = write_daemon_json(&path, &merged).unwrap().expect("an existing file is backed up");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    let t0 = Instant::now();
    w.docker.restart_with_config(&w.ns, &path);
    eprintln!("dockerd restarted with the suggested daemon.json in {:?}", t0.elapsed());
    let info = w.docker.docker(&["info", "-f", "{{json .RegistryConfig.IndexConfigs}}"]);
    assert!(info.contains("registry.test:5000"), "the kept key is not in effect: {info}");

    w.docker.docker(&["network", "create", "newnet"]);
    let subnet = w.subnet_of("newnet");
    eprintln!("with the fix, a new network got {subnet}");
    for r in vpn_routes(facts) {
        assert!(!overlaps(subnet, r), "newnet {subnet} overlaps VPN route {r}");
    }
    assert!(s.default_address_pools.iter().any(|p| p.base.contains(&subnet)), "{subnet} is in no suggested pool");
    assert_eq!(subnet.to_string(), "192.168.0.0/20", "the first /20 of the first pool left");
}

/// (2) milvus_default recreated on the suggested subnet: nothing left to add or move.
fn compose_subnet_ends_the_conflict(w: &World, proposed: IpNet) {
    // The restart removed the containers; the network stayed.
    w.docker.docker(&["network", "rm", NET]);
    w.compose_network(&proposed.to_string());
    assert_eq!(w.subnet_of(NET), proposed);
    let (facts, plan) = w.facts_and_plan("after");
    let milvus = facts.docker.iter().flatten().find(|n| n.name == NET).unwrap();
    assert_eq!(milvus.containers.len(), 1, "the container is back on the moved network");
    assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
    assert!(plan.add.is_empty(), "{:?}", plan.add);
    let again = suggest(&SuggestInput { facts: &facts, plan: &plan, prefer: vec![], daemon_json: None });
    assert!(again.networks.is_empty(), "{:?}", again.networks);
}

#[test]
#[ignore = "needs root"]
fn the_suggested_daemon_json_and_compose_subnet_end_the_conflict() {
    require_root("the_suggested_daemon_json_and_compose_subnet_end_the_conflict");
    let mut w = world();
    let (facts, plan) = w.facts_and_plan("before");
    assert!(!plan.add.is_empty(), "the seed conflict must be there to fix");
    let t0 = Instant::now();
    let s = suggest(&SuggestInput { facts: &facts, plan: &plan, prefer: vec![], daemon_json: None });
    eprintln!("suggest took {:?}\n{}", t0.elapsed(), vpnfix::suggest::render_text(&s));
    assert_eq!(s.networks.len(), 1, "{:?}", s.networks);
    let fix = &s.networks[0];
    assert_eq!((fix.name.as_deref(), fix.compose_project.as_deref()), (Some(NET), Some("milvus")));
    assert_eq!(fix.bridge, w.docker.bridge_of(NET));
    // 172.16.0.0/12 is pushed, 10.0.0.0/16 holds the tunnel's addresses.
    let proposed = fix.proposed.expect("a free /16");
    assert_eq!(proposed.to_string(), "10.1.0.0/16");
    assert!(s.compose[0].yaml.contains("  default:") && s.compose[0].yaml.contains("- subnet: 10.1.0.0/16"));

    docker_alone_lands_inside_the_push(&w);
    daemon_json_keeps_new_networks_clear(&mut w, &facts, &plan, &s);
    compose_subnet_ends_the_conflict(&w, proposed);
}
