//! `vpnfix suggest`: the permanent fix, decided purely. For every local network a VPN route
//! collides with (the planner's conflicts), a free subnet of the same size; the compose
//! `networks:` block per compose project; a daemon.json whose `default-address-pools` stay clear
//! of every VPN push and route (proposed even when Docker cannot be asked); the steps that make
//! it take effect and the caveats users trip on.
//!
//! A subnet is free when it overlaps (nests in, contains or equals) no route of the main table,
//! no Docker network, no VPN push, no host address and no subnet proposed earlier in the run.
//! The search is deterministic: the lowest free block in the first range that has one — the
//! `--prefer` ranges, then Docker's own default pools (172.17.0.0/16 … 172.31.0.0/16 as /16s,
//! 192.168.0.0/16 for /20 and longer), then 10.0.0.0/8; fd00::/8 for IPv6.
//!
//! Only [`write_daemon_json`] and [`read_daemon_json`] touch the file system.

mod free;
mod io;
mod podman;
mod pools;
mod render;
#[cfg(test)]
mod tests;

pub use free::Taken;
pub use io::{read_daemon_json, write_daemon_json, SuggestError};
pub use pools::{daemon_json_text, docker_defaults, Pool};
pub use render::render_text;

use crate::cidr::{is_default_or_half, Prefix};
use crate::net::{DockerNetwork, Engine, Facts};
use crate::plan::{LocalNetwork, Plan};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

/// What a suggestion is made from.
pub struct SuggestInput<'a> {
    /// The host's facts (routes, addresses, Docker's networks, the VPN's pushes).
    pub facts: &'a Facts,
    /// The plan made from them: its conflicts are the networks to move.
    pub plan: &'a Plan,
    /// Ranges to take new subnets and pools from first (`--prefer`), in order.
    pub prefer: Vec<IpNet>,
    /// The existing /etc/docker/daemon.json, parsed; `None` when there is none.
    pub daemon_json: Option<Value>,
}

/// Who owns a local network, which decides how it is moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// A compose project's network: the compose file's `networks:` block moves it.
    Compose,
    /// A Docker network made by hand: `docker network rm` and `create --subnet`.
    Network,
    /// The engine's default network: Docker's docker0 (`bip` / `fixed-cidr-v6` in daemon.json),
    /// Podman's `podman` (`default_subnet` in containers.conf).
    DefaultBridge,
    /// A bridge Docker does not describe (libvirt, LXD, or Docker not reachable).
    Bridge,
}

/// One local network to move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkFix {
    /// The engine network's name; `None` for a bridge no engine describes.
    pub name: Option<String>,
    /// The engine that describes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// The Linux bridge.
    pub bridge: String,
    /// The compose project.
    pub compose_project: Option<String>,
    /// The network's key in the compose file (`default` for `milvus_default`).
    pub compose_network: Option<String>,
    /// How it is moved.
    pub owner: Owner,
    /// Its subnet now.
    pub current: IpNet,
    /// A free subnet of the same size; `None` when none is free (a note says so).
    pub proposed: Option<IpNet>,
    /// Docker's IPAM range, moved along to the same offset in the proposed subnet.
    pub ip_range: Option<IpNet>,
    /// The VPN routes it collides with.
    pub collides_with: Vec<IpNet>,
    /// The containers on it.
    pub containers: Vec<String>,
}

/// The compose `networks:` block of one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComposeFix {
    /// The compose project.
    pub project: String,
    /// The block, ready to paste into its docker-compose.yml.
    pub yaml: String,
}

/// The permanent fix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    /// The networks to move, sorted by current subnet.
    pub networks: Vec<NetworkFix>,
    /// Per compose project, the `networks:` block that moves its networks.
    pub compose: Vec<ComposeFix>,
    /// The address pools Docker should use once this is applied.
    pub default_address_pools: Vec<Pool>,
    /// The existing daemon.json with the pools (and docker0's subnet) merged in.
    pub daemon_json: Value,
    /// Whether `daemon_json` differs from the existing one.
    pub daemon_json_changed: bool,
    /// The engines the advice is for (Docker's daemon.json only where Docker answered, or where
    /// no engine did).
    pub engines: Vec<Engine>,
    /// The `[network]` block for Podman's containers.conf, when Podman answered and its pools or
    /// default network must move.
    pub containers_conf: Option<String>,
    /// What to do, in order.
    pub steps: Vec<String>,
    /// Caveats and what could not be proposed.
    pub notes: Vec<String>,
}

