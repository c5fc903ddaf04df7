//! Docker adapter: translates Docker's network descriptions (`docker network inspect`, or the
//! Engine API through bollard) into [`DockerNetwork`]s. It translates; it decides nothing.

use crate::net::{Container, DockerNetwork, IpamPool, Skipped};
use bollard::models::NetworkInspect;
use ipnet::IpNet;
use std::net::IpAddr;

/// The bridge option moby's bridge driver reads (`com.docker.network.bridge.name`).
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// The compose project label.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// A bridge network from Docker's description; `None` for other drivers (host, null, overlay,
/// macvlan …), which own no Linux bridge. Malformed addresses are reported and left out.
pub fn from_inspect(n: &NetworkInspect, skipped: &mut Vec<Skipped>) -> Option<DockerNetwork> {
    if n.driver.as_deref() != Some("bridge") {
        return None;
    }
    let name = n.name.clone().unwrap_or_default();
    let id = n.id.clone().unwrap_or_default();
    let bridge = n
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME))
        .filter(|b| !b.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
    let mut bad = |what: &str, v: &str| {
        skipped.push(Skipped::new(
            format!("docker network {name}"),
            format!("{what} {v:?} is malformed; left out"),
        ));
    };
    let mut ipam = Vec::new();
    for c in n.ipam.as_ref().and_then(|i| i.config.as_ref()).into_iter().flatten() {
        let Some(subnet) = c.subnet.as_deref() else { continue };
        let Ok(subnet) = subnet.parse::<IpNet>() else {
            bad("subnet", subnet);
            continue;
        };
        let gateway = c
            .gateway
            .as_deref()
            .filter(|g| !g.is_empty())
            .and_then(|g| g.parse().ok());
        let ip_range = c
            .ip_range
            .as_deref()
            .filter(|r| !r.is_empty())
            .and_then(|r| r.parse().ok());
        ipam.push(IpamPool {
            subnet: subnet.trunc(),
            gateway,
            ip_range,
        });
    }
    let mut containers = Vec::new();
    for (cid, ep) in n.containers.iter().flatten() {
        let mut addrs = Vec::new();
        for a in [&ep.ipv4_address, &ep.ipv6_address]
            .into_iter()
            .flatten()
            .filter(|a| !a.is_empty())
        {
            match a.parse::<IpNet>().map(|n| n.addr()).or_else(|_| a.parse::<IpAddr>()) {
                Ok(ip) => addrs.push(ip),
                Err(_) => bad("container address", a),
            }
        }
        let cname = ep
            .name
            .clone()
            .unwrap_or_else(|| cid.get(..12).unwrap_or(cid).to_string());
        containers.push(Container { name: cname, addrs });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Some(DockerNetwork {
        compose_project: n.labels.as_ref().and_then(|l| l.get(COMPOSE_PROJECT)).cloned(),
        name,
        id,
        bridge,
        ipam,
        containers,
    })
}
