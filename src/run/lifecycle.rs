//! Connect and disconnect: the hooks OpenVPN and NetworkManager run, and their manual forms
//! `apply` and `cleanup`. Connect stops at the first hard failure and leaves a true record;
//! disconnect tries every removal and reports all failures.

use super::{chain, environment, gather, load_config, selected_input, Error};
use crate::apply::{self, ApplyError};
use crate::cli::{CleanupArgs, Selection};
use crate::config::{Config, Overrides};
use crate::hook::{Event, HookInput, Invocation, Source};
use crate::kernel::Kernel;
use crate::net::{Facts, Tunnel};
use crate::state::{StateDir, StateError};
use crate::{plan, report};
use log::{debug, error, info, warn};
use std::process::ExitCode;

/// `vpnfix apply`: what route-up does, by hand.
pub fn apply(sel: &Selection) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &sel.overrides());
    let input = selected_input(&env, sel)?;
    connect(&config, input).map(|n| format!("{n}\n"))
}

/// `vpnfix cleanup`: undoes what the state records for one tunnel, or everything vpnfix added.
pub fn cleanup(args: &CleanupArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &Overrides::default());
    let k = Kernel::connect()?;
    let mut failed = 0;
    // `--all` needs no state: every route with vpnfix's protocol number goes.
    if args.all {
        failed += report_removed(apply::sweep_all(&k, config.proto)?);
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
        failed += report_removed(apply::remove(&k, &dir, &t)?);
    }
    if failed > 0 {
        return Err(Error::Partial(failed));
    }
    Ok(String::new())
}

fn report_removed(r: apply::Removed) -> usize {
    for e in &r.failed {
        error!("{}", chain(e));
    }
    debug!("removed {}, already gone {}", r.deleted, r.gone);
    r.failed.len()
}

/// Gather (vpnfix's own routes included), plan, reconcile, for one tunnel; returns a one-line
/// summary.
pub(super) fn connect(config: &Config, input: HookInput) -> Result<String, Error> {
    let dev = input.tunnel.dev.clone();
    let k = Kernel::connect()?;
    if config.dry_run {
        let g = gather(&k, config, input)?;
        let p = plan::plan(&g, config);
        return Ok(report::plan_text(&g, &p));
    }
    let dir = StateDir::open(&config.state_dir)?;
    let _lock = dir.lock(&dev)?;
    let connection = input.connection.clone();
    let g = gather(&k, config, input)?;
    let done = reconcile_locked(&k, &dir, config, &g, connection.as_deref(), &mut Said::default())?;
    let mut line = format!(
        "{dev}: {} route(s) added, {} already there, {} removed, {} blocked by foreign routes, {} not verified",
        done.added, done.present, done.removed, done.blocked, done.unverified
    );
    let i = &done.inside;
    if i.containers + i.failed + i.removed > 0 {
        line += &format!(
            "; inside {} container(s): {} added, {} removed, {} container(s) not reached",
            i.containers, i.added, i.removed, i.failed
        );
    }
    Ok(line)
}

/// Plans for the facts and reconciles, the tunnel's lock held.
fn reconcile_locked(
    k: &Kernel,
    dir: &StateDir,
    config: &Config,
    g: &Facts,
    connection: Option<&str>,
    said: &mut Said,
) -> Result<apply::Installed, Error> {
    let dev = g.tunnel.dev.as_str();
    if !g.links.iter().any(|l| l.name == dev) {
        return Err(Error::NoTunnel(dev.to_string()));
    }
    let p = plan::plan(g, config);
    for s in &p.skipped {
        if said.insert(s.to_string()) {
            warn!("{s}");
        }
    }
    for n in &p.notes {
        if said.insert(n.to_string()) {
            info!("{n}");
        }
    }
    let vpn = apply::Vpn { pushes: &g.pushes, connection, device: Some(&g.tunnel) };
    let mut done = apply::reconcile(k, dir, &p, &vpn, &g.routes, &g.links, config.proto)?;
    let inside = apply::reconcile_containers(dir, &p, &vpn, config.proto, config.docker_timeout_ms)?;
    if inside.added + inside.removed > 0 || inside.containers > 0 {
        debug!(
            "inside containers: {} added, {} removed; {} container(s) hold routes, {} could not be reached",
            inside.added, inside.removed, inside.containers, inside.failed
        );
    }
    done.inside = inside;
    Ok(done)
}