/// Proposes the permanent fix for the conflicts of `input.plan`.
pub fn suggest(input: &SuggestInput) -> Suggestion {
    let facts = input.facts;
    let mut notes = Vec::new();
    let prefer = preferred(&input.prefer, &mut notes);
    let podman_here = facts.engines.contains(&Engine::Podman);
    let docker_here = facts.engines.is_empty() || facts.engines.contains(&Engine::Docker);
    let reserved = if podman_here { podman::reserved() } else { Vec::new() };
    let mut taken = Taken::new(avoid_everything(facts).into_iter().chain(reserved));
    let mut networks = collect(facts, input.plan);
    for fix in &mut networks {
        propose(fix, facts, &mut taken, &prefer, &mut notes);
    }
    let moved: Vec<Prefix> = networks.iter().filter_map(|f| f.proposed).map(Prefix::from).collect();
    let trim = Taken::new(avoid_for_pools(facts).into_iter().chain(moved));
    let search = candidate_ranges(false, 16, &prefer);
    let existing = input.daemon_json.clone().unwrap_or_else(|| Value::Object(Default::default()));
    let (mut daemon_json, mut default_address_pools) = (existing.clone(), Vec::new());
    let docker0 = default_bridge(&networks);
    if docker_here {
        let configured = pools::configured(input.daemon_json.as_ref(), &mut notes);
        let pool_plan = pools::propose(configured, &trim, &taken, &prefer, &search);
        // Unchanged pools stay exactly as the file has them.
        let write_pools = pool_plan.changed.then_some(pool_plan.pools.as_slice());
        daemon_json = pools::merge(input.daemon_json.as_ref(), write_pools, &docker0, &mut notes);
        default_address_pools = pool_plan.pools;
    }
    let daemon_json_changed = daemon_json != existing;
    let containers_conf = podman_here.then(|| {
        let pool_plan = pools::propose(Some(podman::default_pools()), &trim, &taken, &prefer, &search);
        podman::conf_block(pool_plan.changed.then_some(pool_plan.pools.as_slice()), &networks)
    });
    let containers_conf = containers_conf.flatten();
    let compose = render::compose_blocks(facts, &networks, &mut notes);
    let mut steps = render::steps(facts, &networks, &compose, daemon_json_changed);
    if containers_conf.is_some() {
        steps.insert(usize::from(daemon_json_changed), podman::conf_step(&networks));
    }
    notes.extend(render::caveats(facts, &networks, daemon_json_changed, docker0.bip.is_some()));
    Suggestion {
        networks,
        compose,
        default_address_pools,
        daemon_json,
        daemon_json_changed,
        engines: facts.engines.clone(),
        containers_conf,
        steps,
        notes,
    }
}

/// Ranges a proposal is never taken from, whatever `--prefer` says: this-network, loopback,
/// IPv4 link-local, multicast and reserved; IPv6 ::/8 (loopback, mapped), link-local, multicast.
const NEVER: [&str; 7] = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/8", "fe80::/10", "ff00::/8"];

/// Private ranges (RFC 1918, RFC 6598 shared space, IPv6 unique local).
const PRIVATE: [&str; 5] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

fn prefixes(list: &'static [&'static str]) -> impl Iterator<Item = Prefix> {
    list.iter().map(|s| Prefix::from(s.parse::<IpNet>().expect("a valid CIDR")))
}

/// `--prefer` ranges as prefixes, with a note for any that is not private.
fn preferred(prefer: &[IpNet], notes: &mut Vec<String>) -> Vec<Prefix> {
    let private: Vec<Prefix> = prefixes(&PRIVATE).collect();
    let out: Vec<Prefix> = prefer.iter().map(|n| Prefix::from(n.trunc())).collect();
    for p in out.iter().filter(|p| !private.iter().any(|r| r.contains(**p))) {
        notes.push(format!("--prefer {p} is not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7); used as asked"));
    }
    out
}

