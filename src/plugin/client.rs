//! The plugin's side, inside OpenVPN: it starts the helper at open (as root, before OpenVPN drops
//! privileges), hands it each event's arguments and environment, relays the lines it logged
//! into OpenVPN's log and turns its answer into the plugin's return code. It never blocks
//! OpenVPN for ever: an answer that does not come in [`ANSWER_TIMEOUT`] gives up the helper.

use super::wire::{self, Answer, Hook, Level, Request, WireError};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the helper (the `vpnfix` binary) is looked for when the `plugin` line names none:
/// Debian's package, then `vpnfix install`'s default prefix.
pub const HELPERS: &[&str] = &["/usr/sbin/vpnfix", "/usr/local/bin/vpnfix", "/usr/local/sbin/vpnfix"];

/// How long OpenVPN may wait for the helper's answer to one event (the event loop is stopped
/// meanwhile, as for a script): well past a connect with Docker's timeouts.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long close waits for the helper to finish its last cleanup and exit.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Something that writes the plugin's lines into OpenVPN's log.
pub trait Say {
    /// Logs one line.
    fn say(&self, level: Level, line: &str);
}

/// What the plugin returns for an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `OPENVPN_PLUGIN_FUNC_SUCCESS`.
    Done,
    /// `OPENVPN_PLUGIN_FUNC_ERROR`: only a strict route-up that failed.
    Failed,
}

/// The `plugin` line's arguments: the helper's path and the settings.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// The helper binary.
    pub helper: PathBuf,
    /// `VPNFIX_KEY=value` settings: in the helper's environment, over the `setenv` lines.
    pub settings: Vec<String>,
}

