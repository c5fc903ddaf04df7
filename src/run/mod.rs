//! The one place that ties the pieces together: hook input, bundles, the kernel and Docker
//! adapters, configuration, the planner, apply and the reports. Each command is a function from
//! its arguments to what it prints (or, for hooks, to the exit status OpenVPN needs). Here: the
//! errors, configuration and the gathering of facts every command shares; `lifecycle` has
//! connect and disconnect, `commands` the ones that change no route.

mod commands;
mod lifecycle;
mod watch;

pub use commands::{explain, install, plan, snapshot, status, suggest};
pub use lifecycle::{apply, cleanup, hook, hook_in};
pub use watch::watch;

use crate::apply::ApplyError;
use crate::bundle::{self, BundleError};
use crate::cli::Selection;
use crate::config::{parse_kv_lines, Config, Overrides, CONF_FILE, CONF_FILE_VAR};
use crate::docker;
use crate::hook::{self, discover, openvpn::HookError, HookInput};
use crate::kernel::{Kernel, KernelError};
use crate::net::{Facts, Host, Push};
use crate::state::StateError;
use log::{debug, warn};

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
    /// The hook environment names its tunnel wrongly.
    #[error("{0}")]
    HookEnv(String),
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
        match self {
            Error::State(e) if e.is_read_denied() => Some("vpnfix's records are root's: run as root (sudo)"),
            Error::Kernel(e) | Error::Apply(ApplyError::Kernel(e) | ApplyError::Stopped { source: e, .. })
                if kernel(e) =>
            {
                Some(CHANGING)
            }
            Error::State(e) | Error::Apply(ApplyError::State(e)) if e.is_denied() => Some(CHANGING),
            _ => None,
        }
    }
}

/// The hint for a refused change.
const CHANGING: &str =
    "run as root (sudo), or give vpnfix CAP_NET_ADMIN; `vpnfix plan` is the dry run that needs neither";

pub use crate::logging::chain;

/// The process environment, lossily decoded (a hook's environment comes from the VPN).
pub fn environment() -> Vec<(String, String)> {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}

/// Configuration from `/etc/vpnfix.conf` (or the file `VPNFIX_CONF_FILE` names), the
/// environment and the command line's overrides, in that order.
pub(crate) fn load_config(env: &[(String, String)], flags: &Overrides) -> Config {
    let path = env.iter().find(|(k, _)| k == CONF_FILE_VAR).map_or(CONF_FILE, |(_, v)| v.as_str());
    let file = match std::fs::read_to_string(path) {
        Ok(text) => parse_kv_lines(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!("cannot read {path} ({e}); using the environment and defaults");
            Vec::new()
        }
    };
    let (config, skipped) = Config::from_layers([file.as_slice(), env]);
    let config = config.overridden(flags);
    crate::logging::set_level(config.log);
    for s in skipped {
        warn!("{s}");
    }
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime starts")
}

/// The tunnel and pushes of the hook environment (OpenVPN's or NetworkManager's, see
/// [`hook::from_environment`]) or, outside one, of `--dev` alone; `--dev` and `--route`
/// override. An error when neither names a tunnel.
fn selected_input(env: &[(String, String)], sel: &Selection) -> Result<HookInput, Error> {
    let mut input = match hook::from_environment(env) {
        Some(parsed) => parsed.map_err(Error::HookEnv)?,
        None => HookInput::default(),
    };
    if let Some(dev) = &sel.dev {
        input.tunnel.dev = dev.clone();
    }
    if input.tunnel.dev.is_empty() {
        return Err(HookError::NoDevice.into());
    }
    if !sel.routes.is_empty() {
        input.pushes = route_flags(sel);
    }
    Ok(input)
}

fn route_flags(sel: &Selection) -> Vec<Push> {
    sel.routes.iter().map(|r| Push { dst: r.trunc(), gateway: None, metric: None, origin: "--route".into() }).collect()
}

/// The kernel's tables and the engines' networks (kernel facts alone, with one warning, when no
/// engine can be asked).
fn gather_host(k: &Kernel, config: &Config) -> Result<Host, Error> {
    Ok(gather_raw(k, config)?.0)
}

/// The same, with the engines' own descriptions (what `snapshot` writes as docker.json).
fn gather_raw(k: &Kernel, config: &Config) -> Result<(Host, Option<Vec<docker::EngineNetwork>>), Error> {
    let g = gather_all(k, config)?;
    let answered = g.answered;
    for e in &g.silent {
        match answered {
            0 => warn!("{}; planning with the kernel's facts only", chain(e)),
            _ => warn!("{}; planning without its networks", chain(e)),
        }
    }
    Ok((g.host, g.raw))
}

/// What one gathering found.
struct Gathered {
    host: Host,
    /// The engines' own descriptions of their networks; `None` when none answered.
    raw: Option<Vec<docker::EngineNetwork>>,
    /// How many engines answered.
    answered: usize,
    /// Why each engine that was asked did not answer.
    silent: Vec<docker::DockerError>,
}