/// The plan's notes and skipped items already said: a watcher says each once, not at every
/// reconcile.
pub(super) type Said = std::collections::HashSet<String>;

/// What the watcher's reconcile did.
pub(super) enum Kept {
    /// The plan was reconciled: how many routes were added or removed.
    Reconciled(usize),
    /// The tunnel has no record any more: its disconnect ran (and removed the routes).
    NoRecord,
    /// An engine did not answer: nothing was changed (its containers would have lost their
    /// blocks to the VPN); the reason, for the log.
    Held(String),
}

/// The watcher's reconcile: under the tunnel's lock, the tunnel's record (its pushes, as the
/// connect hook recorded them; none when a disconnect has run meanwhile), a fresh gather, and
/// only the difference applied. Nothing is changed while an engine that is `up` (its event stream
/// is: it should answer) is silent; an engine that never answered is planned without.
pub(super) fn keep_recorded(
    config: &Config,
    dev: &str,
    said: &mut Said,
    up: impl Fn(&str) -> bool,
) -> Result<Kept, Error> {
    let k = Kernel::connect()?;
    let dir = StateDir::open(&config.state_dir)?;
    let _lock = dir.lock(dev)?;
    let Some(state) = dir.read(dev)? else { return Ok(Kept::NoRecord) };
    let g = super::gather_all(&k, config)?;
    if let Some(e) = g.silent.iter().find(|e| up(e.host())) {
        return Ok(Kept::Held(chain(e)));
    }
    let tunnel = state.device.filter(|t| t.dev == dev).unwrap_or(Tunnel { dev: dev.to_string(), ..Tunnel::default() });
    let input = HookInput { tunnel, pushes: state.pushes, ..HookInput::default() };
    let facts = g.host.into_facts(input);
    let done = reconcile_locked(&k, &dir, config, &facts, state.connection.as_deref(), said)?;
    Ok(Kept::Reconciled(done.added + done.removed + done.inside.added + done.inside.removed))
}

