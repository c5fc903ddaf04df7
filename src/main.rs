//! vpnfix's entry point: tell a hook invocation from a command, parse, run, print, and choose
//! the exit status. A panic never reaches OpenVPN as a failure status from a hook that must
//! not fail.

use clap::Parser;
use std::process::ExitCode;
use vpnfix::cli::{Cli, Command, COMMANDS};
use vpnfix::config::LogLevel;
use vpnfix::{hook, logging, run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(inv) = hook::detect(&args, &run::environment(), COMMANDS) {
        logging::init(LogLevel::Info);
        // OpenVPN dies on a non-zero status from up/down; a bug must not cause that.
        return std::panic::catch_unwind(|| run::hook(inv)).unwrap_or_else(|_| {
            log::error!("internal error (a bug); nothing more done, exiting 0 so OpenVPN carries on");
            ExitCode::SUCCESS
        });
    }
    // After clap: `--version`, `--help` and usage errors print and exit without a logger (and
    // without looking for /dev/log).
    let cli = Cli::parse();
    if let Command::PluginHelper = cli.command {
        // Before the logger: it closes what OpenVPN left open first.
        return vpnfix::plugin::helper::serve();
    }
    logging::init(LogLevel::Info);
    let result = match &cli.command {
        Command::Plan(args) => run::plan(args),
        Command::Apply(sel) => run::apply(sel),
        Command::Cleanup(args) => run::cleanup(args),
        Command::Snapshot(args) => run::snapshot(args),
        Command::Status(args) => run::status(args),
        Command::Explain(args) => run::explain(args),
        Command::Install(args) => run::install(args),
        Command::Suggest(args) => run::suggest(args),
        Command::Watch(args) => run::watch(args),
        Command::PluginHelper => unreachable!("served above"),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            match e.hint() {
                Some(hint) => log::error!("{}; {hint}", run::chain(&e)),
                None => log::error!("{}", run::chain(&e)),
            }
            ExitCode::FAILURE
        }
    }
}
