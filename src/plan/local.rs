//! Local networks (directly connected bridge routes) and the addresses in use on them: what the
//! planner must keep reachable. Pure.

use crate::cidr::{is_link_local, Prefix};
use crate::config::Config;
use crate::net::{Container, DockerNetwork, Engine, Facts, Route};
use ipnet::IpNet;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// An address in use on a local network, and who uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Used {
    /// The address.
    pub addr: IpAddr,
    /// `bridge address`, `docker gateway`, a container's name, `neighbour`.
    pub by: String,
}

/// A directly connected route on a bridge, with what Docker (or the neighbour table) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalNetwork {
    /// The route's destination.
    pub dst: IpNet,
    /// The bridge.
    pub dev: String,
    /// The engine network that owns the bridge, if any.
    pub network: Option<String>,
    /// The engine that describes that network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Its compose project.
    pub compose_project: Option<String>,
    /// Its containers with addresses in `dst`.
    pub containers: Vec<Container>,
    /// Every used address inside `dst`.
    pub used: Vec<Used>,
    /// Docker's IPAM ranges inside `dst` (room for the containers it starts next).
    pub ip_ranges: Vec<IpNet>,
}

impl LocalNetwork {
    /// Who owns it, for messages: `docker network milvus` or `bridge br-test`.
    pub fn owner(&self) -> String {
        match &self.network {
            Some(n) => format!("{} network {n}", self.engine.unwrap_or_default()),
            None => format!("bridge {}", self.dev),
        }
    }
}

impl fmt::Display for LocalNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.dst, self.dev)?;
        if let Some(n) = &self.network {
            write!(f, " ({} network {n}", self.engine.unwrap_or_default())?;
            if let Some(p) = &self.compose_project {
                write!(f, ", compose project {p}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The devices whose on-link routes are local networks: bridges (see [`crate::bridges::is_bridge`]).
pub fn is_bridge(facts: &Facts, dev: &str) -> bool {
    crate::bridges::is_bridge(&facts.links, dev)
}

/// The on-link routes on devices other than the tunnel that the planner cares about, split into
/// bridges (local networks) and others (physical devices: reported, never changed).
pub fn on_link_routes<'a>(facts: &'a Facts, routes: &[&'a Route]) -> (Vec<&'a Route>, Vec<&'a Route>) {
    routes
        .iter()
        .copied()
        .filter(|r| r.is_on_link() && !is_link_local(r.dst))
        .filter(|r| r.dev.as_deref().is_some_and(|d| d != facts.tunnel.dev && d != "lo"))
        .partition(|r| is_bridge(facts, r.dev.as_deref().unwrap_or_default()))
}

/// What [`Used::by`] says of the bridge's own addresses.
pub const BRIDGE_ADDRESS: &str = "bridge address";

/// Describes one bridge route as a local network.
pub fn describe(facts: &Facts, route: &Route) -> LocalNetwork {
    let dev = route.dev.clone().unwrap_or_default();
    let dst = route.dst;
    let inside = |a: &IpAddr| dst.contains(a);
    let docker = facts.network_on(&dev);
    let mut used: Vec<Used> = facts
        .addrs
        .iter()
        .filter(|a| a.dev == dev && inside(&a.addr))
        .map(|a| Used { addr: a.addr, by: BRIDGE_ADDRESS.into() })
        .collect();
    let mut local = LocalNetwork {
        dst,
        dev: dev.clone(),
        network: docker.map(|n| n.name.clone()),
        engine: docker.map(|n| n.engine),
        compose_project: docker.and_then(|n| n.compose_project.clone()),
        containers: Vec::new(),
        used: Vec::new(),
        ip_ranges: Vec::new(),
    };
    match docker {
        Some(n) => add_docker(&mut local, &mut used, n),
        None => used.extend(
            facts
                .neighbours
                .iter()
                .filter(|nb| nb.dev == dev && nb.is_live() && inside(&nb.addr))
                .map(|nb| Used { addr: nb.addr, by: "neighbour".into() }),
        ),
    }
    used.sort_by(|a, b| a.addr.cmp(&b.addr).then(a.by.cmp(&b.by)));
    used.dedup_by(|a, b| a.addr == b.addr);
    local.used = used;
    local
}

fn add_docker(local: &mut LocalNetwork, used: &mut Vec<Used>, n: &DockerNetwork) {
    let dst = local.dst;
    for pool in n.ipam.iter().filter(|p| dst.contains(&p.subnet) || p.subnet.contains(&dst)) {
        if let Some(g) = pool.gateway.filter(|g| dst.contains(g)) {
            used.push(Used { addr: g, by: format!("{} gateway", n.engine) });
        }
        if let Some(r) = pool.ip_range {
            local.ip_ranges.extend(Prefix::from(r).intersect(Prefix::from(dst)).map(Prefix::to_net));
        }
    }
    for c in &n.containers {
        let addrs: Vec<IpAddr> = c.addrs.iter().copied().filter(|a| dst.contains(a)).collect();
        if addrs.is_empty() {
            continue;
        }
        used.extend(addrs.iter().map(|a| Used { addr: *a, by: c.name.clone() }));
        local.containers.push(Container { id: c.id.clone(), name: c.name.clone(), addrs });
    }
    local.containers.sort_by(|a, b| a.addrs.cmp(&b.addrs));
}

/// How a block of the keep index relates to keeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepKind {
    /// A used address: always kept under `split`.
    Exact,
    /// A used address widened to the keep prefix, or an IPAM range: kept for broad pushes.
    Wide,
    /// A user's `VPNFIX_KEEP` prefix: always kept.
    UserKeep,
    /// A user's `VPNFIX_VPN` prefix: overrides `Wide` (not `Exact`).
    UserVpn,
}

/// The blocks that decide keeping for local network `l` (index `li`), tagged.
pub fn keep_blocks(l: &LocalNetwork, li: usize, config: &Config) -> Vec<(Prefix, usize, KeepKind)> {
    let dst = Prefix::from(l.dst);
    let wide_len = config.keep_prefix(dst.v6).max(dst.len);
    let mut out = Vec::new();
    for u in &l.used {
        let host = Prefix::host(u.addr);
        out.push((host, li, KeepKind::Exact));
        out.push((Prefix::of(host.v6, host.addr, wide_len.min(host.len)), li, KeepKind::Wide));
    }
    out.extend(l.ip_ranges.iter().map(|r| (Prefix::from(*r), li, KeepKind::Wide)));
    let user = |nets: &[IpNet], kind| {
        nets.iter().filter_map(|n| Prefix::from(*n).intersect(dst)).map(move |p| (p, li, kind)).collect::<Vec<_>>()
    };
    out.extend(user(&config.keep, KeepKind::UserKeep));
    out.extend(user(&config.vpn, KeepKind::UserVpn));
    out
}