/// The kernel's tables and every engine's networks, saying nothing of the engines that did not
/// answer (the caller decides what their silence means).
fn gather_all(k: &Kernel, config: &Config) -> Result<Gathered, Error> {
    let hosts = docker::engine_hosts(config.docker_host.as_deref(), |p| p.exists());
    if hosts.is_empty() {
        debug!("no container engine: DOCKER_HOST is unset and none of {} exists", docker::USUAL_SOCKETS.join(", "));
    }
    // The engines are asked on a thread of their own (bollard needs tokio, nothing else here
    // does) while this one reads the kernel's tables, a dump at a time (one netlink socket runs
    // one dump at a time: a second one gets EBUSY).
    let ms = config.docker_timeout_ms;
    let (mut silent, live): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|h| docker::missing(h).is_some());
    let mut silent: Vec<docker::DockerError> = silent.drain(..).filter_map(|h| docker::missing(&h)).collect();
    let (tables, answers) = std::thread::scope(|s| {
        let engines = (!live.is_empty()).then(|| s.spawn(|| runtime().block_on(docker::inspect_all(&live, ms))));
        let tables = (|| Ok::<_, KernelError>((k.routes()?, k.links()?, k.addrs()?, k.neighbours()?)))();
        (tables, engines.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).unwrap_or_default())
    });
    let (routes, links, addrs, neighbours) = tables?;
    let mut raw: Option<Vec<docker::EngineNetwork>> = None;
    let mut answered = 0;
    for a in answers {
        match a {
            Ok(a) => {
                debug!("{} at {}: {} network(s)", a.engine.title(), a.host, a.networks.len());
                answered += 1;
                raw.get_or_insert_with(Vec::new).extend(a.networks);
            }
            Err(e) => silent.push(e),
        }
    }
    let mut skipped = Vec::new();
    let docker = raw.as_ref().map(|ns| ns.iter().filter_map(|n| docker::from_inspect(n, &mut skipped)).collect());
    Ok(Gathered { host: Host { routes, links, addrs, neighbours, docker, skipped }, raw, answered, silent })
}

/// Facts of this host for one hook input.
fn gather(k: &Kernel, config: &Config, input: HookInput) -> Result<Facts, Error> {
    Ok(gather_host(k, config)?.into_facts(input))
}

/// What a manual command is about: the tunnels (each with its pushes) and the host.
struct Selected {
    config: Config,
    inputs: Vec<HookInput>,
    /// Whether the tunnels and their pushes were read from the kernel (no hook environment).
    discovered: bool,
    host: Host,
}

/// Facts per tunnel, ready to plan.
struct Sections {
    config: Config,
    /// Facts per tunnel, by tunnel name.
    facts: Vec<Facts>,
    /// Whether the tunnels and their pushes were read from the kernel (no hook environment).
    discovered: bool,
}

impl Selected {
    /// Facts per tunnel: the host's tables move into the last, the others get copies (one
    /// tunnel, the usual case, copies nothing: a 100,000-route bundle is held once).
    fn into_sections(self) -> Sections {
        let Selected { config, mut inputs, discovered, host } = self;
        let last = inputs.pop();
        let mut facts: Vec<Facts> = inputs.into_iter().map(|i| host.facts(i)).collect();
        facts.extend(last.map(|i| host.into_facts(i)));
        Sections { config, facts, discovered }
    }
}

/// The tunnels a manual command is about. Inside a hook environment (OpenVPN's or
/// NetworkManager's, live or a bundle's): that tunnel and its pushes. Else the tunnel `--dev`
/// names, or every VPN tunnel that is up, each with the kernel's routes through it as its
/// pushes. `--route` replaces the pushes.
fn select(host: Host, env: &[(String, String)], sel: &Selection, config: Config) -> Result<Selected, Error> {
    if hook::from_environment(env).is_some() {
        let inputs = vec![selected_input(env, sel)?];
        return Ok(Selected { config, inputs, discovered: false, host });
    }
    let mut inputs = match &sel.dev {
        Some(dev) => vec![discover::tunnel(dev, &host.links, &host.addrs, &host.routes, config.proto)],
        None => discover::tunnels(&host.links, &host.addrs, &host.routes, config.proto),
    };
    if !sel.routes.is_empty() {
        inputs.iter_mut().for_each(|i| i.pushes = route_flags(sel));
    }
    Ok(Selected { config, inputs, discovered: true, host })
}

/// The selection for a bundle (`--from DIR`) or, without one, for this host.
fn select_for(from: Option<&std::path::Path>, sel: &Selection, env: &[(String, String)]) -> Result<Selected, Error> {
    if let Some(dir) = from {
        let bundle::Bundle { mut host, env: benv } = bundle::read(dir)?;
        let (config, config_skipped) = Config::from_layers([benv.as_slice()]);
        host.skipped.splice(0..0, config_skipped);
        return select(host, &benv, sel, config.overridden(&sel.overrides()));
    }
    let config = load_config(env, &sel.overrides());
    let host = gather_host(&Kernel::connect()?, &config)?;
    select(host, env, sel, config)
}

/// Facts per tunnel for a bundle or this host.
fn sections_for(from: Option<&std::path::Path>, sel: &Selection, env: &[(String, String)]) -> Result<Sections, Error> {
    Ok(select_for(from, sel, env)?.into_sections())
}

/// The line for a host where no VPN tunnel is up.
const NO_TUNNEL: &str = "no VPN tunnel is up here (no tun, tap or WireGuard device): nothing to plan. \
`vpnfix plan --from examples/laptop-docker` shows vpnfix at work on a laptop with Docker; \
`--dev DEV --route CIDR` plans for a VPN by hand";

/// The line for a tunnel whose pushes were read from the kernel.
const REFUSED_HINT: &str = "pushes were read from the kernel's table; a route the VPN pushed that the kernel \
refused (\"File exists\": the same prefix as a bridge's) is not there: give it with --route CIDR";
