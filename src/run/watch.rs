//! `vpnfix watch`: the rule kept true while a tunnel is up. Each burst of the kernel's link,
//! neighbour or route notifications is one reconcile with the tunnel's recorded pushes (a
//! container's address appearing, a network's bridge coming or going, a route of anyone's
//! changed by hand); when the tunnel device goes, every recorded route goes with it and the
//! watch ends. It sleeps in `recv` between notifications: no polling.

use super::lifecycle::{connect, disconnect};
use super::{environment, load_config, Error};
use crate::cli::WatchArgs;
use crate::config::{Config, Overrides};
use crate::hook::HookInput;
use crate::kernel::{Kernel, Notifications};
use crate::net::Tunnel;
use crate::state::StateDir;
use log::{info, warn};
use std::time::{Duration, Instant};

/// A burst ends after this long without a notification.
const QUIET: Duration = Duration::from_millis(50);
/// A burst that goes on longer is reconciled anyway.
const LONGEST: Duration = Duration::from_secs(1);

/// `vpnfix watch --dev DEV`: runs until the tunnel goes.
pub fn watch(args: &WatchArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &Overrides::default());
    let dev = args.dev.as_str();
    let dir = StateDir::open(&config.state_dir)?;
    let Some(_one) = dir.watch_lock(dev)? else {
        return Ok(format!("a watcher for {dev} is already running\n"));
    };
    // Subscribed before the first reconcile: nothing that happens after it is missed.
    let mut events = Notifications::open()?;
    let Some(input) = recorded(&dir, dev)? else {
        return Err(Error::NoRecord(dev.to_string()));
    };
    info!("watching {dev}: its routes follow the host's changes until it goes");
    keep(&config, &input);
    loop {
        let gone = burst(&mut events, dev)?;
        if gone || !exists(dev)? {
            info!("{dev} is gone: removing the routes recorded for it; the watch ends");
            disconnect(&config, &input)?;
            return Ok(String::new());
        }
        keep(&config, &input);
    }
}

/// Waits for a burst of notifications and lets it settle; whether the tunnel was deleted.
fn burst(events: &mut Notifications, dev: &str) -> Result<bool, Error> {
    let first = events.wait(None)?;
    let mut gone = first.links_gone.iter().any(|l| l == dev);
    let start = Instant::now();
    while start.elapsed() < LONGEST {
        let more = events.wait(Some(QUIET))?;
        if !more.any {
            break;
        }
        gone |= more.links_gone.iter().any(|l| l == dev);
    }
    Ok(gone)
}

/// One reconcile; a failure is said and the watch goes on (the next change tries again).
fn keep(config: &Config, input: &HookInput) {
    if let Err(e) = connect(config, input.clone()) {
        warn!("{}; still watching", super::chain(&e));
    }
}

/// The tunnel as its record describes it: its pushes and connection.
fn recorded(dir: &StateDir, dev: &str) -> Result<Option<HookInput>, Error> {
    let Some(state) = dir.read(dev)? else { return Ok(None) };
    Ok(Some(HookInput {
        tunnel: Tunnel { dev: dev.to_string(), ..Tunnel::default() },
        pushes: state.pushes,
        connection: state.connection,
        ..HookInput::default()
    }))
}

fn exists(dev: &str) -> Result<bool, Error> {
    Ok(Kernel::connect()?.links()?.iter().any(|l| l.name == dev))
}
