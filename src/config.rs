//! Configuration: built-in defaults, overridden by `/etc/vpnfix.conf`, overridden by `VPNFIX_*`
//! variables (OpenVPN's `setenv` passes them to the hook), overridden by command-line flags.
//!
//! Every layer is a list of `KEY=value` pairs read with envy; `DOCKER_HOST` is read too, so the
//! file can name the engine for NetworkManager users, whose dispatcher passes no environment.
//! A bad value never stops the hook:
//! it is reported in one line naming the variable, and the layer below it (or the default) wins.

use crate::net::{Skipped, DEFAULT_PROTO};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where the optional configuration file lives.
pub const CONF_FILE: &str = "/etc/vpnfix.conf";

/// The variable that names another configuration file (tests give each run its own). It and
/// [`crate::logging::SYSLOG_VAR`] are read before the layers are merged, so they are not
/// settings of the merge.
pub const CONF_FILE_VAR: &str = "VPNFIX_CONF_FILE";

/// The `VPNFIX_*` variables that are not settings, never reported as unknown: those read before
/// the configuration, and what vpnc-script's connect.d hands its post-connect.d
/// ([`crate::hook::vpnc::HELD`]).
pub const NOT_SETTINGS: &[&str] = &["CONF_FILE", "SYSLOG", "VPNC_HELD"];

/// Whether a variable is one of vpnfix's (`VPNFIX_*`) or `DOCKER_HOST`: the environment a
/// process vpnfix starts for itself (the watcher, the plugin's helper) is given, and the only
/// variables that make a configuration.
pub fn is_config_var(key: &str) -> bool {
    key.starts_with("VPNFIX_") || key == "DOCKER_HOST"
}

/// Every variable vpnfix reads, without the `VPNFIX_` prefix.
pub const KEYS: &[&str] = &[
    "POLICY",
    "KEEP_PREFIX_V4",
    "KEEP_PREFIX_V6",
    "KEEP",
    "VPN",
    "MIN_PREFIX_V4",
    "MIN_PREFIX_V6",
    "MAX_ROUTES",
    "PROTO",
    "STATE_DIR",
    "DOCKER_TIMEOUT_MS",
    "STRICT",
    "LOG",
    "DRY_RUN",
    "WATCH",
    "CONTAINER_ROUTES",
    "CONTAINER_ROUTES_V6",
];

/// Who gets a contested range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The VPN gets what local containers do not use; containers stay reachable.
    #[default]
    Split,
    /// The VPN gets all of it; the host loses its containers there.
    Vpn,
    /// The bridge keeps all of it; the VPN loses those addresses.
    Local,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Split => "split",
            Policy::Vpn => "vpn",
            Policy::Local => "local",
        })
    }
}

/// How much vpnfix says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and things skipped.
    Warn,
    /// Also every change (the default).
    #[default]
    Info,
    /// Also every fact gathered.
    Debug,
}

