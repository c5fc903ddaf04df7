//! `vpnfix install`: puts the binary, NetworkManager's dispatcher script (with its `pre-down.d`
//! link), the OpenVPN snippet and vpnc-script's hook files (OpenConnect) in place and records what it created in a manifest;
//! `vpnfix install --uninstall` removes exactly that. It never changes what it did not create:
//! a foreign file at one of its paths is reported and left alone, an identical one kept.
//!
//! The flow: look at every path → decide one [`Action`] per path (`decide`, pure) → act, unless
//! `--dry-run` → report (`setup`; `uninstall` the other way). Writes are atomic: a temporary
//! name, mode and owner set, then one rename (`fsops`). The manifest format is in `manifest`.

mod decide;
mod fsops;
mod manifest;
mod setup;
mod uninstall;

pub use manifest::{fnv1a64, Entry, Manifest};

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// NetworkManager's dispatcher script (`vpn-up`, `vpn-down`).
pub const DISPATCHER: &str = "/etc/NetworkManager/dispatcher.d/90-vpnfix";
/// The link that makes NetworkManager run it for `vpn-pre-down`, which it runs only from here.
pub const PRE_DOWN_LINK: &str = "/etc/NetworkManager/dispatcher.d/pre-down.d/90-vpnfix";
/// The pre-down link's target, relative so that it holds under any `--root`.
pub const PRE_DOWN_TARGET: &str = "../90-vpnfix";
/// The OpenVPN snippet.
pub const SNIPPET: &str = "/etc/openvpn/vpnfix.conf";
/// vpnc-script's hook files (OpenConnect, vpnc): sourced from these directories by phase.
pub const VPNC_HOOKS: [(&str, &str); 3] = [
    ("/etc/vpnc/connect.d/vpnfix", include_str!("../examples/openconnect/connect.d/vpnfix")),
    ("/etc/vpnc/post-connect.d/vpnfix", include_str!("../examples/openconnect/post-connect.d/vpnfix")),
    ("/etc/vpnc/disconnect.d/vpnfix", include_str!("../examples/openconnect/disconnect.d/vpnfix")),
];
/// The one line a client configuration needs.
pub const OVPN_LINE: &str = "config /etc/openvpn/vpnfix.conf";

/// The binary's path as the shipped script and snippet spell it; rewritten to `{prefix}/bin/vpnfix`.
const SHIPPED_BIN: &str = "/usr/local/bin/vpnfix";
const DISPATCHER_TEXT: &str = include_str!("../examples/networkmanager/90-vpnfix");
const SNIPPET_TEXT: &str = include_str!("../openvpn/vpnfix.conf");

/// Where and what to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The filesystem root to install into: `/`, or a staging directory (packages, tests).
    pub root: PathBuf,
    /// Where the binary and the manifest go: `{prefix}/bin/vpnfix`, `{prefix}/share/vpnfix/installed`.
    pub prefix: PathBuf,
    /// The binary to copy: normally the running one (`std::env::current_exe()`).
    pub binary: PathBuf,
    /// Report what would be done and change nothing (allowed without root).
    pub dry_run: bool,
    /// Remove what an earlier install created instead.
    pub uninstall: bool,
}

impl InstallOptions {
    /// The installed binary, as the system will see it.
    pub fn bin_path(&self) -> PathBuf {
        self.prefix.join("bin/vpnfix")
    }

    /// The manifest, as the system will see it.
    pub fn manifest_path(&self) -> PathBuf {
        self.prefix.join("share/vpnfix/installed")
    }

    /// Where a path of the installed system is under `root`.
    pub fn real(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// What vpnfix puts at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A regular file with this mode.
    File { mode: u32 },
    /// A symbolic link to this target.
    Link { target: PathBuf },
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::File { mode } => write!(f, "({mode:04o})"),
            What::Link { target } => write!(f, "-> {}", target.display()),
        }
    }
}

/// One line of the report: what happens (or, in a dry run, would happen) at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A directory vpnfix creates (mode 0755).
    MakeDir { path: PathBuf },
    /// A file or link vpnfix creates.
    Create { path: PathBuf, what: What },
    /// A file or link of vpnfix's own, rewritten: another version, or its mode or owner changed.
    Replace { path: PathBuf, what: What, why: String },
    /// Left as it is: already right, or changed by the admin since vpnfix wrote it.
    Keep { path: PathBuf, why: String },
    /// Something vpnfix did not create, at one of its paths: left alone.
    Skip { path: PathBuf, why: String },
    /// Removed by `--uninstall`.
    Remove { path: PathBuf },
    /// A directory vpnfix created, removed by `--uninstall` because it is empty.
    RemoveDir { path: PathBuf },
    /// Recorded in the manifest but already gone.
    Gone { path: PathBuf },
    /// A removal that failed; `--uninstall` carries on with the rest.
    Failed { path: PathBuf, why: String },
}

