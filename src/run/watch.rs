//! `vpnfix watch`: the rule kept true while a tunnel is up. The connect hook starts it (see
//! [`start`]); an admin may run it as a service instead. Each burst of news — the kernel's
//! link, neighbour and route notifications, an engine's container and network events — is one
//! reconcile of the tunnel's recorded pushes against a fresh gather: a container started at an
//! address outside the kept blocks, a network made or removed, a route re-applied or deleted by
//! hand. When the tunnel device goes, every recorded route goes with it and the watch ends;
//! when the disconnect hook has removed the record, the watch just ends. It sleeps between
//! news: no polling. It keeps CAP_NET_ADMIN alone ([`crate::privilege`]).

mod sources;

use super::lifecycle::{disconnect, keep_recorded, Kept, Said};
use super::{environment, load_config, Error};
use crate::cli::WatchArgs;
use crate::config::{Config, Overrides};
use crate::docker::events::EngineEvent;
use crate::hook::HookInput;
use crate::kernel::Kernel;
use crate::net::Tunnel;
use crate::state::{StateDir, Watcher};
use log::{debug, info, warn};
use sources::{Burst, Pace, Wakes, CALM};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a watcher asked to stop waits for its tunnel to go before it leaves the routes.
const ENDING: Duration = Duration::from_secs(10);

/// Starts the tunnel's watcher, detached: `/proc/self/exe watch --dev DEV` (this very binary,
/// whatever PATH says), in a process group of its own (a supervisor's SIGTERM to the hook's
/// group does not reach it), with no stdin, stdout or stderr of the hook's (NetworkManager's
/// dispatcher and a shell's pipes are not held open; it logs to syslog) and only vpnfix's own
/// variables and `DOCKER_HOST` from the environment. A watcher already running for the tunnel
/// (a reconnect, OpenVPN's SIGUSR1) keeps the job: the new one sees its lock and leaves.
pub(super) fn start(dev: &str) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let env = std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(crate::config::is_config_var));
    let child = Command::new("/proc/self/exe")
        .arg0("vpnfix")
        .args(["watch", "--dev", dev])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match child {
        Ok(c) => debug!("watcher for {dev} started: pid {}", c.id()),
        Err(e) => warn!("cannot start the watcher for {dev} ({e}); the routes stay as this connect left them"),
    }
}

/// `vpnfix watch --dev DEV`: runs until the tunnel goes.
pub fn watch(args: &WatchArgs) -> Result<String, Error> {
    let env = environment();
    let config = load_config(&env, &Overrides::default());
    let dev = args.dev.as_str();
    let dir = StateDir::open(&config.state_dir)?;
    let Some(_one) = dir.watch_lock(dev)? else {
        debug!("a watcher for {dev} is already running");
        return Ok(format!("a watcher for {dev} is already running\n"));
    };
    match crate::privilege::keep_only_needed(config.container_routes) {
        Ok(kept) if kept.is_empty() => warn!("watching {dev} without CAP_NET_ADMIN: no route can be changed"),
        Ok(_) => {}
        Err(e) => warn!("{e}; watching with the privileges it has"),
    }
    if dir.read(dev)?.is_none() {
        // Run as a service (vpnfix-watch@DEV): the watch begins when the tunnel connects.
        info!("waiting for {dev} to connect (its record in {})", dir.path().display());
        dir.wait_for_record(dev)?;
    }
    let hosts = crate::docker::engine_hosts(config.docker_host.as_deref(), |p| p.exists());
    // Subscribed before the first reconcile: nothing that happens after it is missed.
    let mut wakes = Wakes::start(dev, &hosts, config.proto)?;
    let mut w = Watch {
        config,
        dir,
        dev,
        record: Watcher::default(),
        engines: BTreeMap::new(),
        said: Said::new(),
        last_reconcile: Instant::now(),
        storm: 0,
    };
    w.record = Watcher { pid: std::process::id(), since: now(), ..Watcher::default() };
    info!("watching {dev} (pid {}): its routes follow the host's changes until it goes", w.record.pid);
    let end = w.run(&mut wakes);
    let _ = w.dir.remove_watcher(dev);
    end.map(|()| String::new())
}

/// What a watch does next.
enum Next {
    /// Waits for news.
    Watch,
    /// Reconciles for news that began then.
    Reconcile(Instant),
    /// Ends: the record is gone, or the watch cannot go on.
    End,
    /// Removes the tunnel's routes and ends: the tunnel is gone.
    TunnelGone,
    /// Was asked to stop.
    Stop(nix::sys::signal::Signal),
}

/// A watch under way.
struct Watch<'a> {
    config: Config,
    dir: StateDir,
    dev: &'a str,
    record: Watcher,
    /// The engines whose event stream was up, and whether it is now (`false`: it broke and has
    /// not come back; while one has, nothing is changed, as its containers would lose their
    /// blocks to the VPN). One that is up should answer a gather.
    engines: BTreeMap<String, bool>,
    /// The plan's notes already said.
    said: Said,
    /// When the last reconcile ended.
    last_reconcile: Instant,
    /// How many reconciles the news has cost since it was last calm.
    storm: u32,
}

