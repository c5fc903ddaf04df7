//! Routes inside containers: the plan's [`crate::plan::InsideNetwork`]s carried out in each
//! running container's own network namespace, recorded per container (its id, the process
//! entered through and the namespace's identity), and removed exactly.
//!
//! The same reconcile as the host's, per container: what the container has and the plan wants
//! stays; the intent is recorded first; missing routes are added and unwanted ones of this
//! tunnel's deleted. A container whose namespace is gone (stopped, restarted) took its routes
//! with it: it is forgotten, not an error. A container vpnfix cannot reach (its engine silent,
//! its namespace refused) keeps its record as it was and is said once, in one line; the host's
//! routes never wait for it.

use super::{Failure, Removed};
use crate::kernel::{Added, Deleted, Kernel, KernelError};
use crate::net::{Addr, Route, RouteSpec, MAIN_TABLE};
use crate::netns::{Namespace, NsId, PidView};
use crate::plan::{out_specify, InsideNetwork};
use crate::reconcile;
use crate::state::{Entry, Inside, State, StateDir, StateError, Status};
use log::{debug, info, warn};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// What the containers' part of a connect did.
#[derive(Debug, Default)]
pub struct Done {
    /// Routes added inside containers.
    pub added: usize,
    /// Routes deleted inside containers.
    pub removed: usize,
    /// Containers that hold vpnfix's routes now.
    pub containers: usize,
    /// Containers that should have routes and could not get them.
    pub failed: usize,
}

/// Says once per process that routes inside containers need CAP_SYS_ADMIN, which it lacks.
pub(super) fn say_unprivileged() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(
            "routes inside containers need CAP_SYS_ADMIN (to enter their network namespaces), which vpnfix does not have here (a unit's CapabilityBoundingSet?); none added or removed inside containers (examples/systemd/README.md)"
        );
    }
}

/// The networks whose family this host forwards: a container's packet to the gateway must be
/// forwarded into the tunnel (Docker turns it on unless `--ip-forward=false`). Each family
/// that is off is said once per process.
pub(super) fn forwarded(nets: &[InsideNetwork]) -> Vec<InsideNetwork> {
    static SAID: [std::sync::atomic::AtomicBool; 2] =
        [std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false)];
    let on = |v6: bool| {
        let path = if v6 { "/proc/sys/net/ipv6/conf/all/forwarding" } else { "/proc/sys/net/ipv4/ip_forward" };
        // Unreadable: let the routes be tried (a packet the host drops is what users saw anyway).
        let on = std::fs::read_to_string(path).map_or(true, |v| v.trim() != "0");
        if !on && !SAID[usize::from(v6)].swap(true, std::sync::atomic::Ordering::Relaxed) {
            let key = if v6 { "net.ipv6.conf.all.forwarding" } else { "net.ipv4.ip_forward" };
            warn!("{key} is 0: this host does not forward its containers' packets into the tunnel; no routes inside containers for that family");
        }
        on
    };
    let has = |v6: bool| nets.iter().any(|n| n.subnet.addr().is_ipv6() == v6);
    let (v4, v6) = (has(false) && on(false), has(true) && on(true));
    nets.iter().filter(|n| if n.subnet.addr().is_ipv6() { v6 } else { v4 }).cloned().collect()
}

/// One running container the plan gives routes, and the networks they come from.
struct Wanted<'a> {
    name: &'a str,
    /// The engine to ask for its process.
    host: &'a str,
    /// The networks, each with the container's addresses on it.
    nets: Vec<(&'a InsideNetwork, &'a [IpAddr])>,
}

/// The containers `nets` give routes to, by id (those with no id or no engine to ask, as in a
/// bundle's plan, are left out).
fn wanted(nets: &[InsideNetwork]) -> BTreeMap<&str, Wanted<'_>> {
    let mut want: BTreeMap<&str, Wanted> = BTreeMap::new();
    for net in nets {
        let Some(host) = net.host.as_deref() else { continue };
        for c in net.containers.iter().filter(|c| !c.id.is_empty()) {
            let w = want.entry(c.id.as_str()).or_insert_with(|| Wanted { name: &c.name, host, nets: Vec::new() });
            w.nets.push((net, &c.addrs));
        }
    }
    want
}

