//! Runs a plan against the kernel and records what really happened; undoes exactly that.
//!
//! Connect stops at the first hard failure and leaves a true record; disconnect tries every
//! removal and reports all failures. Each change is logged once, just before it happens.

use crate::cidr::{bits_ip, Prefix};
use crate::kernel::{Added, Deleted, KernelError, RouteGet, RouteSpec, IN_FLIGHT, MAIN_TABLE};
use crate::net::{Link, Push, Route};
use crate::plan::{Plan, PlannedRoute};
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
    /// A connect stopped at a hard failure; what was added before it is recorded.
    #[error("connect stopped after {added} of {planned} routes (those are recorded; `vpnfix cleanup` removes them)")]
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
}

fn spec(dst: ipnet::IpNet, dev: &str, gateway: Option<IpAddr>, proto: u8) -> RouteSpec {
    RouteSpec { dst, dev: dev.to_string(), gateway, table: MAIN_TABLE, protocol: proto }
}

fn of_route(r: &Route) -> Option<RouteSpec> {
    Some(spec(r.dst, r.dev.as_deref()?, r.gateway, r.protocol.0))
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
    let stale: Vec<RouteSpec> =
        own.iter().filter_map(of_route).filter(|r| !others.contains(&r.dev) && !claimed.contains(r)).collect();
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

/// Records the plan as intent, adds every route, verifies each with route get, and records
/// what really happened. Stops at the first hard failure, leaving a true record.
///
/// Adds are pipelined ([`IN_FLIGHT`] at a time), each logged just before its request is made.
/// After a hard failure no further add is sent; those already in flight are awaited, and what
/// the kernel acknowledged of them is recorded too.
pub async fn install<K: Netlink>(
    k: &K,
    dir: &StateDir,
    plan: &Plan,
    pushes: &[Push],
    proto: u8,
) -> Result<Installed, ApplyError> {
    let todo: Vec<(&PlannedRoute, RouteSpec)> =
        plan.add.iter().map(|r| (r, spec(r.dst, &r.dev, r.gateway, proto))).collect();
    let mut state = State {
        version: VERSION,
        tunnel: plan.tunnel.clone(),
        pushes: pushes.to_vec(),
        routes: todo.iter().map(|(_, route)| Entry { route: route.clone(), status: Status::Pending }).collect(),
    };
    dir.write(&state)?;
    let mut done = Installed::default();
    let mut failure = None;
    let start = |item| {
        let (planned, route): &(&PlannedRoute, RouteSpec) = item;
        info!("{planned}");
        k.add(route)
    };
    pipelined(&todo, start, |i, result| match result {
        Ok(Added::Added) => {
            (state.routes[i].status, done.added) = (Status::Added, done.added + 1);
            true
        }
        Ok(Added::Unchanged) => {
            (state.routes[i].status, done.present) = (Status::Present, done.present + 1);
            true
        }
        Err(e @ KernelError::Foreign { .. }) => {
            warn!("{e}");
            done.blocked += 1;
            true
        }
        Err(e) => keep_first(&mut failure, e),
    })
    .await;
    state.routes.retain(|e| e.status != Status::Pending);
    done.unverified = verify(k, &state).await;
    record(dir, &state)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(done),
    }
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
    let own: Vec<RouteSpec> = k.routes().await?.iter().filter(|r| r.protocol.0 == proto).filter_map(of_route).collect();
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
