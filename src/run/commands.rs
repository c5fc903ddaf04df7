//! The commands that look and advise without changing routes: `plan`, `snapshot`, `explain`,
//! `status`, `suggest` (which writes daemon.json only when asked) and `install`.

use super::{
    environment, gather_host, gather_raw, load_config, sections_for, select_for, Error, Sections, NO_TUNNEL,
    REFUSED_HINT,
};
use crate::cli::{ExplainArgs, InstallArgs, PlanArgs, SnapshotArgs, StatusArgs, SuggestArgs};
use crate::config::Overrides;
use crate::hook::{discover, HookInput};
use crate::kernel::Kernel;
use crate::state::StateDir;
use crate::status::WatcherStatus;
use crate::{bundle, plan, report};
use log::info;

/// `vpnfix plan`: the plan for a bundle or for this host, as text or JSON, one section per
/// tunnel. Changes nothing.
pub fn plan(args: &PlanArgs) -> Result<String, Error> {
    let env = environment();
    let s = sections_for(args.from.as_deref(), &args.select, &env)?;
    let plans: Vec<plan::Plan> = s.facts.iter().map(|f| plan::plan(f, &s.config)).collect();
    if args.json {
        // One tunnel: the plan object itself (its fields in their declared order).
        let json = match plans.as_slice() {
            [] => serde_json::to_string_pretty(
                &serde_json::json!({"add": [], "conflicts": [], "skipped": [], "notes": [NO_TUNNEL]}),
            )?,
            [one] => serde_json::to_string_pretty(one)?,
            all => {
                let each = s.facts.iter().zip(all).map(|(f, p)| serde_json::json!({"dev": f.tunnel.dev, "plan": p}));
                serde_json::to_string_pretty(&serde_json::json!({ "tunnels": each.collect::<Vec<_>>() }))?
            }
        };
        return Ok(json + "\n");
    }
    Ok(sections_text(&s, &plans, report::plan_text))
}

/// One text section per tunnel; with tunnels read from the kernel, each under a line naming it
/// and its pushes, and the hint about refused pushes once at the end.
fn sections_text<T>(s: &Sections, items: &[T], text: impl Fn(&crate::net::Facts, &T) -> String) -> String {
    if s.facts.is_empty() {
        return format!("{NO_TUNNEL}\n");
    }
    let mut out = String::new();
    for (f, item) in s.facts.iter().zip(items) {
        if s.discovered {
            let pushes: Vec<String> = f.pushes.iter().map(|p| p.dst.to_string()).collect();
            let list = if pushes.is_empty() { "none".to_string() } else { pushes.join(", ") };
            out.push_str(&format!("== {} (pushes: {list})\n", f.tunnel.dev));
        }
        out.push_str(&text(f, item));
    }
    if s.discovered && s.facts.iter().any(|f| f.pushes.iter().all(|p| p.origin != "--route")) {
        out.push_str(&format!("note: {REFUSED_HINT}\n"));
    }
    out
}

/// `vpnfix snapshot DIR`: writes this host's facts as a bundle.
pub fn snapshot(args: &SnapshotArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &Overrides::default());
    let hook_env: Vec<(String, String)> = env.iter().filter(|(k, _)| is_hook_variable(k)).cloned().collect();
    let (host, raw) = gather_raw(&Kernel::connect()?, &config)?;
    let snap = bundle::Snapshot {
        routes: &host.routes,
        links: &host.links,
        addrs: &host.addrs,
        neighbours: &host.neighbours,
        docker: raw.as_deref(),
        env: &hook_env,
    };
    bundle::write(&args.dir, &snap)?;
    Ok(format!("wrote {}\n", args.dir.display()))
}

/// The variables a bundle's `env` keeps: OpenVPN's, NetworkManager's VPN ones and vpnfix's.
fn is_hook_variable(k: &str) -> bool {
    const EXACT: &[&str] = &["script_type", "dev", "dev_type", "redirect_gateway", "net_gateway_ipv6", "signal"];
    const PREFIX: &[&str] = &["route_", "ifconfig_", "trusted_", "VPNFIX_", "VPN_", "NM_DISPATCHER_ACTION"];
    EXACT.contains(&k) || PREFIX.iter().any(|p| k.starts_with(p))
}

