//! Per-tunnel state in `/run/vpnfix/<dev>.json`: versioned JSON, written by atomic rename, read
//! and written under an exclusive `flock` on `<dev>.lock`, in a root-only directory.
//!
//! The state is written twice per connect: the intent (every planned route, `pending`) before
//! the first change, then what really happened. A crash in between leaves a record from which
//! the next connect or `cleanup` restores the table; and because every route carries vpnfix's
//! protocol number, even a lost state file cannot hide a route from the sweep.

use crate::kernel::RouteSpec;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod watcher;
pub use watcher::Watcher;

/// The state format's version.
pub const VERSION: u32 = 1;

/// A state problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory is unsafe to trust.
    #[error("refusing state directory {path}: {why}")]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A file operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A state file that is not vpnfix's JSON (truncated, corrupt, another version).
    #[error("state file {path} is unreadable; falling back to the protocol sweep")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl StateError {
    /// Whether reading records was refused for want of permission (a user reading root's).
    pub fn is_read_denied(&self) -> bool {
        matches!(self, StateError::Io { what: "inspect" | "list" | "read", source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied)
    }

    /// Whether a file operation was refused for want of permission.
    pub fn is_denied(&self) -> bool {
        matches!(self, StateError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// What happened to a recorded route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Planned; the add may or may not have happened (a crash leaves this).
    Pending,
    /// vpnfix added it.
    Added,
    /// An identical route of vpnfix's was already there.
    Present,
}

/// One route in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The route, exactly as added.
    #[serde(flatten)]
    pub route: RouteSpec,
    /// What happened to it.
    pub status: Status,
}

/// A tunnel's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`VERSION`].
    pub version: u32,
    /// The tunnel device.
    pub tunnel: String,
    /// The routes vpnfix added (or meant to).
    pub routes: Vec<Entry>,
    /// The pushed routes the plan was made for (so `status` can re-plan after the hook's
    /// environment is gone, as on NetworkManager's `vpn-down`).
    #[serde(default)]
    pub pushes: Vec<crate::net::Push>,
    /// The VPN connection's identity, where its source gives one (NetworkManager's UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The tunnel as the connect hook described it (tun or tap, its gateways): the watcher and
    /// `status` plan with it, so a tap tunnel's routes keep their gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::net::Tunnel>,
    /// The routes vpnfix added inside containers, per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Inside>,
}

/// The routes vpnfix added (or meant to) inside one container's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inside {
    /// The container's id.
    pub id: String,
    /// Its name, for messages.
    pub name: String,
    /// The process vpnfix entered its namespace through.
    pub pid: u32,
    /// The namespace's identity: the routes are removed only from this namespace.
    pub netns: crate::netns::NsId,
    /// The routes, as in the host's list.
    pub routes: Vec<Entry>,
}

impl State {
    /// Whether it records no route at all, on the host or in a container.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.containers.iter().all(|c| c.routes.is_empty())
    }

    /// Parses a state file's contents: the pure half of [`StateDir::read`], which the fuzz
    /// target and the corpus replay test call. A state of another [`VERSION`] is refused like a
    /// corrupt one (its fields may mean something else), so the caller falls back to the sweep.
    pub fn from_json(bytes: &[u8]) -> Result<State, serde_json::Error> {
        let state: State = serde_json::from_slice(bytes)?;
        if state.version != VERSION {
            let why = format!("state version {} is not {VERSION}, the one this vpnfix reads", state.version);
            return Err(serde::de::Error::custom(why));
        }
        Ok(state)
    }
}

/// Whose state directory is trusted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Ours only: we write to it.
    Us,
    /// Ours or root's: we only read from it.
    UsOrRoot,
}

