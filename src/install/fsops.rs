//! The filesystem steps of `vpnfix install`: look at what is at a path, write a file or a link
//! atomically (a temporary name in the same directory, mode and owner set, then one rename or
//! link), make a directory, remove. Each error names the path it failed on.

use super::InstallError;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What is at a path.
#[derive(Debug)]
pub enum Found {
    /// A regular file.
    File { bytes: Vec<u8>, mode: u32, uid: u32, gid: u32 },
    /// A symbolic link (not followed).
    Link { target: PathBuf },
    /// Anything else: directory, socket, device …
    Other { kind: &'static str },
}

/// Reads what is at `path` without following a final symlink; `None` when nothing is there.
pub fn inspect(path: &Path) -> Result<Option<Found>, InstallError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(InstallError::Inspect { path: path.into(), source }),
    };
    let ft = meta.file_type();
    let found = if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|source| InstallError::Read { path: path.into(), source })?;
        Found::Link { target }
    } else if ft.is_file() {
        let bytes = fs::read(path).map_err(|source| InstallError::Read { path: path.into(), source })?;
        let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
        Found::File { bytes, mode, uid, gid }
    } else {
        Found::Other { kind: if ft.is_dir() { "a directory" } else { "not a regular file" } }
    };
    Ok(Some(found))
}

/// Whether two paths name the same file (device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A temporary name next to `path`. It starts with a dot: NetworkManager's dispatcher ignores
/// such names, so a half-written script is never run.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.vpnfix-{}", std::process::id()))
}

/// Writes `bytes` to `path` with `mode` (and owner root:root when `as_root`), atomically: the
/// complete file appears at once or not at all. `exclusive` refuses to replace anything.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, as_root: bool, exclusive: bool) -> Result<(), InstallError> {
    let how = crate::fsutil::How { mode, root_owned: as_root, exclusive };
    crate::fsutil::atomic_write(path, &temp_name(path), bytes, how)
        .map_err(|source| InstallError::Write { path: path.into(), source })
}

/// Makes `path` a symlink to `target`, atomically; `exclusive` refuses to replace anything.
pub fn write_link(path: &Path, target: &Path, as_root: bool, exclusive: bool) -> Result<(), InstallError> {
    let err = |source| InstallError::Link { path: path.into(), source };
    let own = |p: &Path| if as_root { std::os::unix::fs::lchown(p, Some(0), Some(0)) } else { Ok(()) };
    if exclusive {
        std::os::unix::fs::symlink(target, path).map_err(err)?;
        return own(path).map_err(|source| InstallError::Own { path: path.into(), source });
    }
    let tmp = temp_name(path);
    let _ = fs::remove_file(&tmp);
    let result =
        std::os::unix::fs::symlink(target, &tmp).and_then(|()| own(&tmp)).and_then(|()| fs::rename(&tmp, path));
    let _ = fs::remove_file(&tmp);
    result.map_err(err)
}

/// Creates the directory `path` (its parent exists), mode 0755, root-owned when `as_root`.
pub fn make_dir(path: &Path, as_root: bool) -> Result<(), InstallError> {
    let err = |source| InstallError::MakeDir { path: path.into(), source };
    fs::create_dir(path).map_err(err)?;
    if as_root {
        std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(err)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(err)
}

/// Removes a file or link; one that is already gone is not an error.
pub fn remove_file(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(InstallError::Remove { path: path.into(), source: e }),
        _ => Ok(()),
    }
}

/// Removes an empty directory: `Ok(false)` when it is not empty (or already gone).
pub fn remove_dir(path: &Path) -> Result<bool, InstallError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound) => Ok(false),
        Err(source) => Err(InstallError::Remove { path: path.into(), source }),
    }
}
