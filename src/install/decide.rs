//! The pure decisions of `vpnfix install`: from what is at a path and what the manifest
//! recorded there, whether to create, replace, keep or skip. No I/O.

use super::fsops::Found;
use super::{fnv1a64, Entry, What};
use std::path::{Path, PathBuf};

/// One path vpnfix installs and what it wants there.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) path: PathBuf,
    pub(super) content: Content,
}

#[derive(Debug)]
pub(super) enum Content {
    File { bytes: Vec<u8>, mode: u32 },
    Link { target: PathBuf },
}

impl Content {
    pub(super) fn what(&self) -> What {
        match self {
            Content::File { mode, .. } => What::File { mode: *mode },
            Content::Link { target } => What::Link { target: target.clone() },
        }
    }

    pub(super) fn entry(&self) -> Entry {
        match self {
            Content::File { bytes, .. } => Entry::File { hash: fnv1a64(bytes) },
            Content::Link { target } => Entry::Link { target: target.clone() },
        }
    }
}

/// What to do at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Create,
    Replace(String),
    Keep(String),
    Skip(String),
}

/// Decides, from what is at a path and what the manifest recorded there, what to do: create
/// what is missing, keep what is right, rewrite only what is still vpnfix's, skip the rest.
pub(super) fn decide(want: &Content, found: Option<&Found>, recorded: Option<&Entry>, as_root: bool) -> Decision {
    let Some(found) = found else { return Decision::Create };
    let ours = recorded.is_some_and(|e| still_matches(e, found));
    match (want, found) {
        (Content::File { bytes, mode }, Found::File { bytes: have, mode: m, uid, gid, .. }) if bytes == have => {
            if *m == *mode && (!as_root || (*uid == 0 && *gid == 0)) {
                return Decision::Keep("already installed".into());
            }
            let owner = if as_root { ", owner root:root" } else { "" };
            let how = format!("mode {m:04o}, owner {uid}:{gid}; vpnfix installs {mode:04o}{owner}");
            if ours {
                Decision::Replace(format!("{how}, fixed"))
            } else {
                Decision::Skip(format!("same content, but {how}; left alone"))
            }
        }
        (Content::Link { target }, Found::Link { target: have }) if target == have => {
            Decision::Keep("already installed".into())
        }
        _ if ours => Decision::Replace("vpnfix installed another version".into()),
        _ if recorded.is_some() => Decision::Skip("changed since vpnfix installed it; left alone".into()),
        _ => Decision::Skip(foreign(found)),
    }
}

pub(super) fn foreign(found: &Found) -> String {
    match found {
        Found::Link { target } if target == Path::new("/dev/null") => {
            "a link to /dev/null (NetworkManager's way to disable a script); left alone".into()
        }
        Found::Link { target } => format!("a link to {} that vpnfix did not make; left alone", target.display()),
        Found::File { .. } => "a file with other content that vpnfix did not install; left alone".into(),
        Found::Other { kind } => format!("{kind}; left alone"),
    }
}

/// Whether what is at a path is still what the manifest says vpnfix put there.
pub(super) fn still_matches(e: &Entry, found: &Found) -> bool {
    match (e, found) {
        (Entry::File { hash }, Found::File { bytes, .. }) => fnv1a64(bytes) == *hash,
        (Entry::Link { target }, Found::Link { target: t }) => target == t,
        _ => false,
    }
}
