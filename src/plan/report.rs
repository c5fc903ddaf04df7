//! The planner's output types, and their assembly from the search's blocks: reasons, the
//! per-tunnel cap, conflicts and notes. Pure.

use super::inside::InsideNetwork;
use super::local::LocalNetwork;
use super::{Contest, Index, Target};
use crate::cidr::{aggregate, Bounds, Prefix};
use crate::config::{Config, Policy};
use crate::net::{Facts, Push, Skipped};
use ipnet::IpNet;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// Which side of a contested range a route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Through the tunnel.
    Vpn,
    /// On the bridge, kept for local containers.
    Local,
    /// A push itself, routed by vpnfix because the VPN client routes none (wg-quick's
    /// `Table = off`); it contains no local network, or only ones the VPN side splits.
    Pushed,
}

/// A route vpnfix would add, with the reason it exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedRoute {
    /// Destination.
    pub dst: IpNet,
    /// Device: the tunnel or a bridge.
    pub dev: String,
    /// Next hop (tap tunnels only).
    pub gateway: Option<IpAddr>,
    /// Which side it serves.
    pub side: Side,
    /// The most specific push containing it.
    pub push: IpNet,
    /// The local network containing it.
    pub local: IpNet,
    /// The local network's owner: `docker network milvus` or `bridge br-test`.
    pub owner: String,
}

impl PlannedRoute {
    /// The route as vpnfix adds it: in the main table, with vpnfix's protocol number `proto`.
    pub fn spec(&self, proto: u8) -> crate::net::RouteSpec {
        crate::net::RouteSpec {
            dst: self.dst,
            dev: self.dev.clone(),
            gateway: self.gateway,
            table: crate::net::MAIN_TABLE,
            protocol: proto,
        }
    }
}

impl fmt::Display for PlannedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        match self.side {
            Side::Vpn => write!(f, " dev {}: VPN side of {}, shared with {}", self.dev, self.push, self.owner),
            Side::Local => write!(f, " dev {}: local side of {}, kept for {}", self.dev, self.push, self.owner),
            Side::Pushed => write!(f, " dev {}: pushed, routed by vpnfix ({})", self.dev, self.owner),
        }
    }
}

/// A push overlapping a local network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The push.
    pub push: Push,
    /// The local network.
    pub local: LocalNetwork,
    /// push ∩ local.
    pub contested: IpNet,
    /// The part that stays on the bridge (K under `split`, all under `local`, none under `vpn`).
    pub kept: Vec<IpNet>,
    /// How many planned routes lie inside `contested`.
    pub routes: usize,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "push {} overlaps {}: {} contested", self.push, self.local, self.contested)
    }
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The tunnel's device.
    pub tunnel: String,
    /// The policy applied.
    pub policy: Policy,
    /// Routes to add, sorted (family, address, prefix length).
    pub add: Vec<PlannedRoute>,
    /// Every push/local-network overlap.
    pub conflicts: Vec<Conflict>,
    /// Whether routes go inside containers too (`VPNFIX_CONTAINER_ROUTES`).
    pub container_routes: bool,
    /// Routes inside the containers of contested networks, per network.
    pub inside: Vec<InsideNetwork>,
    /// What was not used or not fixed, and why.
    pub skipped: Vec<Skipped>,
    /// What the user should know.
    pub notes: Vec<String>,
}