/// Reconciles the routes inside every container of `nets`, and those `state` records, in
/// `state` (written to `dir` before any change and after). `timeout_ms` bounds the engines'
/// answers. Fails only when the record cannot be written.
pub fn reconcile(
    dir: &StateDir,
    state: &mut State,
    nets: &[InsideNetwork],
    proto: u8,
    timeout_ms: u64,
) -> Result<Done, StateError> {
    let want = wanted(nets);
    let mut done = Done::default();
    if want.is_empty() && state.containers.is_empty() {
        return Ok(done);
    }
    let (open, unknown) = namespaces(state, &want, timeout_ms, &mut done);
    // Each container's changes, worked out before any is made.
    let others = other_claims(dir, &state.tunnel);
    let (mut records, work) = work_out(state, &want, open, proto, &others, &mut done);
    // Recorded containers the plan no longer gives routes (or that could not be asked about).
    let mut leaving: Vec<Inside> = Vec::new();
    for c in std::mem::take(&mut state.containers) {
        if records.iter().any(|r| r.id == c.id && r.netns == c.netns) {
            continue;
        }
        if unknown.contains(&c.id) {
            records.push(c); // its engine did not answer: unchanged
        } else {
            leaving.push(c);
        }
    }
    state.containers = records;
    state.containers.extend(leaving.iter().cloned());
    if !work.is_empty() || !leaving.is_empty() {
        dir.write(state)?;
    }
    for (id, w) in &work {
        let Some(entry) = state.containers.iter_mut().find(|c| c.id == *id) else { continue };
        carry_out(w, entry, &mut done);
    }
    let mut removed = Removed::default();
    for c in &leaving {
        remove_one(c, &mut removed);
    }
    done.removed += removed.deleted;
    for e in &removed.failed {
        warn!("{}", crate::logging::chain(e));
    }
    let failed: HashSet<&str> = removed.failed_containers.iter().map(String::as_str).collect();
    state
        .containers
        .retain(|c| !leaving.iter().any(|l| l.id == c.id && l.netns == c.netns) || failed.contains(c.id.as_str()));
    state.containers.retain(|c| !c.routes.is_empty());
    done.containers = state.containers.len();
    Ok(done)
}

/// Each wanted container's new record and, where something changes, its work; a container
/// that cannot be reached keeps the record it had.
fn work_out(
    state: &State,
    want: &BTreeMap<&str, Wanted>,
    mut open: HashMap<String, (u32, Namespace)>,
    proto: u8,
    others: &HashSet<(NsId, RouteSpec)>,
    done: &mut Done,
) -> (Vec<Inside>, Vec<(String, Work)>) {
    let (mut records, mut work) = (Vec::new(), Vec::new());
    for (id, w) in want {
        let Some((pid, ns)) = open.remove(*id) else { continue };
        let old = state.containers.iter().find(|c| c.id == *id && c.netns == ns.id);
        match changes(&ns, w, old, proto, others) {
            Ok((todo, mut routes)) => {
                routes.sort_by_key(|e| e.route.dst);
                records.push(Inside { id: id.to_string(), name: w.name.to_string(), pid, netns: ns.id, routes });
                if !todo.changes.is_empty() {
                    work.push((id.to_string(), todo));
                }
            }
            Err(e) => {
                warn!("container {}: {}; no routes inside it this time", w.name, crate::logging::chain(&e));
                done.failed += 1;
                // What it had stays recorded, for the next reconcile or the disconnect.
                records.extend(old.cloned());
            }
        }
    }
    (records, work)
}

