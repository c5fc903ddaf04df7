//! Runs a plan against the kernel and records what really happened; undoes exactly that.
//!
//! Connect stops at the first hard failure and leaves a true record; disconnect tries every
//! removal and reports all failures. Each change is logged once, just before it happens.

use crate::cidr::{bits_ip, Prefix};
use crate::kernel::{Added, Deleted, KernelError, RouteGet, RouteSpec, IN_FLIGHT};
use crate::net::{Link, Push, Route};
use crate::plan::Plan;
use crate::reconcile;
use crate::state::{Entry, State, StateDir, StateError, Status, VERSION};
use futures::stream::{FuturesOrdered, StreamExt};
use log::{info, warn};
use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;

/// The kernel as apply needs it; [`crate::kernel::Kernel`] is the real one, tests may pass a
/// fake that fails on purpose.
#[allow(async_fn_in_trait)] // one current-thread runtime: no Send bound needed
pub trait Netlink {
    /// The main table.
    async fn routes(&self) -> Result<Vec<Route>, KernelError>;
    /// The devices.
    async fn links(&self) -> Result<Vec<Link>, KernelError>;
    /// Adds a route, create-exclusive.
    async fn add(&self, r: &RouteSpec) -> Result<Added, KernelError>;
    /// Deletes exactly this route.
    async fn delete(&self, r: &RouteSpec) -> Result<Deleted, KernelError>;
    /// Asks the kernel which route it picks for an address.
    async fn route_get(&self, addr: IpAddr) -> Result<RouteGet, KernelError>;
}

