//! Logging: every line to stderr (OpenVPN copies a script's stderr into its own log, and manual
//! use reads it there) — in OpenVPN's plugin's helper, held and sent to the plugin, which writes
//! it into OpenVPN's log ([`capture`]) — and to syslog with ident `vpnfix` when `/dev/log` (or
//! `VPNFIX_SYSLOG`) exists.

use crate::config::LogLevel;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::Mutex;

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// The syslog connection, once [`init`] has made it.
static SYSLOG: std::sync::OnceLock<Option<Mutex<Syslog>>> = std::sync::OnceLock::new();

struct Logger;

/// Lines held for OpenVPN's plugin instead of written to stderr ([`capture`]): the helper sends
/// them with its answer, and the plugin writes them into OpenVPN's own log.
static CAPTURED: Mutex<Option<Vec<(Level, String)>>> = Mutex::new(None);

/// From now on (`true`), every line is held for [`take_captured`] instead of written to
/// stderr (syslog still gets it); `false` goes back to stderr.
pub fn capture(on: bool) {
    if let Ok(mut c) = CAPTURED.lock() {
        *c = on.then(Vec::new);
    }
}

/// The lines held since the last call.
pub fn take_captured() -> Vec<(Level, String)> {
    CAPTURED.lock().ok().and_then(|mut c| c.as_mut().map(std::mem::take)).unwrap_or_default()
}

/// Writes `text` (whole lines, each `vpnfix: …`) to stderr, or holds its lines while captured.
fn to_stderr(level: Level, text: &str) {
    if let Ok(mut c) = CAPTURED.lock() {
        if let Some(held) = c.as_mut() {
            held.extend(text.lines().map(|l| (level, l.strip_prefix("vpnfix: ").unwrap_or(l).to_string())));
            return;
        }
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Sends one message to syslog, if there is one.
fn to_syslog(level: Level, msg: String) {
    if let Some(Ok(mut s)) = SYSLOG.get().and_then(Option::as_ref).map(Mutex::lock) {
        let _ = match level {
            Level::Error => s.err(msg),
            Level::Warn => s.warning(msg),
            Level::Info => s.info(msg),
            _ => s.debug(msg),
        };
    }
}

/// Logs every line at info level, as one write to stderr (each line whole, `vpnfix: ` first)
/// and one syslog message each: a change logged just before it happens costs no system call
/// of its own when a thousand go to the kernel in one batch.
pub fn info_lines(lines: impl IntoIterator<Item = String>) {
    if !log::log_enabled!(Level::Info) {
        return;
    }
    let mut text = String::new();
    for line in lines {
        text.push_str("vpnfix: ");
        text.push_str(&line);
        text.push('\n');
        to_syslog(Level::Info, line);
    }
    to_stderr(Level::Info, &text);
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // vpnfix's own lines only: bollard and hyper log every request and body at debug.
        metadata.level() <= log::max_level() && metadata.target().starts_with("vpnfix")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        // One write per line: stderr is unbuffered, and `writeln!` makes one per piece (four).
        to_stderr(record.level(), &format!("vpnfix: {prefix}{msg}\n"));
        to_syslog(record.level(), msg);
    }

    fn flush(&self) {}
}

/// The syslog socket: `/dev/log`, or `VPNFIX_SYSLOG` (a socket path; `off` or empty: none),
/// which tests set to one of their own. Read from the process environment, before anything
/// else: the logger starts first.
pub const SYSLOG_VAR: &str = "VPNFIX_SYSLOG";

/// Installs the logger at `level`. Syslog is used only where its socket exists, so containers
/// and test namespaces without a syslog daemon get stderr alone.
pub fn init(level: LogLevel) {
    let path = match std::env::var_os(SYSLOG_VAR) {
        Some(p) if p.is_empty() || p == "off" => None,
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => Some(std::path::PathBuf::from("/dev/log")),
    };
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "vpnfix".into(),
        pid: std::process::id(),
    };
    let syslog = path.filter(|p| p.exists()).and_then(|p| syslog::unix_custom(formatter, p).ok()).map(Mutex::new);
    let _ = SYSLOG.set(syslog);
    if log::set_boxed_logger(Box::new(Logger)).is_ok() {
        log::set_max_level(filter(level));
    }
}

/// Changes the level (configuration is read after the logger starts).
pub fn set_level(level: LogLevel) {
    log::set_max_level(filter(level));
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
    }
}

/// An error and its causes on one line, each said once: the one printer of error chains (the
/// top of a command, the hooks' log lines, install's report).
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
