//! The one place that ties the pieces together: hook input, bundles, the kernel and Docker
//! adapters, configuration, the planner, apply and the reports. Each command is a function from
//! its arguments to what it prints (or, for hooks, to the exit status OpenVPN needs).

use crate::apply::{self, ApplyError};
use crate::bundle::{self, BundleError};
use crate::cli::{CleanupArgs, ExplainArgs, InstallArgs, PlanArgs, Selection, SnapshotArgs, StatusArgs, SuggestArgs};
use crate::config::{parse_kv_lines, Config, CONF_FILE};
use crate::hook::{self, openvpn::HookError, Event, HookInput, Invocation, Source};
use crate::kernel::{Kernel, KernelError};
use crate::net::{Facts, Push, Skipped};
use crate::state::{StateDir, StateError};
use crate::{docker, plan, report};
use log::{debug, error, info, warn};
use std::process::ExitCode;

/// A command that could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle could not be read or written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The hook environment does not name a tunnel.
    #[error("cannot tell the tunnel (give --dev DEV, or an environment with dev=)")]
    Hook(#[from] HookError),
    /// The kernel could not be asked.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Applying or undoing failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The state could not be kept.
    #[error(transparent)]
    State(#[from] StateError),
    /// The output could not be serialized.
    #[error("cannot render JSON")]
    Json(#[from] serde_json::Error),
    /// The tunnel device does not exist.
    #[error("device {0} does not exist; nothing done")]
    NoTunnel(String),
    /// Installing or uninstalling failed.
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    /// Some removals of `install --uninstall` failed (each is in the report).
    #[error("{0} removal(s) failed; the manifest stays for another `vpnfix install --uninstall`")]
    Uninstall(usize),
    /// Some removals failed.
    #[error("{0} route(s) could not be removed; they stay recorded for `vpnfix cleanup`")]
    Partial(usize),
    /// daemon.json could not be read or written.
    #[error(transparent)]
    Suggest(#[from] crate::suggest::SuggestError),
}

impl Error {
    /// What to do about it, when the error says: changing routes and `/run/vpnfix` need root.
    pub fn hint(&self) -> Option<&'static str> {
        let kernel = |e: &KernelError| e.is_permission();
        let denied = |e: &StateError| matches!(e, StateError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied);
        let reading = |e: &StateError| matches!(e, StateError::Io { what: "list" | "read" | "inspect", .. });
        match self {
            Error::State(e) if denied(e) && reading(e) => Some("vpnfix's records are root's: run as root (sudo)"),
            Error::Kernel(e) | Error::Apply(ApplyError::Kernel(e) | ApplyError::Stopped { source: e, .. })
                if kernel(e) =>
            {
                Some(CHANGING)
            }
            Error::State(e) | Error::Apply(ApplyError::State(e)) if denied(e) => Some(CHANGING),
            _ => None,
        }
    }
}

/// The hint for a refused change.
const CHANGING: &str =
    "run as root (sudo), or give vpnfix CAP_NET_ADMIN; `vpnfix plan` is the dry run that needs neither";

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some libraries (bollard, hyper) already print their cause: don't say it twice.
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// The process environment, lossily decoded (a hook's environment comes from the VPN).
pub fn environment() -> Vec<(String, String)> {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}

/// Configuration from `/etc/vpnfix.conf`, the environment and the flags, in that order.
fn load_config(env: &[(String, String)], flags: &[(String, String)]) -> Config {
    let file = match std::fs::read_to_string(CONF_FILE) {
        Ok(text) => parse_kv_lines(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!("cannot read {CONF_FILE} ({e}); using the environment and defaults");
            Vec::new()
        }
    };
    let (config, skipped) = Config::from_layers([file.as_slice(), env, flags]);
    crate::logging::set_level(config.log);
    for s in skipped {
        warn!("{s}");
    }
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime starts")
}

/// The hook's tunnel and pushes, with the command line's overrides.
fn selected_input(env: &[(String, String)], args: &[String], sel: &Selection) -> Result<HookInput, HookError> {
    let mut env = env.to_vec();
    if let Some(dev) = &sel.dev {
        env.retain(|(k, _)| k != "dev");
        env.push(("dev".into(), dev.clone()));
    }
    let mut input = hook::openvpn::parse(env, args, None)?;
    if !sel.routes.is_empty() {
        input.pushes = sel
            .routes
            .iter()
            .map(|r| Push { dst: r.trunc(), gateway: None, metric: None, origin: "--route".into() })
            .collect();
    }
    Ok(input)
}

/// Facts of this host: the kernel's tables and Docker's networks (kernel facts alone, with one
/// warning, when Docker cannot be asked).
async fn gather(k: &Kernel, config: &Config, env: &[(String, String)], input: HookInput) -> Result<Gathered, Error> {
    let host = env.iter().find(|(k, _)| k == "DOCKER_HOST").map_or(docker::DEFAULT_HOST, |(_, v)| v.as_str());
    // One netlink socket runs one dump at a time (a second one gets EBUSY), so the kernel's
    // tables are read in turn while Docker is asked alongside.
    let kernel =
        async { Ok::<_, KernelError>((k.routes().await?, k.links().await?, k.addrs().await?, k.neighbours().await?)) };
    let (tables, docker) = tokio::join!(kernel, docker::inspect_all(host, config.docker_timeout_ms));
    let (routes, links, addrs, neighbours) = tables?;
    let mut skipped: Vec<Skipped> = input.skipped;
    let raw = match docker {
        Ok(raw) => Some(raw),
        Err(e) => {
            warn!("{}; planning with the kernel's facts only", chain(&e));
            None
        }
    };
    let networks = raw.as_ref().map(|ns| ns.iter().filter_map(|n| docker::from_inspect(n, &mut skipped)).collect());
    let facts = Facts::new(input.tunnel, input.pushes, routes, links, addrs, neighbours, networks, skipped);
    Ok(Gathered { facts, docker: raw })
}

struct Gathered {
    facts: Facts,
    docker: Option<Vec<bollard::models::NetworkInspect>>,
}

/// `vpnfix plan`: the plan for a bundle or for this host, as text or JSON. Changes nothing.
pub fn plan(args: &PlanArgs) -> Result<String, Error> {
    let env = environment();
    let (facts, config) = facts_for(args.from.as_deref(), &args.select, &env)?;
    let plan = plan::plan(&facts, &config);
    Ok(if args.json { serde_json::to_string_pretty(&plan)? + "\n" } else { report::plan_text(&facts, &plan) })
}

/// Facts and configuration from a bundle, with the command line's overrides.
fn facts_from_bundle(b: bundle::Bundle, sel: &Selection) -> Result<(Facts, Config), Error> {
    let input = selected_input(&b.env, &[], sel)?;
    let (config, config_skipped) = Config::from_layers([b.env.as_slice(), sel.config_layer().as_slice()]);
    Ok((b.into_facts(input, config_skipped), config))
}

/// Facts and configuration for a bundle (`--from DIR`) or, without one, for this host.
fn facts_for(
    from: Option<&std::path::Path>,
    sel: &Selection,
    env: &[(String, String)],
) -> Result<(Facts, Config), Error> {
    if let Some(dir) = from {
        return facts_from_bundle(bundle::read(dir)?, sel);
    }
    let config = load_config(env, &sel.config_layer());
    let input = selected_input(env, &[], sel)?;
    let facts = runtime().block_on(async {
        let k = Kernel::connect()?;
        gather(&k, &config, env, input).await.map(|g| g.facts)
    })?;
    Ok((facts, config))
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

/// `vpnfix apply`: what route-up does, by hand.
pub fn apply(sel: &Selection) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &sel.config_layer());
    let input = selected_input(&env, &[], sel)?;
    connect(&config, &env, input).map(|n| format!("{n}\n"))
}

/// `vpnfix cleanup`: undoes what the state records for one tunnel, or everything vpnfix added.
pub fn cleanup(args: &CleanupArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &[]);
    runtime().block_on(async {
        let k = Kernel::connect()?;
        let mut failed = 0;
        // `--all` needs no state: every route with vpnfix's protocol number goes.
        if args.all {
            failed += report_removed(apply::sweep_all(&k, config.proto).await?);
        }
        let dir = match StateDir::open(&config.state_dir) {
            Ok(dir) => dir,
            Err(e) if args.all => {
                warn!("{}; the routes are gone, the state files stay", chain(&e));
                return Ok(String::new());
            }
            Err(e) => return Err(e.into()),
        };
        let tunnels = match &args.dev {
            Some(d) => vec![d.clone()],
            None => dir.tunnels()?,
        };
        for t in tunnels {
            let _lock = dir.lock(&t)?;
            failed += report_removed(apply::remove(&k, &dir, &t).await?);
        }
        if failed > 0 {
            return Err(Error::Partial(failed));
        }
        Ok(String::new())
    })
}

