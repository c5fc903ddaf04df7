//! Domain types: what vpnfix knows about a host (routes, links, addresses, neighbours, Docker
//! networks) and about a VPN (its tunnel and pushed routes). Each has one `Display`, used by logs,
//! errors and reports alike.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Route protocol numbers vpnfix names (from the kernel's `rtnetlink.h` and iproute2's
/// `rt_protos`); others print as numbers.
pub const PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

/// vpnfix's default route protocol number: 86 ('V'), which no routing daemon in iproute2's
/// `rt_protos` claims, so vpnfix can always tell its own routes apart.
pub const DEFAULT_PROTO: u8 = 86;

/// `RT_SCOPE_LINK` from `rtnetlink.h`: the scope of a directly connected IPv4 route.
pub const SCOPE_LINK: u8 = 253;

/// The kernel's pick among the routes of one prefix (the longest that contains an address): the
/// lowest metric wins; the devices of every route tied there, sorted. More than one device is
/// undecided: the winner would depend on insertion order. The one rule the planner and
/// `explain` apply.
pub fn tied_devices<'a>(at_longest: impl IntoIterator<Item = &'a Route>) -> Vec<Option<&'a str>> {
    let routes: Vec<&Route> = at_longest.into_iter().collect();
    let Some(best) = routes.iter().map(|r| r.metric).min() else { return Vec::new() };
    let mut devs: Vec<Option<&str>> = routes.iter().filter(|r| r.metric == best).map(|r| r.dev.as_deref()).collect();
    devs.sort();
    devs.dedup();
    devs
}

/// A route protocol number, shown by name when it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Proto(pub u8);

impl Proto {
    /// The protocol of a name as `ip -j` prints it (a known name, or a number).
    pub fn parse(s: &str) -> Option<Proto> {
        s.parse::<u8>().ok().or_else(|| PROTOCOLS.iter().find(|(_, n)| *n == s).map(|(v, _)| *v)).map(Proto)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match PROTOCOLS.iter().find(|(v, _)| *v == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `RT_TABLE_MAIN`: the table `ip route` shows and vpnfix plans against.
pub const MAIN_TABLE: u32 = 254;

/// A route vpnfix adds or deletes: exactly these fields identify it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination block (no host bits set).
    pub dst: IpNet,
    /// The device it is bound to, so the kernel drops it when the device goes.
    pub dev: String,
    /// Next hop, for tap tunnels.
    pub gateway: Option<IpAddr>,
    /// Routing table, normally [`MAIN_TABLE`].
    pub table: u32,
    /// Route protocol number: vpnfix's own, so it finds (and only ever touches) its own routes.
    pub protocol: u8,
}

impl RouteSpec {
    /// Whether `x`, a route of the main table, is exactly this one: the one rule for "is this
    /// route in the kernel" (apply's EEXIST check, status, explain).
    pub fn is(&self, x: &Route) -> bool {
        x.kind == RouteKind::Unicast
            && x.dst == self.dst
            && x.dev.as_deref() == Some(self.dev.as_str())
            && x.gateway == self.gateway
            && x.protocol == Proto(self.protocol)
    }

    /// Whether the table holds exactly this route.
    pub fn in_table(&self, table: &[Route]) -> bool {
        table.iter().any(|x| self.is(x))
    }

    /// The spec of a route of the table; `None` for one bound to no single device.
    pub fn of_route(r: &Route) -> Option<RouteSpec> {
        let dev = r.dev.clone()?;
        Some(RouteSpec { dst: r.dst, dev, gateway: r.gateway, table: MAIN_TABLE, protocol: r.protocol.0 })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " proto {}", Proto(self.protocol))
    }
}

/// The kind of a route as the kernel types it (`RTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// An ordinary route that forwards through a device.
    Unicast,
    /// `blackhole`, `unreachable`, `prohibit`, `throw` and the like: the packet goes nowhere.
    Reject,
}

/// One route of the kernel's main table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination block.
    pub dst: IpNet,
    /// The device the route leaves through; `None` for reject routes and for multipath routes
    /// whose next hops use different devices.
    pub dev: Option<String>,
    /// The next hop, if any.
    pub gateway: Option<IpAddr>,
    /// The route's priority (IPv4 default 0; IPv6 kernel routes 256, user routes 1024).
    pub metric: u32,
    /// Who installed it.
    pub protocol: Proto,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Unicast or a reject type.
    pub kind: RouteKind,
}

