//! The planner: facts + configuration → the routes to add, and why. Pure: no I/O, no logging.
//!
//! It enforces DESIGN.md's rule. For every address `a` of a contested range (a push ∩ a bridge
//! route), `desired(a)` is the bridge when `a` is kept and the tunnel otherwise; `current(a)` is
//! what the kernel's table picks (longest prefix, then lowest metric; a tie between devices is
//! undecided). The plan is, per device, the fewest CIDR blocks covering exactly the wrong
//! addresses, each split until it is strictly longer than every route of the table it overlaps,
//! so it wins by length whatever the metrics.
//!
//! The search never walks addresses: it recurses over CIDR blocks and stops at any block with no
//! finer prefix (route, push, bridge, kept block) inside, because every address of such a block
//! meets the same routes and rules.

mod inside;
mod local;
mod report;
#[cfg(test)]
mod tests;

pub use inside::{out_specify, InsideNetwork};
pub use local::{LocalNetwork, Used};
pub use report::{Conflict, Plan, PlannedRoute, Side};

use crate::cidr::{is_default_or_half, Bounds, LpmTable, Prefix};
use crate::config::{Config, Policy};
use crate::net::{Facts, Push, Route, Skipped};
use local::KeepKind;

/// Where a wrong address wants to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Tunnel,
    /// The bridge of local network `n`.
    Bridge(usize),
}

/// The verdict on a block whose addresses all meet the same routes and rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The kernel already routes it as desired, or it is not contested.
    Fine,
    /// Wrong: it must be routed to this target.
    Want(Target),
}

/// Everything the recursion looks things up in, built once per plan.
struct Index<'a> {
    config: &'a Config,
    tunnel: &'a str,
    routes: LpmTable<&'a Route>,
    pushes: LpmTable<usize>,
    locals: LpmTable<usize>,
    keep: LpmTable<(usize, KeepKind)>,
    local_nets: Vec<LocalNetwork>,
    /// Every prefix that can change an outcome.
    bounds: Bounds,
    /// The prefixes that can change where an address is desired (pushes, local networks, kept
    /// blocks; not the table's routes): what the routes inside containers depend on.
    rule_bounds: Bounds,
    /// The table's prefixes only, for the split rule.
    table: Bounds,
}

/// Plans the routes that make `facts` obey the rule under `config`.
pub fn plan(facts: &Facts, config: &Config) -> Plan {
    let mut skipped = facts.skipped.clone();
    // vpnfix's own routes are swept before a connect plans, so they are not part of T.
    let table: Vec<&Route> = facts.routes.iter().filter(|r| r.protocol.0 != config.proto).collect();
    let pushes = usable_pushes(&facts.pushes, config, &mut skipped);
    let (bridges, physical) = local::on_link_routes(facts, &table);
    report_physical(&pushes, &physical, &mut skipped);
    let local_nets: Vec<LocalNetwork> = bridges.iter().map(|r| local::describe(facts, r)).collect();
    let mut locals = LpmTable::default();
    for (i, l) in local_nets.iter().enumerate() {
        locals.insert(Prefix::from(l.dst), i);
    }
    let contest = Contest::new(&pushes, &locals);
    // Only routes that overlap a contested range can decide anything in it: its addresses'
    // current route, a finer prefix inside it, or a route a planned block must out-specify.
    let table: Vec<&Route> = table.into_iter().filter(|r| contest.overlaps(Prefix::from(r.dst))).collect();
    let index = Index::new(config, &facts.tunnel.dev, &table, &pushes, local_nets, locals);
    let mut blocks = Vec::new();
    for (i, &range) in contest.roots.iter().enumerate() {
        if let Outcome::Want(t) = index.solve(range, &mut blocks, i) {
            blocks.push((range, t, i));
        }
    }
    let blocks = index.split(blocks, &mut skipped);
    report::assemble(facts, config, &index, &pushes, contest, blocks, skipped)
}

/// Pushes the planner may contest with: long enough, not a default route in disguise.
fn usable_pushes<'a>(pushes: &'a [Push], config: &Config, skipped: &mut Vec<Skipped>) -> Vec<&'a Push> {
    let mut out = Vec::new();
    for p in pushes {
        let min = config.min_prefix(matches!(p.dst, ipnet::IpNet::V6(_)));
        if is_default_or_half(p.dst) {
            skipped
                .push(Skipped::new(p.to_string(), "a default route (or half of one) never contests a local network"));
        } else if p.dst.prefix_len() < min {
            let var = if p.dst.addr().is_ipv6() { "VPNFIX_MIN_PREFIX_V6" } else { "VPNFIX_MIN_PREFIX_V4" };
            skipped.push(Skipped::new(
                p.to_string(),
                format!("shorter than /{min} ({var}); not used to contest local networks"),
            ));
        } else {
            out.push(p);
        }
    }
    out
}

