//! The four hosts of the OpenConnect and WireGuard worlds (tests/common/openconnect.rs,
//! tests/common/wireguard.rs): a VPN server with an office behind it, and a laptop whose bridge
//! 172.20.0.1/16 + fd00:ac14::1/64 has one container, 172.20.0.2 / fd00:ac14::2. Addresses are
//! added without DAD, so they are usable at once.

use super::{Netns, TempDir};

/// The office host behind the server, in both families (inside the pushed ranges).
pub const OFFICE: &str = "172.20.2.52";
/// The office host's IPv6 address.
pub const OFFICE6: &str = "fd00:ac14::2:52";
/// The container on the laptop's bridge.
pub const CONTAINER: &str = "172.20.0.2";
/// The container's IPv6 address.
pub const CONTAINER6: &str = "fd00:ac14::2";

/// What differs between the worlds.
pub struct Wiring<'a> {
    /// The laptop's link to the server (`ocw-l0`), its bridge (`ocw-br0`) and the bridge's port
    /// for the container (`ocw-c0`).
    pub wan: &'a str,
    pub bridge: &'a str,
    pub port: &'a str,
    /// The server's and the laptop's addresses on their /30.
    pub server: &'a str,
    pub laptop: &'a str,
    /// The VPN's client pools, which the office routes back through the server.
    pub pool: &'a str,
    pub pool6: &'a str,
    /// Whether the laptop's default route goes via the server.
    pub default_route: bool,
}

/// Links and addresses of the four hosts; the server forwards (inside its namespace only).
pub fn wire(server: &Netns, office: &Netns, laptop: &Netns, container: &Netns, w: &Wiring) {
    server.ip(&["link", "add", "wan", "type", "veth", "peer", "name", w.wan, "netns", &laptop.name]);
    server.ip(&["link", "add", "lan", "type", "veth", "peer", "name", "uplink", "netns", &office.name]);
    server.ip(&["addr", "add", &format!("{}/30", w.server), "dev", "wan"]);
    server.ip(&["addr", "add", "172.20.2.1/24", "dev", "lan"]);
    server.ip(&["addr", "add", "fd00:ac14::2:1/64", "dev", "lan", "nodad"]);
    office.ip(&["addr", "add", &format!("{OFFICE}/24"), "dev", "uplink"]);
    office.ip(&["addr", "add", &format!("{OFFICE6}/64"), "dev", "uplink", "nodad"]);
    laptop.ip(&["addr", "add", &format!("{}/30", w.laptop), "dev", w.wan]);
    for (ns, dev) in [(server, "wan"), (server, "lan"), (office, "uplink"), (laptop, w.wan)] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    // The office answers the VPN's clients through the server.
    office.ip(&["route", "add", w.pool, "via", "172.20.2.1"]);
    office.ip(&["-6", "route", "add", w.pool6, "via", "fd00:ac14::2:1"]);
    server.sysctl("net.ipv4.ip_forward=1");
    server.sysctl("net.ipv6.conf.all.forwarding=1");
    if w.default_route {
        laptop.ip(&["route", "add", "default", "via", w.server]);
    }
    // The container network: a bridge with one port, whose peer is the container's eth0.
    laptop.ip(&["link", "add", w.bridge, "type", "bridge"]);
    laptop.ip(&["link", "add", w.port, "type", "veth", "peer", "name", "eth0", "netns", &container.name]);
    laptop.ip(&["link", "set", w.port, "master", w.bridge, "up"]);
    laptop.ip(&["addr", "add", "172.20.0.1/16", "dev", w.bridge]);
    laptop.ip(&["addr", "add", "fd00:ac14::1/64", "dev", w.bridge, "nodad"]);
    laptop.ip(&["link", "set", w.bridge, "up"]);
    container.ip(&["addr", "add", &format!("{CONTAINER}/16"), "dev", "eth0"]);
    container.ip(&["addr", "add", &format!("{CONTAINER6}/64"), "dev", "eth0", "nodad"]);
    container.ip(&["link", "set", "eth0", "up"]);
    container.ip(&["route", "add", "default", "via", "172.20.0.1"]);
    container.ip(&["-6", "route", "add", "default", "via", "fd00:ac14::1"]);
}

/// The four hosts, tagged `TAG-server`, `TAG-office`, `TAG-laptop`, `TAG-container`, wired, and
/// the world's temporary directory (never under /etc or /run, which the clients' private mounts
/// hide).
pub struct Hosts {
    pub dir: TempDir,
    pub server: Netns,
    pub office: Netns,
    pub laptop: Netns,
    pub container: Netns,
}

/// Makes and wires the four hosts of a world tagged `tag`.
pub fn hosts(tag: &str, w: &Wiring) -> Hosts {
    let dir = TempDir::new(tag);
    for hidden in ["/etc", "/run", "/var/run"] {
        assert!(!dir.path().starts_with(hidden), "temporary directory {} under {hidden}", dir.path().display());
    }
    let h = Hosts {
        dir,
        server: Netns::tagged(&format!("{tag}-server")),
        office: Netns::tagged(&format!("{tag}-office")),
        laptop: Netns::tagged(&format!("{tag}-laptop")),
        container: Netns::tagged(&format!("{tag}-container")),
    };
    wire(&h.server, &h.office, &h.laptop, &h.container, w);
    h
}
