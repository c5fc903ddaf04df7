//! Which Linux bridge an engine's network lives on, decided by what the kernel shows, never by a
//! name alone. Pure; [`crate::net::Host::into_facts`] applies it once, so every reader (planner,
//! explain, status, suggest) asks [`crate::net::Facts::network_on`] and gets the same answer.
//!
//! Evidence, strongest first: the bridge that carries one of the network's IPAM gateways as its
//! own address; the bridge whose directly connected route is one of the network's subnets. The
//! engine's name for the bridge (moby's `com.docker.network.bridge.name` or `br-` + 12
//! characters of the id, Podman's `network_interface`) only breaks a tie between bridges that
//! both show such evidence. Podman 4.x's Docker-compatible answer carries no bridge name at all,
//! and its bridges are `podman1` (netavark) or `cni-podman1` (CNI): a guessed `br-<id>` would
//! match nothing.

use crate::net::{Addr, DockerNetwork, Link, Route, Skipped};
use ipnet::IpNet;

/// Whether `dev` is a Linux bridge: by netlink link kind; a device missing from the link list
/// (a bundle without link.json) is judged by the names engines and hypervisors give bridges.
pub fn is_bridge(links: &[Link], dev: &str) -> bool {
    match links.iter().find(|l| l.name == dev) {
        Some(link) => link.is_bridge(),
        None => ["docker", "br-", "virbr", "podman", "lxdbr", "cni"].iter().any(|p| dev.starts_with(p)),
    }
}

/// The host's tables the evidence comes from.
pub struct Kernel<'a> {
    /// Devices.
    pub links: &'a [Link],
    /// Addresses on them.
    pub addrs: &'a [Addr],
    /// The main table.
    pub routes: &'a [Route],
}

impl Kernel<'_> {
    /// The bridges that show evidence for `n`, strongest evidence first, each once.
    fn candidates(&self, n: &DockerNetwork) -> Vec<&str> {
        let bridge = |dev: &str| is_bridge(self.links, dev);
        let gateways = n.ipam.iter().filter_map(|p| p.gateway);
        let mut out: Vec<&str> = Vec::new();
        for g in gateways {
            out.extend(self.addrs.iter().filter(|a| a.addr == g && bridge(&a.dev)).map(|a| a.dev.as_str()));
        }
        for subnet in n.ipam.iter().map(|p| p.subnet) {
            let on_link = self.routes.iter().filter(|r| r.is_on_link() && r.dst == subnet);
            out.extend(on_link.filter_map(|r| r.dev.as_deref()).filter(|d| bridge(d)));
        }
        let mut seen = Vec::new();
        out.retain(|d| {
            !seen.contains(d) && {
                seen.push(*d);
                true
            }
        });
        out
    }
}

/// Each network with `bridge` set to the bridge the kernel shows for it. A network no bridge
/// shows evidence for is left out; it is reported in `skipped` when it should have one (running
/// containers, or its subnet in the kernel's table): an engine creates the bridge of a network
/// with nothing on it only when its first container starts (Podman's netavark and CNI), and such
/// a network has nothing in the kernel to contest.
pub fn resolve(networks: Vec<DockerNetwork>, kernel: &Kernel, skipped: &mut Vec<Skipped>) -> Vec<DockerNetwork> {
    let mut out = Vec::with_capacity(networks.len());
    for mut n in networks {
        let candidates = kernel.candidates(&n);
        let chosen = candidates.iter().find(|d| **d == n.bridge).or(candidates.first()).map(|d| d.to_string());
        match chosen {
            Some(dev) => {
                n.bridge = dev;
                out.push(n);
            }
            None if expected_in_kernel(&n, kernel.routes) => skipped.push(unmatched(&n)),
            None => {}
        }
    }
    out
}

fn expected_in_kernel(n: &DockerNetwork, routes: &[Route]) -> bool {
    let subnets: Vec<IpNet> = n.ipam.iter().map(|p| p.subnet).collect();
    n.containers.iter().any(|c| !c.addrs.is_empty()) || routes.iter().any(|r| subnets.contains(&r.dst))
}

