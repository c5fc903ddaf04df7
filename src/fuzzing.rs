//! Fuzzing entry points: one `pub fn TARGET(data: &[u8])` per `cargo fuzz` target in `fuzz/`,
//! called by those targets and by `tests/fuzz_corpus.rs`, which replays the kept corpus in
//! ordinary `cargo test` (no cargo-fuzz, no nightly).
//!
//! Each function feeds untrusted bytes to the production parser, exactly as vpnfix does, and
//! panics on anything DESIGN.md ("Limits and bad input") rules out: a panic inside vpnfix, a
//! result that breaks the parser's own promises (a push with host bits, a skipped item without a
//! reason, a plan out of order or over the cap), or a result that depends on the run.
//!
//! Input formats, chosen so libFuzzer's byte mutations stay meaningful:
//! - environment targets: (lossy UTF-8) lines; `@text` is a positional argument, `KEY=value`
//!   (split at the first `=`, nothing trimmed, as the kernel hands it over) a variable, any
//!   other line is ignored;
//! - bundle targets: the seven files of [`bundle::FILES`] in that order, separated by NUL bytes
//!   (which JSON never contains); an empty or absent part is a missing file;
//! - `plugin_wire`: a frame's bytes, as the plugin's helper reads them from its socket.

use crate::bundle::{self, Bundle};
use crate::config::Config;
use crate::hook::{self, nm, openvpn, vpnc, wgquick, HookInput, Source};
use crate::net::Facts;
use crate::plan;
use crate::state::State;

mod checks;

use checks::{check_config, lookup};

/// Environment variables and positional arguments from an environment target's input.
pub fn env_input(data: &[u8]) -> (Vec<(String, String)>, Vec<String>) {
    let text = String::from_utf8_lossy(data);
    let (mut env, mut args) = (Vec::new(), Vec::new());
    for line in text.split('\n') {
        if let Some(arg) = line.strip_prefix('@') {
            args.push(arg.to_string());
        } else if let Some((k, v)) = line.split_once('=') {
            env.push((k.to_string(), v.to_string()));
        }
    }
    (env, args)
}

/// A bundle target's input as `(file name, contents)` pairs for [`bundle::from_texts`].
pub fn bundle_input(data: &[u8]) -> Vec<(&'static str, &[u8])> {
    bundle::FILES
        .iter()
        .copied()
        .zip(data.splitn(bundle::FILES.len(), |b| *b == 0))
        .filter(|(_, b)| !b.is_empty())
        .collect()
}

/// OpenVPN's hook: environment + arguments → [`openvpn::parse`] (and [`hook::detect`], and the
/// configuration the hook reads from the same environment).
pub fn openvpn_env(data: &[u8]) {
    let (env, args) = env_input(data);
    let (mode, rest) = match args.first() {
        Some(a) if hook::OPENVPN_MODES.contains(&a.as_str()) => (Some(a.as_str()), &args[1..]),
        _ => (None, &args[..]),
    };
    let got = openvpn::parse(env.clone(), rest, mode);
    assert_eq!(got, openvpn::parse(env.clone(), rest, mode), "the same input parsed twice differs");
    match &got {
        Ok(h) => checks::openvpn_input(h, &env, mode),
        Err(openvpn::HookError::NoDevice) => {
            let dev = lookup(&env, "dev").or(rest.first().map(String::as_str));
            assert!(dev.is_none_or(str::is_empty), "NoDevice with a device {dev:?}");
        }
        Err(openvpn::HookError::BadDevice(d)) => assert!(!openvpn::valid_ifname(d), "valid name {d:?} refused"),
    }
    detected(&env, &args);
    check_config(&env);
}

