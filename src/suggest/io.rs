//! The only I/O of `suggest`: reading the existing daemon.json, and writing the merged one
//! atomically (temporary file in the same directory, fsync, rename) after a backup copy.

use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A daemon.json that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not JSON (dockerd would not start with it either).
    #[error("{path} is not JSON")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The backup copy could not be made; nothing was changed.
    #[error("cannot back up {path} to {backup}; nothing changed")]
    Backup {
        /// The file.
        path: PathBuf,
        /// The backup it was copied to.
        backup: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The new file could not be written or moved into place.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The daemon.json at `path`, parsed; `None` when there is no such file.
pub fn read_daemon_json(path: &Path) -> Result<Option<Value>, SuggestError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SuggestError::Read { path: path.into(), source }),
    };
    // dockerd accepts an empty file as "no configuration".
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Value::Object(Default::default())));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|source| SuggestError::Parse { path: path.into(), source })
}

/// Writes `merged` to `path` (pretty JSON): an existing file is first copied to
/// `PATH.vpnfix-backup-<unix time>` (returned), then replaced atomically, keeping its mode. A
/// symbolic link is followed, so the file it names is replaced, not the link.
pub fn write_daemon_json(path: &Path, merged: &Value) -> Result<Option<PathBuf>, SuggestError> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let write_err = |source| SuggestError::Write { path: target.clone(), source };
    let old = match fs::read(&target) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(SuggestError::Read { path: target.clone(), source }),
    };
    let mode = fs::metadata(&target).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    let backup = match &old {
        Some(bytes) => Some(backup(&target, bytes, mode)?),
        None => None,
    };
    let text = super::pools::daemon_json_text(merged);
    let tmp = sibling(&target, &format!(".vpnfix-tmp-{}", std::process::id()));
    let how = crate::fsutil::How { mode, root_owned: false, exclusive: false };
    crate::fsutil::atomic_write(&target, &tmp, text.as_bytes(), how).map_err(write_err)?;
    Ok(backup)
}

/// Copies `bytes` to a new `PATH.vpnfix-backup-<unix time>` (with `-N` added if that exists).
fn backup(target: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, SuggestError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stem = format!(".vpnfix-backup-{now}");
    let mut n = 0;
    loop {
        let suffix = if n == 0 { stem.clone() } else { format!("{stem}-{n}") };
        let b = sibling(target, &suffix);
        match put(&b, bytes, mode) {
            Ok(()) => return Ok(b),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(source) => return Err(SuggestError::Backup { path: target.into(), backup: b, source }),
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Creates a new file (never overwriting one), writes and syncs it.
fn put(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    // The umask may have narrowed the mode.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}