/// Undoes a tunnel's routes; without the privilege to, says once what happens instead. A
/// disconnect that names no tunnel with a record (NetworkManager's `vpn-down` after the VPN
/// died names the parent device) finds the record by the connection's identity.
pub(super) fn disconnect(config: &Config, input: &HookInput) -> Result<(), Error> {
    let dev = input.tunnel.dev.as_str();
    if !crate::privilege::may_change_routes() {
        warn!(
            "running unprivileged (OpenVPN `user`/`group`?): cannot remove routes; the tunnel's routes die with {dev}, \
             bridge routes are swept at the next connect or by `vpnfix cleanup` as root"
        );
        return Ok(());
    }
    let k = Kernel::connect()?;
    let dir = StateDir::open(&config.state_dir)?;
    let owner = match (dir.tunnels()?.iter().any(|t| t == dev), input.connection.as_deref()) {
        (false, Some(uuid)) => dir.tunnel_of(uuid)?,
        _ => None,
    };
    if let Some(t) = &owner {
        info!(
            "{dev} is not a tunnel with a record; connection {} was {t}'s: removing its routes",
            input.connection.as_deref().unwrap_or_default()
        );
    }
    let dev = owner.as_deref().unwrap_or(dev);
    let _lock = dir.lock(dev)?;
    match apply::remove(&k, &dir, dev) {
        Ok(r) => match report_removed(r) {
            0 => Ok(()),
            n => Err(Error::Partial(n)),
        },
        Err(ApplyError::State(e @ StateError::Corrupt { .. })) => {
            warn!("{}", chain(&e));
            report_removed(apply::sweep(&k, &dir, dev, config.proto)?);
            dir.remove(dev)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs a hook and returns the exit status its caller needs: always 0 from OpenVPN's `up`,
/// `route-pre-down` and `down` (non-zero there aborts or kills OpenVPN) and from
/// NetworkManager's disconnect actions; from a connect (`route-up`, `vpn-up`) non-zero only
/// when `VPNFIX_STRICT` is set and something failed.
pub fn hook(inv: Invocation) -> ExitCode {
    match hook_in(inv, &environment()) {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

/// [`hook`] with the environment given (OpenVPN's plugin hands each event's): whether the
/// caller must be told the hook failed.
pub fn hook_in(inv: Invocation, env: &[(String, String)]) -> bool {
    let env = env.to_vec();
    let config = load_config(&env, &Overrides::default());
    let input = inv.parse(&env);
    let strict_exit = config.strict
        && match (&inv.source, &input) {
            (Source::OpenVpn { .. }, Ok(i)) => i.script_type.as_deref() == Some("route-up"),
            (Source::OpenVpn { mode }, Err(_)) => {
                let named =
                    mode.clone().or_else(|| env.iter().find(|(k, _)| k == "script_type").map(|(_, v)| v.clone()));
                named.as_deref() == Some("route-up")
            }
            (Source::NetworkManager | Source::Vpnc { .. } | Source::WgQuick, Ok(i)) => i.event == Some(Event::Connect),
            (Source::NetworkManager | Source::Vpnc { .. } | Source::WgQuick, Err(_)) => false,
        };
    // vpnc-script's connect.d: before it touches a route, say which pushes it must not add.
    if let (Source::Vpnc { phase }, Ok(input)) = (&inv.source, &input) {
        if phase == "connect" {
            if let Some(sh) = vpnc_withhold(input) {
                print!("{sh}");
            }
            return false;
        }
    }
    let failed = match input {
        Err(e) => {
            error!("{e}; nothing done");
            true
        }
        Ok(input) => run_event(&config, input).map_err(|e| error!("{}", chain(&e))).is_err(),
    };
    failed && strict_exit
}

/// The `sh` that takes out of vpnc-script's IPv4 split-include list every push whose prefix is
/// a bridge's own route: vpnc-script's `ip route replace` would take that route's place (and its
/// disconnect delete it). The connect after it (post-connect.d) plans with them all. `None`
/// when none is, or the kernel cannot be read (said; vpnc-script then acts as it would).
fn vpnc_withhold(input: &HookInput) -> Option<String> {
    for s in &input.skipped {
        warn!("{s}");
    }
    let k = Kernel::connect()
        .map_err(|e| warn!("{}; vpnc-script's routes left as the server sent them", chain(&e)))
        .ok()?;
    let (routes, links) = match (k.routes(), k.links()) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => {
            warn!("{}; vpnc-script's routes left as the server sent them", chain(&e));
            return None;
        }
    };
    let held = crate::hook::vpnc::to_withhold(&input.pushes, &routes, &links);
    for h in &held {
        info!("{h}: a bridge's own route; withheld from vpnc-script (its `ip route replace` would take the bridge's place), routed by vpnfix after it");
    }
    crate::hook::vpnc::withheld(input, &held)
}

fn run_event(config: &Config, input: HookInput) -> Result<(), Error> {
    match input.event {
        Some(Event::Connect) => {
            let dev = input.tunnel.dev.clone();
            let done = connect(config, input);
            if config.watch
                && !config.dry_run
                && !matches!(done, Err(Error::NoTunnel(_)))
                && crate::privilege::may_change_routes()
            {
                super::watch::start(&dev);
            }
            // Not inside `debug!`: its arguments are evaluated only when debug is on.
            let summary = done?;
            debug!("{summary}");
            Ok(())
        }
        Some(Event::Disconnect) => disconnect(config, &input),
        None => {
            debug!("nothing to do for script_type {:?}", input.script_type);
            Ok(())
        }
    }
}
