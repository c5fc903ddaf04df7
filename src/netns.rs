//! A container's network namespace, entered through its process: the kernel adapter opened
//! inside it, and its identity, so that a namespace recorded at connect is recognised at
//! disconnect (a container that stopped, or restarted in a new namespace, took vpnfix's routes
//! with it). No shell, no `ip netns exec`, nothing run inside the container: most images have
//! neither `ip` nor a shell.

use crate::kernel::{Kernel, KernelError};
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::{fstat, Mode};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::fd::OwnedFd;

/// A network namespace's identity: the device and inode of its `nsfs` file, as `stat
/// /proc/PID/ns/net` shows them (what `ip netns identify` compares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsId {
    /// The nsfs device.
    pub dev: u64,
    /// The namespace's inode number (`net:[4026532830]`).
    pub ino: u64,
}

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The process is gone, or its namespace cannot be opened.
    #[error("cannot open the network namespace of process {pid}")]
    Open {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// `setns` was refused (it needs CAP_SYS_ADMIN).
    #[error("cannot enter the network namespace of process {pid}")]
    Enter {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The netlink socket inside it could not be opened.
    #[error("cannot talk to the kernel in the network namespace of process {pid}")]
    Kernel {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: KernelError,
    },
}

impl NetnsError {
    /// Whether the process (and with it, for a container, its namespace) is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source: nix::Error::ENOENT | nix::Error::ESRCH, .. })
    }
}

/// An open network namespace of a process.
#[derive(Debug)]
pub struct Namespace {
    fd: OwnedFd,
    pid: u32,
    /// Its identity.
    pub id: NsId,
}

impl Namespace {
    /// The network namespace of process `pid` (in this process's pid namespace).
    pub fn of_pid(pid: u32) -> Result<Namespace, NetnsError> {
        let path = format!("/proc/{pid}/ns/net");
        let open_err = |source| NetnsError::Open { pid, source };
        let fd = open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(open_err)?;
        let st = fstat(&fd).map_err(open_err)?;
        Ok(Namespace { fd, pid, id: NsId { dev: st.st_dev, ino: st.st_ino } })
    }

    /// Whether it is this process's own network namespace (never a container's).
    pub fn is_ours(&self) -> bool {
        Namespace::of_pid(std::process::id()).is_ok_and(|own| own.id == self.id)
    }

    /// The namespace of `pid` if it is still the one recorded as `id`; `None` when the process
    /// is gone or lives in another namespace now (its container stopped or was restarted).
    pub fn still(pid: u32, id: NsId) -> Result<Option<Namespace>, NetnsError> {
        match Namespace::of_pid(pid) {
            Ok(ns) if ns.id == id => Ok(Some(ns)),
            Ok(_) => Ok(None),
            Err(e) if e.is_gone() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A kernel adapter inside this namespace. A netlink socket belongs to the namespace of the
    /// thread that opens it, for its whole life: a short-lived thread enters the namespace,
    /// opens it and ends, and this process never leaves its own namespace.
    pub fn kernel(&self) -> Result<Kernel, NetnsError> {
        let pid = self.pid;
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter { pid, source })?;
                Kernel::connect().map_err(|source| NetnsError::Kernel { pid, source })
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// The pid namespace an engine's pids are in, when it is not this process's: the engine runs
/// in a pid namespace of its own (a container, `unshare --pid`), so the pid its inspect gives
/// names another process here, or none. Found through the engine's socket: the kernel gives the
/// peer's pid (`SO_PEERCRED`) in this namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidView {
    /// How deep the engine's pid namespace is below this one (its pid there is `NSpid[level]`).
    level: usize,
}

impl PidView {
    /// How the engine behind the Unix socket `path` numbers processes: `None` when as this
    /// process does (the usual case), or when it cannot be told.
    pub fn of_engine(path: &std::path::Path) -> Option<PidView> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
        let peer = getsockopt(&stream, PeerCredentials).ok()?.pid();
        let ours = std::fs::read_link("/proc/self/ns/pid").ok()?;
        if std::fs::read_link(format!("/proc/{peer}/ns/pid")).ok()? == ours {
            return None;
        }
        let level = ns_pids(u32::try_from(peer).ok()?)?.len().checked_sub(1).filter(|l| *l > 0)?;
        Some(PidView { level })
    }

    /// The process here that the engine calls `pid`: the one whose pid at the engine's level
    /// is `pid`; `None` when there is none, or more than one (another namespace at that level).
    pub fn translate(self, pid: u32) -> Option<u32> {
        let mut found = None;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(here) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if ns_pids(here).is_some_and(|v| v.get(self.level) == Some(&pid)) {
                if found.is_some() {
                    return None;
                }
                found = Some(here);
            }
        }
        found
    }
}

/// A process's pids from this pid namespace down to its own (`NSpid` of /proc/PID/status).
fn ns_pids(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_in_its_own_namespaces() {
        let me = std::process::id();
        let ns = Namespace::of_pid(me).unwrap();
        assert!(ns.is_ours());
        assert_eq!(Namespace::still(me, ns.id).unwrap().map(|n| n.id), Some(ns.id));
        let other = NsId { dev: ns.id.dev, ino: ns.id.ino + 1 };
        assert!(Namespace::still(me, other).unwrap().is_none(), "another namespace is not this one");
        assert_eq!(ns_pids(me).unwrap()[0], me, "NSpid starts with the pid here");
        assert_eq!(format!("{}", ns.id), format!("net:[{}]", ns.id.ino));
    }

    #[test]
    fn a_process_that_is_gone_is_gone_not_an_error() {
        // Pid numbers stop below 2^22 (pid_max's ceiling).
        let gone = 4_194_304 + 7;
        assert!(Namespace::of_pid(gone).unwrap_err().is_gone());
        assert!(Namespace::still(gone, NsId { dev: 1, ino: 1 }).unwrap().is_none());
    }

    #[test]
    fn an_engine_in_this_pid_namespace_needs_no_translation() {
        let dir = std::env::temp_dir().join(format!("vpnfix-pidview-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("engine.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(PidView::of_engine(&sock), None);
        assert_eq!(PidView::of_engine(&dir.join("none.sock")), None, "no engine there: nothing to tell");
        // One level down, this process's pid is nowhere (it has no pid in a namespace below).
        assert_eq!(PidView { level: 1 }.translate(std::process::id()).filter(|p| *p == std::process::id()), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