/// NetworkManager's dispatcher: environment + `IFACE ACTION` → [`nm::parse`] (and
/// [`hook::detect`], and the configuration).
pub fn nm_env(data: &[u8]) {
    let (env, args) = env_input(data);
    let got = nm::parse(env.clone(), &args);
    assert_eq!(got, nm::parse(env.clone(), &args), "the same input parsed twice differs");
    match &got {
        Ok(h) => checks::nm_input(h, &env, &args),
        Err(nm::NmError::NoDevice) => {
            let dev = lookup(&env, "VPN_IP_IFACE").or(args.first().map(String::as_str));
            assert!(dev.is_none_or(str::is_empty), "NoDevice with a device {dev:?}");
        }
        Err(nm::NmError::BadDevice(d)) => assert!(!openvpn::valid_ifname(d), "valid name {d:?} refused"),
    }
    detected(&env, &args);
    check_config(&env);
}

/// vpnc-script's hook files: environment + `@PHASE` → [`vpnc::parse`] (and [`hook::detect`],
/// the connect.d rewrite, and the configuration). The rewrite must be plain `sh` assignments of
/// vpnfix's own rendering: nothing of the server's text reaches `eval`.
pub fn vpnc_env(data: &[u8]) {
    let (env, args) = env_input(data);
    let phase = args.first().map(String::as_str);
    let got = vpnc::parse(env.clone(), phase);
    assert_eq!(got, vpnc::parse(env.clone(), phase), "the same input parsed twice differs");
    match &got {
        Ok(h) => {
            for p in &h.pushes {
                assert_eq!(p.dst, p.dst.trunc(), "a push with host bits: {p}");
                assert!(p.dst.prefix_len() > 0, "a default route as a push: {p}");
            }
            let ipv4: Vec<ipnet::IpNet> = h.pushes.iter().map(|p| p.dst).filter(|d| d.addr().is_ipv4()).collect();
            if let Some(sh) = vpnc::withheld(h, &ipv4[..ipv4.len().min(1)]) {
                let safe = |c: char| c.is_ascii_alphanumeric() || "_=.,/:\n ".contains(c);
                assert!(sh.chars().all(safe), "unsafe sh from vpnc::withheld: {sh:?}");
                for line in sh.lines() {
                    assert!(
                        line.starts_with("CISCO_SPLIT_INC")
                            || line.starts_with(vpnc::HELD)
                            || line.starts_with("export "),
                        "{line}"
                    );
                }
            }
        }
        Err(vpnc::VpncError::NoDevice) => {
            assert!(lookup(&env, "TUNDEV").is_none_or(str::is_empty), "NoDevice with a TUNDEV");
        }
        Err(vpnc::VpncError::BadDevice(d)) => assert!(!openvpn::valid_ifname(d), "valid name {d:?} refused"),
        Err(vpnc::VpncError::BadPhase(p)) => assert!(!vpnc::PHASES.contains(&p.as_str()), "known phase {p:?} refused"),
    }
    let mut hook_args = vec!["vpnc".to_string()];
    hook_args.extend(args.iter().cloned());
    detected(&env, &hook_args);
    check_config(&env);
}

/// wg-quick's AllowedIPs as a UAPI answer and as `wg show` prints them (the same bytes read both
/// ways) → [`wgquick::input`]: every push a valid, unique, non-default prefix; nothing panics.
pub fn wg_quick(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for allowed in [wgquick::parse_uapi(&text), wgquick::parse_wg_show(&text)] {
        let n = allowed.len();
        let args = ["up".to_string(), "wg0".to_string()];
        let i = wgquick::input(&args, Some(allowed)).expect("up wg0 is a valid invocation");
        assert!(i.tunnel.unrouted);
        assert!(i.pushes.len() + i.skipped.len() <= n, "more pushes and lines than AllowedIPs");
        let mut seen = std::collections::HashSet::new();
        for p in &i.pushes {
            assert_eq!(p.dst, p.dst.trunc(), "a push with host bits: {p}");
            assert!(p.dst.prefix_len() > 0, "a default route as a push: {p}");
            assert!(seen.insert(p.dst), "a push twice: {p}");
        }
    }
}

