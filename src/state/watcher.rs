//! The watcher's record, `/run/vpnfix/<dev>.watcher`: who keeps watch over a tunnel, since
//! when, and what it has done, for `status`. Written by the watcher alone (atomic rename), after
//! each reconcile; removed when it ends. A record whose process is gone is a watcher that was
//! killed (SIGKILL): `status` says so.

use super::{StateDir, StateError};
use serde::{Deserialize, Serialize};
use std::fs;

/// A watcher's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watcher {
    /// Its process.
    pub pid: u32,
    /// When it started (seconds since the epoch).
    pub since: u64,
    /// When it last changed a route, if it has.
    #[serde(default)]
    pub last_change: Option<u64>,
    /// Reconciles run (the first, at start, included).
    #[serde(default)]
    pub reconciles: u64,
    /// Routes it added or removed.
    #[serde(default)]
    pub changes: u64,
    /// Notifications and engine events it woke for.
    #[serde(default)]
    pub events: u64,
}

impl Watcher {
    /// Whether its process still runs (a pid reused by another program does not count: its
    /// command line must be a vpnfix watch).
    pub fn alive(&self) -> bool {
        let cmdline = fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.contains(&b"watch".as_slice())
    }
}

impl StateDir {
    /// Writes a tunnel's watcher record.
    pub fn write_watcher(&self, tunnel: &str, w: &Watcher) -> Result<(), StateError> {
        self.write_json(tunnel, "watcher", w)
    }

    /// Reads a tunnel's watcher record; `None` when there is none or it is unreadable (it is
    /// only ever shown).
    pub fn read_watcher(&self, tunnel: &str) -> Option<Watcher> {
        serde_json::from_slice(&fs::read(self.file(tunnel, "watcher")).ok()?).ok()
    }

    /// Waits until the tunnel has a record (its connect ran): inotify on the directory, which
    /// the record's atomic rename into place wakes. For `vpnfix watch` run as a service before
    /// the VPN connects.
    pub fn wait_for_record(&self, tunnel: &str) -> Result<(), StateError> {
        let record = self.file(tunnel, "json");
        crate::fsutil::wait_until_made(&record, || record.exists()).map_err(|source| StateError::Io {
            what: "watch",
            path: self.path.clone(),
            source,
        })
    }

    /// Removes a tunnel's watcher record (absent is fine).
    pub fn remove_watcher(&self, tunnel: &str) -> Result<(), StateError> {
        self.remove_file(tunnel, "watcher")
    }
}