/// The state directory, checked: owned by us, not group/other-writable, not a symlink.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory, refusing one that others could tamper with.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        match fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StateError::Io { what: "create", path: path.to_path_buf(), source }),
        }
        Self::checked(path, Owner::Us)
    }

    /// Opens the directory to read records only (`status`): `Ok(None)` when it does not exist,
    /// which means vpnfix has recorded nothing since boot. Nothing is created, and a directory
    /// of root's is trusted too (a user may read what root's hook wrote, where permitted).
    pub fn existing(path: &Path) -> Result<Option<StateDir>, StateError> {
        match Self::checked(path, Owner::UsOrRoot) {
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        }
    }

    fn checked(path: &Path, owner: Owner) -> Result<StateDir, StateError> {
        let meta = fs::symlink_metadata(path).map_err(|source| StateError::Io {
            what: "inspect",
            path: path.to_path_buf(),
            source,
        })?;
        let unsafe_dir = |why: &str| Err(StateError::Unsafe { path: path.to_path_buf(), why: why.into() });
        if meta.file_type().is_symlink() {
            return unsafe_dir("it is a symlink");
        }
        if !meta.is_dir() {
            return unsafe_dir("it is not a directory");
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() && !(owner == Owner::UsOrRoot && meta.uid() == 0) {
            return unsafe_dir(&format!("owned by uid {}, not by us", meta.uid()));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return unsafe_dir(&format!("mode {:o} lets others write", meta.permissions().mode() & 0o777));
        }
        Ok(StateDir { path: path.to_path_buf() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, tunnel: &str, ext: &str) -> PathBuf {
        self.path.join(format!("{tunnel}.{ext}"))
    }

    /// Takes the tunnel's lock, waiting for another vpnfix of the same tunnel to finish. The
    /// kernel drops a `flock` when its holder dies, so a killed process never leaves it stale.
    pub fn lock(&self, tunnel: &str) -> Result<Flock<File>, StateError> {
        let (f, path) = self.lock_file(tunnel, "lock")?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            what: "lock",
            path,
            source: e.into(),
        })
    }

    /// Reads a tunnel's state; `Ok(None)` when there is none.
    pub fn read(&self, tunnel: &str) -> Result<Option<State>, StateError> {
        let path = self.file(tunnel, "json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { what: "read", path, source }),
        };
        State::from_json(&text).map(Some).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes a tunnel's state atomically ([`crate::fsutil::atomic_write`]), mode 0600.
    pub fn write(&self, state: &State) -> Result<(), StateError> {
        self.write_json(&state.tunnel, "json", state)
    }

    /// Writes `TUNNEL.EXT` as JSON, atomically, mode 0600.
    fn write_json(&self, tunnel: &str, ext: &str, value: &impl Serialize) -> Result<(), StateError> {
        let path = self.file(tunnel, ext);
        let tmp = self.file(tunnel, &format!("{ext}.tmp"));
        let json = serde_json::to_vec_pretty(value).expect("vpnfix's records serialize");
        let how = crate::fsutil::How { mode: 0o600, root_owned: false, exclusive: false };
        crate::fsutil::atomic_write(&path, &tmp, &json, how).map_err(|source| StateError::Io {
            what: "write",
            path,
            source,
        })
    }

    /// Removes a tunnel's state (absent is fine).
    pub fn remove(&self, tunnel: &str) -> Result<(), StateError> {
        self.remove_file(tunnel, "json")
    }

    /// Removes `TUNNEL.EXT` (absent is fine).
    fn remove_file(&self, tunnel: &str, ext: &str) -> Result<(), StateError> {
        let path = self.file(tunnel, ext);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { what: "remove", path, source }),
        }
    }

    /// The lock a tunnel's watcher holds for its life (`TUNNEL.watch`); `None` when another
    /// process holds it: at most one watcher per tunnel.
    pub fn watch_lock(&self, tunnel: &str) -> Result<Option<Flock<File>>, StateError> {
        let (f, path) = self.lock_file(tunnel, "watch")?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(StateError::Io { what: "lock", path, source: e.into() }),
        }
    }

    /// Opens (creating, never following a link) the file `TUNNEL.EXT` a lock is taken on.
    fn lock_file(&self, tunnel: &str, ext: &str) -> Result<(File, PathBuf), StateError> {
        let path = self.file(tunnel, ext);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| StateError::Io { what: "open", path: path.clone(), source })?;
        Ok((f, path))
    }

    /// The tunnel whose record belongs to VPN connection `uuid`, if one does.
    pub fn tunnel_of(&self, uuid: &str) -> Result<Option<String>, StateError> {
        for t in self.tunnels()? {
            if let Ok(Some(s)) = self.read(&t) {
                if s.connection.as_deref() == Some(uuid) {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }

    /// The tunnels that have a state file.
    pub fn tunnels(&self) -> Result<Vec<String>, StateError> {
        let rd = fs::read_dir(&self.path).map_err(|source| StateError::Io {
            what: "list",
            path: self.path.clone(),
            source,
        })?;
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vpnfix-state-{tag}-{}", std::process::id()))
    }

    fn spec(dst: &str) -> RouteSpec {
        RouteSpec { dst: dst.parse().unwrap(), dev: "tun0".into(), gateway: None, table: 254, protocol: 86 }
    }

    #[test]
    fn write_read_remove_round_trip() {
        let path = tmpdir("rt");
        let dir = StateDir::open(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        let _lock = dir.lock("tun0").unwrap();
        let s = State {
            version: VERSION,
            tunnel: "tun0".into(),
            routes: vec![Entry { route: spec("172.20.1.0/24"), status: Status::Pending }],
            pushes: vec![],
            connection: Some("6f0e3a56-0000-4000-8000-00000000a002".into()),
            device: None,
            containers: vec![Inside {
                id: "8d1b".into(),
                name: "milvus-etcd".into(),
                pid: 4242,
                netns: crate::netns::NsId { dev: 4, ino: 4026532830 },
                routes: vec![Entry { route: spec("172.20.1.0/24"), status: Status::Added }],
            }],
        };
        dir.write(&s).unwrap();
        assert_eq!(dir.read("tun0").unwrap(), Some(s));
        assert_eq!(dir.tunnels().unwrap(), ["tun0"]);
        assert_eq!(dir.tunnel_of("6f0e3a56-0000-4000-8000-00000000a002").unwrap().as_deref(), Some("tun0"));
        assert_eq!(dir.tunnel_of("other").unwrap(), None);
        dir.remove("tun0").unwrap();
        assert_eq!(dir.read("tun0").unwrap(), None);
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn reading_creates_nothing_and_still_refuses_an_unsafe_directory() {
        let path = tmpdir("ro");
        assert!(StateDir::existing(&path).unwrap().is_none(), "absent: nothing recorded");
        assert!(!path.exists(), "status must not create the directory");
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o757)).unwrap();
        let err = StateDir::existing(&path).unwrap_err().to_string();
        assert!(err.ends_with("mode 757 lets others write"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(StateDir::existing(&path).unwrap().unwrap().tunnels().unwrap(), Vec::<String>::new());
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn unsafe_directories_and_corrupt_files_are_refused_with_a_reason() {
        let path = tmpdir("bad");
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open(&path).unwrap_err().to_string();
        assert!(err.ends_with("mode 777 lets others write"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmpdir("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(StateDir::open(&link).unwrap_err().to_string().ends_with("it is a symlink"));
        fs::remove_file(&link).unwrap();
        fs::write(path.join("tun0.json"), "{\"version\":1,\"tunn").unwrap();
        let err = StateDir::open(&path).unwrap().read("tun0").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        // Found by the state fuzz target (fuzz/artifacts/state/crash-state-of-another-version).
        fs::write(path.join("tun0.json"), "{\"version\":2,\"tunnel\":\"tun0\",\"routes\":[]}").unwrap();
        let err = StateDir::open(&path).unwrap().read("tun0").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        fs::remove_dir_all(&path).unwrap();
    }
}
