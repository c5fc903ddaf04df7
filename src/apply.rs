//! Carries out what [`crate::reconcile`] decides against the kernel, and records what really
//! happened; undoes exactly that.
//!
//! Connect stops at the first hard failure and leaves a true record; disconnect tries every
//! removal and reports all failures. Changes go to the kernel a batch at a time (one datagram),
//! each logged once just before its batch is sent.

mod inside;

pub use inside::{reconcile as reconcile_inside, Done as InsideDone};

use crate::kernel::{Added, Deleted, KernelError, RouteGet, RouteSpec};
use crate::net::{Link, Push, Route};
use crate::plan::Plan;
use crate::reconcile::{self, Why};
use crate::state::{Entry, State, StateDir, StateError, Status, VERSION};
use log::{info, warn};
use std::collections::HashSet;
use std::net::IpAddr;

/// The kernel as apply needs it; [`crate::kernel::Kernel`] is the real one, tests may pass a
/// fake that fails on purpose. Each batch call answers every item, in order; its outer error is
/// a failure of the connection itself.
pub trait Netlink {
    /// The main table.
    fn routes(&self) -> Result<Vec<Route>, KernelError>;
    /// The devices.
    fn links(&self) -> Result<Vec<Link>, KernelError>;
    /// How many changes to hand over at a time (logged just before).
    fn batch(&self) -> usize;
    /// Adds routes, create-exclusive.
    fn add_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Added, KernelError>>, KernelError>;
    /// Deletes exactly these routes.
    fn delete_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Deleted, KernelError>>, KernelError>;
    /// Asks the kernel which route it picks for each address.
    fn route_get_all(&self, addrs: &[IpAddr]) -> Result<Vec<Result<RouteGet, KernelError>>, KernelError>;
    /// Whether policy routing is the kernel's default (so the main table decides).
    fn rules_are_default(&self) -> Result<bool, KernelError>;
}

impl Netlink for crate::kernel::Kernel {
    fn routes(&self) -> Result<Vec<Route>, KernelError> {
        crate::kernel::Kernel::routes(self)
    }
    fn links(&self) -> Result<Vec<Link>, KernelError> {
        crate::kernel::Kernel::links(self)
    }
    fn batch(&self) -> usize {
        crate::kernel::Kernel::batch(self)
    }
    fn add_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Added, KernelError>>, KernelError> {
        crate::kernel::Kernel::add_all(self, routes)
    }
    fn delete_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Deleted, KernelError>>, KernelError> {
        crate::kernel::Kernel::delete_all(self, routes)
    }
    fn route_get_all(&self, addrs: &[IpAddr]) -> Result<Vec<Result<RouteGet, KernelError>>, KernelError> {
        crate::kernel::Kernel::route_get_all(self, addrs)
    }
    fn rules_are_default(&self) -> Result<bool, KernelError> {
        crate::kernel::Kernel::rules_are_default(self)
    }
}

/// A connect or disconnect that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kernel refused or failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The state could not be kept.
    #[error(transparent)]
    State(#[from] StateError),
    /// A connect stopped at a hard failure; what it added before is recorded.
    #[error("connect stopped after adding {added} of the {planned} routes it wants (what is in the kernel is recorded; `vpnfix cleanup` removes it)")]
    Stopped {
        /// Routes in the kernel and the state.
        added: usize,
        /// Routes the plan had.
        planned: usize,
        /// The failure.
        #[source]
        source: KernelError,
    },
}

/// What the record keeps of what the VPN said: the pushes (so `status` can plan again once
/// the hook's environment is gone) and the connection's identity (so a disconnect that names
/// no tunnel finds the record).
pub struct Vpn<'a> {
    /// The pushed routes.
    pub pushes: &'a [Push],
    /// NetworkManager's connection UUID, if the VPN came from there.
    pub connection: Option<&'a str>,
    /// The tunnel as the hook described it.
    pub device: Option<&'a crate::net::Tunnel>,
}

