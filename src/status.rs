//! `vpnfix status`, decided purely: what a tunnel's state records, whether each route is still
//! in the kernel, and what the planner would want now from the recorded pushes and live facts.

use crate::config::Config;
use crate::hook::HookInput;
use crate::net::{Host, RouteSpec};
use crate::plan::{self, Conflict};
use crate::state::{State, Status, Watcher};
use serde::Serialize;

/// One recorded route and whether the kernel still has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// The route as recorded.
    #[serde(flatten)]
    pub route: RouteSpec,
    /// What the connect recorded.
    pub status: Status,
    /// Whether the kernel's main table has it now.
    pub in_kernel: bool,
}

/// One tunnel's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    /// The tunnel device.
    pub tunnel: String,
    /// Whether the device exists now.
    pub device_present: bool,
    /// What vpnfix recorded, route by route.
    pub routes: Vec<RouteStatus>,
    /// The conflicts live now between the recorded pushes and the local networks.
    pub conflicts: Vec<Conflict>,
    /// Routes the planner wants now that the kernel lacks (Docker changed since the connect).
    pub missing: Vec<RouteSpec>,
    /// Every recorded route is in the kernel and nothing is missing.
    pub in_sync: bool,
    /// Whether routes go inside containers (`VPNFIX_CONTAINER_ROUTES`).
    pub container_routes: bool,
    /// The routes recorded inside containers, per container.
    pub containers: Vec<InsideStatus>,
    /// The tunnel's watcher, if it has (or had) one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watcher: Option<WatcherStatus>,
}

/// One container's recorded routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InsideStatus {
    /// The container's name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The process vpnfix entered it through.
    pub pid: u32,
    /// Its namespace.
    pub netns: crate::netns::NsId,
    /// Whether that namespace is still there.
    pub running: bool,
    /// The routes.
    pub routes: Vec<RouteSpec>,
}

/// A watcher as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatcherStatus {
    /// What it recorded.
    #[serde(flatten)]
    pub record: Watcher,
    /// Whether its process still runs (a watcher killed with SIGKILL leaves its record).
    pub running: bool,
}

/// The status of `state` against the live `host` (whose routes include vpnfix's own), planned
/// anew from the recorded tunnel and pushes; with its watcher as found and `alive` telling
/// whether a recorded container's namespace is still there.
pub fn status(
    state: &State,
    host: &Host,
    config: &Config,
    watcher: Option<WatcherStatus>,
    alive: impl Fn(u32, crate::netns::NsId) -> bool,
) -> TunnelStatus {
    let in_kernel = |r: &RouteSpec| r.in_table(&host.routes);
    let routes: Vec<RouteStatus> = state
        .routes
        .iter()
        .map(|e| RouteStatus { route: e.route.clone(), status: e.status, in_kernel: in_kernel(&e.route) })
        .collect();
    let device_present = host.links.iter().any(|l| l.name == state.tunnel);
    let recorded = state.device.clone().filter(|t| t.dev == state.tunnel);
    let tunnel = recorded.unwrap_or(crate::net::Tunnel { dev: state.tunnel.clone(), ..Default::default() });
    let input = HookInput { tunnel, pushes: state.pushes.clone(), ..HookInput::default() };
    let live = host.facts(input);
    let p = plan::plan(&live, config);
    let missing: Vec<RouteSpec> = if device_present {
        p.add.iter().map(|a| a.spec(config.proto)).filter(|r| !in_kernel(r)).collect()
    } else {
        Vec::new()
    };
    let in_sync = routes.iter().all(|r| r.in_kernel) && missing.is_empty();
    let tunnel = state.tunnel.clone();
    let containers = state
        .containers
        .iter()
        .map(|c| InsideStatus {
            name: c.name.clone(),
            id: c.id.clone(),
            pid: c.pid,
            netns: c.netns,
            running: alive(c.pid, c.netns),
            routes: c.routes.iter().map(|e| e.route.clone()).collect(),
        })
        .collect();
    TunnelStatus {
        tunnel,
        device_present,
        routes,
        conflicts: p.conflicts,
        missing,
        in_sync,
        container_routes: config.container_routes,
        containers,
        watcher,
    }
}