impl Watch<'_> {
    fn run(&mut self, wakes: &mut Wakes) -> Result<(), Error> {
        let mut next = self.keep(None);
        loop {
            next = match next {
                Next::Watch => self.news(wakes)?,
                Next::Reconcile(first) => self.keep(Some(first)),
                Next::End => return Ok(()),
                Next::TunnelGone => return self.tunnel_gone(),
                Next::Stop(sig) => return self.ending(wakes, sig),
            };
        }
    }

    /// Sleeps until news calls for a reconcile, or ends the watch.
    fn news(&mut self, wakes: &mut Wakes) -> Result<Next, Error> {
        loop {
            let (last, storm) = (self.last_reconcile, self.storm);
            let b = wakes.burst(|first| match first.duration_since(last) < CALM {
                true => Pace::storm(storm),
                false => Pace::calm(),
            });
            self.record.events += b.count;
            debug!(
                "news: {} item(s){}, {} from engines, {} own route(s) gone",
                b.count,
                if b.news { ", calling for a reconcile" } else { "" },
                b.engine.len(),
                b.own_gone.len()
            );
            self.engines(&b);
            if let Some(why) = b.broken {
                warn!(
                    "the watch of {} cannot go on ({why}); its routes stay for the disconnect or `vpnfix cleanup`",
                    self.dev
                );
                return Ok(Next::End);
            }
            if b.gone || !exists(self.dev)? {
                return Ok(Next::TunnelGone);
            }
            if let Some(sig) = b.stop {
                return Ok(Next::Stop(sig));
            }
            if !b.news && !b.own_gone.is_empty() {
                // Only vpnfix's own routes went: the watcher's own deletions, someone's `ip route
                // del` of a route still recorded, or the disconnect hook's (the record is gone).
                let Some(recorded) = self.dir.read(self.dev)? else {
                    info!("{}'s record was removed by its disconnect: the watch ends", self.dev);
                    return Ok(Next::End);
                };
                if !recorded.routes.iter().any(|e| b.own_gone.contains(&e.route.dst)) {
                    continue;
                }
            } else if !b.news {
                continue;
            }
            if self.engines.values().any(|up| !up) {
                debug!("an engine is not back ({:?}): nothing changed", self.engines);
                continue;
            }
            return Ok(b.first.map_or(Next::Watch, Next::Reconcile));
        }
    }

    /// Notes which engines broke and which came back.
    fn engines(&mut self, b: &Burst) {
        for e in &b.engine {
            match e {
                EngineEvent::Lost { host, why } if self.engines.insert(host.clone(), false) != Some(false) => warn!(
                    "the events of the engine at {host} stopped ({why}); {}'s routes stay as they are until it is back",
                    self.dev
                ),
                EngineEvent::Up { host } if self.engines.insert(host.clone(), true) == Some(false) => {
                    info!("the engine at {host} is back: reading everything again")
                }
                EngineEvent::Changed { host, what, .. } => debug!("{host}: {what}"),
                _ => {}
            }
        }
    }

    /// One reconcile for news that began at `first` (`None`: the watch's start), then what
    /// comes next.
    fn keep(&mut self, first: Option<Instant>) -> Next {
        let calm = first.is_none_or(|f| f.saturating_duration_since(self.last_reconcile) >= CALM);
        self.storm = if calm { 1 } else { self.storm + 1 };
        let kept = keep_recorded(&self.config, self.dev, &mut self.said, |host| self.engines.get(host) == Some(&true));
        self.last_reconcile = Instant::now();
        match kept {
            Ok(Kept::Reconciled(changed)) => {
                self.record.reconciles += 1;
                if changed > 0 {
                    self.record.changes += changed as u64;
                    self.record.last_change = Some(now());
                }
            }
            Ok(Kept::NoRecord) => {
                info!("{}'s record was removed by its disconnect: the watch ends", self.dev);
                return Next::End;
            }
            Ok(Kept::Held(why)) => warn!("{why}; {}'s routes stay as they are until it answers", self.dev),
            // Gone before its notification could be heard (the watcher was just starting).
            Err(Error::NoTunnel(_)) => return Next::TunnelGone,
            Err(e) => warn!("{}; still watching", super::chain(&e)),
        }
        if let Err(e) = self.dir.write_watcher(self.dev, &self.record) {
            debug!("{}", super::chain(&e));
        }
        Next::Watch
    }

    /// The tunnel went: every route recorded for it goes.
    fn tunnel_gone(&self) -> Result<(), Error> {
        let Some(state) = self.dir.read(self.dev)? else {
            info!("{} is gone, and its disconnect removed its routes: the watch ends", self.dev);
            return Ok(());
        };
        info!("{} is gone: removing the routes recorded for it; the watch ends", self.dev);
        let input = HookInput {
            tunnel: Tunnel { dev: self.dev.to_string(), ..Tunnel::default() },
            connection: state.connection,
            ..HookInput::default()
        };
        disconnect(&self.config, &input)
    }

    /// Asked to stop (a supervisor's SIGTERM reaches the whole group or cgroup, OpenVPN's too):
    /// nothing more is changed; if the tunnel goes within [`ENDING`], its routes go with it,
    /// else they stay (the tunnel still needs them) for its disconnect or `vpnfix cleanup`.
    fn ending(&self, wakes: &mut Wakes, sig: nix::sys::signal::Signal) -> Result<(), Error> {
        info!("{sig}: the watch of {} ends; its routes go if it goes within {} s", self.dev, ENDING.as_secs());
        let deadline = Instant::now() + ENDING;
        loop {
            if !exists(self.dev)? {
                return self.tunnel_gone();
            }
            if self.dir.read(self.dev)?.is_none() {
                return Ok(());
            }
            match wakes.until(deadline) {
                Some(b) if b.gone => return self.tunnel_gone(),
                Some(_) => {}
                None => {
                    info!("{} is still up: its routes stay for its disconnect or `vpnfix cleanup`", self.dev);
                    return Ok(());
                }
            }
        }
    }
}

fn exists(dev: &str) -> Result<bool, Error> {
    Ok(Kernel::connect()?.links()?.iter().any(|l| l.name == dev))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
