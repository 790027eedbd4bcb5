//! One module per `airlock-unpack` subcommand, each taking its parsed arguments from
//! [`crate::cli`] and rendering its own output (text, and the typed `--json` shapes);
//! [`main`] parses, dispatches, and maps a failure to its exit code ([`crate::exit`]).
//! What several commands share is in [`shared`], apart from the dispatch here, so that no
//! command module and this one use each other.

mod completions;
mod extract;
mod inspect;
mod inspect_provenance;
mod inspect_sbom;
mod inventory;
mod keygen;
mod load;
#[cfg(feature = "push")]
mod push;
mod repair;
mod shared;
mod verify;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::exit;

/// The binary: parse the command line, run the subcommand, print the error chain and exit
/// with its documented code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    airlock_progress::init(progress_style(&cli.command));
    match run(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            airlock_progress::error(exit::exit_code_of(&e), &exit::message(&e));
            ExitCode::from(exit::exit_code_of(&e))
        }
    }
}

/// `--progress`, known before the command runs so that every stderr line of a JSON run is
/// JSON, its error included.
fn progress_style(command: &Command) -> airlock_progress::Style {
    match command {
        Command::Verify(a) => a.common.progress,
        Command::Repair(a) => a.common.progress,
        Command::Inspect(a) => a.common.progress,
        Command::Extract(a) => a.common.progress,
        Command::Load(a) => a.common.progress,
        #[cfg(feature = "push")]
        Command::Push(a) => a.common.progress,
        _ => Default::default(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Repair(args) => repair::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Inventory(args) => inventory::run(args),
        Command::Load(args) => load::run(args),
        #[cfg(feature = "push")]
        Command::Push(args) => push::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}