/// What a connect did.
#[derive(Debug, Default)]
pub struct Installed {
    /// Routes added now.
    pub added: usize,
    /// Routes of ours that were already there.
    pub present: usize,
    /// Planned routes a foreign route blocked (reported, never replaced).
    pub blocked: usize,
    /// Routes the kernel does not pick as planned after all.
    pub unverified: usize,
    /// Routes of ours deleted: no longer wanted, or stale.
    pub removed: usize,
    /// What happened inside containers.
    pub inside: InsideDone,
}

/// Connects a tunnel as a reconcile of `table` (the kernel's main table as gathered, vpnfix's
/// own routes included) with `plan`: what the plan wants and the kernel has stays untouched;
/// the intent is recorded; missing routes are added (a route of ours with the same destination
/// freed first), then the ones no longer wanted or claimed by no live tunnel are deleted; the
/// kernel's pick is checked for each recorded block, and what is really there recorded. A
/// repeated connect with nothing changed sends no route change at all. Stops at the first hard
/// failure, leaving a true record.
pub fn reconcile<K: Netlink>(
    k: &K,
    dir: &StateDir,
    plan: &Plan,
    vpn: &Vpn,
    table: &[Route],
    links: &[Link],
    proto: u8,
) -> Result<Installed, ApplyError> {
    let tunnel = plan.tunnel.as_str();
    let wanted: Vec<RouteSpec> = plan.add.iter().map(|r| r.spec(proto)).collect();
    let (old, containers) = recorded(dir, tunnel)?;
    let mine = reconcile::Mine { tunnel, recorded: old.iter().map(|e| e.route.clone()).collect() };
    let changes = reconcile::diff(&reconcile::own_routes(table, proto), &wanted, &mine, &claims(dir, tunnel, links)?);
    let status_of = |r: &RouteSpec| old.iter().find(|e| e.route == *r).map_or(Status::Present, |e| e.status);
    let entry = |route: &RouteSpec, status| Entry { route: route.clone(), status };
    let mut state = new_state(tunnel, vpn, containers);
    state.routes.extend(changes.keep.iter().map(|r| entry(r, status_of(r))));
    state.routes.extend(changes.add.iter().map(|i| entry(&wanted[*i], Status::Pending)));
    // Routes about to go stay recorded until they are gone: a crash in between leaves them
    // this tunnel's, for its disconnect or the next connect.
    let going = changes.delete_first.iter().chain(&changes.delete_after);
    state.routes.extend(going.map(|(r, _)| entry(r, status_of(r))));
    for r in changes.keep.iter().filter(|r| !mine.recorded.contains(*r)) {
        info!("adopting {r}: left by an earlier vpnfix run, and wanted again");
    }
    if !changes.is_empty() {
        dir.write(&state)?;
    }
    let mut done = Installed { present: changes.keep.len(), ..Installed::default() };
    let mut failure = deletes(k, &changes.delete_first, &mut state, &mut done);
    if failure.is_none() {
        failure = adds(k, plan, &wanted, &changes.add, &mut state, &mut done);
    }
    if failure.is_none() {
        failure = deletes(k, &changes.delete_after, &mut state, &mut done);
    }
    state.routes.retain(|e| e.status != Status::Pending);
    if !changes.is_empty() {
        done.unverified = verify(k, &state);
    }
    record(dir, &state)?;
    forget_vanished(dir, tunnel, links)?;
    match failure {
        Some(source) => Err(ApplyError::Stopped { added: done.added, planned: wanted.len(), source }),
        None => Ok(done),
    }
}

/// Reconciles the routes inside the containers `plan` names and this tunnel's record holds, after
/// [`reconcile`] (the containers' routes lead to the host's). Fails only when the record cannot
/// be read or written; each container that cannot be reached is said in one line.
pub fn reconcile_containers(
    dir: &StateDir,
    plan: &Plan,
    vpn: &Vpn,
    proto: u8,
    timeout_ms: u64,
) -> Result<InsideDone, StateError> {
    let tunnel = plan.tunnel.as_str();
    let mut state = match dir.read(tunnel)? {
        Some(s) => s,
        None => new_state(tunnel, vpn, Vec::new()),
    };
    if plan.inside.is_empty() && state.containers.is_empty() {
        return Ok(InsideDone::default());
    }
    if !crate::privilege::may_enter_namespaces() {
        inside::say_unprivileged();
        return Ok(InsideDone::default());
    }
    let nets = inside::forwarded(&plan.inside);
    let done = inside::reconcile(dir, &mut state, &nets, proto, timeout_ms)?;
    record(dir, &state)?;
    Ok(done)
}

