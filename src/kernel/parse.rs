//! Translation between netlink messages and vpnfix's domain types: route, address and
//! neighbour messages (parsed by netlink-packet-route) and link messages (read here, four
//! attributes of the dozens a link dump carries) become [`Route`], [`Addr`], [`Neighbour`] and
//! [`Link`] with the meaning `ip -j` gives them; a [`RouteSpec`] becomes the message that adds or
//! deletes exactly it.

use super::{KernelError, RouteGet, RouteSpec};
use crate::net::{Addr, Link, Neighbour, Proto, Route, RouteKind};
use ipnet::IpNet;
use rtnetlink::packet_core::NlasIterator;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Message types (`rtnetlink.h`).
pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_NEWROUTE: u16 = 24;
pub(super) const RTM_NEWNEIGH: u16 = 28;
/// Link attributes read from a link dump (`if_link.h`); the dump carries dozens more, which are
/// skipped unparsed.
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
/// `IFLA_TUN_TYPE` inside a tun device's `IFLA_INFO_DATA`.
pub(super) const IFLA_TUN_TYPE: u16 = 3;
/// `IFF_TAP`: `tun_fill_info` puts `flags & (IFF_TUN | IFF_TAP)` into `IFLA_TUN_TYPE` as a u8.
pub(super) const IFF_TAP: u8 = 2;
/// NUD state names (`neighbour.h`), bit 0 (`NUD_INCOMPLETE`) first, as iproute2 prints them.
pub(super) const NUD_NAMES: &str = "INCOMPLETE REACHABLE STALE DELAY PROBE FAILED NOARP PERMANENT";

/// The first attribute of one variant, mapped: `attr!(msg.attributes, RouteAttribute::Oif(i) => *i)`.
macro_rules! attr {
    ($attrs:expr, $pat:pat => $value:expr) => {
        $attrs.iter().find_map(|a| match a {
            $pat => Some($value),
            _ => None,
        })
    };
}

/// The devices a route message names: its oif and every next hop's.
pub(super) fn oifs(msg: &RouteMessage) -> impl Iterator<Item = u32> + '_ {
    msg.attributes.iter().flat_map(|a| match a {
        RouteAttribute::Oif(i) => vec![*i],
        RouteAttribute::MultiPath(hops) => hops.iter().map(|h| h.interface_index).collect(),
        _ => Vec::new(),
    })
}

pub(super) fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The `RTM_NEWROUTE`/`RTM_DELROUTE` body for `r`: unicast, `RTA_OIF`, `RTA_GATEWAY` when set,
/// `RTA_TABLE` past 255, scope link for an IPv4 route without gateway (as `ip route add` does;
/// IPv6 routes have no scope).
pub(super) fn message(r: &RouteSpec, index: u32) -> Result<RouteMessage, KernelError> {
    let invalid = |why: String| KernelError::Invalid(r.clone(), why);
    if r.dst.trunc() != r.dst {
        return Err(invalid("the destination has host bits set".to_string()));
    }
    let on_link = r.gateway.is_none() && r.dst.addr().is_ipv4();
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len())
        .map_err(|e| invalid(e.to_string()))?
        .output_interface(index)
        .table_id(r.table)
        .protocol(RouteProtocol::from(r.protocol))
        .kind(RouteType::Unicast)
        .scope(if on_link { RouteScope::Link } else { RouteScope::Universe });
    if let Some(gw) = r.gateway {
        builder = builder.gateway(gw).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(builder.build())
}

/// `RTA_TABLE` carries the full table id; the header's u8 says 252 (`RT_TABLE_COMPAT`) past 255.
pub(super) fn table_of(msg: &RouteMessage) -> u32 {
    attr!(msg.attributes, RouteAttribute::Table(t) => *t).unwrap_or(u32::from(msg.header.table))
}

