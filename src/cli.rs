//! The command line (clap derive). OpenVPN's and NetworkManager's hook invocations are told apart
//! from these commands before clap runs (see `main`), because their arguments are positional.

use crate::config::{Overrides, Policy};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use std::path::PathBuf;

/// Makes VPN routes and local container networks live together.
#[derive(Debug, Parser)]
#[command(name = "vpnfix", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The manual commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what vpnfix sees and what it would add, changing nothing (a dry run).
    #[command(
        after_help = "Examples:\n  vpnfix plan --from examples/laptop-docker\n  vpnfix plan --from DIR --route 172.16.0.0/12 --json"
    )]
    Plan(PlanArgs),
    /// Add the routes the plan names, as OpenVPN's route-up hook would (needs root).
    #[command(
        after_help = "Examples:\n  sudo vpnfix apply --dev tun0 --route 172.20.0.0/16\n  (inside an OpenVPN hook environment, no flags are needed)"
    )]
    Apply(Selection),
    /// Remove what vpnfix added: for one tunnel, for every recorded tunnel, or (--all) every route
    /// carrying vpnfix's protocol number (needs root).
    #[command(after_help = "Examples:\n  sudo vpnfix cleanup --dev tun0\n  sudo vpnfix cleanup --all")]
    Cleanup(CleanupArgs),
    /// Write this host's routes, links, addresses, neighbours, Docker networks and hook
    /// environment as a bundle that `plan --from` reads anywhere.
    #[command(after_help = "Example:\n  vpnfix snapshot /tmp/my-laptop && vpnfix plan --from /tmp/my-laptop")]
    Snapshot(SnapshotArgs),
    /// Per tunnel: what vpnfix added, whether each route is still in the kernel, and the
    /// conflicts live now.
    #[command(after_help = "Examples:\n  vpnfix status\n  vpnfix status --dev tun0 --json")]
    Status(StatusArgs),
    /// For each address: the route the kernel picks, every route covering it and who installed
    /// it, the Docker network and container that own it, the push that wants it, and why.
    #[command(
        after_help = "Examples:\n  vpnfix explain 172.20.2.52 172.20.0.2\n  vpnfix explain --from examples/laptop-docker 172.20.0.3 --json"
    )]
    Explain(ExplainArgs),
    /// Put vpnfix in place for OpenVPN and NetworkManager (binary, dispatcher script, OpenVPN
    /// snippet), or take it away with --uninstall (needs root).
    #[command(
        after_help = "Examples:\n  sudo vpnfix install\n  vpnfix install --dry-run\n  sudo vpnfix install --uninstall"
    )]
    Install(InstallArgs),
    /// Keep the rule true while the tunnel is up: reconcile with its recorded pushes whenever a
    /// container starts or stops, a network comes or goes (Docker's and Podman's events) or the
    /// kernel's routes, links or neighbours change, and remove every recorded route when the
    /// tunnel goes. The connect hook starts it by itself (VPNFIX_WATCH); as a service it waits
    /// for the tunnel's connect. Needs root (it keeps CAP_NET_ADMIN alone); one per tunnel.
    #[command(
        after_help = "Examples:\n  sudo vpnfix watch --dev tun0\n  systemctl enable --now vpnfix-watch@tun0   (examples/systemd/vpnfix-watch@.service)"
    )]
    Watch(WatchArgs),
    /// Propose the permanent fix: a free subnet for each local network a VPN route collides
    /// with, the compose `networks:` blocks, and a daemon.json whose address pools avoid the VPN.
    #[command(
        after_help = "Examples:\n  vpnfix suggest --route 172.16.0.0/12\n  vpnfix suggest --from DIR --prefer 10.0.0.0/8 --json\n  sudo vpnfix suggest --write-daemon-json /etc/docker/daemon.json"
    )]
    Suggest(SuggestArgs),
    /// The helper OpenVPN's plugin (vpnfix.so) starts; not for use by hand.
    #[command(name = "plugin-helper", hide = true)]
    PluginHelper,
}

/// `vpnfix suggest`.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Suggest for a bundle instead of this host (its daemon.json, if any, is the existing one).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Take new subnets and pools from this range first; repeat for more (default: Docker's
    /// 172.17.0.0/16 … 172.31.0.0/16, 192.168.0.0/16 for /20 and longer, 10.0.0.0/8; fd00::/8).
    #[arg(long, value_name = "CIDR")]
    pub prefer: Vec<IpNet>,
    /// The existing daemon.json to merge into (default: the --write-daemon-json file, else
    /// DIR/daemon.json with --from, else /etc/docker/daemon.json).
    #[arg(long, value_name = "PATH")]
    pub daemon_json: Option<PathBuf>,
    /// Write the merged daemon.json to PATH, atomically, keeping the old one as
    /// PATH.vpnfix-backup-<unix time>. Nothing is written without this flag.
    #[arg(long, value_name = "PATH")]
    pub write_daemon_json: Option<PathBuf>,
    /// What to suggest for.
    #[command(flatten)]
    pub select: Selection,
}