/// Physical devices are reported when a push overlaps them, never changed.
fn report_physical(pushes: &[&Push], physical: &[&Route], skipped: &mut Vec<Skipped>) {
    for r in physical {
        for p in pushes.iter().filter(|p| Prefix::from(p.dst).overlaps(Prefix::from(r.dst))) {
            let dev = r.dev.as_deref().unwrap_or_default();
            skipped.push(Skipped::new(
                p.to_string(),
                format!("overlaps {} on {dev}, which is not a bridge; left as the kernel has it", r.dst),
            ));
        }
    }
}

/// What the pushes contest: every (push, local network) overlap as the contested range and the
/// indexes of both, sorted, and the roots of the search.
pub(super) struct Contest {
    /// (range, push index, local index).
    pub ranges: Vec<(Prefix, usize, usize)>,
    /// The union of the ranges as the fewest CIDR blocks, sorted (so that two sibling ranges
    /// wanting the same device can become one route); disjoint.
    pub roots: Vec<Prefix>,
}

impl Contest {
    /// The overlaps of `pushes` with the local networks indexed in `locals`.
    fn new(pushes: &[&Push], locals: &LpmTable<usize>) -> Contest {
        let starts = Bounds::new(locals.prefixes().collect());
        let mut ranges = Vec::new();
        for (pi, p) in pushes.iter().enumerate() {
            let pp = Prefix::from(p.dst);
            // A local network containing the push contests all of it; one inside it, itself.
            let containing = locals.matches(pp.v6, pp.addr).filter(|(l, _)| l.len <= pp.len);
            ranges.extend(containing.flat_map(|(_, lis)| lis.iter().map(move |&li| (pp, pi, li))));
            let inside = starts.starting_in(pp).filter(|l| l.len > pp.len);
            ranges.extend(inside.flat_map(|l| locals.get(l).iter().map(move |&li| (l, pi, li))));
        }
        ranges.sort_unstable();
        let nets: Vec<ipnet::IpNet> = ranges.iter().map(|(c, _, _)| c.to_net()).collect();
        let roots = crate::cidr::aggregate(&nets).into_iter().map(Prefix::from).collect();
        Contest { ranges, roots }
    }

    /// Whether a prefix overlaps a root.
    fn overlaps(&self, p: Prefix) -> bool {
        // The roots are sorted and disjoint: the last one starting at or before `p` may overlap
        // it, and if any starting after `p` lies inside it, so does the first of those.
        let after = self.roots.partition_point(|r| (r.v6, r.addr) <= (p.v6, p.addr));
        (after > 0 && self.roots[after - 1].overlaps(p)) || self.roots.get(after).is_some_and(|r| p.contains(*r))
    }
}

