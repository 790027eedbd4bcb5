//! `airlock-pack completions SHELL` (a completion script on stdout) and the hidden
//! `airlock-pack man DIR` (a man page per command and subcommand, which `cargo xtask dist`
//! packs into the .deb): both generated from the clap definitions in [`crate::cli`], so
//! they never drift from `--help`.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::PackError;

pub(super) fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout().lock());
    Ok(())
}

pub(super) fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).map_err(|source| PackError::Input {
        path: args.dir.clone(),
        source,
    })?;
    clap_mangen::generate_to(Cli::command(), &args.dir).map_err(|source| PackError::Input {
        path: args.dir.clone(),
        source,
    })?;
    Ok(())
}