/// The namespaces of the wanted containers: a recorded one still alive is reused (no question
/// to the engine); the others' processes are asked of their engines. Also the ids whose engine
/// did not answer.
fn namespaces(
    state: &State,
    want: &BTreeMap<&str, Wanted>,
    timeout_ms: u64,
    done: &mut Done,
) -> (HashMap<String, (u32, Namespace)>, HashSet<String>) {
    let mut open = HashMap::new();
    let mut ask: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, w) in want {
        let old = state.containers.iter().find(|c| c.id == *id);
        match old.map(|c| (c.pid, Namespace::still(c.pid, c.netns))) {
            Some((pid, Ok(Some(ns)))) => {
                open.insert(id.to_string(), (pid, ns));
            }
            _ => ask.entry(w.host).or_default().push(id.to_string()),
        }
    }
    let mut unknown = HashSet::new();
    if ask.is_empty() {
        return (open, unknown);
    }
    let answers: Vec<_> = ask.iter().map(|(host, ids)| crate::docker::pids(host, ids, timeout_ms)).collect();
    for ((host, ids), answer) in ask.into_iter().zip(answers) {
        let pids = match answer {
            Ok(p) => p,
            Err(e) => {
                warn!("{}; no routes inside its containers this time", crate::logging::chain(&e));
                done.failed += ids.len();
                unknown.extend(ids);
                continue;
            }
        };
        // An engine in a pid namespace of its own names its containers' processes there.
        let view = host.strip_prefix("unix://").and_then(|p| PidView::of_engine(std::path::Path::new(p)));
        for (id, pid) in ids.into_iter().zip(pids) {
            let name = want.get(id.as_str()).map_or("?", |w| w.name);
            let Some(pid) = pid else {
                debug!("container {name} is not running: no routes inside it");
                continue;
            };
            let Some(pid) = (match view {
                Some(v) => v.translate(pid),
                None => Some(pid),
            }) else {
                warn!("container {name}: its process {pid} (in its engine's pid namespace) is not found here; no routes inside it this time");
                done.failed += 1;
                unknown.insert(id);
                continue;
            };
            match Namespace::of_pid(pid) {
                Ok(ns) => {
                    open.insert(id, (pid, ns));
                }
                Err(e) if e.is_gone() => debug!("container {name} stopped meanwhile: no routes inside it"),
                Err(e) => {
                    warn!("container {name}: {}; no routes inside it this time", crate::logging::chain(&e));
                    done.failed += 1;
                    unknown.insert(id);
                }
            }
        }
    }
    (open, unknown)
}

/// The routes inside other tunnels' containers, by namespace: never deleted as strays here.
fn other_claims(dir: &StateDir, tunnel: &str) -> HashSet<(NsId, RouteSpec)> {
    let mut out = HashSet::new();
    for t in dir.tunnels().unwrap_or_default().into_iter().filter(|t| t != tunnel) {
        if let Ok(Some(s)) = dir.read(&t) {
            for c in s.containers {
                out.extend(c.routes.into_iter().map(|e| (c.netns, e.route)));
            }
        }
    }
    out
}

/// Why a container could not be given its routes.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("none of its interfaces has its address {0} on {1}")]
    NoInterface(String, String),
    #[error("its process is in this host's own network namespace, not a container's")]
    Ours,
}

/// One container's work: its kernel, the routes it wants, and what the shared reconcile decided.
struct Work {
    k: Kernel,
    wanted: Vec<RouteSpec>,
    changes: reconcile::Changes,
}

