//! Manual mode without a hook environment: the VPN tunnels that are up now, and as each one's
//! pushes the routes the kernel has through it. Pure.
//!
//! A tunnel is a device of kind `tun` (OpenVPN, OpenConnect, wireguard-go; tap devices too) or
//! `wireguard` that is up. Its pushes are the main-table routes through it, except its own
//! directly connected ones (`proto kernel`), default routes and their halves (redirect-gateway:
//! never contested), and vpnfix's own. A route the VPN pushed but the kernel refused ("File
//! exists" on a bridge's identical prefix) is not in the table: the caller says how to give it.

use super::HookInput;
use crate::cidr::{is_default_or_half, is_link_local};
use crate::net::{Addr, Link, Push, Route, RouteKind, Tunnel, TunnelKind};
use ipnet::IpNet;

/// `RTPROT_KERNEL`: routes the kernel made for an address.
const PROTO_KERNEL: u8 = 2;

/// Every VPN tunnel that is up, with the kernel's routes through it as its pushes, by name.
pub fn tunnels(links: &[Link], addrs: &[Addr], routes: &[Route], own_proto: u8) -> Vec<HookInput> {
    let mut up: Vec<&Link> = links.iter().filter(|l| l.is_vpn() && l.up).collect();
    up.sort_by(|a, b| a.name.cmp(&b.name));
    up.into_iter().map(|l| tunnel(&l.name, links, addrs, routes, own_proto)).collect()
}

/// Tunnel `dev` as the kernel shows it: its addresses, tap or tun, and the routes through it.
pub fn tunnel(dev: &str, links: &[Link], addrs: &[Addr], routes: &[Route], own_proto: u8) -> HookInput {
    let pushes: Vec<Push> = routes.iter().filter(|r| pushed(r, dev, own_proto)).map(as_push).collect();
    let own = |v6: bool| {
        addrs
            .iter()
            .filter(|a| a.dev == dev && a.addr.is_ipv6() == v6 && !is_link_local(IpNet::from(a.addr)))
            .find_map(|a| IpNet::new(a.addr, a.prefix_len).ok())
    };
    let gateway = |v6: bool| pushes.iter().filter_map(|p| p.gateway).find(|g| g.is_ipv6() == v6);
    let tap = links.iter().any(|l| l.name == dev && l.tap);
    let tunnel = Tunnel {
        dev: dev.to_string(),
        kind: if tap { TunnelKind::Tap } else { TunnelKind::Tun },
        gateway_v4: gateway(false).and_then(|g| match g {
            std::net::IpAddr::V4(g) => Some(g),
            std::net::IpAddr::V6(_) => None,
        }),
        gateway_v6: gateway(true).and_then(|g| match g {
            std::net::IpAddr::V6(g) => Some(g),
            std::net::IpAddr::V4(_) => None,
        }),
        local_v4: own(false),
        remote_v4: None,
        local_v6: own(true),
        unrouted: false,
    };
    HookInput { tunnel, pushes, ..HookInput::default() }
}

fn pushed(r: &Route, dev: &str, own_proto: u8) -> bool {
    r.dev.as_deref() == Some(dev)
        && r.kind == RouteKind::Unicast
        && r.protocol.0 != PROTO_KERNEL
        && r.protocol.0 != own_proto
        && !is_default_or_half(r.dst)
        && !is_link_local(r.dst)
}

fn as_push(r: &Route) -> Push {
    Push {
        dst: r.dst,
        gateway: r.gateway,
        metric: Some(r.metric),
        origin: format!("the kernel's route via {} (proto {})", r.dev.as_deref().unwrap_or_default(), r.protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Proto, SCOPE_LINK};

    fn link(name: &str, kind: &str, up: bool) -> Link {
        Link { index: 1, name: name.into(), kind: Some(kind.into()), tap: false, up }
    }

    fn route(dst: &str, dev: &str, gw: Option<&str>, proto: u8, metric: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            dev: Some(dev.into()),
            gateway: gw.map(|g| g.parse().unwrap()),
            metric,
            protocol: Proto(proto),
            scope: if gw.is_none() { SCOPE_LINK } else { 0 },
            kind: RouteKind::Unicast,
        }
    }

    #[test]
    fn up_vpn_devices_with_the_routes_the_vpn_put_through_them() {
        let links = [
            link("eth0", "veth", true),
            link("br-x", "bridge", true),
            link("tun0", "tun", true),
            link("wg0", "wireguard", true),
            link("tun9", "tun", false),
        ];
        let addrs = [
            Addr { dev: "tun0".into(), addr: "10.8.0.2".parse().unwrap(), prefix_len: 24 },
            Addr { dev: "tun0".into(), addr: "fe80::1".parse().unwrap(), prefix_len: 64 },
            Addr { dev: "tun0".into(), addr: "fd42::2".parse().unwrap(), prefix_len: 64 },
        ];
        let routes = [
            route("0.0.0.0/1", "tun0", Some("10.8.0.1"), 3, 0),
            route("10.8.0.0/24", "tun0", None, 2, 0),
            route("172.20.0.0/16", "tun0", Some("10.8.0.1"), 3, 0),
            route("172.20.1.0/24", "tun0", None, 86, 0),
            route("172.21.0.0/16", "tun0", None, 4, 50),
            route("172.20.0.0/16", "br-x", None, 2, 0),
            route("fe80::/64", "tun0", None, 2, 256),
            route("10.99.0.0/16", "wg0", None, 3, 0),
        ];
        let found = tunnels(&links, &addrs, &routes, 86);
        let names: Vec<&str> = found.iter().map(|i| i.tunnel.dev.as_str()).collect();
        assert_eq!(names, ["tun0", "wg0"], "up tun and wireguard devices only, by name");
        let pushes: Vec<String> = found[0].pushes.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            pushes,
            [
                "172.20.0.0/16 via 10.8.0.1 metric 0 (the kernel's route via tun0 (proto boot))",
                "172.21.0.0/16 metric 50 (the kernel's route via tun0 (proto static))"
            ],
            "no default halves, no proto kernel, no vpnfix route, no link-local"
        );
        assert_eq!(found[0].tunnel.local_v4, Some("10.8.0.2/24".parse().unwrap()));
        assert_eq!(found[0].tunnel.local_v6, Some("fd42::2/64".parse().unwrap()), "not the link-local address");
        assert_eq!(found[1].pushes.len(), 1);
        assert!(tunnels(&links[..2], &addrs, &routes, 86).is_empty(), "no VPN device: no tunnel");
    }
}
