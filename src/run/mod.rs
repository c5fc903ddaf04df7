//! The one place that ties the pieces together: hook input, bundles, the kernel and Docker
//! adapters, configuration, the planner, apply and the reports. Each command is a function from
//! its arguments to what it prints (or, for hooks, to the exit status OpenVPN needs). Here: the
//! errors, configuration and the gathering of facts every command shares; `lifecycle` has
//! connect and disconnect, `commands` the ones that change no route.

mod commands;
mod lifecycle;

pub use commands::{explain, install, plan, snapshot, status, suggest};
pub use lifecycle::{apply, cleanup, hook};

use crate::apply::ApplyError;
use crate::bundle::{self, BundleError};
use crate::cli::Selection;
use crate::config::{parse_kv_lines, Config, CONF_FILE};
use crate::docker;
use crate::hook::{self, openvpn::HookError, HookInput};
use crate::kernel::{Kernel, KernelError};
use crate::net::{Facts, Push, Skipped};
use crate::state::StateError;
use log::warn;

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
