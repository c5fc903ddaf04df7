//! Connect as a reconcile, decided purely: vpnfix's routes in the kernel and the other tunnels'
//! claims × the routes the plan wants → what to keep, add and delete. No I/O; [`crate::apply`]
//! carries the changes out.
//!
//! A route of vpnfix's (its protocol number) belongs to this connect when it is on this tunnel's
//! device, or on a device no other live tunnel's record claims it for: a bridge route of this
//! tunnel's, or one left by a tunnel that vanished or a run whose record was lost. Routes of
//! other live tunnels are theirs to manage. A repeated connect with nothing changed changes
//! nothing; a changed plan changes only the difference.

use crate::cidr::{bits_ip, Prefix};
use crate::kernel::RouteSpec;
use crate::net::Route;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// Why a route goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// This tunnel's plan no longer wants it.
    Unwanted,
    /// No live tunnel claims it (its tunnel vanished, or a crash lost the record).
    Stale,
}

/// What a connect changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Wanted and already in the kernel: not touched.
    pub keep: Vec<RouteSpec>,
    /// Wanted and missing, in plan order (indexes into the plan's routes).
    pub add: Vec<usize>,
    /// Deleted before the adds: an add has the same destination, which the kernel would refuse
    /// ("File exists") while this route is there.
    pub delete_first: Vec<(RouteSpec, Why)>,
    /// Deleted after the adds, so every address stays routed meanwhile.
    pub delete_after: Vec<(RouteSpec, Why)>,
}

impl Changes {
    /// Whether the connect changes no route.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.delete_first.is_empty() && self.delete_after.is_empty()
    }
}

/// Other live tunnels: their devices and the routes their records claim.
#[derive(Debug, Default)]
pub struct Claims {
    /// Devices of other tunnels that exist and have a record.
    pub devices: HashSet<String>,
    /// Routes those records hold.
    pub routes: HashSet<RouteSpec>,
}

/// vpnfix's routes among `table` (protocol `proto`) as specs.
pub fn own_routes(table: &[Route], proto: u8) -> Vec<RouteSpec> {
    table.iter().filter(|r| r.protocol.0 == proto).filter_map(RouteSpec::of_route).collect()
}

/// This tunnel: its device and the routes its record holds.
#[derive(Debug, Default)]
pub struct Mine<'a> {
    /// The tunnel device.
    pub tunnel: &'a str,
    /// What its record says vpnfix added for it.
    pub recorded: HashSet<RouteSpec>,
}

/// The difference between `own` (vpnfix's routes in the kernel) and `wanted` (this tunnel's
/// plan, as specs), leaving alone what `others` claim.
pub fn diff(own: &[RouteSpec], wanted: &[RouteSpec], mine: &Mine, others: &Claims) -> Changes {
    let present: HashSet<&RouteSpec> = own.iter().collect();
    let wanted_set: HashSet<&RouteSpec> = wanted.iter().collect();
    let mut c = Changes::default();
    for (i, w) in wanted.iter().enumerate() {
        if present.contains(w) {
            c.keep.push(w.clone());
        } else {
            c.add.push(i);
        }
    }
    let added_dsts: HashSet<(ipnet::IpNet, u32)> = c.add.iter().map(|i| (wanted[*i].dst, wanted[*i].table)).collect();
    for r in own.iter().filter(|r| !wanted_set.contains(r)) {
        if others.devices.contains(&r.dev) || others.routes.contains(r) {
            continue;
        }
        let why = if r.dev == mine.tunnel || mine.recorded.contains(r) { Why::Unwanted } else { Why::Stale };
        let item = (r.clone(), why);
        if added_dsts.contains(&(r.dst, r.table)) {
            c.delete_first.push(item);
        } else {
            c.delete_after.push(item);
        }
    }
    c
}

/// The first and last address of a block.
pub fn ends(dst: IpNet) -> [IpAddr; 2] {
    let p = Prefix::from(dst);
    [bits_ip(p.v6, p.addr), bits_ip(p.v6, p.last())]
}

