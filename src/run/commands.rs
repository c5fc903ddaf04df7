//! The commands that look and advise without changing routes: `plan`, `snapshot`, `explain`,
//! `status`, `suggest` (which writes daemon.json only when asked) and `install`.

use super::{environment, facts_for, facts_from_bundle, gather, load_config, runtime, selected_input, Error};
use crate::cli::{ExplainArgs, InstallArgs, PlanArgs, SnapshotArgs, StatusArgs, SuggestArgs};
use crate::hook::{self, HookInput};
use crate::kernel::Kernel;
use crate::state::StateDir;
use crate::{bundle, plan, report};
use log::info;

/// `vpnfix plan`: the plan for a bundle or for this host, as text or JSON. Changes nothing.
pub fn plan(args: &PlanArgs) -> Result<String, Error> {
    let env = environment();
    let (facts, config) = facts_for(args.from.as_deref(), &args.select, &env)?;
    let plan = plan::plan(&facts, &config);
    Ok(if args.json { serde_json::to_string_pretty(&plan)? + "\n" } else { report::plan_text(&facts, &plan) })
}

/// `vpnfix snapshot DIR`: writes this host's facts as a bundle.
pub fn snapshot(args: &SnapshotArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &[]);
    let hook_env: Vec<(String, String)> = env.iter().filter(|(k, _)| is_hook_variable(k)).cloned().collect();
    let g = runtime().block_on(async {
        let k = Kernel::connect()?;
        let input = hook::openvpn::parse(hook_env.clone(), &[], None).unwrap_or_default();
        gather(&k, &config, &env, input).await
    })?;
    let f = &g.facts;
    let snap = bundle::Snapshot {
        routes: &f.routes,
        links: &f.links,
        addrs: &f.addrs,
        neighbours: &f.neighbours,
        docker: g.docker.as_deref(),
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
    let (facts, config) = facts_for(args.from.as_deref(), &args.select, &env)?;
    let plan = plan::plan(&facts, &config);
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
    let all = match &args.from {
        Some(dir) => {
            let (facts, config) = facts_from_bundle(bundle::read(dir)?, &args.select)?;
            let plan = plan::plan(&facts, &config);
            args.addrs.iter().map(|a| crate::explain::explain(*a, &facts, &config, &plan, None)).collect::<Vec<_>>()
        }
        None => {
            let config = load_config(&env, &args.select.config_layer());
            let input = selected_input(&env, &[], &args.select).unwrap_or_default();
            runtime().block_on(async {
                let k = Kernel::connect()?;
                let g = gather(&k, &config, &env, input).await?;
                let plan = plan::plan(&g.facts, &config);
                let mut out = Vec::new();
                for a in &args.addrs {
                    let dev = k.route_get(*a).await.ok().and_then(|r| r.dev);
                    out.push(crate::explain::explain(*a, &g.facts, &config, &plan, Some(dev)));
                }
                Ok::<_, Error>(out)
            })?
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
    let config = load_config(&env, &[]);
    // Read-only: no directory yet means nothing recorded since boot, and nothing is created.
    let mut records = Vec::new();
    if let Some(dir) = StateDir::existing(&config.state_dir)? {
        let tunnels = match &args.dev {
            Some(d) => vec![d.clone()],
            None => dir.tunnels()?,
        };
        for t in &tunnels {
            records.extend(dir.read(t)?);
        }
    }
    let (statuses, unmanaged) = runtime().block_on(async {
        let k = Kernel::connect()?;
        let g = gather(&k, &config, &env, HookInput::default()).await?;
        let out: Vec<_> = records.iter().map(|s| crate::status::status(s, &g.facts, &config)).collect();
        // tun/tap devices vpnfix has no record of: a VPN whose hook is not set up (or not yet run).
        let unmanaged: Vec<String> = g
            .facts
            .links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("tun") && !out.iter().any(|s| s.tunnel == l.name))
            .filter(|l| args.dev.as_ref().is_none_or(|d| *d == l.name))
            .map(|l| l.name.clone())
            .collect();
        Ok::<_, Error>((out, unmanaged))
    })?;
    Ok(if args.json {
        serde_json::to_string_pretty(&serde_json::json!({ "tunnels": statuses, "unmanaged": unmanaged }))? + "\n"
    } else {
        let mut text = report::status_text(&statuses);
        for dev in unmanaged {
            text.push_str(&format!(
                "{dev}: no vpnfix record; if a VPN runs there, its OpenVPN config needs `script-security 2` and `route-up /usr/local/bin/vpnfix` (openvpn/vpnfix.conf), or NetworkManager the dispatcher script (`vpnfix install`)\n"
            ));
        }
        text
    })
}
