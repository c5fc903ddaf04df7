//! End to end, nothing faked: containers reach the VPN too. A real OpenVPN 2.6 server and client,
//! a real dockerd in the laptop's namespace WITH its iptables rules (its masquerade is what gives
//! the containers' packets the tunnel's address), busybox containers (no `ip`, as most images),
//! vpnfix as OpenVPN's scripts. First without vpnfix (a container's ping to the office host dies
//! on its own bridge: what users see), then with it: the container reaches the office host
//! through the tunnel (the office sees the client's tunnel address), still reaches its
//! neighbours and its gateway, the host still reaches every container; a network that does not
//! masquerade and an IPv6 network Docker does not say it NATs are skipped with one line each;
//! after disconnect every container's table is exactly what it was.

mod common;

use common::e2e::*;
use common::ovpn::{own_routes, SiteSpec, World};
use common::{env, require_root, run, stdout, until, Netns};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PUSHES: &[&str] =
    &[PUSH_172_20, "route 172.21.0.0 255.255.0.0", "route 172.22.0.0 255.255.0.0", "route-ipv6 fd00:ac14::/64"];
const OFFICE_21: &str = "172.21.2.52";
const OFFICE_22: &str = "172.22.2.52";
/// The VPN side of 172.20.0.0/16 inside each milvus container (the kept 172.20.0.0/24 stays
/// on-link): the same blocks the host gets on tun0.
const INSIDE_MILVUS: [&str; 8] = common::SEED_VPN;

/// A container's process, as the engine gives it.
fn pid(w: &World, name: &str) -> String {
    w.docker.docker(&["inspect", "-f", "{{.State.Pid}}", name])
}

/// `ip ARGS` inside a container's network namespace (the image has no `ip`: from the host).
fn ip_in(w: &World, name: &str, args: &[&str]) -> String {
    let out = run(Command::new("nsenter").arg(format!("--net=/proc/{}/ns/net", pid(w, name))).arg("ip").args(args));
    String::from_utf8(out.stdout).unwrap()
}

/// A container's routing table (main), both families: what a disconnect must restore.
fn table_in(w: &World, name: &str) -> String {
    ip_in(w, name, &["-4", "route", "show", "table", "main"])
        + &ip_in(w, name, &["-6", "route", "show", "table", "main"])
}

/// vpnfix's routes inside a container: `dst via gw dev dev`, sorted.
fn own_inside(w: &World, name: &str) -> Vec<String> {
    let mut v: Vec<String> = ip_in(w, name, &["route", "show", "proto", "86"])
        .lines()
        .chain(ip_in(w, name, &["-6", "route", "show", "proto", "86"]).lines())
        .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// Where a container sends a packet for `addr`: `via GW dev DEV` or `dev DEV`.
fn route_get_in(w: &World, name: &str, addr: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ip_in(w, name, &["-j", "route", "get", addr])).unwrap();
    match v[0]["gateway"].as_str() {
        Some(g) => format!("via {g} dev {}", v[0]["dev"].as_str().unwrap_or("?")),
        None => format!("dev {}", v[0]["dev"].as_str().unwrap_or("?")),
    }
}

/// Whether a ping from inside a container is answered (up to three tries: a fresh neighbour
/// may need a moment).
fn pings_from(w: &World, name: &str, addr: &str) -> bool {
    (0..3).any(|_| ping_once(w, name, addr))
}

/// Whether one ping from inside a container is answered (for what must fail: one try is the
/// proof, three would only be slower).
fn ping_once(w: &World, name: &str, addr: &str) -> bool {
    w.docker.cli().args(["exec", name, "ping", "-c1", "-W2", addr]).output().is_ok_and(|o| o.status.success())
}

/// A TCP listener on `addr` port 7000 inside `ns`, made by a thread that enters it.
fn listen_in(ns: &Netns, addr: &str) -> TcpListener {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let addr: SocketAddr = format!("{addr}:7000").parse().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind(addr).unwrap()
        })
        .join()
        .unwrap()
    })
}

