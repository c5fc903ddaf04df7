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
    if !plan.container_routes && !plan.conflicts.is_empty() {
        s.push_str("routes inside containers: off (VPNFIX_CONTAINER_ROUTES=false)\n");
    }
    for i in &plan.inside {
        inside(&mut s, i);
    }
    for k in &plan.skipped {
        let _ = writeln!(s, "skipped {k}");
    }
    for n in &plan.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

fn inside(s: &mut String, i: &crate::plan::InsideNetwork) {
    let _ = writeln!(s, "{i}:");
    let names: Vec<String> = i.containers.iter().map(ToString::to_string).collect();
    match names.is_empty() {
        true => s.push_str("  containers: none running (the watcher routes those that start)\n"),
        false => {
            let _ = writeln!(s, "  containers: {}", names.join(", "));
        }
    }
    for r in &i.routes {
        let _ = writeln!(s, "  {r} via {}", i.gateway);
    }
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

/// A watcher in one line: `watcher: pid 4242 since 2026-11-30 08:40:01 UTC, last change
/// 08:45:12 UTC; 3 reconciles, 12 route changes, 57 events`.
fn watcher_line(w: &crate::status::WatcherStatus) -> String {
    let r = &w.record;
    let last = r.last_change.map_or("no change yet".to_string(), |t| format!("last change {}", utc(t)));
    let state = if w.running {
        String::new()
    } else {
        " (not running: killed? its routes stay for the next connect or `vpnfix cleanup`)".into()
    };
    format!(
        "watcher: pid {} since {}, {last}; {} reconciles, {} route changes, {} events{state}",
        r.pid,
        utc(r.since),
        r.reconciles,
        r.changes,
        r.events
    )
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (the civil calendar from days, after
/// Howard Hinnant's `civil_from_days`).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
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
        if let Some(w) = &t.watcher {
            let _ = writeln!(s, "  {}", watcher_line(w));
        }
        for r in &t.routes {
            let _ = writeln!(s, "  {}{}", r.route, if r.in_kernel { "" } else { "  (missing)" });
        }
        for c in &t.containers {
            let n = c.routes.len();
            let state = if c.running { "" } else { " (gone: its routes went with it)" };
            let _ = writeln!(
                s,
                "  inside container {} (pid {}, {}): {n} route{}{state}",
                c.name,
                c.pid,
                c.netns,
                plural(n)
            );
            for r in &c.routes {
                let _ = writeln!(s, "    {r}");
            }
        }
        if !t.container_routes {
            s.push_str("  routes inside containers: off (VPNFIX_CONTAINER_ROUTES=false)\n");
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

#[cfg(test)]
mod tests {
    #[test]
    fn utc_names_the_civil_date_and_time() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_796_027_645), "2026-11-30 08:34:05 UTC");
    }
}
