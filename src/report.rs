//! Human renderings of plans: short, in a stable order, every line built from the domain types'
//! `Display`. (`--json` serializes the same types.)

use crate::net::Facts;
use crate::plan::{Conflict, Plan};
use std::fmt::Write;

/// The plan as a person reads it: tunnel, pushes, conflicts, routes and why, what was left.
pub fn plan_text(facts: &Facts, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "tunnel {} (policy {})", facts.tunnel, plan.policy);
    if facts.pushes.is_empty() {
        let _ = writeln!(s, "pushed routes: none");
    }
    for p in &facts.pushes {
        let _ = writeln!(s, "pushed {p}");
    }
    for c in &plan.conflicts {
        conflict(&mut s, c);
    }
    if plan.conflicts.is_empty() {
        let _ = writeln!(s, "no pushed route overlaps a local bridge network");
    }
    match plan.add.len() {
        0 => s.push_str("nothing to add\n"),
        n => {
            let _ = writeln!(s, "add {n} route{}:", if n == 1 { "" } else { "s" });
            for r in &plan.add {
                let _ = writeln!(s, "  {r}");
            }
        }
    }
    for k in &plan.skipped {
        let _ = writeln!(s, "skipped {k}");
    }
    for n in &plan.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

fn conflict(s: &mut String, c: &Conflict) {
    let _ = writeln!(s, "conflict: {c}");
    if !c.local.containers.is_empty() {
        let names: Vec<String> = c.local.containers.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "  containers: {}", names.join(", "));
    }
    let kept: Vec<String> = c.kept.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "  stays local: {}; {} route{} inside",
        if kept.is_empty() { "nothing".to_string() } else { kept.join(", ") },
        c.routes,
        if c.routes == 1 { "" } else { "s" }
    );
}

/// `vpnfix status` as a person reads it.
pub fn status_text(tunnels: &[crate::status::TunnelStatus]) -> String {
    let mut s = String::new();
    if tunnels.is_empty() {
        s.push_str("no tunnel has routes from vpnfix\n");
    }
    for t in tunnels {
        let present = t.routes.iter().filter(|r| r.in_kernel).count();
        let _ = writeln!(
            s,
            "{}{}: {} route{} recorded, {present} in the kernel{}",
            t.tunnel,
            if t.device_present { "" } else { " (device gone)" },
            t.routes.len(),
            if t.routes.len() == 1 { "" } else { "s" },
            if t.in_sync { "; in sync" } else { "" }
        );
        for r in &t.routes {
            let _ = writeln!(s, "  {}{}", r.route, if r.in_kernel { "" } else { "  (missing)" });
        }
        for c in &t.conflicts {
            let _ = writeln!(s, "  conflict: {c}");
        }
        for m in &t.missing {
            let _ = writeln!(s, "  wanted now, not in the kernel: {m} (run `vpnfix apply` or reconnect)");
        }
    }
    s
}