/// Builds the plan from the split blocks: attaches reasons, applies the cap per root range,
/// lists conflicts and notes.
pub(super) fn assemble(
    facts: &Facts,
    config: &Config,
    ix: &Index,
    pushes: &[&Push],
    contest: Contest,
    blocks: Vec<(Prefix, Target, usize)>,
    mut skipped: Vec<Skipped>,
) -> Plan {
    let Contest { ranges, roots } = contest;
    let mut per_root: Vec<Vec<(Prefix, Target)>> = vec![Vec::new(); roots.len()];
    for (b, t, root) in blocks {
        per_root[root].push((b, t));
    }
    let mut left = config.max_routes;
    let mut add = Vec::new();
    let mut over: Vec<(Prefix, usize)> = Vec::new();
    for (root, mut routes) in roots.iter().zip(per_root) {
        if routes.len() > left {
            over.push((*root, routes.len()));
            continue;
        }
        left -= routes.len();
        routes.sort();
        add.extend(routes.into_iter().map(|(b, t)| planned(facts, ix, pushes, b, t)));
    }
    skipped.extend(over_cap(&over, left, config.max_routes));
    if facts.tunnel.unrouted {
        add.extend(pushed(facts, ix, pushes));
    }
    let inside = super::inside::plan(facts, config, ix, &ranges, &mut skipped);
    add.sort_by(|a, b| a.dst.cmp(&b.dst).then(a.dev.cmp(&b.dev)));
    let conflicts = conflicts(config, ix, pushes, &ranges, &add);
    let notes = notes(facts, config, &conflicts, &inside);
    Plan {
        tunnel: facts.tunnel.dev.clone(),
        policy: config.policy,
        add,
        conflicts,
        container_routes: config.container_routes,
        inside,
        skipped,
        notes,
    }
}

/// One line per range over the cap; past three ranges, one line for all of them.
fn over_cap(over: &[(Prefix, usize)], left: usize, cap: usize) -> Vec<Skipped> {
    let tail = format!("more than the {left} left of the cap of {cap} (VPNFIX_MAX_ROUTES)");
    let routes = |n: usize| {
        if n == 1 {
            "1 route".to_string()
        } else {
            format!("{n} routes")
        }
    };
    if over.len() <= 3 {
        let line = |(r, n): &(Prefix, usize)| {
            Skipped::new(r.to_string(), format!("needs {}, {tail}; none added for this range", routes(*n)))
        };
        return over.iter().map(line).collect();
    }
    let total = over.iter().map(|(_, n)| n).sum();
    let subject = format!("{} and {} more ranges", over[0].0, over.len() - 1);
    vec![Skipped::new(subject, format!("need {}, {tail}; none added for them", routes(total)))]
}

fn planned(facts: &Facts, ix: &Index, pushes: &[&Push], b: Prefix, t: Target) -> PlannedRoute {
    // The longest push containing the whole block; a block that merges several sibling pushes
    // is named after the one its first address belongs to. Blocks never span local networks
    // (each is in the table, and the split rule makes blocks longer than table routes).
    let whole = |(p, _): &(Prefix, &[usize])| p.len <= b.len;
    let pi = ix.pushes.matches(b.v6, b.addr).find(whole).or_else(|| ix.pushes.longest(b.v6, b.addr));
    let (_, pi) = pi.expect("a planned block lies in a push");
    let (_, li) = ix.locals.matches(b.v6, b.addr).find(whole).expect("a planned block lies in a local network");
    let local = &ix.local_nets[li[0]];
    let (dev, gateway, side) = match t {
        Target::Tunnel => (facts.tunnel.dev.clone(), facts.tunnel.next_hop(b.v6), Side::Vpn),
        Target::Bridge(l) => (ix.local_nets[l].dev.clone(), None, Side::Local),
    };
    PlannedRoute {
        dst: b.to_net(),
        dev,
        gateway,
        side,
        push: pushes[pi[0]].dst,
        local: local.dst,
        owner: local.owner(),
    }
}

/// The pushes themselves, for a tunnel whose client routes none: each one that does not lie
/// inside a local network (those get exactly the VPN side the search found), as the client would
/// have routed it. A push containing a local network is routed whole: the search's blocks,
/// longer than the bridge's route, give the VPN its side there.
fn pushed(facts: &Facts, ix: &Index, pushes: &[&Push]) -> Vec<PlannedRoute> {
    pushes
        .iter()
        .filter(|p| {
            let pp = Prefix::from(p.dst);
            !ix.locals.matches(pp.v6, pp.addr).any(|(l, _)| l.len <= pp.len)
        })
        .map(|p| PlannedRoute {
            dst: p.dst,
            dev: facts.tunnel.dev.clone(),
            gateway: facts.tunnel.next_hop(p.dst.addr().is_ipv6()),
            side: Side::Pushed,
            push: p.dst,
            local: p.dst,
            owner: format!("{} routes no push itself", facts.tunnel.dev),
        })
        .collect()
}