impl Action {
    /// Whether this action changes the filesystem.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Action::MakeDir { .. }
                | Action::Create { .. }
                | Action::Replace { .. }
                | Action::Remove { .. }
                | Action::RemoveDir { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::MakeDir { path } => write!(f, "mkdir {} (0755)", path.display()),
            Action::Create { path, what } => write!(f, "create {} {what}", path.display()),
            Action::Replace { path, what, why } => write!(f, "replace {} {what}: {why}", path.display()),
            Action::Keep { path, why } => write!(f, "keep {}: {why}", path.display()),
            Action::Skip { path, why } => write!(f, "skip {}: {why}", path.display()),
            Action::Remove { path } => write!(f, "remove {}", path.display()),
            Action::RemoveDir { path } => write!(f, "rmdir {}", path.display()),
            Action::Gone { path } => write!(f, "gone {}: already removed", path.display()),
            Action::Failed { path, why } => write!(f, "FAILED {}: {why}", path.display()),
        }
    }
}

/// What `install` did (or would do), for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The root installed into (named in the report when it is not `/`).
    pub root: PathBuf,
    /// One action per path, in the order they happen.
    pub actions: Vec<Action>,
    /// Lines after the actions: what else to know or do.
    pub notes: Vec<String>,
    /// The line to add to (or, after `--uninstall`, remove from) a client configuration.
    pub ovpn_line: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// This was `--uninstall`.
    pub uninstall: bool,
}

impl Report {
    /// How many actions change something.
    pub fn changes(&self) -> usize {
        self.actions.iter().filter(|a| a.is_change()).count()
    }

    /// How many removals failed (`--uninstall`; an install stops at its first error instead).
    pub fn failed(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, Action::Failed { .. })).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.root != Path::new("/") {
            writeln!(f, "into {}:", self.root.display())?;
        }
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        if self.changes() == 0 {
            writeln!(f, "{}", if self.uninstall { "nothing to remove" } else { "nothing to do" })?;
        }
        if self.dry_run {
            writeln!(f, "dry run: nothing was changed")?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        writeln!(f, "{}", self.ovpn_line)
    }
}

/// An install or uninstall that could not go on; the path named is the one on disk.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Installing into `/` needs root.
    #[error("vpnfix installs root-owned files: run as root ({command})")]
    NotRoot { command: &'static str },
    /// The prefix cannot be written into scripts and OpenVPN's configuration as it is.
    #[error("cannot use --prefix {prefix}: {why}")]
    BadPrefix { prefix: PathBuf, why: &'static str },
    /// The binary to install cannot be read.
    #[error("cannot read the vpnfix binary to install, {path}")]
    ReadBinary {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A path cannot be looked at.
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or link cannot be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The manifest is not one vpnfix wrote.
    #[error("cannot read the manifest {path}, line {line}: {why}")]
    Manifest { path: PathBuf, line: usize, why: String },
    /// A directory cannot be created.
    #[error("cannot create the directory {path}")]
    MakeDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A link cannot be made.
    #[error("cannot make the link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A link's owner cannot be set.
    #[error("cannot set the owner of {path}")]
    Own {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file, link or directory cannot be removed.
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Installs (or, with `uninstall`, removes) vpnfix's files; see the module documentation.
pub fn install(o: &InstallOptions) -> Result<Report, InstallError> {
    let as_root = nix::unistd::geteuid().is_root();
    if o.root == Path::new("/") && !as_root && !o.dry_run {
        let command = if o.uninstall { "sudo vpnfix install --uninstall" } else { "sudo vpnfix install" };
        return Err(InstallError::NotRoot { command });
    }
    check_prefix(&o.prefix)?;
    if o.uninstall {
        uninstall::run(o)
    } else {
        setup::run(o, as_root)
    }
}

/// The prefix is written unquoted into a shell script and OpenVPN's configuration.
fn check_prefix(prefix: &Path) -> Result<(), InstallError> {
    let bad = |why| Err(InstallError::BadPrefix { prefix: prefix.into(), why });
    if !prefix.is_absolute() {
        return bad("it must be an absolute path");
    }
    if prefix.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return bad("it must not contain . or .. components");
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+@,".contains(c);
    if !prefix.to_str().is_some_and(|s| s.chars().all(plain)) {
        return bad("only letters, digits and / . _ - + @ , can go unquoted into scripts and OpenVPN's configuration");
    }
    Ok(())
}

/// The manifest's text (if there is one) and content.
fn load_manifest(path: &Path) -> Result<(Option<String>, Manifest), InstallError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, Manifest::default())),
        Err(source) => return Err(InstallError::Read { path: path.into(), source }),
    };
    let m =
        Manifest::parse(&text).map_err(|e| InstallError::Manifest { path: path.into(), line: e.line, why: e.why })?;
    Ok((Some(text), m))
}

#[cfg(test)]
mod tests;
