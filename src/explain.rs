//! `vpnfix explain ADDR…`, decided purely: for one address, the routes that cover it in the
//! order the kernel weighs them, who installed each, the local network, Docker network and
//! container that own it, the push that wants it, and one sentence on why the packet goes where
//! it goes and what vpnfix did or would do.

use crate::config::Config;
use crate::net::{Facts, Push, Route};
use crate::plan::{Conflict, Plan, PlannedRoute};
use serde::Serialize;
use std::fmt::Write;
use std::net::IpAddr;

/// A route covering the address, with who put it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Covering {
    /// The route.
    pub route: Route,
    /// `vpnfix`, `Docker`, `OpenVPN`, `NetworkManager`, `kernel` or the protocol's name.
    pub installer: String,
}

/// What the kernel does with the address: asked live (`route get`) or computed from a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pick {
    /// The device, or `None` for no route / a reject route / a tie between devices.
    pub dev: Option<String>,
    /// `route get` (the kernel said so) or `computed` (from a bundle's table).
    pub source: &'static str,
    /// Two or more routes tie on length and metric through different devices.
    pub undecided: bool,
}

/// The whole answer for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The address.
    pub addr: IpAddr,
    /// Where the kernel sends it.
    pub pick: Pick,
    /// Every main-table route containing it, longest prefix first, then lowest metric.
    pub routes: Vec<Covering>,
    /// The local network (bridge route) containing it, with its Docker network.
    pub local: Option<String>,
    /// The container using exactly this address.
    pub container: Option<String>,
    /// The most specific push containing it.
    pub push: Option<Push>,
    /// vpnfix's route for it, if the plan has one.
    pub planned: Option<PlannedRoute>,
    /// Whether that route is in the kernel now.
    pub planned_in_kernel: bool,
    /// One sentence: why, and what vpnfix did or would do.
    pub why: String,
    /// How the containers of the contested network that holds it reach it, where vpnfix
    /// routes inside them: via the gateway (into the tunnel) or on-link (kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside: Option<String>,
}

/// Explains `addr` given the facts (routes include vpnfix's own), the plan made from them, and
/// the kernel's own answer when there is one (`None` offline: computed from the table).
pub fn explain(
    addr: IpAddr,
    facts: &Facts,
    config: &Config,
    plan: &Plan,
    kernel: Option<Option<String>>,
) -> Explanation {
    let mut routes: Vec<Covering> = facts
        .routes
        .iter()
        .filter(|r| r.dst.contains(&addr))
        .map(|r| Covering { installer: installer(r, facts, config), route: r.clone() })
        .collect();
    routes.sort_by(|a, b| {
        b.route.dst.prefix_len().cmp(&a.route.dst.prefix_len()).then(a.route.metric.cmp(&b.route.metric))
    });
    let pick = match kernel {
        Some(dev) => Pick { dev, source: "route get", undecided: false },
        None => computed(&routes),
    };
    let conflict = best_conflict(&plan.conflicts, addr);
    let planned = plan.add.iter().filter(|r| r.dst.contains(&addr)).max_by_key(|r| r.dst.prefix_len()).cloned();
    let planned_in_kernel = planned.as_ref().is_some_and(|p| p.spec(config.proto).in_table(&facts.routes));
    let container = facts
        .docker
        .iter()
        .flatten()
        .flat_map(|n| n.containers.iter().map(move |c| (n, c)))
        .find(|(_, c)| c.addrs.contains(&addr))
        .map(|(n, c)| format!("{} on {n}", c.name));
    let mut e = Explanation {
        addr,
        pick,
        routes,
        local: conflict.map(|c| c.local.to_string()),
        container,
        push: facts.pushes.iter().filter(|p| p.dst.contains(&addr)).max_by_key(|p| p.dst.prefix_len()).cloned(),
        planned,
        planned_in_kernel,
        why: String::new(),
        inside: inside(plan, addr),
    };
    e.why = why(&e, conflict, &facts.tunnel.dev);
    e
}

/// Who installed a route, as far as its protocol, device and metric tell.
/// What the containers of the network holding `addr` get for it, where the plan routes inside
/// them.
fn inside(plan: &Plan, addr: IpAddr) -> Option<String> {
    let i = plan.inside.iter().find(|i| i.subnet.contains(&addr))?;
    let names: Vec<&str> = i.containers.iter().map(|c| c.name.as_str()).collect();
    let who = match names.is_empty() {
        true => format!("the containers of {} (none running)", i.owner),
        false => format!("the containers of {} ({})", i.owner, names.join(", ")),
    };
    Some(match i.routes.iter().find(|r| r.contains(&addr)) {
        Some(r) => format!("{who} reach it through the tunnel: vpnfix adds {r} via {} inside each", i.gateway),
        None => format!("{who} reach it on-link: it stays local"),
    })
}