/// The recorded routes the kernel does not pick for every address of their block, judged from
/// its main table alone (valid under the kernel's default policy routing, where the main table
/// decides every address the local table does not own): a route missing from the table; one
/// that loses at its own prefix (a lower metric, or a tie with another device); one with a
/// longer route of another device inside its block. Each with what happens instead.
pub fn not_picked<'a>(routes: &[&'a RouteSpec], table: &[Route]) -> Vec<(&'a RouteSpec, String)> {
    let mut at: HashMap<IpNet, Vec<&Route>> = HashMap::new();
    let mut by_start: BTreeMap<(bool, u128), Vec<&Route>> = BTreeMap::new();
    for r in table {
        at.entry(r.dst).or_default().push(r);
        let p = Prefix::from(r.dst);
        by_start.entry((p.v6, p.addr)).or_default().push(r);
    }
    let mut wrong = Vec::new();
    for &r in routes {
        let same = at.get(&r.dst).map(Vec::as_slice).unwrap_or_default();
        if !same.iter().any(|x| r.is(x)) {
            wrong.push((r, "no longer in the kernel's table".to_string()));
            continue;
        }
        let first = ends(r.dst)[0];
        let devs = crate::net::tied_devices(same.iter().copied());
        if devs != [Some(r.dev.as_str())] {
            let others: Vec<&str> = devs.iter().map(|d| d.unwrap_or("nothing")).filter(|d| *d != r.dev).collect();
            wrong.push((r, format!("{first} still leaves via {}", others.join(" or "))));
            continue;
        }
        let p = Prefix::from(r.dst);
        let mut inside = by_start.range((p.v6, p.addr)..=(p.v6, p.last())).flat_map(|(_, v)| v);
        if let Some(x) = inside.find(|x| x.dst.prefix_len() > p.len && x.dev.as_deref() != Some(&r.dev)) {
            let dev = x.dev.as_deref().unwrap_or("nothing");
            wrong.push((r, format!("{} still leaves via {dev} ({x})", ends(x.dst)[0])));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::MAIN_TABLE;

    fn spec(dst: &str, dev: &str) -> RouteSpec {
        RouteSpec { dst: dst.parse().unwrap(), dev: dev.into(), gateway: None, table: MAIN_TABLE, protocol: 86 }
    }

    fn route(dst: &str, dev: &str, metric: u32, proto: u8) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            dev: Some(dev.into()),
            gateway: None,
            metric,
            protocol: crate::net::Proto(proto),
            scope: crate::net::SCOPE_LINK,
            kind: crate::net::RouteKind::Unicast,
        }
    }

    #[test]
    fn the_kernels_pick_is_read_off_its_table() {
        let (a, b, c, d) = (
            spec("172.20.1.0/24", "tun0"),
            spec("172.20.2.0/23", "tun0"),
            spec("172.20.4.0/22", "tun0"),
            spec("172.20.8.0/21", "tun0"),
        );
        let table = [
            route("172.20.0.0/16", "br-x", 0, 2),
            route("172.20.1.0/24", "tun0", 0, 86),
            route("172.20.2.0/23", "tun0", 0, 86),
            route("172.20.2.0/23", "eth0", 0, 4),
            route("172.20.4.0/22", "tun0", 0, 86),
            route("172.20.5.128/25", "eth0", 0, 4),
        ];
        let wrong = not_picked(&[&a, &b, &c, &d], &table);
        let said: Vec<String> = wrong.iter().map(|(r, how)| format!("{}: {how}", r.dst)).collect();
        assert_eq!(
            said,
            [
                "172.20.2.0/23: 172.20.2.0 still leaves via eth0",
                "172.20.4.0/22: 172.20.5.128 still leaves via eth0 (172.20.5.128/25 dev eth0 proto static metric 0)",
                "172.20.8.0/21: no longer in the kernel's table",
            ],
            "a tie, a longer route inside, a missing route; the good one passes"
        );
    }

    #[test]
    fn nothing_changed_means_nothing_touched() {
        let wanted = [spec("172.20.1.0/24", "tun0"), spec("172.20.0.0/24", "br-x")];
        let c = diff(&wanted, &wanted, &Mine { tunnel: "tun0", ..Mine::default() }, &Claims::default());
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(c.keep, wanted);
    }

    #[test]
    fn only_the_difference_changes_and_a_moved_block_is_freed_first() {
        let own = [spec("172.20.1.0/24", "tun0"), spec("172.20.2.0/23", "tun0"), spec("172.20.9.0/24", "tun0")];
        // A container came up in 172.20.9.0/24: the /24 moves to the bridge, the rest stays.
        let wanted = [spec("172.20.1.0/24", "tun0"), spec("172.20.2.0/23", "tun0"), spec("172.20.9.0/24", "br-x")];
        let c = diff(&own, &wanted, &Mine { tunnel: "tun0", ..Mine::default() }, &Claims::default());
        assert_eq!(c.keep.len(), 2);
        assert_eq!(c.add, [2]);
        assert_eq!(c.delete_first, [(spec("172.20.9.0/24", "tun0"), Why::Unwanted)], "same dst: freed before the add");
        assert!(c.delete_after.is_empty());
    }

    #[test]
    fn other_live_tunnels_keep_theirs_and_orphans_go_after_the_adds() {
        let own = [spec("10.1.0.0/24", "tun1"), spec("10.2.0.0/24", "br-y"), spec("10.3.0.0/24", "br-z")];
        let others = Claims {
            devices: HashSet::from(["tun1".to_string()]),
            routes: HashSet::from([spec("10.2.0.0/24", "br-y")]),
        };
        let mine = Mine { tunnel: "tun0", recorded: HashSet::from([spec("10.4.0.0/24", "br-x")]) };
        let own = [&own[..], &[spec("10.4.0.0/24", "br-x")]].concat();
        let c = diff(&own, &[spec("172.20.1.0/24", "tun0")], &mine, &others);
        assert_eq!(c.add, [0]);
        assert_eq!(
            c.delete_after,
            [(spec("10.3.0.0/24", "br-z"), Why::Stale), (spec("10.4.0.0/24", "br-x"), Why::Unwanted)],
            "tun1's and its claim stay; an orphan and this tunnel's old bridge route go"
        );
    }
}
