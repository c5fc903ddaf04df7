//! Runs a plan against the kernel and records what really happened; undoes exactly that.
//!
//! Connect stops at the first hard failure and leaves a true record; disconnect tries every
//! removal and reports all failures. Each change is logged once, just before it happens.

use crate::cidr::{bits_ip, Prefix};
use crate::kernel::{Added, Deleted, KernelError, RouteGet, RouteSpec, MAIN_TABLE};
use crate::net::{Link, Push, Route};
use crate::plan::Plan;
use crate::state::{Entry, State, StateDir, StateError, Status, VERSION};
use log::{info, warn};
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
    let mut claimed: Vec<RouteSpec> = Vec::new();
    for other in dir.tunnels()?.into_iter().filter(|t| t != tunnel && live(t)) {
        match dir.read(&other) {
            Ok(Some(s)) => claimed.extend(s.routes.into_iter().map(|e| e.route)),
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
    }
    let mut removed = 0;
    for r in own.iter().filter_map(of_route) {
        let other_tunnel = r.dev != tunnel && live(&r.dev) && dir.path().join(format!("{}.json", r.dev)).exists();
        if other_tunnel || claimed.contains(&r) {
            continue;
        }
        info!("removing stale {r}: left by an earlier vpnfix run");
        if k.delete(&r).await? == Deleted::Deleted {
            removed += 1;
        }
    }
    for gone in dir.tunnels()?.into_iter().filter(|t| t != tunnel && !live(t)) {
        let _lock = dir.lock(&gone)?;
        dir.remove(&gone)?;
    }
    Ok(removed)
}

/// Records the plan as intent, adds every route, verifies each with route get, and records
/// what really happened. Stops at the first hard failure, leaving a true record.
pub async fn install<K: Netlink>(
    k: &K,
    dir: &StateDir,
    plan: &Plan,
    pushes: &[Push],
    proto: u8,
) -> Result<Installed, ApplyError> {
    let mut state = State {
        version: VERSION,
        tunnel: plan.tunnel.clone(),
        pushes: pushes.to_vec(),
        routes: plan
            .add
            .iter()
            .map(|r| Entry { route: spec(r.dst, &r.dev, r.gateway, proto), status: Status::Pending })
            .collect(),
    };
    dir.write(&state)?;
    let mut done = Installed::default();
    let mut failure = None;
    for (i, planned) in plan.add.iter().enumerate() {
        info!("{planned}");
        match k.add(&state.routes[i].route).await {
            Ok(Added::Added) => (state.routes[i].status, done.added) = (Status::Added, done.added + 1),
            Ok(Added::Unchanged) => (state.routes[i].status, done.present) = (Status::Present, done.present + 1),
            Err(e @ KernelError::Foreign { .. }) => {
                warn!("{e}");
                done.blocked += 1;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    state.routes.retain(|e| e.status != Status::Pending);
    done.unverified = verify(k, &state).await;
    record(dir, &state)?;
    match failure {
        Some(source) => Err(ApplyError::Stopped { added: state.routes.len(), planned: plan.add.len(), source }),
        None => Ok(done),
    }
}

/// Asks the kernel, for the first and last address of every recorded block, which device it
/// picks; counts (and reports) disagreements.
async fn verify<K: Netlink>(k: &K, state: &State) -> usize {
    let mut wrong = 0;
    for e in &state.routes {
        let p = Prefix::from(e.route.dst);
        for addr in [p.addr, p.last()] {
            let a = bits_ip(p.v6, addr);
            match k.route_get(a).await {
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
/// removes the state; failed entries stay recorded for `cleanup`.
pub async fn remove<K: Netlink>(k: &K, dir: &StateDir, tunnel: &str) -> Result<Removed, ApplyError> {
    let Some(mut state) = dir.read(tunnel)? else {
        return Ok(Removed::default());
    };
    let mut out = Removed::default();
    let mut left = Vec::new();
    for e in state.routes {
        info!("removing {}", e.route);
        match k.delete(&e.route).await {
            Ok(Deleted::Deleted) => out.deleted += 1,
            Ok(Deleted::Unchanged) => out.gone += 1,
            Err(err) => {
                out.failed.push(err);
                left.push(e);
            }
        }
    }
    state.routes = left;
    record(dir, &state)?;
    Ok(out)
}

/// Deletes every route that carries vpnfix's protocol number, whatever the state says
/// (`cleanup --all`). Reports every failure.
pub async fn sweep_all<K: Netlink>(k: &K, proto: u8) -> Result<Removed, ApplyError> {
    let mut out = Removed::default();
    for r in k.routes().await?.iter().filter(|r| r.protocol.0 == proto).filter_map(of_route) {
        info!("removing {r}");
        match k.delete(&r).await {
            Ok(Deleted::Deleted) => out.deleted += 1,
            Ok(Deleted::Unchanged) => out.gone += 1,
            Err(e) => out.failed.push(e),
        }
    }
    Ok(out)
}