fn unmatched(n: &DockerNetwork) -> Skipped {
    let subnets: Vec<String> = n.ipam.iter().map(|p| p.subnet.to_string()).collect();
    let gateways: Vec<String> = n.ipam.iter().filter_map(|p| p.gateway).map(|g| g.to_string()).collect();
    let what = match (gateways.is_empty(), subnets.is_empty()) {
        (false, _) => {
            format!("no bridge carries its gateway {} or has {} on-link", gateways.join(", "), subnets.join(", "))
        }
        (true, false) => format!("no bridge has its subnet {} on-link", subnets.join(", ")),
        (true, true) => "it names no subnet or gateway to find its bridge by".to_string(),
    };
    Skipped::new(n.to_string(), format!("{what}; its containers are not known to any local network"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Container, Engine, IpamPool, Proto, RouteKind, SCOPE_LINK};

    fn link(name: &str, kind: &str) -> Link {
        Link { index: 1, name: name.into(), kind: Some(kind.into()), tap: false, up: true }
    }

    fn addr(dev: &str, a: &str) -> Addr {
        Addr { dev: dev.into(), addr: a.parse().unwrap(), prefix_len: 16 }
    }

    fn on_link(dst: &str, dev: &str) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            dev: Some(dev.into()),
            gateway: None,
            metric: 0,
            protocol: Proto(2),
            scope: SCOPE_LINK,
            kind: RouteKind::Unicast,
        }
    }

    fn network(name: &str, hint: &str, subnet: &str, gateway: Option<&str>, containers: usize) -> DockerNetwork {
        DockerNetwork {
            engine: Engine::Podman,
            egress: crate::net::Egress::Masquerade,
            host: None,
            name: name.into(),
            id: format!("{name}-id"),
            bridge: hint.into(),
            compose_project: None,
            compose_network: None,
            ipam: vec![IpamPool {
                subnet: subnet.parse().unwrap(),
                gateway: gateway.map(|g| g.parse().unwrap()),
                ip_range: None,
            }],
            containers: (0..containers)
                .map(|i| Container {
                    id: String::new(),
                    name: format!("c{i}"),
                    addrs: vec![format!("172.20.5.{}", 10 + i).parse().unwrap()],
                })
                .collect(),
        }
    }

    fn bridges(networks: Vec<DockerNetwork>, k: &Kernel) -> (Vec<(String, String)>, Vec<String>) {
        let mut skipped = Vec::new();
        let out = resolve(networks, k, &mut skipped);
        (out.into_iter().map(|n| (n.name, n.bridge)).collect(), skipped.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_kernel_decides_the_bridge_not_the_name() {
        let links = [link("podman1", "bridge"), link("cni-podman2", "bridge"), link("eth0", "veth")];
        let addrs = [addr("podman1", "172.20.0.1"), addr("eth0", "172.22.0.1")];
        let routes = [on_link("172.20.0.0/16", "podman1"), on_link("172.21.0.0/16", "cni-podman2")];
        let k = Kernel { links: &links, addrs: &addrs, routes: &routes };
        let (got, skipped) = bridges(
            vec![
                // Podman 4.3's compatible answer names no bridge: the guess is br-<id>.
                network("pdtnet", "br-pdtnet-id", "172.20.0.0/16", Some("172.20.0.1"), 1),
                // No gateway address on a bridge (CNI without isGateway): the on-link route.
                network("cninet", "br-cninet-id", "172.21.0.0/16", Some("172.21.0.254"), 0),
                // The gateway is on a device that is not a bridge: no evidence.
                network("odd", "eth0", "172.22.0.0/16", Some("172.22.0.1"), 1),
                // Nothing anywhere and nothing running: no bridge yet, nothing to say.
                network("idle", "podman9", "10.89.3.0/24", Some("10.89.3.1"), 0),
            ],
            &k,
        );
        assert_eq!(got, [("pdtnet".into(), "podman1".into()), ("cninet".into(), "cni-podman2".into())]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].starts_with(
                "podman network odd: no bridge carries its gateway 172.22.0.1 or has 172.22.0.0/16 on-link"
            ),
            "{skipped:?}"
        );
    }

    #[test]
    fn a_name_only_breaks_a_tie_between_bridges_with_evidence() {
        let links = [link("br-a", "bridge"), link("br-b", "bridge")];
        let addrs = [addr("br-a", "172.20.0.1")];
        let routes = [on_link("172.20.0.0/16", "br-a"), on_link("172.20.0.0/16", "br-b")];
        let k = Kernel { links: &links, addrs: &addrs, routes: &routes };
        let by_hint = |hint: &str| bridges(vec![network("n", hint, "172.20.0.0/16", Some("172.20.0.1"), 0)], &k).0;
        assert_eq!(by_hint("br-b"), [("n".into(), "br-b".into())], "both show evidence: the engine's name decides");
        assert_eq!(by_hint("br-zz"), [("n".into(), "br-a".into())], "else the gateway's bridge");
        let none = Kernel { links: &links, addrs: &[], routes: &[] };
        let (got, skipped) = bridges(vec![network("n", "br-a", "172.20.0.0/16", Some("172.20.0.1"), 2)], &none);
        assert!(got.is_empty(), "a matching name alone is no evidence");
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn bridges_are_told_by_kind_or_without_a_link_by_name() {
        let links = [link("br-x", "veth"), link("mybr", "bridge")];
        assert!(!is_bridge(&links, "br-x"));
        assert!(is_bridge(&links, "mybr"));
        assert!(is_bridge(&links, "cni-podman1") && is_bridge(&links, "podman0") && is_bridge(&links, "docker0"));
        assert!(!is_bridge(&links, "eth0"));
    }
}