/// One container's changes and its record's new routes (kept, pending adds, and the deletions
/// still to come). The decision is the host's: [`reconcile::diff`] of vpnfix's routes in the
/// namespace against the wanted ones; this tunnel's record is its own, other tunnels' records
/// for the same namespace are left alone.
fn changes(
    ns: &Namespace,
    w: &Wanted,
    old: Option<&Inside>,
    proto: u8,
    others: &HashSet<(NsId, RouteSpec)>,
) -> Result<(Work, Vec<Entry>), Refused> {
    if ns.is_ours() {
        return Err(Refused::Ours);
    }
    let k = ns.kernel()?;
    let table = k.routes()?;
    let wanted = wanted_in(w, &table, &k.addrs()?, proto)?;
    let recorded = old.map(|o| o.routes.iter().map(|e| e.route.clone()).collect()).unwrap_or_default();
    let mine = reconcile::Mine { tunnel: "", recorded };
    let claims = reconcile::Claims {
        devices: HashSet::new(),
        routes: others.iter().filter(|(id, _)| *id == ns.id).map(|(_, r)| r.clone()).collect(),
    };
    let changes = reconcile::diff(&reconcile::own_routes(&table, proto), &wanted, &mine, &claims);
    let status =
        |r: &RouteSpec| old.and_then(|o| o.routes.iter().find(|e| e.route == *r)).map_or(Status::Present, |e| e.status);
    let mut entry: Vec<Entry> = changes.keep.iter().map(|r| Entry { route: r.clone(), status: status(r) }).collect();
    entry.extend(changes.add.iter().map(|i| Entry { route: wanted[*i].clone(), status: Status::Pending }));
    let going = changes.delete_first.iter().chain(&changes.delete_after);
    entry.extend(going.map(|(r, _)| Entry { route: r.clone(), status: status(r) }));
    Ok((Work { k, wanted, changes }, entry))
}

/// The routes a container wants: each network's blocks via its gateway, on the interface that
/// holds the container's address there, split past the container's own routes.
fn wanted_in(w: &Wanted, table: &[Route], addrs: &[Addr], proto: u8) -> Result<Vec<RouteSpec>, Refused> {
    let theirs: Vec<ipnet::IpNet> = table.iter().filter(|r| r.protocol.0 != proto).map(|r| r.dst).collect();
    let mut wanted = Vec::new();
    for (net, own) in &w.nets {
        let Some(dev) = addrs.iter().find(|a| own.contains(&a.addr)).map(|a| a.dev.clone()) else {
            let listed: Vec<String> = own.iter().map(ToString::to_string).collect();
            return Err(Refused::NoInterface(listed.join(", "), net.owner.clone()));
        };
        let (blocks, lost) = out_specify(&net.routes, &theirs);
        for b in lost {
            warn!(
                "container {}: {b} is routed by the container itself with the same length; left as it has it",
                w.name
            );
        }
        let spec =
            |dst| RouteSpec { dst, dev: dev.clone(), gateway: Some(net.gateway), table: MAIN_TABLE, protocol: proto };
        wanted.extend(blocks.into_iter().map(spec));
    }
    Ok(wanted)
}

/// Carries out one container's changes as a connect does on the host: the deletions an add
/// needs out of its way, the adds, then the rest, each logged first; its record follows what
/// the kernel answered.
fn carry_out(work: &Work, entry: &mut Inside, done: &mut Done) {
    let Work { k, wanted, changes } = work;
    let name = entry.name.clone();
    deletes_in(k, &name, &changes.delete_first, entry, done);
    let add: Vec<RouteSpec> = changes.add.iter().map(|i| wanted[*i].clone()).collect();
    for chunk in add.chunks(k.batch()) {
        crate::logging::info_lines(chunk.iter().map(|r| format!("{r} in container {name}: VPN side, via its gateway")));
        let results = match k.add_all(chunk) {
            Ok(r) => r,
            Err(e) => {
                warn!("container {name}: {}", crate::logging::chain(&e));
                break;
            }
        };
        for (r, result) in chunk.iter().zip(results) {
            let Some(e) = entry.routes.iter_mut().find(|e| e.route == *r) else { continue };
            match result {
                Ok(Added::Added) => (e.status, done.added) = (Status::Added, done.added + 1),
                Ok(Added::Unchanged) => e.status = Status::Present,
                Err(err) => warn!("container {name}: {}", crate::logging::chain(&err)),
            }
        }
    }
    entry.routes.retain(|e| e.status != Status::Pending);
    deletes_in(k, &name, &changes.delete_after, entry, done);
}

