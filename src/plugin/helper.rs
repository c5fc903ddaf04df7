//! The helper: `vpnfix plugin-helper`, started by the plugin at open while OpenVPN is still
//! root. It keeps CAP_NET_ADMIN (and what the routes inside containers take) and nothing else,
//! for the life of the tunnel, so the disconnect removes exactly what the connect added even
//! after OpenVPN's `user nobody`. Each event runs the very hook logic a script runs
//! ([`crate::run::hook_in`]), its log lines held and sent back with the answer. When the socket
//! closes without a disconnect (OpenVPN killed, or it closed the plugin while connected), it
//! removes the tunnel's routes itself: however the tunnel ends, nothing stays behind.

use super::wire::{self, Answer, Hook, Level, Request, WireError};
use crate::hook::{Invocation, Source};
use crate::logging;
use log::{debug, error, info, warn};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

/// Runs the helper on its stdin (the socket the plugin made) until the plugin goes.
/// Logging starts here, after the inherited descriptors are closed (its syslog socket is not
/// one of them).
pub fn serve() -> ExitCode {
    close_inherited_fds();
    ignore_stop_signals();
    logging::init(crate::config::LogLevel::Info);
    let sock = match std::io::stdin().as_fd().try_clone_to_owned().map(UnixStream::from) {
        Ok(s) if s.peer_addr().is_ok() => s,
        _ => {
            error!(
                "`vpnfix plugin-helper` is started by OpenVPN's plugin (plugin vpnfix.so), on a socket; not by hand"
            );
            return ExitCode::FAILURE;
        }
    };
    logging::capture(true);
    let mut h = Serving { sock, settings: Vec::new(), connected: None };
    let end = h.run();
    logging::capture(false);
    if let Err(e) = end {
        warn!("the plugin's socket failed ({}); ending", logging::chain(&e));
    }
    h.cleanup_left();
    ExitCode::SUCCESS
}

/// Ctrl-C on a foreground OpenVPN, or a supervisor's SIGTERM to its whole group, must not end
/// the helper before OpenVPN's disconnect reaches it: those signals are blocked (and so never
/// delivered); it ends when the plugin's socket closes. Programs it starts (the watcher) begin
/// with an empty mask: Rust's `Command` resets it.
fn ignore_stop_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        warn!("cannot block stop signals ({e}); a signal to OpenVPN's process group ends the helper too");
    }
}

/// File descriptors OpenVPN left open without close-on-exec (sockets, a tun device after a
/// SIGHUP reload): the helper must hold none, or a tun device would outlive OpenVPN.
fn close_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
    for fd in fds {
        // The directory's own descriptor is in the list and already closed: EBADF, harmless.
        let _ = nix::unistd::close(fd);
    }
}

/// A helper at work.
struct Serving {
    sock: UnixStream,
    /// The `plugin` line's settings, `KEY=value`.
    settings: Vec<(String, String)>,
    /// The tunnel an up or route-up named and no down has ended yet, with that event's
    /// environment: what the end cleans up when the plugin goes without a disconnect.
    connected: Option<Vec<(String, String)>>,
}

impl Serving {
    fn run(&mut self) -> Result<(), WireError> {
        loop {
            let frame = match wire::receive(&mut self.sock) {
                Err(WireError::Closed) => return Ok(()),
                other => other?,
            };
            let answer = match Request::decode(&frame) {
                Ok(Request::Open { args }) => self.open(&args),
                Ok(Request::Event { hook, argv, env }) => self.event(hook, argv, &env),
                Err(e) => {
                    error!("a message from the plugin was not understood ({e}); ignored");
                    Answer { failed: false, lines: captured() }
                }
            };
            wire::send(&mut self.sock, &answer.encode())?;
        }
    }

    /// The plugin's first message: its settings; the privileges are cut down to what the
    /// routes take.
    fn open(&mut self, args: &[String]) -> Answer {
        self.settings = args.iter().filter_map(|a| a.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        let env = crate::run::environment();
        let config = crate::run::load_config(&env, &crate::config::Overrides::default());
        match crate::privilege::keep_only_needed(config.container_routes) {
            Ok(kept) if kept.is_empty() => warn!(
                "the helper runs without CAP_NET_ADMIN (OpenVPN loaded the plugin after dropping privileges, as a SIGHUP \
                 reload does): it cannot change routes"
            ),
            Ok(kept) => debug!("helper ready (pid {}), keeping {kept:?}", std::process::id()),
            Err(e) => warn!("{e}; the helper keeps the privileges it has"),
        }
        // It lives as long as the tunnel: the engines' answers are kept while their events say
        // nothing changed, and read now, so a connect asks them nothing.
        let hosts = crate::docker::engine_hosts(config.docker_host.as_deref(), |p| p.exists());
        crate::docker::fresh::follow(&hosts);
        crate::docker::fresh::warm(&hosts, std::time::Duration::from_secs(2), config.docker_timeout_ms);
        Answer { failed: false, lines: captured() }
    }

    /// One hook, run as the script would run it; up only marks the tunnel (route-up, after
    /// OpenVPN's own routes, plans with them).
    fn event(&mut self, hook: Hook, argv: Vec<String>, env: &[String]) -> Answer {
        let env = self.environment(hook, env);
        let failed = match hook {
            Hook::Up => {
                debug!("up: nothing to do before OpenVPN's routes; route-up plans with them");
                false
            }
            _ => run_hook(hook, argv, &env),
        };
        match hook {
            Hook::Up | Hook::RouteUp => self.connected = Some(env),
            Hook::Down => self.connected = None,
            Hook::RoutePreDown => {}
        }
        Answer { failed, lines: captured() }
    }

    /// The event's environment as a script would see it: OpenVPN's (which deletes
    /// `script_type` for plugins: put back), the plugin line's settings over its `setenv` lines,
    /// and the helper's own `VPNFIX_SYSLOG` (where its lines go).
    fn environment(&self, hook: Hook, env: &[String]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k != "script_type" && !self.settings.iter().any(|(s, _)| s == k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.extend(self.settings.iter().cloned());
        out.push(("script_type".into(), hook.script_type().into()));
        out
    }

    /// The plugin went while a tunnel it connected had no down: its routes go now.
    fn cleanup_left(&mut self) {
        if let Some(env) = self.connected.take() {
            let dev = env.iter().find(|(k, _)| k == "dev").map_or("?", |(_, v)| v.as_str()).to_string();
            info!("OpenVPN went without a disconnect of {dev}: removing its routes");
            run_hook(Hook::Down, Vec::new(), &env);
        }
    }
}

/// Runs a hook as OpenVPN would have run the script; a panic is a bug, said, and not a failure
/// OpenVPN must hear.
fn run_hook(hook: Hook, argv: Vec<String>, env: &[(String, String)]) -> bool {
    let inv = Invocation { source: Source::OpenVpn { mode: Some(hook.script_type().into()) }, args: argv };
    std::panic::catch_unwind(|| crate::run::hook_in(inv, env)).unwrap_or_else(|_| {
        error!("internal error (a bug) in {}; nothing more done", hook.script_type());
        false
    })
}

/// The lines logged since the last answer, as the wire carries them.
fn captured() -> Vec<(Level, String)> {
    logging::take_captured()
        .into_iter()
        .map(|(level, line)| {
            let level = match level {
                log::Level::Error => Level::Error,
                log::Level::Warn => Level::Warn,
                _ => Level::Note,
            };
            (level, line)
        })
        .collect()
}