fn report_removed(r: apply::Removed) -> usize {
    for e in &r.failed {
        error!("{}", chain(e));
    }
    debug!("removed {}, already gone {}", r.deleted, r.gone);
    r.failed.len()
}

/// Sweep, gather, plan, install, for one tunnel; returns a one-line summary.
fn connect(config: &Config, env: &[(String, String)], input: HookInput) -> Result<String, Error> {
    let dev = input.tunnel.dev.clone();
    runtime().block_on(async {
        let k = Kernel::connect()?;
        if config.dry_run {
            let g = gather(&k, config, env, input).await?;
            let p = plan::plan(&g.facts, config);
            return Ok(report::plan_text(&g.facts, &p));
        }
        let dir = StateDir::open(&config.state_dir)?;
        let _lock = dir.lock(&dev)?;
        apply::sweep(&k, &dir, &dev, config.proto).await?;
        let g = gather(&k, config, env, input).await?;
        if !g.facts.links.iter().any(|l| l.name == dev) {
            return Err(Error::NoTunnel(dev.clone()));
        }
        let p = plan::plan(&g.facts, config);
        for s in &p.skipped {
            warn!("{s}");
        }
        for n in &p.notes {
            info!("{n}");
        }
        let done = apply::install(&k, &dir, &p, &g.facts.pushes, config.proto).await?;
        Ok(format!(
            "{dev}: {} route(s) added, {} already there, {} blocked by foreign routes, {} not verified",
            done.added, done.present, done.blocked, done.unverified
        ))
    })
}