/// Where Docker reads its configuration.
const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// `vpnfix suggest`: the permanent fix for this host or a bundle. Writes daemon.json only when
/// asked (`--write-daemon-json`), merged into the file it replaces.
pub fn suggest(args: &SuggestArgs) -> Result<String, Error> {
    use crate::suggest::{self, SuggestInput};
    let env = environment();
    let s = select_for(args.from.as_deref(), &args.select, &env)?;
    // A free subnet depends on what every VPN pushes, not on a tunnel's name: one suggestion
    // for all tunnels, or for the routes given with no tunnel at all.
    if s.inputs.is_empty() && args.select.routes.is_empty() {
        return Ok(format!("{NO_TUNNEL}\n"));
    }
    let mut input = HookInput::default();
    for i in &s.inputs {
        if input.tunnel.dev.is_empty() {
            input.tunnel = i.tunnel.clone();
        }
        input.pushes.extend(i.pushes.iter().cloned());
    }
    if s.inputs.is_empty() {
        input.pushes = super::route_flags(&args.select);
    }
    let facts = s.host.into_facts(input);
    let plan = plan::plan(&facts, &s.config);
    let existing = args.daemon_json.clone().or_else(|| args.write_daemon_json.clone()).unwrap_or_else(|| {
        args.from.as_ref().map_or_else(|| std::path::PathBuf::from(DAEMON_JSON), |dir| dir.join("daemon.json"))
    });
    let daemon_json = suggest::read_daemon_json(&existing)?;
    let s = suggest::suggest(&SuggestInput { facts: &facts, plan: &plan, prefer: args.prefer.clone(), daemon_json });
    let mut out = if args.json { serde_json::to_string_pretty(&s)? + "\n" } else { suggest::render_text(&s) };
    if let Some(path) = &args.write_daemon_json {
        let line = write_daemon_json(path, &existing, &s)?;
        if !args.json {
            out.push_str(&line);
        }
    }
    Ok(out)
}

/// Writes the suggested daemon.json to `path` unless it is the file it was merged from and
/// nothing changed; the line to tell.
fn write_daemon_json(
    path: &std::path::Path,
    existing: &std::path::Path,
    s: &crate::suggest::Suggestion,
) -> Result<String, Error> {
    if !s.daemon_json_changed && path == existing {
        info!("{} already keeps Docker's pools clear of the VPN; not rewritten", path.display());
        return Ok(format!("{} needs no change; not rewritten\n", path.display()));
    }
    info!("writing {} (the previous file, if any, is kept as {0}.vpnfix-backup-<unix time>)", path.display());
    let backup = crate::suggest::write_daemon_json(path, &s.daemon_json)?;
    let kept = backup.map(|b| format!("; the previous one is kept as {}", b.display())).unwrap_or_default();
    Ok(format!("wrote {}{kept}; `systemctl restart docker` loads it\n", path.display()))
}

/// `vpnfix install`: puts vpnfix's files in place (or removes them) and says what it did.
pub fn install(args: &InstallArgs) -> Result<String, Error> {
    let binary = std::env::current_exe()
        .map_err(|source| crate::install::InstallError::ReadBinary { path: "/proc/self/exe".into(), source })?;
    let o = crate::install::InstallOptions {
        root: args.root.clone(),
        prefix: args.prefix.clone(),
        binary,
        dry_run: args.dry_run,
        uninstall: args.uninstall,
    };
    let report = crate::install::install(&o)?;
    match report.failed() {
        0 => Ok(report.to_string()),
        n => {
            print!("{report}"); // the report with its FAILED lines, then the exit status says so
            Err(Error::Uninstall(n))
        }
    }
}