/// The settings, after all layers are merged.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// split | vpn | local.
    pub policy: Policy,
    /// Used addresses are widened to blocks of this length for broad IPv4 pushes.
    pub keep_prefix_v4: u8,
    /// The same for IPv6.
    pub keep_prefix_v6: u8,
    /// Prefixes that always stay on the bridge.
    pub keep: Vec<IpNet>,
    /// Prefixes the VPN gets even inside widened blocks (used addresses still stay local).
    pub vpn: Vec<IpNet>,
    /// IPv4 pushes shorter than this are reported, never used.
    pub min_prefix_v4: u8,
    /// The same for IPv6.
    pub min_prefix_v6: u8,
    /// The most routes vpnfix adds for one tunnel.
    pub max_routes: usize,
    /// vpnfix's route protocol number.
    pub proto: u8,
    /// Where per-tunnel state lives.
    pub state_dir: PathBuf,
    /// How long Docker may take to answer, in all.
    pub docker_timeout_ms: u64,
    /// Exit non-zero from route-up and manual commands when something failed.
    pub strict: bool,
    /// How much to log.
    pub log: LogLevel,
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Start a watcher at connect that keeps the rule true until the tunnel goes.
    pub watch: bool,
    /// Add the VPN side, via the network's gateway, inside the containers of contested networks
    /// that masquerade, so the containers reach the VPN too.
    pub container_routes: bool,
    /// The same for IPv6 networks: only where the engine NATs IPv6 (Docker's `ip6tables`), which
    /// no engine's API tells, so the user says it.
    pub container_routes_v6: bool,
    /// `DOCKER_HOST` as Docker defines it, from the environment or the configuration file: the
    /// one engine to ask. Unset: every usual engine socket that exists ([`crate::docker`]).
    #[serde(skip)]
    pub docker_host: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::Split,
            keep_prefix_v4: 24,
            keep_prefix_v6: 120,
            keep: Vec::new(),
            vpn: Vec::new(),
            min_prefix_v4: 8,
            min_prefix_v6: 16,
            max_routes: 1024,
            proto: DEFAULT_PROTO,
            state_dir: PathBuf::from("/run/vpnfix"),
            docker_timeout_ms: 1000,
            strict: false,
            log: LogLevel::Info,
            dry_run: false,
            watch: true,
            container_routes: true,
            container_routes_v6: false,
            docker_host: None,
        }
    }
}

impl Config {
    /// Merges layers of `KEY=value` pairs, later layers winning; only `VPNFIX_*` keys count.
    /// Each bad value is reported and ignored, so the layer below it (or the default) applies.
    pub fn from_layers<'a, I>(layers: I) -> (Config, Vec<Skipped>)
    where
        I: IntoIterator<Item = &'a [(String, String)]>,
    {
        let mut merged: Vec<(String, String)> = Vec::new();
        let mut skipped = Vec::new();
        let mut docker_host = None;
        for layer in layers {
            for (k, v) in layer {
                if k == "DOCKER_HOST" && !v.is_empty() {
                    docker_host = Some(v.clone());
                }
                let Some(key) = k.strip_prefix("VPNFIX_") else {
                    continue;
                };
                if NOT_SETTINGS.contains(&key) {
                    continue;
                }
                if !KEYS.contains(&key) {
                    skipped.push(Skipped::new(k.as_str(), "not a vpnfix setting; ignored"));
                } else if let Err(why) = check_one(key, v) {
                    skipped.push(Skipped::new(format!("{k}={v:?}"), format!("{why}; ignored")));
                } else {
                    merged.retain(|(mk, _)| mk != k);
                    merged.push((k.clone(), v.clone()));
                }
            }
        }
        let config: Config = envy::prefixed("VPNFIX_").from_iter(merged).expect("every value was checked on its own");
        (Config { docker_host, ..config }, skipped)
    }

    /// This configuration with the command line's typed overrides applied, which beat every
    /// other layer (they are values already: nothing to parse or check again).
    pub fn overridden(mut self, o: &Overrides) -> Config {
        self.policy = o.policy.unwrap_or(self.policy);
        if !o.keep.is_empty() {
            self.keep = o.keep.clone();
        }
        if !o.vpn.is_empty() {
            self.vpn = o.vpn.clone();
        }
        self.max_routes = o.max_routes.unwrap_or(self.max_routes);
        self
    }

    /// The keep prefix of a family.
    pub fn keep_prefix(&self, v6: bool) -> u8 {
        if v6 {
            self.keep_prefix_v6
        } else {
            self.keep_prefix_v4
        }
    }

    /// The minimum push length of a family.
    pub fn min_prefix(&self, v6: bool) -> u8 {
        if v6 {
            self.min_prefix_v6
        } else {
            self.min_prefix_v4
        }
    }
}