/// A tunnel's record with no host route yet: what the VPN said, and `containers`.
fn new_state(tunnel: &str, vpn: &Vpn, containers: Vec<crate::state::Inside>) -> State {
    State {
        version: VERSION,
        tunnel: tunnel.to_string(),
        pushes: vpn.pushes.to_vec(),
        routes: Vec::new(),
        connection: vpn.connection.map(str::to_string),
        device: vpn.device.cloned(),
        containers,
    }
}

/// What this tunnel's record holds; a corrupt record is reported and taken as empty (its routes
/// still carry vpnfix's protocol number: the reconcile finds them as stale).
fn recorded(dir: &StateDir, tunnel: &str) -> Result<(Vec<Entry>, Vec<crate::state::Inside>), StateError> {
    match dir.read(tunnel) {
        Ok(s) => Ok(s.map(|s| (s.routes, s.containers)).unwrap_or_default()),
        Err(e @ StateError::Corrupt { .. }) => {
            warn!("{e}");
            Ok(Default::default())
        }
        Err(e) => Err(e),
    }
}

/// The other live tunnels' devices and the routes their records claim.
fn claims(dir: &StateDir, tunnel: &str, links: &[Link]) -> Result<reconcile::Claims, ApplyError> {
    let live = |dev: &str| links.iter().any(|l| l.name == dev);
    let mut c = reconcile::Claims::default();
    for other in dir.tunnels()?.into_iter().filter(|t| t != tunnel && live(t)) {
        match dir.read(&other) {
            Ok(Some(s)) => c.routes.extend(s.routes.into_iter().map(|e| e.route)),
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
        c.devices.insert(other);
    }
    Ok(c)
}

/// Removes the records of tunnels whose device is gone (their routes on it went with it; the
/// rest were deleted as stale).
fn forget_vanished(dir: &StateDir, tunnel: &str, links: &[Link]) -> Result<(), StateError> {
    for gone in dir.tunnels()?.into_iter().filter(|t| t != tunnel && !links.iter().any(|l| l.name == *t)) {
        let _lock = dir.lock(&gone)?;
        // Its routes inside containers are on the containers' own devices: they stay unless
        // removed here.
        if let Ok(Some(mut s)) = dir.read(&gone) {
            let mut out = Removed::default();
            inside::remove_all(&mut s.containers, &mut out);
            for e in &out.failed {
                warn!("{}", crate::logging::chain(e));
            }
            if !s.containers.is_empty() {
                s.routes.clear();
                dir.write(&s)?;
                continue;
            }
        }
        dir.remove(&gone)?;
    }
    Ok(())
}

/// Adds the planned routes `todo` (indexes into `wanted` and the plan) a batch at a time, each
/// logged with its reason just before its batch; marks each in `state`. After a hard failure
/// no further batch is sent (what the kernel answered of the last one counts). The first hard
/// failure.
fn adds<K: Netlink>(
    k: &K,
    plan: &Plan,
    wanted: &[RouteSpec],
    todo: &[usize],
    state: &mut State,
    done: &mut Installed,
) -> Option<KernelError> {
    let mut failure = None;
    // Where each pending route sits in the record (10,000 routes: no search per answer).
    let pending: std::collections::HashMap<RouteSpec, usize> = (state.routes.iter().enumerate())
        .filter(|(_, e)| e.status == Status::Pending)
        .map(|(i, e)| (e.route.clone(), i))
        .collect();
    for chunk in todo.chunks(k.batch()) {
        crate::logging::info_lines(chunk.iter().map(|i| plan.add[*i].to_string()));
        let specs: Vec<RouteSpec> = chunk.iter().map(|i| wanted[*i].clone()).collect();
        let results = match k.add_all(&specs) {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        for (r, result) in specs.iter().zip(results) {
            let entry = pending.get(r).map(|i| &mut state.routes[*i]);
            match (result, entry) {
                (Ok(Added::Added), Some(e)) => (e.status, done.added) = (Status::Added, done.added + 1),
                (Ok(Added::Unchanged), Some(e)) => (e.status, done.present) = (Status::Present, done.present + 1),
                (Ok(_), None) => {}
                (Err(e @ KernelError::Foreign { .. }), _) => {
                    warn!("{e}");
                    done.blocked += 1;
                }
                (Err(e), _) => keep_first(&mut failure, e),
            }
        }
        if failure.is_some() {
            break;
        }
    }
    failure
}

/// Deletes routes of ours that are no longer wanted or are stale, a batch at a time, each
/// logged with why just before its batch; what is gone leaves `state`. The first hard failure.
fn deletes<K: Netlink>(
    k: &K,
    todo: &[(RouteSpec, Why)],
    state: &mut State,
    done: &mut Installed,
) -> Option<KernelError> {
    let mut failure = None;
    let mut gone: HashSet<&RouteSpec> = HashSet::new();
    for chunk in todo.chunks(k.batch()) {
        crate::logging::info_lines(chunk.iter().map(|(r, why)| match why {
            Why::Unwanted => format!("removing {r}: no longer wanted"),
            Why::Stale => format!("removing stale {r}: left by an earlier vpnfix run"),
        }));
        let specs: Vec<RouteSpec> = chunk.iter().map(|(r, _)| r.clone()).collect();
        let results = match k.delete_all(&specs) {
            Ok(r) => r,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for ((r, _), result) in chunk.iter().zip(results) {
            match result {
                Ok(d) => {
                    done.removed += usize::from(d == Deleted::Deleted);
                    gone.insert(r);
                }
                Err(e) => keep_first(&mut failure, e),
            }
        }
        if failure.is_some() {
            break;
        }
    }
    state.routes.retain(|e| !gone.contains(&e.route));
    failure
}

/// Records the first hard failure (and says so of any later one, which is not returned).
fn keep_first(first: &mut Option<KernelError>, e: KernelError) {
    match first {
        None => *first = Some(e),
        Some(_) => warn!("{e}"),
    }
}

/// Checks that the kernel picks every recorded route for every address of its block (past
/// the host's own addresses, which the local table answers first); counts (and reports) those
/// it does not. Under the kernel's default policy routing one dump of the main table proves it
/// ([`reconcile::not_picked`]); with rules of someone's own the kernel is asked for the first
/// and last address of each block.
fn verify<K: Netlink>(k: &K, state: &State) -> usize {
    let routes: Vec<&RouteSpec> = state.routes.iter().map(|e| &e.route).collect();
    let wrong = match k.rules_are_default() {
        Ok(true) => match k.routes() {
            Ok(table) => reconcile::not_picked(&routes, &table),
            Err(e) => return cannot_verify(&e, routes.len()),
        },
        Ok(false) => match asked(k, &routes) {
            Ok(wrong) => wrong,
            Err(e) => return cannot_verify(&e, routes.len()),
        },
        Err(e) => return cannot_verify(&e, routes.len()),
    };
    for (r, how) in &wrong {
        warn!("{r}: {how}, though vpnfix added it");
    }
    wrong.len()
}

fn cannot_verify(e: &KernelError, n: usize) -> usize {
    warn!("cannot verify the {n} route(s): {}", crate::logging::chain(e));
    0
}

/// The kernel's own answer for the first and last address of every block: the routes it does
/// not pick, with what it picks instead.
fn asked<'a, K: Netlink>(k: &K, routes: &[&'a RouteSpec]) -> Result<Vec<(&'a RouteSpec, String)>, KernelError> {
    let addrs: Vec<IpAddr> = routes.iter().flat_map(|r| reconcile::ends(r.dst)).collect();
    let mut answers = k.route_get_all(&addrs)?.into_iter();
    let mut wrong = Vec::new();
    for r in routes {
        // Both answers of a block are taken before either is read: a break must not leave one
        // behind for the next block.
        let pair: Vec<_> = answers.by_ref().take(2).collect();
        for (a, answer) in reconcile::ends(r.dst).into_iter().zip(pair) {
            match answer {
                Ok(got) if got.dev.as_deref() == Some(r.dev.as_str()) || got.host_owned => {}
                Ok(got) => {
                    wrong.push((*r, format!("{a} still leaves via {}", got.dev.as_deref().unwrap_or("nothing"))));
                    break;
                }
                Err(e) => {
                    warn!("cannot verify {r}: {e}");
                    break;
                }
            }
        }
    }
    Ok(wrong)
}

fn record(dir: &StateDir, state: &State) -> Result<(), StateError> {
    if state.is_empty() {
        dir.remove(&state.tunnel)
    } else {
        dir.write(state)
    }
}

/// What a disconnect did.
#[derive(Debug, Default)]
pub struct Removed {
    /// Routes deleted.
    pub deleted: usize,
    /// Recorded routes already gone (with their device, or by hand).
    pub gone: usize,
    /// Removals that failed, one message each.
    pub failed: Vec<Failure>,
    /// The ids of the containers whose routes could not all be removed.
    pub failed_containers: Vec<String>,
}

/// A removal that failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// On the host.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Inside a container.
    #[error("in container {container}")]
    Inside {
        /// The container's name.
        container: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Deletes exactly what the tunnel's state records (all of it, reporting every failure), then
/// removes the state; failed entries stay recorded for `cleanup`.
pub fn remove<K: Netlink>(k: &K, dir: &StateDir, tunnel: &str) -> Result<Removed, ApplyError> {
    let Some(mut state) = dir.read(tunnel)? else {
        return Ok(Removed::default());
    };
    let routes: Vec<RouteSpec> = state.routes.iter().map(|e| e.route.clone()).collect();
    let (mut out, failed_at) = delete_every(k, &routes)?;
    state.routes = failed_at.into_iter().map(|i| state.routes[i].clone()).collect();
    inside::remove_all(&mut state.containers, &mut out);
    record(dir, &state)?;
    Ok(out)
}

/// Removes what a tunnel has no trustworthy record of (its state file is corrupt): vpnfix's
/// routes on its device, and those on other devices no other live tunnel claims.
pub fn sweep<K: Netlink>(k: &K, dir: &StateDir, tunnel: &str, proto: u8) -> Result<Removed, ApplyError> {
    let links = k.links()?;
    let mine = reconcile::Mine { tunnel, recorded: HashSet::new() };
    let changes =
        reconcile::diff(&reconcile::own_routes(&k.routes()?, proto), &[], &mine, &claims(dir, tunnel, &links)?);
    let stale: Vec<RouteSpec> = changes.delete_after.into_iter().map(|(r, _)| r).collect();
    Ok(delete_every(k, &stale)?.0)
}

/// Deletes every route that carries vpnfix's protocol number, whatever the state says
/// (`cleanup --all`). Reports every failure.
pub fn sweep_all<K: Netlink>(k: &K, proto: u8) -> Result<Removed, ApplyError> {
    Ok(delete_every(k, &reconcile::own_routes(&k.routes()?, proto))?.0)
}

/// Deletes every route (a batch at a time, each logged first), trying all of them; also returns
/// the indexes of those that failed, in order.
fn delete_every<K: Netlink>(k: &K, routes: &[RouteSpec]) -> Result<(Removed, Vec<usize>), KernelError> {
    let (mut out, mut failed_at) = (Removed::default(), Vec::new());
    for (c, chunk) in routes.chunks(k.batch()).enumerate() {
        crate::logging::info_lines(chunk.iter().map(|r| format!("removing {r}")));
        for (i, result) in k.delete_all(chunk)?.into_iter().enumerate() {
            match result {
                Ok(Deleted::Deleted) => out.deleted += 1,
                Ok(Deleted::Unchanged) => out.gone += 1,
                Err(err) => {
                    out.failed.push(Failure::Kernel(err));
                    failed_at.push(c * k.batch() + i);
                }
            }
        }
    }
    Ok((out, failed_at))
}