/// `vpnfix watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The tunnel to keep watch over (without a record yet, the watch waits for its connect).
    #[arg(long, value_name = "DEV", value_parser = ifname)]
    pub dev: String,
}

/// `vpnfix explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The addresses to explain.
    #[arg(required = true, value_name = "ADDR")]
    pub addrs: Vec<std::net::IpAddr>,
    /// Explain for a bundle instead of this host.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Print one JSON object `{"addresses": […]}` instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to plan for.
    #[command(flatten)]
    pub select: Selection,
}

/// `vpnfix status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this tunnel.
    #[arg(long, value_name = "DEV", value_parser = ifname)]
    pub dev: Option<String>,
    /// Print one JSON object `{"tunnels": […]}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `vpnfix install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Where the binary and the manifest go ({prefix}/bin/vpnfix, {prefix}/share/vpnfix/installed).
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install into this directory as if it were / (packaging, tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Show what would be done; change nothing (works without root).
    #[arg(long)]
    pub dry_run: bool,
    /// Remove what `vpnfix install` created and that is still unchanged.
    #[arg(long)]
    pub uninstall: bool,
}

/// The subcommand names, for telling manual use from hook invocations.
pub const COMMANDS: &[&str] = &[
    "plan",
    "apply",
    "cleanup",
    "snapshot",
    "status",
    "explain",
    "suggest",
    "install",
    "watch",
    "plugin-helper",
    "help",
];

/// `vpnfix cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only this tunnel's recorded routes (default: every recorded tunnel).
    #[arg(long, value_name = "DEV", value_parser = ifname)]
    pub dev: Option<String>,
    /// Also remove every route carrying vpnfix's protocol number, recorded or not.
    #[arg(long, conflicts_with = "dev")]
    pub all: bool,
}

/// `vpnfix snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The directory to write (created if missing).
    pub dir: PathBuf,
}

/// `vpnfix plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Plan for a bundle (route.json, link.json, docker.json, env …) instead of this host.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to plan for.
    #[command(flatten)]
    pub select: Selection,
}

/// Overrides of the hook environment and the configuration.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// The tunnel device (default: `dev` from the hook environment, else every VPN tunnel that
    /// is up).
    #[arg(long, value_name = "DEV", value_parser = ifname)]
    pub dev: Option<String>,
    /// A pushed route; repeat for more. Replaces the environment's pushed routes.
    #[arg(long = "route", value_name = "CIDR")]
    pub routes: Vec<IpNet>,
    /// Who gets contested ranges (overrides VPNFIX_POLICY).
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// Prefixes that always stay on the bridge, comma-separated (overrides VPNFIX_KEEP).
    #[arg(long, value_name = "CIDR,…", value_delimiter = ',')]
    pub keep: Vec<IpNet>,
    /// Prefixes the VPN gets even where containers could be started (overrides VPNFIX_VPN).
    #[arg(long, value_name = "CIDR,…", value_delimiter = ',')]
    pub vpn: Vec<IpNet>,
    /// The most routes to add for one tunnel (overrides VPNFIX_MAX_ROUTES).
    #[arg(long, value_name = "N")]
    pub max_routes: Option<usize>,
}

/// A device name as the kernel accepts it ([`crate::net::valid_ifname`]); it may name a state
/// file, so nothing else gets through.
fn ifname(s: &str) -> Result<String, String> {
    match crate::net::valid_ifname(s) {
        true => Ok(s.to_string()),
        false => Err("not a device name (1-15 characters, no '/', ':' or white space, not '.' or '..')".into()),
    }
}

/// `--policy` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// The VPN gets what local containers do not use.
    Split,
    /// The VPN gets everything it pushed.
    Vpn,
    /// Local bridges keep everything they have.
    Local,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Split => Policy::Split,
            PolicyArg::Vpn => Policy::Vpn,
            PolicyArg::Local => Policy::Local,
        }
    }
}

impl Selection {
    /// The flags that override the configuration, as they are.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            policy: self.policy.map(Policy::from),
            keep: self.keep.clone(),
            vpn: self.vpn.clone(),
            max_routes: self.max_routes,
        }
    }
}