/// The state file reader: bytes → [`State::from_json`]; what it accepts must survive the
/// writer (`StateDir::write` serializes with `to_vec_pretty`) unchanged.
pub fn state(data: &[u8]) {
    let Ok(s) = State::from_json(data) else {
        return;
    };
    assert_eq!(s.version, crate::state::VERSION, "a state of another version was accepted");
    assert!(s.routes.iter().all(|e| !e.route.to_string().is_empty()));
    let json = serde_json::to_vec_pretty(&s).expect("state serializes");
    let back = State::from_json(&json).unwrap_or_else(|e| panic!("written state unreadable: {e}"));
    assert_eq!(back, s, "state changed through write and read");
}

/// `plan --from`'s reader: the seven files → [`bundle::from_texts`]; what it reads must be
/// well formed, the same on every run, and survive `snapshot`'s writer ([`bundle::to_texts`]).
pub fn bundle(data: &[u8]) {
    let files = bundle_input(data);
    match bundle::from_texts(&files) {
        Ok(b) => {
            checks::bundle(&b, &files);
            read_twice(&b, &files);
            through_writer(&b, &files);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A second read gives the same bundle.
fn read_twice(b: &Bundle, files: &[(&str, &[u8])]) {
    let again = bundle::from_texts(files).expect("read once, read twice");
    assert_same(b, &again, "the same bundle read twice differs");
    // Compared as sets: `docker::from_inspect` reports a network's malformed container
    // addresses in `HashMap` order, so the order may differ from run to run
    // (fuzz/artifacts/bundle/open-docker-skipped-order); see `docker_sorted`.
    let sorted = |s: &[crate::net::Skipped]| {
        let mut lines: Vec<String> = s.iter().map(ToString::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&b.host.skipped), sorted(&again.host.skipped), "skipped entries differ between two reads");
}

/// What `snapshot` would write of a bundle reads back to the same facts, with no new problem.
fn through_writer(b: &Bundle, files: &[(&str, &[u8])]) {
    let raw: Option<Vec<crate::docker::EngineNetwork>> =
        files.iter().find(|(n, _)| *n == "docker.json").map(|(_, d)| serde_json::from_slice(d).expect("read above"));
    let snap = bundle::Snapshot {
        routes: &b.host.routes,
        links: &b.host.links,
        addrs: &b.host.addrs,
        neighbours: &b.host.neighbours,
        docker: raw.as_deref(),
        env: &b.env,
    };
    let written = bundle::to_texts(&snap);
    let written: Vec<(&str, &[u8])> = written.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let mut back = bundle::from_texts(&written).unwrap_or_else(|e| panic!("a written bundle is unreadable: {e}"));
    // The writer lists each device's addresses together, as `ip -j addr` does; a device listed
    // twice comes back with its addresses side by side. Nothing depends on their order.
    let sorted = |addrs: &[crate::net::Addr]| {
        let mut keys: Vec<_> = addrs.iter().map(|a| (a.dev.clone(), a.addr, a.prefix_len)).collect();
        keys.sort();
        keys
    };
    assert_eq!(
        sorted(&b.host.addrs),
        sorted(&back.host.addrs),
        "a bundle changed through snapshot's writer: addresses"
    );
    back.host.addrs.clone_from(&b.host.addrs);
    assert_same(b, &back, "a bundle changed through snapshot's writer and the reader");
    for s in &back.host.skipped {
        assert!(b.host.skipped.contains(s), "the written bundle has a new problem: {s}");
    }
}

/// `plan --from` with the default configuration: bundle → facts → [`plan::plan`] → text and JSON.
pub fn plan_from_bundle(data: &[u8]) {
    let Ok(b) = bundle::from_texts(&bundle_input(data)) else {
        return;
    };
    let Some(facts) = facts(b) else {
        return;
    };
    let config = Config::default();
    let p = plan::plan(&facts, &config);
    checks::plan(&p, &facts, &config);
    assert!(!crate::report::plan_text(&facts, &p).is_empty());
    serde_json::to_string(&p).expect("a plan serializes");
}

/// The facts `plan --from DIR` (no flags) makes of a bundle, as `run::facts_from_bundle` does.
fn facts(b: Bundle) -> Option<Facts> {
    let input: HookInput = openvpn::parse(b.env.clone(), &[], None).ok()?;
    let (_, skipped) = Config::from_layers([b.env.as_slice()]);
    Some(b.into_facts(input, skipped))
}

/// `main`'s path: detect the caller, then parse; it must agree with the direct parse.
fn detected(env: &[(String, String)], args: &[String]) {
    let Some(inv) = hook::detect(args, env, crate::cli::COMMANDS) else {
        return;
    };
    // wg-quick's hook reads the interface (or stdin), not the environment: nothing to compare.
    if inv.source == Source::WgQuick {
        return;
    }
    let got = inv.parse(env);
    let want = match &inv.source {
        Source::OpenVpn { mode } => openvpn::parse(env.to_vec(), &inv.args, mode.as_deref()).map_err(|e| e.to_string()),
        Source::NetworkManager => nm::parse(env.to_vec(), &inv.args).map_err(|e| e.to_string()),
        Source::Vpnc { phase } => vpnc::parse(env.to_vec(), Some(phase)).map_err(|e| e.to_string()),
        Source::WgQuick => unreachable!("returned above"),
    };
    assert_eq!(got, want, "Invocation::parse differs from the direct parse");
}

/// The facts of two bundles are the same.
fn assert_same(a: &Bundle, b: &Bundle, what: &str) {
    assert_eq!(a.host.routes, b.host.routes, "{what}: routes");
    assert_eq!(a.host.links, b.host.links, "{what}: links");
    assert_eq!(a.host.addrs, b.host.addrs, "{what}: addresses");
    assert_eq!(a.host.neighbours, b.host.neighbours, "{what}: neighbours");
    assert_eq!(docker_sorted(a), docker_sorted(b), "{what}: Docker networks");
    assert_eq!(a.env, b.env, "{what}: environment");
}

/// The Docker networks with the containers of each fully sorted. `docker::from_inspect` sorts
/// them by name only, and Docker's `Containers` is a map read into a `HashMap`: containers of
/// the same name come out in the map's (random) order, so two reads of one file may differ
/// (fuzz/artifacts/bundle/open-docker-containers-of-one-name). Nothing prints them in that
/// order (the planner sorts by address), but docker.rs should walk `Containers` in a fixed
/// order (by id), which also fixes the order of its skipped entries; then this can go.
fn docker_sorted(b: &Bundle) -> Option<Vec<crate::net::DockerNetwork>> {
    let mut networks = b.host.docker.clone()?;
    for n in &mut networks {
        n.containers.sort_by(|x, y| x.name.cmp(&y.name).then(x.addrs.cmp(&y.addrs)));
    }
    Some(networks)
}

/// What OpenVPN's plugin sends its root helper (after `user nobody`, from an unprivileged
/// process): a frame's bytes → [`Request::decode`](crate::plugin::wire::Request::decode) (and the
/// answer's decoder, which the plugin runs): nothing panics, what is read survives the writer
/// unchanged, and no setting of an event's environment reaches the hook's.
pub fn plugin_wire(data: &[u8]) {
    use crate::plugin::wire::{Answer, Request};
    if let Ok(r) = Request::decode(data) {
        assert_eq!(Request::decode(&r.encode()).expect("written request readable"), r);
        if let Request::Event { hook, env, .. } = &r {
            let seen = crate::plugin::helper::environment(*hook, env);
            let settings: Vec<&(String, String)> = seen.iter().filter(|(k, _)| k.starts_with("VPNFIX_")).collect();
            let own: Vec<(String, String)> =
                std::env::vars().filter(|(k, _)| crate::config::is_config_var(k)).collect();
            assert!(settings.iter().all(|s| own.contains(s)), "an event's setting reached the hook: {settings:?}");
            assert_eq!(seen.iter().filter(|(k, _)| k == "script_type").count(), 1);
        }
    }
    if let Ok(a) = Answer::decode(data) {
        assert_eq!(Answer::decode(&a.encode()).expect("written answer readable"), a);
    }
}
