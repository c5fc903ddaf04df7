//! The helper: `vpnfix plugin-helper`, started by the plugin at open while OpenVPN is still
//! root. It keeps CAP_NET_ADMIN (and what the routes inside containers take) and nothing else,
//! for the life of the tunnel, so the disconnect removes exactly what the connect added even
//! after OpenVPN's `user nobody`. What comes over the socket comes, after that drop, from an
//! unprivileged process: it is parsed within bounds ([`super::wire`]), its settings are not taken
//! (the helper's are those of open), and it acts for one tunnel at a time. Each event runs the
//! very hook logic a script runs ([`crate::run::hook_in`]), its log lines held and sent back with
//! the answer. When the socket closes without a disconnect (OpenVPN killed, or it closed the
//! plugin while connected), it removes the tunnel's routes itself: however the tunnel ends,
//! nothing stays behind.

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
    logging::init(crate::config::LogLevel::Info);
    block_stop_signals();
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
    let mut h = Serving { sock, connected: None };
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
fn block_stop_signals() {
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
    /// The tunnel an up or route-up named and no down has ended yet (its device), with that
    /// event's environment: the only tunnel the helper acts for until its down, and what the
    /// end cleans up when the plugin goes without one.
    connected: Option<(String, Vec<(String, String)>)>,
}

impl Serving {
    fn run(&mut self) -> Result<(), WireError> {
        loop {
            let frame = match wire::receive(&mut self.sock) {
                Err(WireError::Closed) => return Ok(()),
                other => other?,
            };
            let answer = match Request::decode(&frame) {
                Ok(Request::Open) => self.open(),
                Ok(Request::Event { hook, argv, env }) => self.event(hook, argv, &env),
                Err(e) => {
                    error!("a message from the plugin was not understood ({e}); ignored");
                    Answer { failed: false, lines: captured() }
                }
            };
            wire::send(&mut self.sock, &answer.encode())?;
        }
    }

    /// The plugin's first message: the privileges are cut down to what the routes take, and the
    /// engines followed.
    fn open(&mut self) -> Answer {
        let config = crate::run::load_config(&own_settings(), &crate::config::Overrides::default());
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

    /// One hook, run as the script would run it, for the tunnel the helper serves; up only marks
    /// the tunnel (route-up, after OpenVPN's own routes, plans with them).
    fn event(&mut self, hook: Hook, argv: Vec<String>, env: &[String]) -> Answer {
        let env = environment(hook, env);
        let dev = env.iter().find(|(k, _)| k == "dev").map(|(_, v)| v.clone()).unwrap_or_default();
        if let Some((serving, _)) = self.connected.as_ref().filter(|(d, _)| *d != dev) {
            error!("{}: refused for device {dev:?}: this helper serves {serving} until its down", hook.script_type());
            return Answer { failed: false, lines: captured() };
        }
        let failed = match hook {
            Hook::Up => {
                debug!("up: nothing to do before OpenVPN's routes; route-up plans with them");
                false
            }
            _ => run_hook(hook, argv, &env),
        };
        match hook {
            // An event naming no device (the hook logic has said so) pins nothing.
            Hook::Up | Hook::RouteUp if !dev.is_empty() => self.connected = Some((dev, env)),
            Hook::Down => self.connected = None,
            Hook::Up | Hook::RouteUp | Hook::RoutePreDown => {}
        }
        Answer { failed, lines: captured() }
    }

    /// The plugin went while a tunnel it connected had no down: its routes go now.
    fn cleanup_left(&mut self) {
        if let Some((dev, env)) = self.connected.take() {
            info!("OpenVPN went without a disconnect of {dev}: removing its routes");
            run_hook(Hook::Down, Vec::new(), &env);
        }
    }
}

/// vpnfix's settings and `DOCKER_HOST` from the helper's own environment: what OpenVPN's
/// configuration and the plugin line said at open.
fn own_settings() -> Vec<(String, String)> {
    crate::run::environment().into_iter().filter(|(k, _)| crate::config::is_config_var(k)).collect()
}

/// The event's environment as a script would see it: OpenVPN's variables (`script_type`, which
/// OpenVPN deletes for plugins, put back) and the helper's own settings. Settings in the event's
/// environment are not taken: after `user nobody` it comes from an unprivileged process, and a
/// setting names files root reads and writes (`VPNFIX_STATE_DIR`, `VPNFIX_CONF_FILE`), sockets
/// it talks to (`DOCKER_HOST`, `VPNFIX_SYSLOG`) and which routes are its own (`VPNFIX_PROTO`).
/// They are the same `setenv` lines OpenVPN had at open.
pub(crate) fn environment(hook: Hook, env: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "script_type" && !crate::config::is_config_var(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.extend(own_settings());
    out.push(("script_type".into(), hook.script_type().into()));
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_environment_brings_no_settings() {
        let event =
            ["dev=tun0", "route_network_1=172.20.0.0", "VPNFIX_STATE_DIR=/tmp/evil", "DOCKER_HOST=tcp://evil:2375"];
        let env = environment(Hook::RoutePreDown, &event.map(String::from));
        let get = |k: &str| env.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("dev"), ["tun0"]);
        assert_eq!(get("route_network_1"), ["172.20.0.0"]);
        assert_eq!(get("script_type"), ["route-pre-down"], "put back, as a script sees it");
        assert!(!get("VPNFIX_STATE_DIR").contains(&"/tmp/evil"), "{env:?}");
        assert!(!get("DOCKER_HOST").contains(&"tcp://evil:2375"), "{env:?}");
    }

    #[test]
    fn a_connected_helper_acts_for_its_own_tunnel_only() {
        let (sock, _other) = UnixStream::pair().unwrap();
        let mut h = Serving { sock, connected: Some(("tun0".into(), Vec::new())) };
        // A down naming another device (what a compromised, unprivileged OpenVPN could send) is
        // refused before anything runs; the helper still serves tun0.
        let a = h.event(Hook::Down, Vec::new(), &["dev=tun1".to_string()]);
        assert!(!a.failed);
        assert_eq!(h.connected.as_ref().map(|(d, _)| d.as_str()), Some("tun0"));
        let a = h.event(Hook::Up, Vec::new(), &["dev=tun9".to_string()]);
        assert!(!a.failed);
        assert_eq!(h.connected.as_ref().map(|(d, _)| d.as_str()), Some("tun0"), "an up for another device");
        // Its own up (a restart) is taken.
        h.event(Hook::Up, Vec::new(), &["dev=tun0".to_string()]);
        assert_eq!(h.connected.as_ref().map(|(d, _)| d.as_str()), Some("tun0"));
    }
}