/// Settings given on the command line (manual mode), typed by clap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--policy`.
    pub policy: Option<Policy>,
    /// `--keep`.
    pub keep: Vec<IpNet>,
    /// `--vpn`.
    pub vpn: Vec<IpNet>,
    /// `--max-routes`.
    pub max_routes: Option<usize>,
}

/// Parses one setting alone (envy does the typing), then checks its range.
fn check_one(key: &str, value: &str) -> Result<(), String> {
    let pair = [(format!("VPNFIX_{key}"), value.to_string())];
    let c: Config = envy::prefixed("VPNFIX_").from_iter(pair).map_err(|e| expected(key, e))?;
    let max_len = |v6: bool| if v6 { 128 } else { 32 };
    let bad_len = |len: u8, v6: bool| len > max_len(v6);
    let out_of_range = match key {
        "KEEP_PREFIX_V4" => bad_len(c.keep_prefix_v4, false),
        "KEEP_PREFIX_V6" => bad_len(c.keep_prefix_v6, true),
        "MIN_PREFIX_V4" => bad_len(c.min_prefix_v4, false),
        "MIN_PREFIX_V6" => bad_len(c.min_prefix_v6, true),
        "PROTO" => c.proto <= 4,
        "DOCKER_TIMEOUT_MS" => c.docker_timeout_ms == 0,
        _ => false,
    };
    if out_of_range {
        return Err(match key {
            "PROTO" => "protocol numbers 0-4 belong to the kernel (unspec, redirect, kernel, boot, static)".into(),
            "DOCKER_TIMEOUT_MS" => "must be at least 1".into(),
            k if k.ends_with("V4") => "an IPv4 prefix length is 0 to 32".into(),
            _ => "an IPv6 prefix length is 0 to 128".into(),
        });
    }
    Ok(())
}

/// What a key expects, for the message about a value that is not that.
fn expected(key: &str, err: envy::Error) -> String {
    let what = match key {
        "POLICY" => "expected split, vpn or local",
        "KEEP" | "VPN" => "expected comma-separated prefixes like 172.20.0.0/24,fd00::/64",
        "STRICT" | "DRY_RUN" | "WATCH" | "CONTAINER_ROUTES" | "CONTAINER_ROUTES_V6" => "expected true or false",
        "LOG" => "expected error, warn, info or debug",
        "PROTO" => "expected a protocol number 5-255",
        "STATE_DIR" => "expected a directory",
        _ => "expected a whole number",
    };
    format!("{what} ({err})")
}

