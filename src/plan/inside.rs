//! Routes inside the containers of contested networks (DESIGN.md, "Containers' own tables").
//!
//! Inside a container on contested network l, l's subnet is on-link: a packet for a VPN host in
//! it is ARPed for on the bridge and dies. The same rule as the host's decides there: every
//! address the host sends into the tunnel gets a route via l's gateway in the container (the
//! host then forwards it, and the engine's masquerade gives it the tunnel's source address);
//! the kept addresses (the other containers, the gateway itself) stay on-link. Pure.

use super::local::LocalNetwork;
use super::{local, Index, Target};
use crate::cidr::{aggregate, Bounds, Prefix};
use crate::config::{Config, Policy};
use crate::net::{Container, DockerNetwork, Egress, Engine, Facts, Skipped};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The routes vpnfix adds inside every running container of one contested network (one family).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InsideNetwork {
    /// Who owns the network, for messages: `docker network milvus_default`.
    pub owner: String,
    /// The engine.
    pub engine: Engine,
    /// The network's name.
    pub network: String,
    /// The engine's address, to ask it for the containers' processes.
    #[serde(skip)]
    pub host: Option<String>,
    /// The bridge on the host.
    pub bridge: String,
    /// The network's subnet in this family: the containers' own on-link route.
    pub subnet: IpNet,
    /// The network's gateway (the bridge's address): every route's next hop.
    pub gateway: IpAddr,
    /// The VPN side of the network's contested ranges, each via `gateway`, sorted.
    pub routes: Vec<IpNet>,
    /// The running containers with an address in `subnet`.
    pub containers: Vec<Container>,
}

impl fmt::Display for InsideNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.routes.len();
        write!(
            f,
            "inside the containers of {} ({}): {n} route{} via {}",
            self.owner,
            self.subnet,
            plural(n),
            self.gateway
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The routes inside the containers of every contested local network that can have them, with
/// one line in `skipped` for each that cannot and why. `ranges` are the contested ranges as
/// (range, push index, local network index).
pub(super) fn plan(
    facts: &Facts,
    config: &Config,
    ix: &Index,
    ranges: &[(Prefix, usize, usize)],
    skipped: &mut Vec<Skipped>,
) -> Vec<InsideNetwork> {
    // Under `local` the VPN gets nothing of a contested range: there is nothing to route.
    if !config.container_routes || config.policy == Policy::Local {
        return Vec::new();
    }
    let mut by_local: BTreeMap<usize, Vec<Prefix>> = BTreeMap::new();
    for &(c, _, li) in ranges {
        by_local.entry(li).or_default().push(c);
    }
    let mut out = Vec::new();
    let mut left = config.max_routes;
    for (li, contested) in by_local {
        let l = &ix.local_nets[li];
        let subject = format!("containers of {} ({})", l.owner(), l.dst);
        let mut skip = |why: String| skipped.push(Skipped::new(subject.clone(), why));
        let (n, gateway) = match routable(facts, config, l) {
            Ok(found) => found,
            Err(why) => {
                skip(why);
                continue;
            }
        };
        // Pushes nested in one another contest the same range more than once: walk each once.
        let nets: Vec<IpNet> = contested.iter().map(|c| c.to_net()).collect();
        let mut blocks = Vec::new();
        for c in aggregate(&nets) {
            walk(ix, Prefix::from(c), li, Prefix::host(gateway), &mut blocks);
        }
        let routes = aggregate(&blocks);
        if routes.is_empty() {
            continue;
        }
        if routes.len() > left {
            skip(format!(
                "needs {} routes, more than the {left} left of the cap of {} (VPNFIX_MAX_ROUTES); none added inside them",
                routes.len(),
                config.max_routes
            ));
            continue;
        }
        left -= routes.len();
        out.push(InsideNetwork {
            owner: l.owner(),
            engine: n.engine,
            network: n.name.clone(),
            host: n.host.clone(),
            bridge: l.dev.clone(),
            subnet: l.dst,
            gateway,
            routes,
            containers: l.containers.clone(),
        });
    }
    out
}

/// The engine network of local network `l` and the gateway its containers route through, or
/// why they get no routes inside: no engine describes them, nothing leaves the host from the
/// network or is masqueraded, IPv6 the user did not say is NATed, or no gateway.
fn routable<'f>(facts: &'f Facts, config: &Config, l: &LocalNetwork) -> Result<(&'f DockerNetwork, IpAddr), String> {
    let n = facts
        .network_on(&l.dev)
        .ok_or("no container engine describes this bridge's containers; no routes inside them")?;
    match n.egress {
        Egress::Internal => {
            return Err("the network is internal: nothing leaves the host from it; no routes inside its containers".into())
        }
        Egress::NoMasquerade => return Err(
            "the network does not masquerade (com.docker.network.bridge.enable_ip_masquerade=false): the VPN could not answer its containers' addresses; no routes inside them"
                .into(),
        ),
        Egress::Masquerade => {}
    }
    if l.dst.addr().is_ipv6() && !config.container_routes_v6 {
        let hint = match n.engine {
            Engine::Docker => " (daemon.json \"ip6tables\": true)",
            Engine::Podman => "",
        };
        return Err(format!(
            "IPv6: {} does not say whether it NATs IPv6{hint}; set VPNFIX_CONTAINER_ROUTES_V6=true where it does",
            n.engine.title()
        ));
    }
    // The containers' next hop is the bridge's own address (the engine's IPAM gateway is what
    // it put there; a description may lack it, as Docker 20.10's sometimes does).
    let own = l.used.iter().find(|u| u.by == local::BRIDGE_ADDRESS).map(|u| u.addr);
    let gateway = own.or_else(|| n.ipam.iter().filter_map(|p| p.gateway).find(|g| l.dst.contains(g)));
    let gateway = gateway
        .ok_or("the bridge has no address in it and the engine names no gateway; no routes inside its containers")?;
    Ok((n, gateway))
}

/// The addresses of block `b` (in local network `li`) that the rule sends into the tunnel, but
/// the gateway's: it is the next hop, and the host's own address.
fn walk(ix: &Index, b: Prefix, li: usize, gateway: Prefix, out: &mut Vec<IpNet>) {
    if b == gateway {
        return;
    }
    if b.contains(gateway) || ix.rule_bounds.has_inner(b) {
        if let Some((lo, hi)) = b.halves() {
            walk(ix, lo, li, gateway, out);
            walk(ix, hi, li, gateway, out);
        }
        return;
    }
    let Some((push, _)) = ix.pushes.longest(b.v6, b.addr) else { return };
    if ix.desired(b.v6, b.addr, li, push.len) == Target::Tunnel {
        out.push(b.to_net());
    }
}

/// The blocks for one container whose own table holds `table` (vpnfix's own routes left out):
/// each block split until it is strictly longer than every route of the table it overlaps, so
/// it wins by length. A single address that cannot be is left out and returned second.
pub fn out_specify(blocks: &[IpNet], table: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let bounds = Bounds::new(table.iter().map(|n| Prefix::from(n.trunc())).collect());
    let (mut out, mut lost) = (Vec::new(), Vec::new());
    let mut todo: Vec<Prefix> = blocks.iter().rev().map(|b| Prefix::from(*b)).collect();
    while let Some(b) = todo.pop() {
        if !bounds.holds(b) && !bounds.has_inner(b) {
            out.push(b.to_net());
        } else if let Some((lo, hi)) = b.halves() {
            todo.push(hi);
            todo.push(lo);
        } else {
            lost.push(b.to_net());
        }
    }
    (out, lost)
}