/// Connects from inside a container to the office host `addr` (busybox `nc`) and returns the
/// source address the office host saw, or what went wrong.
fn office_sees(w: &World, office: &Netns, name: &str, addr: &str) -> Result<String, String> {
    let l = listen_in(office, addr);
    l.set_nonblocking(true).unwrap();
    // nc sends its line, then waits for the office host to close: it runs while we accept.
    let mut nc = w
        .docker
        .cli()
        .args(["exec", name, "sh", "-c", &format!("echo hello | nc -w2 {addr} 7000")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut seen = Err(format!("no connection from {name} reached {addr}"));
    while Instant::now() < deadline {
        if let Ok((mut s, peer)) = l.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            assert_eq!(got.trim(), "hello", "what the office host received");
            seen = Ok(peer.ip().to_string());
            break; // dropping the stream closes it: nc ends
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if nc.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(500));
        let _ = nc.kill();
    }
    let _ = nc.wait();
    seen
}

/// The laptop's address on tun0.
fn tun_addr(w: &World) -> String {
    let v: serde_json::Value = serde_json::from_str(&w.laptop.ip(&["-j", "-4", "addr", "show", "tun0"])).unwrap();
    v[0]["addr_info"][0]["local"].as_str().unwrap().to_string()
}

/// The host's VPN side of 172.20.0.0/16 (vpnfix's routes on tun0) as the milvus containers must
/// have it: each block via the gateway.
fn host_vpn_side(w: &World) -> Vec<String> {
    let mut v: Vec<String> = own_routes(&w.laptop)
        .iter()
        .filter_map(|r| r.strip_suffix(" tun0"))
        .filter(|dst| dst.starts_with("172.20."))
        .map(|dst| format!("{dst} via 172.20.0.1 dev eth0"))
        .collect();
    v.sort();
    v
}

fn via_gateway(blocks: &[&str], gateway: &str) -> Vec<String> {
    let mut v: Vec<String> = blocks.iter().map(|b| format!("{b} via {gateway} dev eth0")).collect();
    v.sort();
    v
}

/// Containers on two contested networks reach the office hosts through the tunnel; a network
/// without masquerade and an IPv6 network are skipped with their lines; the tables come back.
#[test]
#[ignore = "needs root"]
fn containers_reach_the_office_through_the_tunnel() {
    require_root("containers_reach_the_office_through_the_tunnel");
    let t0 = Instant::now();
    let w = World::with_docker_nat(&[SiteSpec {
        pushes: PUSHES,
        hosts: &["172.20.2.52/24", "172.21.2.52/24", "172.22.2.52/24"],
    }]);
    let milvus = w.network("milvus", MILVUS, &["--subnet", "172.20.0.0/16"]);
    let tools =
        w.network("tools", "tools_default", &["--subnet", "172.21.0.0/16", "--ipv6", "--subnet", "fd00:ac14::/64"]);
    let plain = w.network(
        "plain",
        "plain_default",
        &["--subnet", "172.22.0.0/16", "-o", "com.docker.network.bridge.enable_ip_masquerade=false"],
    );
    let mut local = Vec::new();
    for svc in ["etcd", "minio", "standalone"] {
        local.push((w.container("milvus", MILVUS, &format!("milvus-{svc}"), &[]), milvus.clone()));
    }
    local.push((w.container("tools", "tools_default", "tools-web", &[]), tools.clone()));
    local.push((w.container("plain", "plain_default", "plain-app", &[]), plain.clone()));
    let names = ["milvus-etcd", "milvus-minio", "milvus-standalone", "tools-web", "plain-app"];
    let web6 = w.container6("tools-web", "tools_default");
    assert!(web6.starts_with("fd00:ac14::"), "tools-web has no IPv6 address: {web6:?}");
    let local_ref: Vec<(&str, &str)> = local.iter().map(|(a, d)| (a.as_str(), d.as_str())).collect();
    let before = baseline(&w, &local_ref);
    let tables: Vec<String> = names.iter().map(|n| table_in(&w, n)).collect();
    let office = &w.sites[0].office;
    timing("world", t0);

    // Without vpnfix: the container's packet for the office host is ARPed for on its bridge.
    let c = w.connect(0, false, &[]);
    assert_eq!(route_get_in(&w, "milvus-etcd", OFFICE), "dev eth0", "the office host looks on-link");
    assert!(!ping_once(&w, "milvus-etcd", OFFICE), "without vpnfix a container reached the office host");
    assert!(office_sees(&w, office, "milvus-etcd", OFFICE).is_err());
    assert!(!ping_once(&w, "tools-web", OFFICE_21), "without vpnfix tools-web reached its office host");
    eprintln!("OBSERVED without vpnfix: milvus-etcd and tools-web cannot reach 172.20.2.52 / 172.21.2.52");
    c.stop();
    assert_eq!(w.laptop.table(), before, "OpenVPN alone did not restore the table\n{}", w.logs());
    timing("without vpnfix", t0);

    // With vpnfix.
    let c = w.connect(0, true, &[]);
    let log = c.log_text();
    assert_no_failure(&log);
    let addr = tun_addr(&w);
    for n in ["milvus-etcd", "milvus-minio", "milvus-standalone"] {
        assert_eq!(own_inside(&w, n), via_gateway(&INSIDE_MILVUS, "172.20.0.1"), "{n}'s routes\n{log}");
        assert_eq!(route_get_in(&w, n, OFFICE), "via 172.20.0.1 dev eth0", "{n}\n{log}");
    }
    assert_eq!(office_sees(&w, office, "milvus-etcd", OFFICE), Ok(addr.clone()), "\n{log}");
    assert!(pings_from(&w, "milvus-etcd", OFFICE), "milvus-etcd cannot ping the office host\n{log}");
    assert_eq!(office_sees(&w, office, "tools-web", OFFICE_21), Ok(addr.clone()), "\n{log}");
    assert!(pings_from(&w, "tools-web", OFFICE_21), "tools-web cannot ping its office host\n{log}");
    // Neighbours and the gateway stay on-link; the host reaches every container and the offices.
    for a in [local[1].0.as_str(), local[2].0.as_str(), "172.20.0.1"] {
        assert_eq!(route_get_in(&w, "milvus-etcd", a), "dev eth0", "{a} from milvus-etcd");
        assert!(pings_from(&w, "milvus-etcd", a), "milvus-etcd cannot ping {a}");
    }
    let mut reach = local_ref.clone();
    reach.extend([(OFFICE, "tun0"), (OFFICE_21, "tun0")]);
    w.assert_reached(&reach);
    // Skipped, one line each: the network without masquerade, IPv6 (Docker does not say it NATs it).
    let plain_line = "containers of docker network plain_default (172.22.0.0/16): the network does not masquerade";
    assert_eq!(log.matches(plain_line).count(), 1, "{log}");
    let v6_line =
        "containers of docker network tools_default (fd00:ac14::/64): IPv6: Docker does not say whether it NATs IPv6";
    assert_eq!(log.matches(v6_line).count(), 1, "{log}");
    assert_eq!(table_in(&w, "plain-app"), tables[4], "plain-app's table changed");
    assert!(own_inside(&w, "tools-web").iter().all(|r| !r.contains(':')), "IPv6 routes in tools-web");
    assert!(!ping_once(&w, "plain-app", OFFICE_22), "plain-app reached the office unmasqueraded?");
    // `status` shows the routes inside the containers.
    let status = w.laptop.vpnfix(&env(&[("VPNFIX_STATE_DIR", &w.state_dir().display().to_string())]), &["status"]);
    let shown = stdout(&status);
    for n in ["milvus-etcd", "milvus-minio", "milvus-standalone", "tools-web"] {
        assert!(shown.contains(&format!("inside container {n} (pid ")), "{shown}");
    }
    timing("with vpnfix", t0);

    // Disconnect: the host's table and every container's, exactly as before.
    let log = disconnect(&w, c, &before);
    for (n, t) in names.iter().zip(&tables) {
        assert_eq!(&table_in(&w, n), t, "{n}'s table after disconnect\n{log}");
    }
    assert!(own_routes(&w.laptop).is_empty());
    timing("disconnect", t0);
}

/// The watcher gives containers that start while connected their routes, follows a restart into
/// the new namespace, forgets a removed container, and the disconnect restores every table.
#[test]
#[ignore = "needs root"]
fn the_watcher_routes_containers_that_come_and_go() {
    require_root("the_watcher_routes_containers_that_come_and_go");
    let t0 = Instant::now();
    let w = World::with_docker_nat(&[SiteSpec { pushes: &[PUSH_172_20], hosts: &["172.20.2.52/24"] }]);
    let bridge = w.network("milvus", MILVUS, &["--subnet", "172.20.0.0/16"]);
    let etcd = w.container("milvus", MILVUS, "milvus-etcd", &[]);
    let before = baseline(&w, &[(etcd.as_str(), bridge.as_str())]);
    let etcd_table = table_in(&w, "milvus-etcd");
    let want = via_gateway(&INSIDE_MILVUS, "172.20.0.1");

    let lines = watching(&w);
    let c = w.connect(0, true, &strs(&lines));
    assert!(until(|| watchers(&w).len() == 1), "no watcher\n{}", watcher_log(&w));
    assert_eq!(own_inside(&w, "milvus-etcd"), want);
    // Routes inside containers take CAP_SYS_ADMIN (setns) and CAP_SYS_PTRACE besides CAP_NET_ADMIN.
    let status = std::fs::read_to_string(format!("/proc/{}/status", watchers(&w)[0])).unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    assert_eq!(eff, "0000000000281000", "the watcher's capabilities\n{status}");

    // A container started while connected at 172.20.5.10: 172.20.5.0/24 stays local now, on the
    // host and inside every container alike.
    let late = w.container("milvus", MILVUS, "milvus-late", &["--ip", "172.20.5.10"]);
    let same = || {
        let host = host_vpn_side(&w);
        host.iter().any(|r| r.starts_with("172.20.4.0/24 "))
            && own_inside(&w, "milvus-late") == host
            && own_inside(&w, "milvus-etcd") == host
    };
    assert!(
        until(same),
        "milvus-late: {:?}\nmilvus-etcd: {:?}\nhost: {:?}\n{}",
        own_inside(&w, "milvus-late"),
        own_inside(&w, "milvus-etcd"),
        host_vpn_side(&w),
        watcher_log(&w)
    );
    assert!(pings_from(&w, "milvus-late", OFFICE), "milvus-late cannot reach the office\n{}", watcher_log(&w));
    w.assert_reached(&[(late.as_str(), bridge.as_str()), (OFFICE, "tun0")]);

    // A restart: a new namespace, the routes again.
    w.docker.docker(&["restart", "-t", "0", "milvus-etcd"]);
    let ok = until(|| own_inside(&w, "milvus-etcd") == host_vpn_side(&w));
    assert!(ok, "milvus-etcd lost its routes on restart\n{}", watcher_log(&w));
    assert!(pings_from(&w, "milvus-etcd", OFFICE), "milvus-etcd cannot reach the office after restart");

    // A container removed: its record goes, with no error, and the others get the seed blocks back.
    w.docker.docker(&["rm", "-f", "milvus-late"]);
    let record = || std::fs::read_to_string(w.state_dir().join("tun0.json")).unwrap_or_default();
    assert!(until(|| !record().contains("milvus-late")), "milvus-late is still recorded\n{}", record());
    assert!(
        until(|| own_inside(&w, "milvus-etcd") == want),
        "{:?}\n{}",
        own_inside(&w, "milvus-etcd"),
        watcher_log(&w)
    );
    timing("watched", t0);

    // The restarted container has a new veth (and a link-local route on it): the rest of the
    // host's table is exactly as before.
    let log_path = c.log.clone();
    c.stop();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert_eq!(without_veths(&w.laptop.table()), without_veths(&before), "{log}");
    assert!(own_routes(&w.laptop).is_empty());
    assert!(!w.state_dir().join("tun0.json").exists(), "tun0's state outlives the disconnect");
    assert_no_failure(&log);
    assert_eq!(table_in(&w, "milvus-etcd"), etcd_table, "milvus-etcd's table after disconnect\n{log}");
    assert!(until(|| watchers(&w).is_empty()), "a watcher outlived the disconnect");
    let wlog = watcher_log(&w);
    for bad in ["cannot", "refused", "internal error"] {
        assert!(!wlog.contains(bad), "the watcher said {bad:?}:\n{wlog}");
    }
    timing("disconnect", t0);
}