/// Reads `KEY=value` lines (the `/etc/vpnfix.conf` and bundle `env` format): blank lines and
/// `#` comments are skipped, the first `=` splits, surrounding double or single quotes go.
pub fn parse_kv_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), unquote(v.trim()).to_string()))
        .collect()
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let (c, skipped) = Config::from_layers([&[][..]]);
        assert!(skipped.is_empty());
        assert_eq!(c, Config::default());
        assert_eq!((c.keep_prefix_v4, c.keep_prefix_v6), (24, 120));
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6, c.max_routes), (8, 16, 1024));
        assert!(c.watch && c.container_routes && !c.container_routes_v6);
    }

    #[test]
    fn every_variable_is_read() {
        let env = layer(&[
            ("VPNFIX_POLICY", "vpn"),
            ("VPNFIX_KEEP_PREFIX_V4", "28"),
            ("VPNFIX_KEEP_PREFIX_V6", "112"),
            ("VPNFIX_KEEP", "172.20.5.0/24,fd00::/64"),
            ("VPNFIX_VPN", "172.20.9.0/24"),
            ("VPNFIX_MIN_PREFIX_V4", "12"),
            ("VPNFIX_MIN_PREFIX_V6", "32"),
            ("VPNFIX_MAX_ROUTES", "50"),
            ("VPNFIX_PROTO", "201"),
            ("VPNFIX_STATE_DIR", "/tmp/x"),
            ("VPNFIX_DOCKER_TIMEOUT_MS", "250"),
            ("VPNFIX_STRICT", "true"),
            ("VPNFIX_LOG", "debug"),
            ("VPNFIX_DRY_RUN", "true"),
            ("VPNFIX_WATCH", "false"),
            ("VPNFIX_CONTAINER_ROUTES", "false"),
            ("VPNFIX_CONTAINER_ROUTES_V6", "true"),
            ("route_network_1", "10.0.0.0"),
        ]);
        let (c, skipped) = Config::from_layers([env.as_slice()]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(c.policy, Policy::Vpn);
        assert_eq!((c.keep_prefix_v4, c.keep_prefix_v6), (28, 112));
        assert_eq!(c.keep.len(), 2);
        assert_eq!(c.vpn, vec!["172.20.9.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6, c.max_routes, c.proto), (12, 32, 50, 201));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.docker_timeout_ms, 250);
        assert!(c.strict && c.dry_run && !c.watch);
        assert!(!c.container_routes && c.container_routes_v6);
        assert_eq!(c.log, LogLevel::Debug);
    }

    #[test]
    fn later_layers_win_and_bad_values_fall_back() {
        let file = layer(&[("VPNFIX_POLICY", "local"), ("VPNFIX_MAX_ROUTES", "10")]);
        let env = layer(&[
            ("VPNFIX_POLICY", "sideways"),
            ("VPNFIX_MAX_ROUTES", "20"),
            ("VPNFIX_KEEP_PREFIX_V4", "33"),
            ("VPNFIX_PROTO", "2"),
            ("VPNFIX_KEEP", "172.20.0.0/33"),
            ("VPNFIX_TYPO", "1"),
        ]);
        let (c, skipped) = Config::from_layers([file.as_slice(), env.as_slice()]);
        assert_eq!(c.policy, Policy::Local, "the bad env value falls back to the file's");
        assert_eq!(c.max_routes, 20);
        assert_eq!(c.keep_prefix_v4, 24);
        assert_eq!(c.proto, DEFAULT_PROTO);
        assert!(c.keep.is_empty());
        let lines: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("VPNFIX_POLICY=\"sideways\": expected split, vpn or local"));
        assert!(lines[1].contains("0 to 32"));
        assert!(lines[2].contains("belong to the kernel"));
        assert!(lines[3].contains("comma-separated prefixes"));
        assert!(lines[4].starts_with("VPNFIX_TYPO: not a vpnfix setting"));
        assert!(lines.iter().all(|l| l.ends_with("ignored")));
    }

    #[test]
    fn docker_host_comes_from_the_file_unless_the_environment_sets_it() {
        let file = layer(&[("DOCKER_HOST", "unix:///run/podman/podman.sock")]);
        let (c, skipped) = Config::from_layers([file.as_slice()]);
        assert!(skipped.is_empty());
        assert_eq!(c.docker_host.as_deref(), Some("unix:///run/podman/podman.sock"));
        let env = layer(&[("DOCKER_HOST", "unix:///x.sock")]);
        let (c, _) = Config::from_layers([file.as_slice(), env.as_slice()]);
        assert_eq!(c.docker_host.as_deref(), Some("unix:///x.sock"));
        let (c, _) = Config::from_layers([file.as_slice(), layer(&[("DOCKER_HOST", "")]).as_slice()]);
        assert_eq!(c.docker_host.as_deref(), Some("unix:///run/podman/podman.sock"), "an empty one is unset");
    }

    #[test]
    fn kv_lines() {
        let text = "# comment\n\nVPNFIX_POLICY=\"vpn\"\ntls_id_0=CN=server\n  VPNFIX_LOG = 'warn'\nnonsense\n";
        assert_eq!(
            parse_kv_lines(text),
            layer(&[("VPNFIX_POLICY", "vpn"), ("tls_id_0", "CN=server"), ("VPNFIX_LOG", "warn")])
        );
    }
}
