//! Writing a file atomically, the one way vpnfix does it (state files, daemon.json, installed
//! files): the complete file appears at its path at once or not at all, and survives a crash.
//! And the one way vpnfix waits for a file to be made (a tunnel's record, an engine's socket).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// How the new file is made.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// Its permission bits, set explicitly (the umask plays no part).
    pub mode: u32,
    /// Owned by root:root (installed files): set before the mode, since a chown may clear
    /// set-id bits.
    pub root_owned: bool,
    /// Refuse to replace anything at the path (linked into place, not renamed).
    pub exclusive: bool,
}

/// Writes `bytes` to `path` through the temporary file `tmp` beside it: `tmp` is created new
/// (never following a link, never reusing a file: a leftover of a killed run of ours is removed
/// first), written, given its owner and mode, synced, then renamed over `path` (or, with
/// `exclusive`, linked there, which fails if anything appeared meanwhile); the directory is
/// synced last, so the rename survives a crash. `tmp` never outlives the call.
pub fn atomic_write(path: &Path, tmp: &Path, bytes: &[u8], how: How) -> io::Result<()> {
    let _ = fs::remove_file(tmp);
    let result = fill(tmp, bytes, how).and_then(|()| match how.exclusive {
        true => fs::hard_link(tmp, path),
        false => fs::rename(tmp, path),
    });
    let _ = fs::remove_file(tmp);
    result?;
    // A failed directory sync costs durability across a crash only, never correctness.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn fill(tmp: &Path, bytes: &[u8], how: How) -> io::Result<()> {
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(nix::libc::O_NOFOLLOW).open(tmp)?;
    f.write_all(bytes)?;
    if how.root_owned {
        std::os::unix::fs::fchown(&f, Some(0), Some(0))?;
    }
    f.set_permissions(fs::Permissions::from_mode(how.mode))?;
    f.sync_all()
}

/// Blocks until `ready()` holds, woken by inotify whenever something is created, moved in or
/// changes attributes in the nearest existing directory of `path` (a whole directory may be
/// missing: `/run/podman` before Podman starts). The watch is set before `ready` is first asked,
/// so nothing made in between is missed. No polling: it sleeps in `read`. The watch is added
/// again after each wake, as the directory it names may have just been made.
pub fn wait_until_made(path: &Path, ready: impl Fn() -> bool) -> io::Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let what = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB;
    loop {
        let dir = path.ancestors().skip(1).find(|d| d.is_dir()).unwrap_or(Path::new("/"));
        ino.add_watch(dir, what)?;
        if ready() {
            return Ok(());
        }
        ino.read_events()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_whole_with_its_mode_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("vpnfix-fsutil-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (path, tmp) = (dir.join("f"), dir.join(".f.tmp"));
        fs::write(&tmp, "leftover").unwrap();
        let how = How { mode: 0o640, root_owned: false, exclusive: false };
        atomic_write(&path, &tmp, b"one", how).unwrap();
        atomic_write(&path, &tmp, b"two", how).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
        assert!(!tmp.exists());
        let exclusive = How { exclusive: true, ..how };
        assert_eq!(atomic_write(&path, &tmp, b"three", exclusive).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"two", "exclusive never replaces");
        assert!(!tmp.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