fn conflicts(
    config: &Config,
    ix: &Index,
    pushes: &[&Push],
    ranges: &[(Prefix, usize, usize)],
    add: &[PlannedRoute],
) -> Vec<Conflict> {
    let starts = Bounds::new(add.iter().map(|r| Prefix::from(r.dst)).collect());
    let inside = |c: Prefix| starts.starting_in(c).filter(|p| c.contains(*p)).count();
    let mut known: std::collections::HashMap<(Prefix, usize, bool), Vec<IpNet>> = std::collections::HashMap::new();
    ranges
        .iter()
        .map(|&(c, pi, li)| {
            let local = ix.local_nets[li].clone();
            let broad = Prefix::from(pushes[pi].dst).len < config.keep_prefix(c.v6);
            let kept = match config.policy {
                Policy::Vpn => Vec::new(),
                Policy::Local => vec![c.to_net()],
                // Every push containing a network contests the same range: walk it once.
                Policy::Split => known.entry((c, li, broad)).or_insert_with(|| kept_blocks(ix, c, li, broad)).clone(),
            };
            Conflict { push: pushes[pi].clone(), contested: c.to_net(), kept, routes: inside(c), local }
        })
        .collect()
}

/// K(p, l) ∩ C as the fewest blocks, for reports: the same search as the planner's, over the
/// same bounds, with the keep test as the verdict.
fn kept_blocks(ix: &Index, c: Prefix, li: usize, broad: bool) -> Vec<IpNet> {
    fn walk(ix: &Index, b: Prefix, li: usize, broad: bool, out: &mut Vec<IpNet>) {
        match b.halves().filter(|_| ix.bounds.has_inner(b)) {
            Some((lo, hi)) => {
                walk(ix, lo, li, broad, out);
                walk(ix, hi, li, broad, out);
            }
            None if ix.kept(b.v6, b.addr, li, broad) => out.push(b.to_net()),
            None => {}
        }
    }
    let mut out = Vec::new();
    walk(ix, c, li, broad, &mut out);
    aggregate(&out)
}

fn notes(facts: &Facts, config: &Config, conflicts: &[Conflict], inside: &[InsideNetwork]) -> Vec<String> {
    let mut notes = Vec::new();
    if facts.docker.is_none() && !conflicts.is_empty() {
        notes.push(
            "Docker's networks are unknown (Docker not reachable, or no docker.json): addresses in use come from the bridges' own addresses and neighbour tables"
                .into(),
        );
    }
    // One note per local network, naming its top-level contested ranges.
    let mut by_local: Vec<(&LocalNetwork, Vec<IpNet>)> = Vec::new();
    let mut index: std::collections::HashMap<(IpNet, &str), usize> = std::collections::HashMap::new();
    for c in conflicts {
        let i = *index.entry((c.local.dst, c.local.dev.as_str())).or_insert_with(|| {
            by_local.push((&c.local, Vec::new()));
            by_local.len() - 1
        });
        by_local[i].1.push(c.contested);
    }
    for (l, ranges) in by_local {
        let owner = l.owner();
        let ranges = aggregate(&ranges);
        let mut listed: Vec<String> = ranges.iter().take(3).map(ToString::to_string).collect();
        if ranges.len() > 3 {
            listed.push(format!("{} more", ranges.len() - 3));
        }
        let ranges = listed.join(", ");
        notes.push(match config.policy {
            // Containers that get routes inside them reach the VPN side: nothing to say.
            Policy::Split if inside.iter().any(|i| i.subnet == l.dst && i.bridge == l.dev) => continue,
            Policy::Split => format!(
                "containers on {owner} still cannot reach the VPN side of {ranges} themselves (their subnet {} says it is on-link); `vpnfix suggest` proposes a subnet that does not collide",
                l.dst
            ),
            Policy::Vpn => format!("policy vpn: the host cannot reach the containers of {owner} in {ranges} while the VPN is up"),
            Policy::Local => format!("policy local: the VPN cannot reach {ranges} from this host; {owner} keeps it"),
        });
    }
    notes
}
