//! `vpnfix install` proper: look at every path vpnfix installs, decide, make the missing
//! directories, write the manifest (the intent), then the files and the link; and report.

use super::decide::{decide, Content, Decision, Item};
use super::fsops;
use super::{
    load_manifest, Action, InstallError, InstallOptions, Manifest, Report, DISPATCHER, DISPATCHER_TEXT, OVPN_LINE,
    PRE_DOWN_LINK, PRE_DOWN_TARGET, SHIPPED_BIN, SNIPPET, SNIPPET_TEXT, VPNC_HOOKS,
};
use std::io;
use std::path::{Path, PathBuf};

/// The four things vpnfix installs, with the binary's path rewritten to `{prefix}/bin/vpnfix`.
fn items(o: &InstallOptions) -> Result<Vec<Item>, InstallError> {
    let bin = o.bin_path();
    let bin_text = bin.to_string_lossy(); // check_prefix made it plain ASCII
    let binary =
        std::fs::read(&o.binary).map_err(|source| InstallError::ReadBinary { path: o.binary.clone(), source })?;
    let text = |t: &str| t.replace(SHIPPED_BIN, &bin_text).into_bytes();
    let mut items = vec![
        Item { path: bin.clone(), content: Content::File { bytes: binary, mode: 0o755 } },
        Item { path: DISPATCHER.into(), content: Content::File { bytes: text(DISPATCHER_TEXT), mode: 0o755 } },
        Item { path: PRE_DOWN_LINK.into(), content: Content::Link { target: PRE_DOWN_TARGET.into() } },
        Item { path: SNIPPET.into(), content: Content::File { bytes: text(SNIPPET_TEXT), mode: 0o644 } },
    ];
    // Sourced by vpnc-script, not executed: no execute bit needed.
    items.extend(
        VPNC_HOOKS
            .iter()
            .map(|(path, t)| Item { path: path.into(), content: Content::File { bytes: text(t), mode: 0o644 } }),
    );
    Ok(items)
}

