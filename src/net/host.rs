//! What vpnfix knows at one moment: the host ([`Host`]: the kernel's tables and the engines'
//! networks, one model however gathered) and, joined with what a VPN says, the planner's
//! [`Facts`].

use super::{Addr, DockerNetwork, Engine, Link, Neighbour, Push, Route, Skipped, Tunnel, TunnelKind};
use serde::Serialize;

/// Everything the planner needs to know about a host at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    /// The VPN device.
    pub tunnel: Tunnel,
    /// The routes the VPN wants, already parsed.
    pub pushes: Vec<Push>,
    /// The kernel's main table, IPv4 and IPv6.
    pub routes: Vec<Route>,
    /// The devices.
    pub links: Vec<Link>,
    /// The addresses on them.
    pub addrs: Vec<Addr>,
    /// The neighbour tables.
    pub neighbours: Vec<Neighbour>,
    /// The engines' bridge networks, each on the bridge the kernel shows for it; `None` when no
    /// engine could be asked.
    pub docker: Option<Vec<DockerNetwork>>,
    /// The engines whose networks were described (sorted), whether or not a bridge was found.
    pub engines: Vec<Engine>,
    /// What was skipped while the facts were gathered (malformed variables and entries).
    pub skipped: Vec<Skipped>,
}

/// What the host has at one moment: the kernel's tables and the engines' bridge networks, with
/// what could not be read. One model, whether gathered live, read from a bundle or written by
/// `snapshot`; [`Host::into_facts`] joins it with what a VPN says (a tunnel and its pushes).
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// The kernel's main table, IPv4 and IPv6.
    pub routes: Vec<Route>,
    /// The devices.
    pub links: Vec<Link>,
    /// The addresses on them.
    pub addrs: Vec<Addr>,
    /// The neighbour tables.
    pub neighbours: Vec<Neighbour>,
    /// The engines' networks as they describe them; `None` when no engine could be asked.
    pub docker: Option<Vec<DockerNetwork>>,
    /// What could not be read, one entry each.
    pub skipped: Vec<Skipped>,
}

impl Host {
    /// The planner's facts for one tunnel and its pushes, the host's tables moved in: the
    /// tunnel is a tap device when its link says so, whatever the hook's environment claimed,
    /// and each engine network sits on the bridge the kernel shows for it
    /// ([`crate::bridges`]). What the hook could not read comes after what the host could not.
    pub fn into_facts(self, input: crate::hook::HookInput) -> Facts {
        let Host { routes, links, addrs, neighbours, docker, mut skipped } = self;
        let mut tunnel = input.tunnel;
        if links.iter().any(|l| l.name == tunnel.dev && l.tap) {
            tunnel.kind = TunnelKind::Tap;
        }
        skipped.extend(input.skipped);
        let mut engines: Vec<Engine> = docker.iter().flatten().map(|n| n.engine).collect();
        engines.sort();
        engines.dedup();
        let kernel = crate::bridges::Kernel { links: &links, addrs: &addrs, routes: &routes };
        let docker = docker.map(|ns| crate::bridges::resolve(ns, &kernel, &mut skipped));
        Facts { tunnel, pushes: input.pushes, routes, links, addrs, neighbours, docker, engines, skipped }
    }

    /// The same, the host's tables copied (several tunnels planned against one host).
    pub fn facts(&self, input: crate::hook::HookInput) -> Facts {
        self.clone().into_facts(input)
    }
}

impl Facts {
    /// The engine's network on bridge `dev`, if one is there (see [`crate::bridges`]).
    pub fn network_on(&self, dev: &str) -> Option<&DockerNetwork> {
        self.docker.iter().flatten().find(|n| n.bridge == dev)
    }
}