pub(super) fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The destination prefix; a route without `RTA_DST` is the family's default route.
pub(super) fn prefix(msg: &RouteMessage) -> Option<IpNet> {
    let dst = attr!(msg.attributes, RouteAttribute::Destination(d) => ip(d));
    let addr = match (dst, msg.header.address_family) {
        (Some(a), _) => a?,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(addr, msg.header.destination_prefix_length).ok()
}

/// `RTA_GATEWAY`, or `RTA_VIA` (an IPv4 route via an IPv6 next hop, RFC 5549).
pub(super) fn gateway(a: &RouteAttribute) -> Option<IpAddr> {
    match a {
        RouteAttribute::Gateway(g) => ip(g),
        RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Device and gateway. A multipath route has a device only if all its next hops share one; its
/// gateway is the first next hop's (as `bundle::route` reads `ip -j`). A device missing from the
/// link dump (created since) leaves `dev` empty rather than guessed.
pub(super) fn next_hop(attrs: &[RouteAttribute], names: &HashMap<u32, String>) -> (Option<String>, Option<IpAddr>) {
    let hops = attr!(attrs, RouteAttribute::MultiPath(hops) => hops).filter(|h| !h.is_empty());
    if let Some(hops) = hops {
        let shared = hops.windows(2).all(|w| w[0].interface_index == w[1].interface_index);
        let dev = shared.then(|| names.get(&hops[0].interface_index).cloned()).flatten();
        return (dev, hops[0].attributes.iter().find_map(gateway));
    }
    let dev = attr!(attrs, RouteAttribute::Oif(i) => *i).and_then(|i| names.get(&i).cloned());
    (dev, attrs.iter().find_map(gateway))
}

/// A dumped route; `None` for cache entries (`RTM_F_CLONED`: IPv6 exceptions such as PMTU and
/// redirects) and for anything without an IP destination.
pub(super) fn route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &msg.header;
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    // Like `bundle::route`: unicast forwards; blackhole, unreachable, prohibit, throw (and the rare
    // local/broadcast/nat in the main table) send nothing through a device vpnfix could contest.
    let unicast = h.kind == RouteType::Unicast;
    let (dev, gateway) = next_hop(&msg.attributes, names);
    Some(Route {
        dst: prefix(msg)?,
        dev: dev.filter(|_| unicast),
        gateway,
        metric: attr!(msg.attributes, RouteAttribute::Priority(p) => *p).unwrap_or(0),
        protocol: Proto(h.protocol.into()),
        scope: h.scope.into(),
        kind: if unicast { RouteKind::Unicast } else { RouteKind::Reject },
    })
}

pub(super) fn route_get(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteGet> {
    let r = route(msg, names)?;
    let (table, protocol) = (table_of(msg), r.protocol.0);
    Some(RouteGet {
        dst: r.dst,
        dev: r.dev,
        gateway: r.gateway,
        table,
        protocol,
        metric: r.metric,
        host_owned: matches!(msg.header.kind, RouteType::Local | RouteType::Broadcast),
    })
}

/// `ifi_index` of an `ifinfomsg` (family, pad, type: 4 bytes; then the index, host order).
pub(super) fn ifindex(body: &[u8]) -> u32 {
    u32::from_ne_bytes([body[4], body[5], body[6], body[7]])
}

/// `IFF_UP` from `if.h`: the device is administratively up.
const IFF_UP: u32 = 1;

/// `ifi_flags` of an `ifinfomsg` (after the index, host order).
fn ifflags(body: &[u8]) -> u32 {
    u32::from_ne_bytes([body[8], body[9], body[10], body[11]])
}

/// A device from an `RTM_NEWLINK` body: the `ifinfomsg`, then `IFLA_IFNAME` and `IFLA_LINKINFO`
/// { `IFLA_INFO_KIND`, `IFLA_INFO_DATA` { `IFLA_TUN_TYPE` } }; every other attribute is skipped.
pub(super) fn link(body: &[u8]) -> Option<Link> {
    let attrs = body.get(16..)?;
    let (mut name, mut kind, mut tap) = (None, None, false);
    for nla in NlasIterator::new(attrs).map_while(Result::ok) {
        match nla.kind() {
            IFLA_IFNAME => name = Some(c_string(nla.value())),
            IFLA_LINKINFO => {
                for info in NlasIterator::new(nla.value()).map_while(Result::ok) {
                    match info.kind() {
                        IFLA_INFO_KIND => kind = Some(c_string(info.value())),
                        // tun_fill_info puts `flags & (IFF_TUN | IFF_TAP)` there as a u8.
                        IFLA_INFO_DATA if kind.as_deref() == Some("tun") => {
                            let mut data = NlasIterator::new(info.value()).map_while(Result::ok);
                            tap = data.any(|d| d.kind() == IFLA_TUN_TYPE && d.value().first() == Some(&IFF_TAP));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Link { index: ifindex(body), name: name?, kind, tap, up: ifflags(body) & IFF_UP != 0 })
}

/// A NUL-terminated netlink string.
pub(super) fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// `IFA_LOCAL` is the device's own address; `IFA_ADDRESS` is the peer on a point-to-point link and
/// the only one IPv6 sends otherwise (iproute2 prints `local` the same way).
pub(super) fn addr(msg: &AddressMessage, names: &HashMap<u32, String>) -> Option<Addr> {
    let local = attr!(msg.attributes, AddressAttribute::Local(ip) => *ip);
    Some(Addr {
        dev: names.get(&msg.header.index)?.clone(),
        addr: local.or(attr!(msg.attributes, AddressAttribute::Address(ip) => *ip))?,
        prefix_len: msg.header.prefix_len,
    })
}

pub(super) fn neighbour(msg: &NeighbourMessage, names: &HashMap<u32, String>) -> Option<Neighbour> {
    let addr = attr!(msg.attributes, NeighbourAttribute::Destination(a) => a).and_then(|a| match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let state = nud_names(u16::from(msg.header.state));
    Some(Neighbour { dev: names.get(&msg.header.ifindex)?.clone(), addr, state })
}

/// NUD bits as iproute2 names them; 0 is `NONE`.
pub(super) fn nud_names(state: u16) -> Vec<String> {
    if state == 0 {
        return vec!["NONE".to_string()];
    }
    let set = NUD_NAMES.split(' ').enumerate().filter(|(bit, _)| state & (1 << bit) != 0);
    set.map(|(_, n)| n.to_string()).collect()
}