/// Deletes routes of ours in a container, each logged with why; what is gone leaves its record.
fn deletes_in(k: &Kernel, name: &str, todo: &[(RouteSpec, reconcile::Why)], entry: &mut Inside, done: &mut Done) {
    let mut gone: HashSet<RouteSpec> = HashSet::new();
    for chunk in todo.chunks(k.batch()) {
        crate::logging::info_lines(chunk.iter().map(|(r, why)| match why {
            reconcile::Why::Unwanted => format!("removing {r} in container {name}: no longer wanted"),
            reconcile::Why::Stale => format!("removing stale {r} in container {name}: left by an earlier vpnfix run"),
        }));
        let specs: Vec<RouteSpec> = chunk.iter().map(|(r, _)| r.clone()).collect();
        match k.delete_all(&specs) {
            Ok(results) => {
                for (r, result) in specs.into_iter().zip(results) {
                    match result {
                        Ok(d) => {
                            done.removed += usize::from(d == Deleted::Deleted);
                            gone.insert(r);
                        }
                        Err(e) => warn!("container {name}: {}", crate::logging::chain(&e)),
                    }
                }
            }
            Err(e) => warn!("container {name}: {}", crate::logging::chain(&e)),
        }
    }
    entry.routes.retain(|e| !gone.contains(&e.route));
}

/// Removes one container's recorded routes, if its namespace is still the one recorded (else
/// they went with it); counts into `out`.
pub(super) fn remove_one(c: &Inside, out: &mut Removed) {
    let fail = |out: &mut Removed, source: Box<dyn std::error::Error + Send + Sync>| {
        out.failed.push(Failure::Inside { container: c.name.clone(), source });
        out.failed_containers.push(c.id.clone());
    };
    let ns = match Namespace::still(c.pid, c.netns) {
        Ok(Some(ns)) => ns,
        Ok(None) => {
            info!("container {} is gone: its {} route(s) went with it", c.name, c.routes.len());
            out.gone += c.routes.len();
            return;
        }
        Err(e) => return fail(out, Box::new(e)),
    };
    let k = match ns.kernel() {
        Ok(k) => k,
        Err(e) => return fail(out, Box::new(e)),
    };
    let routes: Vec<RouteSpec> = c.routes.iter().map(|e| e.route.clone()).collect();
    let mut failed = false;
    for chunk in routes.chunks(k.batch()) {
        crate::logging::info_lines(chunk.iter().map(|r| format!("removing {r} in container {}", c.name)));
        match k.delete_all(chunk) {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(Deleted::Deleted) => out.deleted += 1,
                        Ok(Deleted::Unchanged) => out.gone += 1,
                        Err(e) => {
                            failed = true;
                            out.failed.push(Failure::Inside { container: c.name.clone(), source: Box::new(e) });
                        }
                    }
                }
            }
            Err(e) => {
                failed = true;
                out.failed.push(Failure::Inside { container: c.name.clone(), source: Box::new(e) });
            }
        }
    }
    if failed {
        out.failed_containers.push(c.id.clone());
    }
}

/// Removes every container's recorded routes; those that could not be removed (or all of them,
/// without the privilege to enter namespaces) stay in `containers`, for `cleanup` or the watcher.
pub(super) fn remove_all(containers: &mut Vec<Inside>, out: &mut Removed) {
    if containers.is_empty() {
        return;
    }
    if !crate::privilege::may_enter_namespaces() {
        say_unprivileged(); // they stay recorded, for `vpnfix cleanup` as root
        return;
    }
    let before = out.failed_containers.len();
    for c in containers.iter() {
        remove_one(c, out);
    }
    let failed: HashSet<String> = out.failed_containers[before..].iter().cloned().collect();
    containers.retain(|c| failed.contains(&c.id));
}