/// The directories missing above `path`, parents first, added to `dirs` once each.
fn missing_dirs(o: &InstallOptions, path: &Path, dirs: &mut Vec<PathBuf>) -> Result<(), InstallError> {
    let mut above: Vec<&Path> = path.ancestors().skip(1).filter(|a| a.parent().is_some()).collect();
    above.reverse();
    for dir in above {
        let real = o.real(dir);
        match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(InstallError::MakeDir { path: real, source: io::ErrorKind::NotADirectory.into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
            Err(source) => return Err(InstallError::Inspect { path: real, source }),
        }
    }
    Ok(())
}

/// What an install will do: directories to make, then one decision per item.
#[derive(Debug, Default)]
struct Plan {
    mkdirs: Vec<PathBuf>,
    steps: Vec<(Item, Decision)>,
}

/// Looks at every path and decides what to do there.
fn plan(o: &InstallOptions, recorded: &Manifest, as_root: bool) -> Result<Plan, InstallError> {
    let mut plan = Plan::default();
    for item in items(o)? {
        let real = o.real(&item.path);
        let found = fsops::inspect(&real)?;
        let mut d = if item.path == o.bin_path() && found.is_some() && fsops::same_file(&o.binary, &real) {
            Decision::Keep("it is the running binary".into())
        } else {
            decide(&item.content, found.as_ref(), recorded.entries.get(&item.path), as_root)
        };
        // A pre-down link to a 90-vpnfix that is not vpnfix's would make NetworkManager run it
        // at one more event: that is changing what vpnfix did not create.
        let script_skipped =
            plan.steps.iter().any(|(i, d)| i.path == Path::new(DISPATCHER) && matches!(d, Decision::Skip(_)));
        if item.path == Path::new(PRE_DOWN_LINK) && d == Decision::Create && script_skipped {
            d = Decision::Skip(format!("it would point at {DISPATCHER}, which is not vpnfix's"));
        }
        if let (true, Decision::Skip(why)) = (item.path == o.bin_path(), &d) {
            d = Decision::Skip(format!("{why}; remove it and run `vpnfix install` again to have vpnfix manage it"));
        }
        if d == Decision::Create {
            missing_dirs(o, &item.path, &mut plan.mkdirs)?;
        }
        plan.steps.push((item, d));
    }
    Ok(plan)
}

/// The manifest after this install: what it records plus what is created now; an entry whose
/// file the admin changed stays, so `--uninstall` reports it.
fn next_manifest(o: &InstallOptions, recorded: &Manifest, plan: &Plan) -> Manifest {
    let mut m = recorded.clone();
    m.dirs.retain(|d| o.real(d).is_dir());
    m.dirs.extend(plan.mkdirs.iter().cloned());
    for (item, d) in &plan.steps {
        let record = match d {
            Decision::Create | Decision::Replace(_) => true,
            Decision::Keep(_) => recorded.entries.contains_key(&item.path),
            Decision::Skip(_) => false,
        };
        if record {
            m.entries.insert(item.path.clone(), item.content.entry());
        }
    }
    m
}

/// Installs (or, in a dry run, plans) everything and says what it did.
pub(super) fn run(o: &InstallOptions, as_root: bool) -> Result<Report, InstallError> {
    let mpath = o.manifest_path();
    let (old_text, recorded) = load_manifest(&o.real(&mpath))?;
    let mut plan = plan(o, &recorded, as_root)?;
    let mut m = next_manifest(o, &recorded, &plan);
    let manifest = if m.is_empty() {
        None
    } else {
        let before = plan.mkdirs.len();
        missing_dirs(o, &mpath, &mut plan.mkdirs)?;
        m.dirs.extend(plan.mkdirs[before..].iter().cloned());
        let text = m.render();
        let d = match &old_text {
            None => Decision::Create,
            Some(t) if *t == text => Decision::Keep("up to date".into()),
            Some(_) => Decision::Replace("updated".into()),
        };
        Some((text, d))
    };
    if !o.dry_run {
        execute(o, &plan, manifest.as_ref(), as_root)?;
    }
    Ok(report(o, &plan, manifest.as_ref().map(|(_, d)| d), as_root))
}

/// Directories, then the manifest (so that what follows is recorded even if it fails
/// half-way), then the items.
fn execute(
    o: &InstallOptions,
    plan: &Plan,
    manifest: Option<&(String, Decision)>,
    as_root: bool,
) -> Result<(), InstallError> {
    for dir in &plan.mkdirs {
        fsops::make_dir(&o.real(dir), as_root)?;
    }
    if let Some((text, d)) = manifest {
        let content = Content::File { bytes: text.clone().into_bytes(), mode: 0o644 };
        write(&o.real(&o.manifest_path()), &content, d, as_root)?;
    }
    for (item, d) in &plan.steps {
        write(&o.real(&item.path), &item.content, d, as_root)?;
    }
    Ok(())
}

/// Carries out one decision: creations are exclusive, replacements a rename over the old one.
fn write(real: &Path, content: &Content, d: &Decision, as_root: bool) -> Result<(), InstallError> {
    let exclusive = match d {
        Decision::Create => true,
        Decision::Replace(_) => false,
        Decision::Keep(_) | Decision::Skip(_) => return Ok(()),
    };
    match content {
        Content::File { bytes, mode } => fsops::write_file(real, bytes, *mode, as_root, exclusive),
        Content::Link { target } => fsops::write_link(real, target, as_root, exclusive),
    }
}

fn action(path: &Path, content: &Content, d: &Decision) -> Action {
    let path = path.to_path_buf();
    match d {
        Decision::Create => Action::Create { path, what: content.what() },
        Decision::Replace(why) => Action::Replace { path, what: content.what(), why: why.clone() },
        Decision::Keep(why) => Action::Keep { path, why: why.clone() },
        Decision::Skip(why) => Action::Skip { path, why: why.clone() },
    }
}

/// The report: actions in the order they happen, then what else to know, then the .ovpn line.
fn report(o: &InstallOptions, plan: &Plan, manifest: Option<&Decision>, as_root: bool) -> Report {
    let mut actions: Vec<Action> = plan.mkdirs.iter().map(|p| Action::MakeDir { path: p.clone() }).collect();
    if let Some(d) = manifest {
        actions.push(action(&o.manifest_path(), &Content::File { bytes: Vec::new(), mode: 0o644 }, d));
    }
    actions.extend(plan.steps.iter().map(|(i, d)| action(&i.path, &i.content, d)));
    let skipped = |p: &str| plan.steps.iter().any(|(i, d)| i.path == Path::new(p) && matches!(d, Decision::Skip(_)));
    let mut notes = Vec::new();
    if !as_root {
        let uid = nix::unistd::geteuid();
        notes.push(if o.dry_run {
            "not root: owners were not checked, and the real install needs root".to_string()
        } else {
            format!(
                "not root: the files belong to uid {uid}; NetworkManager runs a dispatcher script only if root owns it"
            )
        });
    }
    if skipped(DISPATCHER) || skipped(PRE_DOWN_LINK) {
        notes.push(
            "NetworkManager: a dispatcher path above was skipped; vpnfix misses those events until it is vpnfix's."
                .into(),
        );
    } else {
        notes.push(
            "NetworkManager needs nothing more: its dispatcher runs vpnfix at vpn-up, vpn-pre-down and vpn-down."
                .into(),
        );
    }
    if skipped(SNIPPET) {
        let bin = o.bin_path();
        notes.push(format!(
            "{SNIPPET} was skipped: check that it runs {} at route-up, route-pre-down and down.",
            bin.display()
        ));
    }
    notes.push("OpenVPN: add this line to each client configuration (.ovpn) that should use vpnfix:".into());
    Report { root: o.root.clone(), actions, notes, ovpn_line: OVPN_LINE.into(), dry_run: o.dry_run, uninstall: false }
}
