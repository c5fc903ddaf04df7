//! `vpnfix install --uninstall`: removes what the manifest records and is still as vpnfix left
//! it, then the manifest, then the directories vpnfix created that are now empty. Like every
//! undo in vpnfix it tries every removal and reports each failure, instead of stopping.

use super::decide::still_matches;
use super::fsops::{self, Found};
use super::{load_manifest, Action, Entry, InstallError, InstallOptions, Report, OVPN_LINE};
use std::cmp::Reverse;
use std::path::{Path, PathBuf};

/// Where vpnfix keeps its per-tunnel state by default: entries there mean live routes.
const STATE_DIR: &str = "/run/vpnfix";

pub(super) fn run(o: &InstallOptions) -> Result<Report, InstallError> {
    let mpath = o.manifest_path();
    let (text, m) = load_manifest(&o.real(&mpath))?;
    let mut notes = Vec::new();
    let mut actions = Vec::new();
    if text.is_none() {
        let why =
            format!("nothing to uninstall: no manifest at {} (installed with another --prefix?)", mpath.display());
        notes.push(why);
    } else {
        let mut removed: Vec<PathBuf> = Vec::new();
        // Links first (they point at files), deeper paths before shallower ones.
        let mut entries: Vec<(&PathBuf, &Entry)> = m.entries.iter().collect();
        entries.sort_by_key(|(p, e)| (matches!(e, Entry::File { .. }), Reverse(p.components().count())));
        for (path, entry) in entries {
            actions.push(remove_entry(o, path, entry, &mut removed));
        }
        actions.push(remove_manifest(o, &mpath, &actions, &mut removed));
        let mut dirs: Vec<&PathBuf> = m.dirs.iter().collect();
        dirs.sort_by_key(|d| Reverse(d.components().count()));
        actions.extend(dirs.into_iter().filter_map(|d| remove_dir(o, d, &mut removed)));
    }
    notes.extend(closing_notes(o, &actions));
    Ok(Report {
        root: o.root.clone(),
        actions,
        notes,
        ovpn_line: OVPN_LINE.into(),
        dry_run: o.dry_run,
        uninstall: true,
    })
}

/// Removes one recorded file or link if it still holds what vpnfix wrote.
fn remove_entry(o: &InstallOptions, path: &Path, entry: &Entry, removed: &mut Vec<PathBuf>) -> Action {
    let real = o.real(path);
    let path = path.to_path_buf();
    let found = match fsops::inspect(&real) {
        Ok(Some(f)) => f,
        Ok(None) => return Action::Gone { path },
        Err(e) => return Action::Failed { path, why: crate::logging::chain(&e) },
    };
    if !still_matches(entry, &found) {
        let why = match found {
            Found::Other { kind } => format!("now {kind}; left alone"),
            _ => "changed since vpnfix installed it; left for you".into(),
        };
        return Action::Keep { path, why };
    }
    if !o.dry_run {
        if let Err(e) = fsops::remove_file(&real) {
            return Action::Failed { path, why: crate::logging::chain(&e) };
        }
    }
    removed.push(real);
    Action::Remove { path }
}

/// Removes the manifest, unless a removal failed: then it stays, for another `--uninstall`.
fn remove_manifest(o: &InstallOptions, mpath: &Path, done: &[Action], removed: &mut Vec<PathBuf>) -> Action {
    let path = mpath.to_path_buf();
    let failed = done.iter().filter(|a| matches!(a, Action::Failed { .. })).count();
    if failed > 0 {
        let why = format!("{failed} removal(s) failed; kept so that `vpnfix install --uninstall` can finish later");
        return Action::Keep { path, why };
    }
    let real = o.real(mpath);
    if !o.dry_run {
        if let Err(e) = fsops::remove_file(&real) {
            return Action::Failed { path, why: crate::logging::chain(&e) };
        }
    }
    removed.push(real);
    Action::Remove { path }
}

/// Removes a directory vpnfix created if it is empty (in a dry run: would be, after the
/// removals before it); says nothing about one that is already gone.
fn remove_dir(o: &InstallOptions, dir: &Path, removed: &mut Vec<PathBuf>) -> Option<Action> {
    let real = o.real(dir);
    let path = dir.to_path_buf();
    if !real.is_dir() {
        return None;
    }
    let empty = if o.dry_run {
        match std::fs::read_dir(&real) {
            Ok(rd) => rd.filter_map(Result::ok).all(|e| removed.contains(&e.path())),
            Err(e) => return Some(Action::Failed { path, why: format!("cannot read it: {e}") }),
        }
    } else {
        match fsops::remove_dir(&real) {
            Ok(gone) => gone,
            Err(e) => return Some(Action::Failed { path, why: crate::logging::chain(&e) }),
        }
    };
    if !empty {
        return Some(Action::Keep { path, why: "not empty; left".into() });
    }
    removed.push(real);
    Some(Action::RemoveDir { path })
}

fn closing_notes(o: &InstallOptions, actions: &[Action]) -> Vec<String> {
    let mut notes = Vec::new();
    let failed = actions.iter().filter(|a| matches!(a, Action::Failed { .. })).count();
    if failed > 0 {
        notes.push(format!(
            "{failed} removal(s) failed (above); the manifest stays, so `vpnfix install --uninstall` can finish later"
        ));
    }
    let live = std::fs::read_dir(o.real(Path::new(STATE_DIR)))
        .map(|rd| rd.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "json")))
        .unwrap_or(false);
    if live {
        notes.push(format!(
            "{STATE_DIR} records routes of connected tunnels: with vpnfix gone, `ip route flush proto 86` and `ip -6 route flush proto 86` remove them (86 unless VPNFIX_PROTO says otherwise)"
        ));
    }
    notes.push("OpenVPN: remove this line from the client configurations that have it (OpenVPN does not start with a missing config file):".into());
    notes
}