impl<'a> Index<'a> {
    fn new(
        config: &'a Config,
        tunnel: &'a str,
        table: &[&'a Route],
        pushes: &[&Push],
        local_nets: Vec<LocalNetwork>,
        locals: LpmTable<usize>,
    ) -> Self {
        let mut ix = Index {
            config,
            tunnel,
            routes: LpmTable::default(),
            pushes: LpmTable::default(),
            locals,
            keep: LpmTable::default(),
            local_nets: Vec::new(),
            bounds: Bounds::default(),
            rule_bounds: Bounds::default(),
            table: Bounds::new(table.iter().map(|r| Prefix::from(r.dst)).collect()),
        };
        let mut bounds: Vec<Prefix> = Vec::new();
        for (i, p) in pushes.iter().enumerate() {
            ix.pushes.insert(Prefix::from(p.dst), i);
            bounds.push(Prefix::from(p.dst));
        }
        for (i, l) in local_nets.iter().enumerate() {
            for (block, li, kind) in local::keep_blocks(l, i, config) {
                ix.keep.insert(block, (li, kind));
                bounds.push(block);
            }
        }
        bounds.extend(local_nets.iter().map(|l| Prefix::from(l.dst)));
        ix.local_nets = local_nets;
        ix.rule_bounds = Bounds::new(bounds.clone());
        for r in table {
            ix.routes.insert(Prefix::from(r.dst), *r);
            bounds.push(Prefix::from(r.dst));
        }
        ix.bounds = Bounds::new(bounds);
        ix
    }

    /// The outcome of a block if uniform; otherwise records its wrong uniform parts in `out`
    /// (tagged with the root `root`) and returns `None`.
    fn solve(&self, block: Prefix, out: &mut Vec<(Prefix, Target, usize)>, root: usize) -> Outcome {
        self.solve_inner(block, out, root).unwrap_or(Outcome::Fine)
    }

    fn solve_inner(&self, block: Prefix, out: &mut Vec<(Prefix, Target, usize)>, root: usize) -> Option<Outcome> {
        if !self.bounds.has_inner(block) {
            return Some(self.outcome(block.v6, block.addr));
        }
        let (lo, hi) = block.halves().expect("a block with a finer prefix inside has halves");
        let (a, b) = (self.solve_inner(lo, out, root), self.solve_inner(hi, out, root));
        if a.is_some() && a == b {
            return a;
        }
        for (half, o) in [(lo, a), (hi, b)] {
            if let Some(Outcome::Want(t)) = o {
                out.push((half, t, root));
            }
        }
        None
    }

    /// The verdict on address `addr`.
    fn outcome(&self, v6: bool, addr: u128) -> Outcome {
        let Some((lp, ls)) = self.locals.longest(v6, addr) else {
            return Outcome::Fine;
        };
        let Some((pp, _)) = self.pushes.longest(v6, addr) else {
            return Outcome::Fine;
        };
        // Two bridges with the same prefix: the first (by discovery order) is taken.
        let li = ls[0];
        let bridge = self.local_nets[li].dev.as_str();
        let target = self.desired(v6, addr, li, pp.len);
        let want = match target {
            Target::Tunnel => self.tunnel,
            Target::Bridge(_) => bridge,
        };
        let Some((len, devs)) = self.current(v6, addr) else {
            return Outcome::Want(target); // no route at all
        };
        // A route longer than both the push and the bridge, through a third device: someone
        // chose it on purpose, so the address is not contested.
        let third = devs.iter().all(|d| *d != Some(self.tunnel) && *d != Some(bridge));
        let chosen = len > pp.len && len > lp.len && third;
        if chosen || devs == [Some(want)] {
            Outcome::Fine
        } else {
            Outcome::Want(target)
        }
    }

    /// Where an address of local network `li` should go, decided by a push of length `plen`.
    fn desired(&self, v6: bool, addr: u128, li: usize, plen: u8) -> Target {
        let keep = match self.config.policy {
            Policy::Vpn => false,
            Policy::Local => true,
            Policy::Split => self.kept(v6, addr, li, plen < self.config.keep_prefix(v6)),
        };
        if keep {
            Target::Bridge(li)
        } else {
            Target::Tunnel
        }
    }

    /// Whether an address is in K(p, l): used addresses always; widened blocks and IPAM
    /// ranges only for pushes broader than the keep prefix, and not where the user said `vpn`.
    fn kept(&self, v6: bool, addr: u128, li: usize, broad: bool) -> bool {
        let mut wide = false;
        let mut user_vpn = false;
        for (_, tags) in self.keep.matches(v6, addr) {
            for &(_, kind) in tags.iter().filter(|(l, _)| *l == li) {
                match kind {
                    KeepKind::Exact | KeepKind::UserKeep => return true,
                    KeepKind::Wide => wide = true,
                    KeepKind::UserVpn => user_vpn = true,
                }
            }
        }
        broad && wide && !user_vpn
    }

    /// The kernel's choice for an address: the longest prefix, then the lowest metric; the
    /// devices of every route tied there (more than one distinct device = undecided).
    fn current(&self, v6: bool, addr: u128) -> Option<(u8, Vec<Option<&'a str>>)> {
        let (p, routes) = self.routes.longest(v6, addr)?;
        Some((p.len, crate::net::tied_devices(routes.iter().copied())))
    }

    /// Splits each block in halves until it is strictly longer than every table route that
    /// overlaps it; a single address that cannot be is reported instead.
    fn split(&self, blocks: Vec<(Prefix, Target, usize)>, skipped: &mut Vec<Skipped>) -> Vec<(Prefix, Target, usize)> {
        let mut out = Vec::new();
        let mut todo = blocks;
        while let Some((b, t, root)) = todo.pop() {
            if !self.table.holds(b) && !self.table.has_inner(b) {
                out.push((b, t, root));
            } else if let Some((lo, hi)) = b.halves() {
                todo.push((lo, t, root));
                todo.push((hi, t, root));
            } else {
                skipped.push(Skipped::new(
                    b.to_string(),
                    "a route of the same length is already in the table and cannot be out-specified; left as the kernel has it",
                ));
            }
        }
        out
    }
}
