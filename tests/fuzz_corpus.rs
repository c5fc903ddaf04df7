//! Replays the fuzz corpus without cargo-fuzz: every file of `fuzz/corpus/<target>/` (and of
//! `fuzz/artifacts/<target>/`, the fixed crashes kept as regressions) goes through the same
//! `vpnfix::fuzzing` function its `cargo fuzz` target calls. A failure names the file;
//! `cargo fuzz run TARGET FILE` reproduces it under the fuzzer.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use vpnfix::fuzzing;

/// What a fuzz target runs on one input.
type Target = fn(&[u8]);

/// The targets and the functions they call (fuzz/fuzz_targets/*.rs).
const TARGETS: &[(&str, Target)] = &[
    ("openvpn_env", fuzzing::openvpn_env),
    ("nm_env", fuzzing::nm_env),
    ("state", fuzzing::state),
    ("bundle", fuzzing::bundle),
    ("plan_from_bundle", fuzzing::plan_from_bundle),
    ("vpnc_env", fuzzing::vpnc_env),
    ("wg_quick", fuzzing::wg_quick),
    ("plugin_wire", fuzzing::plugin_wire),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty: run fuzz/seed.sh");
    let inputs: Vec<PathBuf> = corpus.into_iter().chain(files(&fuzz.join("artifacts").join(target))).collect();
    let failed: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).unwrap();
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&data)));
            outcome.err().map(|e| {
                let why = e.downcast_ref::<String>().cloned().or(e.downcast_ref::<&str>().map(|s| s.to_string()));
                format!("{}: {}", path.display(), why.unwrap_or_default())
            })
        })
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs fail:\n{}", failed.len(), inputs.len(), failed.join("\n"));
}

#[test]
fn every_target_has_a_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> =
        files(&dir).iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    replayed.sort();
    assert_eq!(names, replayed);
}

#[test]
fn openvpn_env_corpus() {
    replay("openvpn_env", TARGETS[0].1);
}

#[test]
fn nm_env_corpus() {
    replay("nm_env", TARGETS[1].1);
}

#[test]
fn state_corpus() {
    replay("state", TARGETS[2].1);
}

#[test]
fn bundle_corpus() {
    replay("bundle", TARGETS[3].1);
}

#[test]
fn plan_from_bundle_corpus() {
    replay("plan_from_bundle", TARGETS[4].1);
}

#[test]
fn vpnc_env_corpus() {
    replay("vpnc_env", TARGETS[5].1);
}

#[test]
fn wg_quick_corpus() {
    replay("wg_quick", TARGETS[6].1);
}

#[test]
fn plugin_wire_corpus() {
    replay("plugin_wire", TARGETS[7].1);
}