/// Whether this process may change routes: CAP_NET_ADMIN (bit 12) in its effective set, as
/// root has and as systemd's `AmbientCapabilities=CAP_NET_ADMIN` gives an unprivileged unit.
fn may_change_routes() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim);
    eff.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Undoes a tunnel's routes; without the privilege to, says once what happens instead.
fn disconnect(config: &Config, dev: &str) -> Result<(), Error> {
    if !may_change_routes() {
        warn!(
            "running unprivileged (OpenVPN `user`/`group`?): cannot remove routes; the tunnel's routes die with {dev}, \
             bridge routes are swept at the next connect or by `vpnfix cleanup` as root"
        );
        return Ok(());
    }
    runtime().block_on(async {
        let k = Kernel::connect()?;
        let dir = StateDir::open(&config.state_dir)?;
        let _lock = dir.lock(dev)?;
        match apply::remove(&k, &dir, dev).await {
            Ok(r) => match report_removed(r) {
                0 => Ok(()),
                n => Err(Error::Partial(n)),
            },
            Err(ApplyError::State(e @ StateError::Corrupt { .. })) => {
                warn!("{}", chain(&e));
                apply::sweep(&k, &dir, dev, config.proto).await?;
                dir.remove(dev)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Runs a hook and returns the exit status its caller needs: always 0 from OpenVPN's `up`,
/// `route-pre-down` and `down` (non-zero there aborts or kills OpenVPN) and from
/// NetworkManager's disconnect actions; from a connect (`route-up`, `vpn-up`) non-zero only
/// when `VPNFIX_STRICT` is set and something failed.
pub fn hook(inv: Invocation) -> ExitCode {
    let env = environment();
    let config = load_config(&env, &[]);
    let input = inv.parse(&env);
    let strict_exit = config.strict
        && match (&inv.source, &input) {
            (Source::OpenVpn { .. }, Ok(i)) => i.script_type.as_deref() == Some("route-up"),
            (Source::OpenVpn { mode }, Err(_)) => {
                let named =
                    mode.clone().or_else(|| env.iter().find(|(k, _)| k == "script_type").map(|(_, v)| v.clone()));
                named.as_deref() == Some("route-up")
            }
            (Source::NetworkManager, Ok(i)) => i.event == Some(Event::Connect),
            (Source::NetworkManager, Err(_)) => false,
        };
    let failed = match input {
        Err(e) => {
            error!("{e}; nothing done");
            true
        }
        Ok(input) => run_event(&config, &env, input).map_err(|e| error!("{}", chain(&e))).is_err(),
    };
    if failed && strict_exit {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_event(config: &Config, env: &[(String, String)], input: HookInput) -> Result<(), Error> {
    match input.event {
        Some(Event::Connect) => {
            let summary = connect(config, env, input)?;
            debug!("{summary}");
            Ok(())
        }
        Some(Event::Disconnect) => disconnect(config, &input.tunnel.dev),
        None => {
            debug!("nothing to do for script_type {:?}", input.script_type);
            Ok(())
        }
    }
}