fn installer(r: &Route, facts: &Facts, config: &Config) -> String {
    let dev = r.dev.as_deref().unwrap_or_default();
    match (r.protocol.0, facts.network_on(dev)) {
        (p, _) if p == config.proto => "vpnfix".into(),
        (2, Some(n)) => format!("{}, network {}", n.engine.title(), n.name),
        (2, None) => "kernel".into(),
        (3, _) if dev == facts.tunnel.dev => "OpenVPN".into(),
        (4, _) if dev == facts.tunnel.dev => "NetworkManager".into(),
        (_, _) => format!("proto {}", r.protocol),
    }
}

/// The kernel's choice computed from the table ([`crate::net::tied_devices`] at the longest
/// prefix; `routes` are sorted longest first).
fn computed(routes: &[Covering]) -> Pick {
    let longest = routes.first().map(|c| c.route.dst.prefix_len());
    let at_longest = routes.iter().filter(|c| Some(c.route.dst.prefix_len()) == longest).map(|c| &c.route);
    match crate::net::tied_devices(at_longest).as_slice() {
        [] => Pick { dev: None, source: "computed", undecided: false },
        [one] => Pick { dev: one.map(str::to_string), source: "computed", undecided: false },
        _ => Pick { dev: None, source: "computed", undecided: true },
    }
}

/// The conflict deciding the address: the most specific push's.
fn best_conflict(conflicts: &[Conflict], addr: IpAddr) -> Option<&Conflict> {
    conflicts.iter().filter(|c| c.contested.contains(&addr)).max_by_key(|c| c.push.dst.prefix_len())
}

fn why(e: &Explanation, conflict: Option<&Conflict>, tunnel: &str) -> String {
    let goes = match (&e.pick.dev, e.pick.undecided) {
        (_, true) => "routes tie on length and metric through different devices, so the kernel's choice depends on insertion order".to_string(),
        (Some(d), _) => format!("it leaves via {d}"),
        (None, _) => "no route takes it anywhere".to_string(),
    };
    let Some(c) = conflict else {
        return match &e.push {
            Some(p) => {
                format!("{goes}; the push {} does not overlap a local bridge here, so vpnfix leaves it alone", p.dst)
            }
            None => format!("{goes}; no VPN push covers it, so vpnfix leaves it alone"),
        };
    };
    let kept = c.kept.iter().any(|k| k.contains(&e.addr));
    let side =
        if kept { format!("stay on {} ({})", c.local.dev, c.local.owner()) } else { format!("go through {tunnel}") };
    let push = format!("{} ({})", c.push.dst, c.push.origin);
    match (&e.planned, e.planned_in_kernel) {
        (Some(p), true) => format!(
            "{goes}: vpnfix added {} dev {} so that it can {side}; contested between push {push} and {}",
            p.dst, p.dev, c.local
        ),
        (Some(p), false) => format!(
            "{goes}, but it should {side}: vpnfix would add {} dev {} (push {push} over {})",
            p.dst, p.dev, c.local
        ),
        (None, _) => format!(
            "{goes}, which is what it should do ({side}); push {push} over {} needs nothing from vpnfix here",
            c.local
        ),
    }
}

/// Explanations as a person reads them.
pub fn text(all: &[Explanation]) -> String {
    let mut s = String::new();
    for e in all {
        let _ = writeln!(s, "{}: {}", e.addr, e.why);
        let _ = writeln!(
            s,
            "  kernel ({}): {}",
            e.pick.source,
            e.pick.dev.as_deref().unwrap_or(if e.pick.undecided { "undecided" } else { "no route" })
        );
        if let Some(c) = &e.container {
            let _ = writeln!(s, "  used by container {c}");
        }
        if let Some(l) = &e.local {
            let _ = writeln!(s, "  local network {l}");
        }
        if let Some(i) = &e.inside {
            let _ = writeln!(s, "  {i}");
        }
        if let Some(p) = &e.push {
            let _ = writeln!(s, "  pushed {p}");
        }
        let _ = writeln!(s, "  routes covering it, as the kernel weighs them:");
        for c in &e.routes {
            let _ = writeln!(s, "    {} [{}]", c.route, c.installer);
        }
    }
    s
}