impl Netlink for crate::kernel::Kernel {
    async fn routes(&self) -> Result<Vec<Route>, KernelError> {
        crate::kernel::Kernel::routes(self).await
    }
    async fn links(&self) -> Result<Vec<Link>, KernelError> {
        crate::kernel::Kernel::links(self).await
    }
    async fn add(&self, r: &RouteSpec) -> Result<Added, KernelError> {
        crate::kernel::Kernel::add(self, r).await
    }
    async fn delete(&self, r: &RouteSpec) -> Result<Deleted, KernelError> {
        crate::kernel::Kernel::delete(self, r).await
    }
    async fn route_get(&self, addr: IpAddr) -> Result<RouteGet, KernelError> {
        crate::kernel::Kernel::route_get(self, addr).await
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

/// What a connect did.
#[derive(Debug, Default)]
pub struct Installed {
    /// Routes added now.
    pub added: usize,
    /// Routes of ours that were already there.
    pub present: usize,
    /// Planned routes a foreign route blocked (reported, never replaced).
    pub blocked: usize,
    /// Routes the kernel does not pick as planned after all (route get disagrees).
    pub unverified: usize,
    /// Routes of ours deleted: no longer wanted, or stale.
    pub removed: usize,
}

/// Removes vpnfix's stale routes before a connect of `tunnel`: those on `tunnel` itself, and
/// those on other devices that no live tunnel's state claims (their tunnel vanished, or a crash
/// lost the record). Routes on other tunnel devices that still exist are theirs to manage.
pub async fn sweep<K: Netlink>(k: &K, dir: &StateDir, tunnel: &str, proto: u8) -> Result<usize, ApplyError> {
    // Dump first, read states second: another tunnel records its intent before it adds, so any
    // route of its in this dump is already claimed when its state is read.
    let own: Vec<Route> = k.routes().await?.into_iter().filter(|r| r.protocol.0 == proto).collect();
    if own.is_empty() {
        return Ok(0);
    }
    let links = k.links().await?;
    let live = |dev: &str| links.iter().any(|l| l.name == dev);
    // Other live tunnels with a state: their routes are theirs, and so is what they claim.
    let others: HashSet<String> = dir.tunnels()?.into_iter().filter(|t| t != tunnel && live(t)).collect();
    let mut claimed: HashSet<RouteSpec> = HashSet::new();
    for other in &others {
        match dir.read(other) {
            Ok(Some(s)) => claimed.extend(s.routes.into_iter().map(|e| e.route)),
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
    }
    let stale: Vec<RouteSpec> = own
        .iter()
        .filter_map(RouteSpec::of_route)
        .filter(|r| !others.contains(&r.dev) && !claimed.contains(r))
        .collect();
    let (mut removed, mut failure) = (0, None);
    let start = |r| {
        info!("removing stale {r}: left by an earlier vpnfix run");
        k.delete(r)
    };
    pipelined(&stale, start, |_, result| match result {
        Ok(d) => {
            removed += usize::from(d == Deleted::Deleted);
            true
        }
        Err(e) => keep_first(&mut failure, e),
    })
    .await;
    if let Some(e) = failure {
        return Err(e.into());
    }
    for gone in dir.tunnels()?.into_iter().filter(|t| t != tunnel && !live(t)) {
        let _lock = dir.lock(&gone)?;
        dir.remove(&gone)?;
    }
    Ok(removed)
}

/// Connects a tunnel as a reconcile of `table` (the kernel's main table as gathered, vpnfix's
/// own routes included) with `plan`: what the plan wants and the kernel has stays untouched;
/// the intent is recorded; missing routes are added (a route of ours with the same destination
/// freed first), then the ones no longer wanted or claimed by no live tunnel are deleted; the
/// kernel's answer is checked for each recorded block, and what is really there recorded. A
/// repeated connect with nothing changed sends no route change at all. Stops at the first hard
/// failure, leaving a true record.
pub async fn reconcile<K: Netlink>(
    k: &K,
    dir: &StateDir,
    plan: &Plan,
    pushes: &[Push],
    table: &[Route],
    links: &[Link],
    proto: u8,
) -> Result<Installed, ApplyError> {
    let tunnel = plan.tunnel.as_str();
    let wanted: Vec<RouteSpec> = plan.add.iter().map(|r| r.spec(proto)).collect();
    let old = match dir.read(tunnel) {
        Ok(s) => s.map(|s| s.routes).unwrap_or_default(),
        Err(e @ StateError::Corrupt { .. }) => {
            warn!("{e}");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mine = reconcile::Mine { tunnel, recorded: old.iter().map(|e| e.route.clone()).collect() };
    let others = claims(dir, tunnel, links)?;
    let own = reconcile::own_routes(table, proto);
    let changes = reconcile::diff(&own, &wanted, &mine, &others);
    let status_of = |r: &RouteSpec| old.iter().find(|e| e.route == *r).map_or(Status::Present, |e| e.status);
    let entry = |route: &RouteSpec, status| Entry { route: route.clone(), status };
    let mut state = State { version: VERSION, tunnel: tunnel.to_string(), pushes: pushes.to_vec(), routes: Vec::new() };
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
    let mut failure = deletes(k, &changes.delete_first, &mut state, &mut done).await;
    if failure.is_none() {
        failure = adds(k, plan, &wanted, &changes.add, &mut state, &mut done).await;
    }
    if failure.is_none() {
        failure = deletes(k, &changes.delete_after, &mut state, &mut done).await;
    }
    state.routes.retain(|e| e.status != Status::Pending);
    done.unverified = verify(k, &state).await;
    record(dir, &state)?;
    forget_vanished(dir, tunnel, links)?;
    match failure {
        Some(source) => Err(ApplyError::Stopped { added: done.added, planned: wanted.len(), source }),
        None => Ok(done),
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
        dir.remove(&gone)?;
    }
    Ok(())
}

/// Adds the planned routes `todo` (indexes into `wanted` and the plan), pipelined, each logged
/// with its reason just before its request; marks each in `state`. The first hard failure.
async fn adds<K: Netlink>(
    k: &K,
    plan: &Plan,
    wanted: &[RouteSpec],
    todo: &[usize],
    state: &mut State,
    done: &mut Installed,
) -> Option<KernelError> {
    let mut failure = None;
    let start = |i: &usize| {
        info!("{}", plan.add[*i]);
        k.add(&wanted[*i])
    };
    pipelined(todo, start, |n, result| {
        let entry = state.routes.iter_mut().find(|e| e.route == wanted[todo[n]] && e.status == Status::Pending);
        match (result, entry) {
            (Ok(Added::Added), Some(e)) => (e.status, done.added) = (Status::Added, done.added + 1),
            (Ok(Added::Unchanged), Some(e)) => (e.status, done.present) = (Status::Present, done.present + 1),
            (Ok(_), None) => {}
            (Err(e @ KernelError::Foreign { .. }), _) => {
                warn!("{e}");
                done.blocked += 1;
            }
            (Err(e), _) => return keep_first(&mut failure, e),
        }
        true
    })
    .await;
    failure
}

/// Deletes routes of ours that are no longer wanted or are stale, pipelined, each logged with
/// why just before its request; what is gone leaves `state`. The first hard failure.
async fn deletes<K: Netlink>(
    k: &K,
    todo: &[(RouteSpec, reconcile::Why)],
    state: &mut State,
    done: &mut Installed,
) -> Option<KernelError> {
    let mut failure = None;
    let start = |item| {
        let (r, why): &(RouteSpec, reconcile::Why) = item;
        match why {
            reconcile::Why::Unwanted => info!("removing {r}: no longer wanted"),
            reconcile::Why::Stale => info!("removing stale {r}: left by an earlier vpnfix run"),
        }
        k.delete(r)
    };
    pipelined(todo, start, |n, result| match result {
        Ok(d) => {
            done.removed += usize::from(d == Deleted::Deleted);
            state.routes.retain(|e| e.route != todo[n].0);
            true
        }
        Err(e) => keep_first(&mut failure, e),
    })
    .await;
    failure
}

/// Records the first hard failure (and says so of any later one, which is not returned);
/// always `false`: send nothing more.
fn keep_first(first: &mut Option<KernelError>, e: KernelError) -> bool {
    match first {
        None => *first = Some(e),
        Some(_) => warn!("{e}"),
    }
    false
}

/// Runs `start` on each item with up to [`IN_FLIGHT`] of the futures it returns pending at once,
/// and hands their results to `done` in order. `start` makes the request only when its future
/// is first polled, so whatever it logs precedes the change. Once `done` returns `false` no
/// further item is started; those in flight are still awaited and handed to `done`.
async fn pipelined<'a, T, R, F>(
    items: &'a [T],
    mut start: impl FnMut(&'a T) -> F,
    mut done: impl FnMut(usize, R) -> bool,
) where
    F: Future<Output = R>,
{
    let (mut next, mut go) = (0, true);
    let mut flight = FuturesOrdered::new();
    loop {
        while go && next < items.len() && flight.len() < IN_FLIGHT {
            flight.push_back(start(&items[next]));
            next += 1;
        }
        let Some(result) = flight.next().await else { break };
        go &= done(next - flight.len() - 1, result);
    }
}

/// Asks the kernel, for the first and last address of every recorded block, which device it
/// picks; counts (and reports) disagreements. The lookups are pipelined; each block's answers
/// are then read as before: the first address, and the last only when the first agreed.
async fn verify<K: Netlink>(k: &K, state: &State) -> usize {
    let addrs: Vec<IpAddr> = state.routes.iter().flat_map(addrs_of).collect();
    let mut answers = Vec::with_capacity(addrs.len());
    pipelined(
        &addrs,
        |a| k.route_get(*a),
        |_, r| {
            answers.push(r);
            true
        },
    )
    .await;
    let mut wrong = 0;
    for (e, pair) in state.routes.iter().zip(answers.chunks(2)) {
        for (a, answer) in addrs_of(e).into_iter().zip(pair) {
            match answer {
                Ok(got) if got.dev.as_deref() == Some(e.route.dev.as_str()) => {}
                // The local table answers first for the host's own addresses and subnet
                // broadcasts (e.g. 172.20.255.255 on a /16 bridge); no main route changes that.
                Ok(got) if got.host_owned => {}
                Ok(got) => {
                    warn!(
                        "{a} still leaves via {} although {} was added",
                        got.dev.as_deref().unwrap_or("nothing"),
                        e.route
                    );
                    wrong += 1;
                    break;
                }
                Err(err) => {
                    warn!("cannot verify {}: {err}", e.route);
                    break;
                }
            }
        }
    }
    wrong
}

/// The first and last address of an entry's block.
fn addrs_of(e: &Entry) -> [IpAddr; 2] {
    let p = Prefix::from(e.route.dst);
    [bits_ip(p.v6, p.addr), bits_ip(p.v6, p.last())]
}

fn record(dir: &StateDir, state: &State) -> Result<(), StateError> {
    if state.routes.is_empty() {
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
    pub failed: Vec<KernelError>,
}

/// Deletes exactly what the tunnel's state records (all of it, reporting every failure), then
/// removes the state; failed entries stay recorded for `cleanup`. Deletes are pipelined, each
/// logged just before its request is made.
pub async fn remove<K: Netlink>(k: &K, dir: &StateDir, tunnel: &str) -> Result<Removed, ApplyError> {
    let Some(mut state) = dir.read(tunnel)? else {
        return Ok(Removed::default());
    };
    let routes: Vec<RouteSpec> = state.routes.iter().map(|e| e.route.clone()).collect();
    let (out, failed_at) = delete_all(k, &routes).await;
    state.routes = failed_at.into_iter().map(|i| state.routes[i].clone()).collect();
    record(dir, &state)?;
    Ok(out)
}

/// Deletes every route that carries vpnfix's protocol number, whatever the state says
/// (`cleanup --all`). Reports every failure.
pub async fn sweep_all<K: Netlink>(k: &K, proto: u8) -> Result<Removed, ApplyError> {
    let own: Vec<RouteSpec> =
        k.routes().await?.iter().filter(|r| r.protocol.0 == proto).filter_map(RouteSpec::of_route).collect();
    Ok(delete_all(k, &own).await.0)
}

/// Deletes every route (pipelined, each logged first), trying all of them; also returns the
/// indexes of those that failed, in order.
async fn delete_all<K: Netlink>(k: &K, routes: &[RouteSpec]) -> (Removed, Vec<usize>) {
    let (mut out, mut failed_at) = (Removed::default(), Vec::new());
    let start = |r| {
        info!("removing {r}");
        k.delete(r)
    };
    pipelined(routes, start, |i, result| {
        match result {
            Ok(Deleted::Deleted) => out.deleted += 1,
            Ok(Deleted::Unchanged) => out.gone += 1,
            Err(err) => {
                out.failed.push(err);
                failed_at.push(i);
            }
        }
        true
    })
    .await;
    (out, failed_at)
}