impl Route {
    /// Whether this is a directly connected route: no gateway, forwarding unicast, and in IPv4
    /// `scope link` (IPv6 routes carry no scope worth reading).
    pub fn is_on_link(&self) -> bool {
        self.kind == RouteKind::Unicast
            && self.gateway.is_none()
            && self.dev.is_some()
            && (matches!(self.dst, IpNet::V6(_)) || self.scope == SCOPE_LINK)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == RouteKind::Reject {
            f.write_str("reject ")?;
        }
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        match &self.dev {
            Some(dev) => write!(f, " dev {dev}")?,
            None if self.kind == RouteKind::Unicast => f.write_str(" dev (multipath)")?,
            None => {}
        }
        write!(f, " proto {} metric {}", self.protocol, self.metric)
    }
}

/// Whether `name` is a name the kernel accepts for a device (`dev_valid_name`): 1–15 bytes, no
/// `/`, `:` or whitespace, not `.` or `..`. Every device name vpnfix is given, by a hook's
/// environment or arguments or on the command line, is checked with this before it is used,
/// in particular before it names a state file.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// A network device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// The netlink link kind (`bridge`, `tun`, `veth` …); `None` for physical devices.
    pub kind: Option<String>,
    /// For kind `tun`: whether it is a tap (layer 2) device.
    pub tap: bool,
    /// Whether the device is administratively up (`IFF_UP`).
    pub up: bool,
}

impl Link {
    /// Whether the device is a Linux bridge (docker0, br-*, virbr*, podman*, cni0 …).
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    /// Whether the device is a VPN tunnel: kind `tun` (OpenVPN, OpenConnect, wireguard-go; tap
    /// devices are kind `tun` too) or `wireguard` (the kernel module).
    pub fn is_vpn(&self) -> bool {
        matches!(self.kind.as_deref(), Some("tun" | "wireguard"))
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.kind.as_deref().unwrap_or("device"))
    }
}

/// An address configured on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Addr {
    /// The device's name.
    pub dev: String,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix_len, self.dev)
    }
}

/// A neighbour-table entry (ARP / NDP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    /// The device's name.
    pub dev: String,
    /// The neighbour's address.
    pub addr: IpAddr,
    /// The NUD state names (`REACHABLE`, `STALE`, `PERMANENT` …).
    pub state: Vec<String>,
}

impl Neighbour {
    /// Whether the entry says someone really is there: not FAILED or INCOMPLETE.
    pub fn is_live(&self) -> bool {
        !self.state.iter().any(|s| s.eq_ignore_ascii_case("FAILED") || s.eq_ignore_ascii_case("INCOMPLETE"))
    }
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {} {}", self.addr, self.dev, self.state.join(","))
    }
}

/// One subnet of a Docker network's IPAM configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpamPool {
    /// The network's subnet.
    pub subnet: IpNet,
    /// The gateway (the bridge's address), when Docker reports it.
    pub gateway: Option<IpAddr>,
    /// The sub-range Docker allocates container addresses from, if restricted.
    pub ip_range: Option<IpNet>,
}

/// A container endpoint on a Docker network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The container's full id (empty where nothing gave one): what vpnfix asks the engine for
    /// its process, to add routes inside it. Left out of reports, which name containers.
    #[serde(skip)]
    pub id: String,
    /// The container's name.
    pub name: String,
    /// Its addresses on that network.
    pub addrs: Vec<IpAddr>,
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, a) in self.addrs.iter().enumerate() {
            f.write_str(if i == 0 { " (" } else { ", " })?;
            write!(f, "{a}")?;
        }
        if !self.addrs.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The container engine that describes a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Docker (moby).
    #[default]
    Docker,
    /// Podman, through its Docker-compatible API.
    Podman,
}

impl Engine {
    /// The engine's name as a person writes it (`Docker`); `Display` gives its command (`docker`).
    pub fn title(self) -> &'static str {
        match self {
            Engine::Docker => "Docker",
            Engine::Podman => "Podman",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        })
    }
}

/// A Docker (or Podman) bridge network as vpnfix needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DockerNetwork {
    /// The engine that describes it.
    pub engine: Engine,
    /// The network's name (`milvus_default`).
    pub name: String,
    /// Its full id.
    pub id: String,
    /// The Linux bridge it owns. As the engine describes it, a hint only: the
    /// `com.docker.network.bridge.name` option, Podman's `network_interface`, else `br-` and the
    /// first 12 characters of the id (moby's bridge driver does exactly this). Once the facts
    /// are made ([`Host::into_facts`]), the bridge the kernel shows for it ([`crate::bridges`]).
    pub bridge: String,
    /// The compose project (`com.docker.compose.project` label), if compose made it.
    pub compose_project: Option<String>,
    /// The network's key in the compose file (`com.docker.compose.network` label).
    pub compose_network: Option<String>,
    /// IPAM subnets.
    pub ipam: Vec<IpamPool>,
    /// Containers attached to it.
    pub containers: Vec<Container>,
    /// How its containers' traffic leaves the host.
    pub egress: Egress,
    /// The engine's address (`unix:///run/docker.sock`), where it was asked live.
    #[serde(skip)]
    pub host: Option<String>,
}

