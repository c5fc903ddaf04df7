//! Writes the Debian package's generated documentation (scripts/deb.sh): the man pages, section 8
//! (`vpnfix.8` and one `vpnfix-COMMAND.8` per visible command) and the bash, zsh and fish
//! completions, all from the clap definition in `vpnfix::cli`:
//! `cargo run --example gen_assets -- OUTDIR`.
//!
//! It lives here and not in the binary so that clap_mangen and clap_complete add nothing to the
//! static binary's 4 MiB. Hidden commands (the plugin's `plugin-helper`) appear in no page and no
//! completion: they are not for people.

use clap::{Command, CommandFactory};
use clap_complete::{generate, Shell};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vpnfix::cli::Cli;

/// The man pages' section: vpnfix is an administrator's tool in /usr/sbin.
const SECTION: &str = "8";

/// The main page's description (README.md, "What vpnfix does", in short).
const DESCRIPTION: &str = "When a VPN pushes a route that overlaps a local Docker or Podman bridge network, either \
     the VPN's hosts or the local containers become unreachable. Each time the VPN connects, vpnfix reads the pushed \
     routes, finds the bridge routes they overlap (the kernel's over netlink, the engines' over their APIs) and adds \
     the more-specific routes that give the VPN what it needs while the containers stay reachable, inside the \
     containers too; it records them in /run/vpnfix and removes exactly those at disconnect. A watcher keeps this \
     true while the tunnel is up. The commands below plan, apply, explain and undo it by hand.";

/// What clap cannot say: how the hooks call vpnfix without a command (see README.md).
const HOOKS: &[&str] = &[
    "Without a command, vpnfix is a hook. OpenVPN runs it as its route-up, route-pre-down and down \
     script and vpnfix tells the hook from script_type (config /usr/share/doc/vpnfix/examples/openvpn/vpnfix.conf); \
     vpnfix up, route-up, route-pre-down and down name the hook explicitly, for the down-root plugin.",
    "OpenVPN can load vpnfix as a plugin instead: plugin vpnfix.so \
     (/usr/lib/x86_64-linux-gnu/openvpn/plugins/vpnfix.so), which starts this binary as its helper and needs \
     no script-security.",
    "NetworkManager's dispatcher runs it through /usr/lib/NetworkManager/dispatcher.d/90-vpnfix; \
     vpnc-script (OpenConnect) through the files vpnfix install puts in /etc/vpnc/*.d/; \
     wg-quick through PostUp and PreDown lines: vpnfix wg-quick up|down IFACE.",
];

/// The files the package installs, for the FILES section.
const FILES: &[(&str, &str)] = &[
    ("/usr/sbin/vpnfix", "the program (static)"),
    ("/usr/lib/x86_64-linux-gnu/openvpn/plugins/vpnfix.so", "the OpenVPN plugin"),
    ("/usr/lib/NetworkManager/dispatcher.d/90-vpnfix", "the NetworkManager dispatcher script"),
    ("/usr/lib/systemd/system/vpnfix-watch@.service", "the watcher as a service (not enabled)"),
    ("/usr/share/doc/vpnfix/examples/", "OpenVPN snippets and systemd examples"),
    ("/etc/vpnfix.conf", "settings (VPNFIX_*), optional"),
    ("/run/vpnfix/", "what vpnfix added, per tunnel"),
];

fn main() -> io::Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from);
    let Some(out) = out else {
        eprintln!("usage: gen_assets OUTDIR");
        std::process::exit(2);
    };
    fs::create_dir_all(out.join("man"))?;
    fs::create_dir_all(out.join("completions"))?;
    write_man_pages(visible(Cli::command()).disable_help_subcommand(true), &out.join("man"))?;
    write_completions(visible(Cli::command()), &out.join("completions"))
}

/// The command tree as people see it: the root with its hidden commands left out (clap_complete,
/// unlike clap_mangen, lists hidden commands).
fn visible(cli: Command) -> Command {
    let shown: Vec<Command> = cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    Command::new("vpnfix")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .long_about(DESCRIPTION)
        .subcommand_required(true)
        .args(cli.get_arguments().cloned())
        .subcommands(shown)
}

/// `vpnfix.8` (with the hooks and the files) and `vpnfix-COMMAND.8` for each command.
fn write_man_pages(mut root: Command, dir: &Path) -> io::Result<()> {
    // Built first, so each command's display name is `vpnfix-COMMAND`, its page's name.
    root.build();
    let mut page = Vec::new();
    let man = Man::new(root.clone()).section(SECTION).manual("System Administration");
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    extra_sections(&mut page)?;
    man.render_version_section(&mut page)?;
    fs::write(dir.join(format!("vpnfix.{SECTION}")), page)?;
    for sub in root.get_subcommands() {
        let man = Man::new(sub.clone()).section(SECTION).manual("System Administration");
        man.generate_to(dir)?;
    }
    Ok(())
}

/// HOOKS, FILES and SEE ALSO of the main page.
fn extra_sections(w: &mut dyn Write) -> io::Result<()> {
    let mut roff = Roff::default();
    roff.control("SH", ["HOOKS"]);
    for paragraph in HOOKS {
        roff.control("PP", []).text([roman(*paragraph)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        roff.control("TP", []).text([bold(*path)]).text([roman(*what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("openvpn(8), NetworkManager-dispatcher(8), /usr/share/doc/vpnfix/README.md.gz")]);
    roff.to_writer(w)
}

/// bash, zsh and fish completions, named as Debian's directories for them expect.
fn write_completions(cmd: Command, dir: &Path) -> io::Result<()> {
    for (shell, name) in [(Shell::Bash, "vpnfix"), (Shell::Zsh, "_vpnfix"), (Shell::Fish, "vpnfix.fish")] {
        let mut text = Vec::new();
        generate(shell, &mut cmd.clone(), "vpnfix", &mut text);
        fs::write(dir.join(name), text)?;
    }
    Ok(())
}
