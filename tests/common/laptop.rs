//! The laptop every kernel-level test starts from: a bridge 172.20.0.0/16 (and fd42:20::/64)
//! whose .2–.4 (and ::2) are in use, tun0 10.0.1.65 peer 10.0.1.66 held open, and the pushed
//! routes as OpenVPN or NetworkManager left them.

use super::Netns;

#[derive(Clone, Copy, Debug)]
pub enum Pushed {
    /// Not installed (old OpenVPN: `ip route add` failed; route-noexec).
    Absent,
    /// Prepended with the same metric (OpenVPN 2.6).
    Prepended,
    /// Installed at metric 50 (NetworkManager).
    Metric50,
}

/// The laptop: bridge with a port (so it has carrier) and three used addresses in its neighbour
/// table (no Docker here), tun0 held open, and the pushed routes as OpenVPN/NM left them.
pub fn laptop(pushed: Pushed) -> Netns {
    let ns = bridge_host();
    ns.ip(&["addr", "add", "fd42:20::1/64", "dev", "br-test", "nodad"]);
    for (i, a) in ["172.20.0.2", "172.20.0.3", "172.20.0.4", "fd42:20::2"].iter().enumerate() {
        let mac = format!("02:42:ac:14:00:0{}", i + 2);
        ns.ip(&["neigh", "add", a, "lladdr", &mac, "dev", "br-test", "nud", "permanent"]);
    }
    ns.ip(&["addr", "add", "fd00:8::2/64", "dev", "tun0", "nodad"]);
    match pushed {
        Pushed::Absent => {}
        Pushed::Prepended => {
            ns.ip(&["route", "prepend", "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun0"]);
            ns.ip(&["-6", "route", "prepend", "fd42:20::/64", "dev", "tun0", "metric", "256"]);
        }
        Pushed::Metric50 => {
            ns.ip(&["route", "add", "172.20.0.0/16", "via", "10.0.1.66", "dev", "tun0", "metric", "50"]);
            ns.ip(&["-6", "route", "add", "fd42:20::/48", "dev", "tun0", "metric", "50"]);
        }
    }
    ns
}

/// The IPv4 core of the laptop, nothing in use: bridge br-test 172.20.0.1/16 (a veth port gives
/// it carrier; this kernel has no dummy driver) and tun0 10.0.1.65 peer 10.0.1.66, held open.
pub fn bridge_host() -> Netns {
    let mut ns = Netns::new();
    ns.ip(&["link", "add", "br-test", "type", "bridge"]);
    ns.ip(&["link", "add", "port0", "type", "veth", "peer", "name", "port0p"]);
    ns.ip(&["link", "set", "port0", "master", "br-test", "up"]);
    ns.ip(&["link", "set", "port0p", "up"]);
    ns.ip(&["addr", "add", "172.20.0.1/16", "dev", "br-test"]);
    ns.ip(&["link", "set", "br-test", "up"]);
    ns.tun("tun0");
    ns.ip(&["addr", "add", "10.0.1.65", "peer", "10.0.1.66", "dev", "tun0"]);
    ns
}