impl Args {
    /// Reads the arguments after the library's path: at most one absolute path (the helper;
    /// else the first of [`HELPERS`] that exists) and `VPNFIX_KEY=value` settings.
    pub fn parse(args: &[String], exists: impl Fn(&str) -> bool) -> Result<Args, String> {
        let mut helper = None;
        let mut settings = Vec::new();
        for a in args {
            let is_setting = a.split_once('=').is_some_and(|(k, _)| {
                k.starts_with("VPNFIX_") && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
            match a {
                _ if is_setting => settings.push(a.clone()),
                _ if a.starts_with('/') && helper.is_none() => helper = Some(PathBuf::from(a)),
                _ => {
                    return Err(format!(
                        "plugin argument `{a}` is neither the helper's absolute path (given once) nor a VPNFIX_KEY=value setting"
                    ))
                }
            }
        }
        let helper = match helper {
            Some(h) => h,
            None => HELPERS
                .iter()
                .find(|p| exists(p))
                .map(PathBuf::from)
                .ok_or_else(|| format!("no vpnfix binary in {}: name it in the plugin line", HELPERS.join(", ")))?,
        };
        Ok(Args { helper, settings })
    }
}

/// The plugin, loaded.
pub struct Plugin {
    /// `None` once the helper is gone (it died, or did not answer in time).
    helper: Option<Helper>,
    /// The helper's path, for messages.
    path: PathBuf,
}

/// The helper process and the plugin's end of its socket.
struct Helper {
    sock: UnixStream,
    child: Child,
}

impl Plugin {
    /// Starts the helper and waits for it to say it is ready; `None` (said in one line) when it
    /// cannot start, which fails OpenVPN's open.
    pub fn open(args: &[String], env: &[String], log: &dyn Say) -> Option<Plugin> {
        let args = match Args::parse(args, |p| std::path::Path::new(p).is_file()) {
            Ok(a) => a,
            Err(e) => {
                log.say(Level::Error, &format!("{e}; plugin not loaded"));
                return None;
            }
        };
        match Helper::start(&args, env) {
            Ok((helper, answer)) => {
                relay(&answer, log);
                Some(Plugin { helper: Some(helper), path: args.helper })
            }
            Err(e) => {
                log.say(
                    Level::Error,
                    &format!("cannot start the helper {}: {e}; plugin not loaded", args.helper.display()),
                );
                None
            }
        }
    }

    /// Hands an event to the helper and relays its answer.
    pub fn event(&mut self, hook: Hook, argv: &[String], env: &[String], log: &dyn Say) -> Outcome {
        let name = hook.script_type();
        let Some(h) = self.helper.as_mut() else {
            log.say(Level::Warn, &format!("{name}: not handled, the helper {} is gone", self.path.display()));
            return Outcome::Done;
        };
        let req = Request::Event { hook, argv: argv.to_vec(), env: env.to_vec() };
        match h.ask(&req) {
            Ok(answer) => {
                relay(&answer, log);
                if answer.failed {
                    Outcome::Failed
                } else {
                    Outcome::Done
                }
            }
            Err(e) => {
                let pid = h.child.id();
                log.say(
                    Level::Error,
                    &format!("{name}: the helper (pid {pid}) did not answer ({e}); it is given up, OpenVPN carries on without it"),
                );
                if let Some(mut h) = self.helper.take() {
                    let _ = h.child.kill();
                    let _ = h.child.wait();
                }
                Outcome::Done
            }
        }
    }

    /// Closes the socket (the helper removes whatever no disconnect removed, and exits) and
    /// waits a while for it to exit.
    pub fn close(self, log: &dyn Say) {
        let Some(Helper { sock, mut child }) = self.helper else { return };
        drop(sock);
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            match child.try_wait() {
                // Gone, or no longer OpenVPN's child (it daemonized after open): either way done.
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    log.say(
                        Level::Warn,
                        &format!("the helper (pid {}) is still at work; not waiting for it", child.id()),
                    );
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Helper {
    /// `HELPER plugin-helper`, its stdin the helper's end of a socket pair; in its environment
    /// only vpnfix's own variables and `DOCKER_HOST` from OpenVPN's at open (its `setenv` lines,
    /// read from root's configuration before any privilege is dropped), then the plugin line's
    /// settings: the helper's settings for its whole life. A process group of its own (a Ctrl-C
    /// on a foreground OpenVPN is not its), stderr OpenVPN's (lines it logs with no event to
    /// answer go there).
    fn start(args: &Args, env: &[String]) -> Result<(Helper, Answer), String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        let vars = env
            .iter()
            .chain(&args.settings)
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| crate::config::is_config_var(k));
        let child = Command::new(&args.helper)
            .arg0("vpnfix")
            .arg("plugin-helper")
            .env_clear()
            .envs(vars)
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut h = Helper { sock: ours, child };
        match h.ask(&Request::Open) {
            Ok(answer) => Ok((h, answer)),
            Err(e) => {
                let _ = h.child.kill();
                let status = h.child.wait().map(|s| format!(", {s}")).unwrap_or_default();
                Err(format!("it did not say it was ready ({e}{status})"))
            }
        }
    }

    /// Sends a request and waits (≤ [`ANSWER_TIMEOUT`]) for the answer.
    fn ask(&mut self, req: &Request) -> Result<Answer, WireError> {
        self.sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        wire::send(&mut self.sock, &req.encode())?;
        Answer::decode(&wire::receive(&mut self.sock)?)
    }
}

/// The helper's lines, into OpenVPN's log.
fn relay(answer: &Answer, log: &dyn Say) {
    for (level, line) in &answer.lines {
        log.say(*level, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plugin_arguments() {
        let none = |_: &str| false;
        let a = Args::parse(&strings(&["/opt/vpnfix", "VPNFIX_POLICY=vpn", "VPNFIX_KEEP=10.0.0.0/8,1.2.3.0/24"]), none);
        let a = a.unwrap();
        assert_eq!(a.helper, PathBuf::from("/opt/vpnfix"));
        assert_eq!(a.settings, strings(&["VPNFIX_POLICY=vpn", "VPNFIX_KEEP=10.0.0.0/8,1.2.3.0/24"]));
        // No path: the first that exists.
        let a = Args::parse(&[], |p| p == "/usr/local/bin/vpnfix").unwrap();
        assert_eq!(a.helper, PathBuf::from("/usr/local/bin/vpnfix"));
        let e = Args::parse(&[], none).unwrap_err();
        assert_eq!(
            e,
            "no vpnfix binary in /usr/sbin/vpnfix, /usr/local/bin/vpnfix, /usr/local/sbin/vpnfix: name it in the plugin line"
        );
        for bad in ["down", "vpnfix_policy=vpn", "VPNFIX_POLICY", "VPNFIX-X=1", "./vpnfix"] {
            let e = Args::parse(&strings(&["/usr/sbin/vpnfix", bad]), none).unwrap_err();
            assert!(e.starts_with(&format!("plugin argument `{bad}` is neither")), "{e}");
        }
        assert!(Args::parse(&strings(&["/a/vpnfix", "/b/vpnfix"]), none).is_err(), "two helpers");
    }
}