/// `vpnfix explain ADDR…`: for a bundle or this host (where the kernel's own `route get` says
/// where each address goes).
pub fn explain(args: &ExplainArgs) -> Result<String, Error> {
    let env = environment();
    let s = sections_for(args.from.as_deref(), &args.select, &env)?;
    if s.facts.is_empty() {
        return Ok(format!("{NO_TUNNEL}\n"));
    }
    let plans: Vec<plan::Plan> = s.facts.iter().map(|f| plan::plan(f, &s.config)).collect();
    // Each address is explained for the tunnel whose most specific push contains it.
    let section = |a: &std::net::IpAddr| {
        let len =
            |f: &crate::net::Facts| f.pushes.iter().filter(|p| p.dst.contains(a)).map(|p| p.dst.prefix_len()).max();
        (0..s.facts.len()).max_by_key(|i| (len(&s.facts[*i]), std::cmp::Reverse(*i))).unwrap_or(0)
    };
    let explain = |a: &std::net::IpAddr, live: Option<Option<String>>| {
        let i = section(a);
        crate::explain::explain(*a, &s.facts[i], &s.config, &plans[i], live)
    };
    let all: Vec<_> = match &args.from {
        Some(_) => args.addrs.iter().map(|a| explain(a, None)).collect(),
        None => {
            let answers = Kernel::connect()?.route_get_all(&args.addrs)?;
            args.addrs.iter().zip(answers).map(|(a, r)| explain(a, Some(r.ok().and_then(|r| r.dev)))).collect()
        }
    };
    Ok(if args.json {
        serde_json::to_string_pretty(&serde_json::json!({ "addresses": all }))? + "\n"
    } else {
        crate::explain::text(&all)
    })
}

/// `vpnfix status`: per tunnel, what vpnfix added, whether it is still there, and the conflicts
/// live now.
pub fn status(args: &StatusArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &Overrides::default());
    // Read-only: no directory yet means nothing recorded since boot, and nothing is created.
    let mut records = Vec::new();
    if let Some(dir) = StateDir::existing(&config.state_dir)? {
        let tunnels = match &args.dev {
            Some(d) => vec![d.clone()],
            None => dir.tunnels()?,
        };
        for t in &tunnels {
            let watcher = dir.read_watcher(t).map(|w| WatcherStatus { running: w.alive(), record: w });
            records.extend(dir.read(t)?.map(|s| (s, watcher)));
        }
    }
    let (statuses, unmanaged) = {
        let host = gather_host(&Kernel::connect()?, &config)?;
        let alive = |pid, id| matches!(crate::netns::Namespace::still(pid, id), Ok(Some(_)));
        let out: Vec<_> =
            records.into_iter().map(|(s, w)| crate::status::status(&s, &host, &config, w, alive)).collect();
        // VPN devices that are up with no record: a VPN whose hook is not set up (or not yet
        // run), with what vpnfix would add for the routes the kernel has through it.
        let unmanaged: Vec<(String, usize)> = discover::tunnels(&host.links, &host.addrs, &host.routes, config.proto)
            .into_iter()
            .filter(|i| !out.iter().any(|s| s.tunnel == i.tunnel.dev))
            .filter(|i| args.dev.as_ref().is_none_or(|d| *d == i.tunnel.dev))
            .map(|i| (i.tunnel.dev.clone(), plan::plan(&host.facts(i), &config).add.len()))
            .collect();
        (out, unmanaged)
    };
    Ok(if args.json {
        let unmanaged: Vec<serde_json::Value> =
            unmanaged.iter().map(|(dev, n)| serde_json::json!({"dev": dev, "wanted": n})).collect();
        serde_json::to_string_pretty(&serde_json::json!({ "tunnels": statuses, "unmanaged": unmanaged }))? + "\n"
    } else {
        let mut text = report::status_text(&statuses);
        for (dev, wanted) in unmanaged {
            text.push_str(&format!(
                "{dev}: no vpnfix record, {wanted} route(s) wanted now for the routes through it (`vpnfix plan --dev {dev}` shows them); if a VPN runs there, its OpenVPN config needs `script-security 2` and `route-up /usr/local/bin/vpnfix` (openvpn/vpnfix.conf), or NetworkManager the dispatcher script (`vpnfix install`)\n"
            ));
        }
        text
    })
}