/// Everything a new network subnet must not overlap: routes, pushes (default routes and their
/// halves aside), Docker's networks, the tunnel's and the host's addresses, [`NEVER`].
fn avoid_everything(facts: &Facts) -> Vec<Prefix> {
    let mut out: Vec<Prefix> =
        facts.routes.iter().map(|r| r.dst).filter(|d| !is_default_or_half(*d)).map(Prefix::from).collect();
    let nets = facts.docker.iter().flatten().flat_map(|n| &n.ipam).map(|p| Prefix::from(p.subnet));
    out.extend(nets);
    out.extend(facts.addrs.iter().map(|a| Prefix::host(a.addr)));
    out.extend(common_avoid(facts));
    out
}

/// What pools must not overlap: as [`avoid_everything`], except Docker's own networks (Docker
/// skips the subnets it has handed out; trimming them would change the pools at every run).
fn avoid_for_pools(facts: &Facts) -> Vec<Prefix> {
    let docker_bridges: Vec<&str> = match &facts.docker {
        Some(ns) => ns.iter().map(|n| n.bridge.as_str()).collect(),
        None => Vec::new(),
    };
    let dockers = |dev: &str| match &facts.docker {
        Some(_) => docker_bridges.contains(&dev),
        None => dev == "docker0" || dev.starts_with("br-"),
    };
    let own = |r: &&crate::net::Route| r.is_on_link() && r.dev.as_deref().is_some_and(dockers);
    let mut out: Vec<Prefix> =
        facts.routes.iter().filter(|r| !own(r) && !is_default_or_half(r.dst)).map(|r| Prefix::from(r.dst)).collect();
    out.extend(facts.addrs.iter().filter(|a| !dockers(&a.dev)).map(|a| Prefix::host(a.addr)));
    out.extend(common_avoid(facts));
    out
}

/// The pushes, the tunnel's own networks and [`NEVER`].
fn common_avoid(facts: &Facts) -> Vec<Prefix> {
    let pushes = facts.pushes.iter().map(|p| p.dst).filter(|d| !is_default_or_half(*d));
    let tunnel = [facts.tunnel.local_v4, facts.tunnel.local_v6].into_iter().flatten().map(|n| n.trunc());
    pushes.chain(tunnel).map(Prefix::from).chain(prefixes(&NEVER)).collect()
}

/// One fix per local network in conflict, with every push it collides with, sorted.
fn collect(facts: &Facts, plan: &Plan) -> Vec<NetworkFix> {
    let mut out: Vec<NetworkFix> = Vec::new();
    for c in &plan.conflicts {
        let l = &c.local;
        match out.iter_mut().find(|f| f.bridge == l.dev && f.current == l.dst) {
            Some(f) if !f.collides_with.contains(&c.push.dst) => f.collides_with.push(c.push.dst),
            Some(_) => {}
            None => out.push(new_fix(facts, l, c.push.dst)),
        }
    }
    for f in &mut out {
        f.collides_with.sort();
    }
    out.sort_by(|a, b| Prefix::from(a.current).cmp(&Prefix::from(b.current)).then(a.bridge.cmp(&b.bridge)));
    out
}

fn new_fix(facts: &Facts, l: &LocalNetwork, push: IpNet) -> NetworkFix {
    let docker = facts.network_on(&l.dev);
    let owner = match docker {
        None => Owner::Bridge,
        // Podman's compatible API calls its default network `bridge` too (libpod: `podman`).
        Some(n) if n.name == "bridge" || (n.engine == Engine::Podman && n.name == "podman") => Owner::DefaultBridge,
        Some(n) if n.compose_project.is_some() => Owner::Compose,
        Some(_) => Owner::Network,
    };
    NetworkFix {
        name: docker.map(|n| n.name.clone()),
        engine: docker.map(|n| n.engine),
        bridge: l.dev.clone(),
        compose_project: docker.and_then(|n| n.compose_project.clone()),
        compose_network: docker.and_then(compose_key),
        owner,
        current: l.dst,
        proposed: None,
        ip_range: None,
        collides_with: vec![push],
        containers: docker.map(|n| n.containers.iter().map(|c| c.name.clone()).collect()).unwrap_or_default(),
    }
}