/// How the engine lets a network's containers out of the host: what a route inside a container
/// towards the VPN needs (the engine's masquerade gives the packets the tunnel's source address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    /// Masqueraded to the outgoing device's address (the engines' default).
    #[default]
    Masquerade,
    /// `--internal`: nothing leaves the host.
    Internal,
    /// Routed without NAT (`com.docker.network.bridge.enable_ip_masquerade=false`).
    NoMasquerade,
}

impl fmt::Display for DockerNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} network {}", self.engine, self.name)?;
        if let Some(p) = &self.compose_project {
            write!(f, " (compose project {p})")?;
        }
        Ok(())
    }
}

/// Whether the VPN device carries IP packets (tun) or Ethernet frames (tap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    /// Layer 3: routes need no gateway.
    #[default]
    Tun,
    /// Layer 2: routes need the VPN gateway as next hop.
    Tap,
}

/// The VPN device and what the VPN told about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Tunnel {
    /// Device name (`tun0`).
    pub dev: String,
    /// tun or tap.
    pub kind: TunnelKind,
    /// The IPv4 VPN gateway (`route_vpn_gateway`).
    pub gateway_v4: Option<Ipv4Addr>,
    /// The IPv6 VPN gateway (`ifconfig_ipv6_remote`).
    pub gateway_v6: Option<Ipv6Addr>,
    /// The tunnel's local IPv4 address with its netmask (`ifconfig_local`/`ifconfig_netmask`).
    pub local_v4: Option<IpNet>,
    /// The point-to-point peer (`ifconfig_remote`, topology net30/p2p).
    pub remote_v4: Option<Ipv4Addr>,
    /// The tunnel's local IPv6 network (`ifconfig_ipv6_local`/`ifconfig_ipv6_netbits`).
    pub local_v6: Option<IpNet>,
    /// The VPN client adds none of its pushes itself (wg-quick with `Table = off`): vpnfix
    /// routes every push through the tunnel as the client would, but where the rule decides.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unrouted: bool,
}

impl Tunnel {
    /// The next hop a route of this family needs through the tunnel: none on tun devices
    /// (point-to-point, the kernel needs no neighbour), the VPN gateway on tap devices.
    pub fn next_hop(&self, v6: bool) -> Option<IpAddr> {
        match (self.kind, v6) {
            (TunnelKind::Tun, _) => None,
            (TunnelKind::Tap, false) => self.gateway_v4.map(IpAddr::V4),
            (TunnelKind::Tap, true) => self.gateway_v6.map(IpAddr::V6),
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dev)?;
        if self.kind == TunnelKind::Tap {
            f.write_str(" (tap)")?;
        }
        if let Some(a) = self.local_v4 {
            write!(f, " {a}")?;
        }
        if let Some(a) = self.local_v6 {
            write!(f, " {a}")?;
        }
        if let Some(g) = self.gateway_v4 {
            write!(f, " gateway {g}")?;
        }
        Ok(())
    }
}

/// A route the VPN wants on the tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Push {
    /// The destination block.
    pub dst: IpNet,
    /// The gateway the VPN named.
    pub gateway: Option<IpAddr>,
    /// The metric the VPN (or DCO, or NetworkManager) gave it.
    pub metric: Option<u32>,
    /// Where it came from (`route_network_1`, `VPN_IP4_ROUTE_0`, `--route`).
    pub origin: String,
}

impl fmt::Display for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        write!(f, " ({})", self.origin)
    }
}

/// Something vpnfix saw but did not act on, and why: a malformed variable, a push it will not
/// use, a range over the cap. Reported, never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// What was skipped (a variable, a route, a range).
    pub subject: String,
    /// Why, and what vpnfix did instead.
    pub reason: String,
}

impl Skipped {
    /// A skipped item.
    pub fn new(subject: impl Into<String>, reason: impl Into<String>) -> Skipped {
        Skipped { subject: subject.into(), reason: reason.into() }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.reason)
    }
}

mod host;
pub use host::{Facts, Host};