/// A compose network's key in its compose file: the `com.docker.compose.network` label, or,
/// without it, the name compose gives networks (`<project>_<key>`) read backwards.
fn compose_key(n: &DockerNetwork) -> Option<String> {
    let project = n.compose_project.as_deref()?;
    n.compose_network
        .clone()
        .or_else(|| Some(n.name.strip_prefix(&format!("{project}_")).unwrap_or(&n.name).to_string()))
}

/// Where to look for a free /`len`, in order: the `--prefer` ranges of the family, then the
/// defaults (see the module's documentation). A range is used only when a /`len` fits in it
/// and, for Docker's pools, when Docker itself would hand out networks that long from it.
fn candidate_ranges(v6: bool, len: u8, prefer: &[Prefix]) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = prefer.iter().filter(|r| r.v6 == v6 && r.len <= len).copied().collect();
    let defaults: Vec<(Prefix, u8)> = if v6 {
        vec![(Prefix::from("fd00::/8".parse::<IpNet>().expect("a valid CIDR")), 8)]
    } else {
        let pools = pools::docker_defaults().into_iter().map(|p| (Prefix::from(p.base), p.size));
        pools.chain([(Prefix::from("10.0.0.0/8".parse::<IpNet>().expect("a valid CIDR")), 8)]).collect()
    };
    out.extend(defaults.into_iter().filter(|(r, min)| *min <= len && r.len <= len).map(|(r, _)| r));
    out
}

/// Finds the subnet for one fix and marks it taken.
fn propose(fix: &mut NetworkFix, facts: &Facts, taken: &mut Taken, prefer: &[Prefix], notes: &mut Vec<String>) {
    let cur = Prefix::from(fix.current);
    let ranges = candidate_ranges(cur.v6, cur.len, prefer);
    let Some(new) = ranges.iter().find_map(|r| taken.lowest_free(*r, cur.len)) else {
        let tried: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        notes.push(format!(
            "no free /{} for {} {}: every /{} of {} overlaps a route, a VPN push, a Docker network or a host address; give --prefer a range with room",
            cur.len, render::owner_name(fix), fix.current, cur.len, if tried.is_empty() { "the default ranges".into() } else { tried.join(", ") }
        ));
        return;
    };
    taken.add(new);
    let wanted: Vec<&Prefix> = prefer.iter().filter(|r| r.v6 == cur.v6).collect();
    if !wanted.is_empty() && !wanted.iter().any(|r| r.contains(new)) {
        let list: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        notes.push(format!(
            "no free /{} in {} for {}; took {new} instead",
            cur.len,
            list.join(", "),
            render::owner_name(fix)
        ));
    }
    fix.proposed = Some(new.to_net());
    let range = facts
        .network_on(&fix.bridge)
        .into_iter()
        .flat_map(|n| &n.ipam)
        .filter(|p| p.subnet == fix.current)
        .find_map(|p| p.ip_range);
    fix.ip_range = range.and_then(|r| moved(r, cur, new));
}

/// A block inside `old` at the same offset inside `new` (same-size blocks).
fn moved(block: IpNet, old: Prefix, new: Prefix) -> Option<IpNet> {
    let b = Prefix::from(block.trunc());
    old.contains(b).then(|| Prefix { addr: new.addr | (b.addr - old.addr), ..b }.to_net())
}

/// docker0's `bip` and `fixed-cidr-v6` from the default bridge's proposed subnets.
fn default_bridge(networks: &[NetworkFix]) -> pools::DefaultBridge {
    let mut d = pools::DefaultBridge::default();
    let docker0 = |f: &&NetworkFix| f.owner == Owner::DefaultBridge && f.engine != Some(Engine::Podman);
    for f in networks.iter().filter(docker0) {
        match f.proposed {
            Some(IpNet::V4(n)) => {
                let gw = std::net::Ipv4Addr::from(u32::from(n.network()).wrapping_add(1));
                d.bip = Some(format!("{gw}/{}", n.prefix_len()));
            }
            Some(n @ IpNet::V6(_)) => d.fixed_cidr_v6 = Some(n.to_string()),
            None => {}
        }
    }
    d
}
