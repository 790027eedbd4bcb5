//! One module per `airlock-pack` subcommand, each taking its parsed arguments from
//! [`crate::cli`]; here the dispatch to them ([`main`]), and what several of them need
//! (prompts, the blob cache, model sources, the async runtime).

pub(crate) mod build;
pub(crate) mod cache;
pub(crate) mod completions;
pub(crate) mod keygen;
pub(crate) mod lock;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use zeroize::Zeroizing;

use crate::cache::BlobCache;
use crate::cli::{Cli, Command, Common};
use crate::local::{LocalStore, ModelSources};
use crate::PackError;

/// Runs the CLI and maps every failure to its documented exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    airlock_progress::init(match &cli.command {
        Command::Lock(a) => a.common.progress,
        Command::Build(a) => a.common.progress,
        _ => Default::default(),
    });
    let ran = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Lock(args) => lock::run(args),
        Command::Build(args) => build::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    };
    match ran {
        Ok(()) => ExitCode::from(crate::exit::OK),
        Err(e) => {
            airlock_progress::error(crate::exit::code(&e), &crate::report(&e));
            ExitCode::from(crate::exit::code(&e))
        }
    }
}

/// A password or passphrase, wiped from memory when dropped.
pub(crate) fn secret_from_env_or_prompt(
    var: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(v) = std::env::var(var) {
        return Ok(Zeroizing::new(v));
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            PackError::Usage(format!("{prompt}: set {var} (no terminal to prompt on)")).into(),
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password(format!("{prompt} (again): "))?);
        if first != again {
            return Err(PackError::Usage("the two entries differ".into()).into());
        }
    }
    Ok(first)
}

pub(crate) fn cache(common: &Common) -> anyhow::Result<BlobCache> {
    let root = common.cache.clone().unwrap_or_else(BlobCache::default_root);
    BlobCache::open(root.clone())
        .map_err(|source| PackError::CacheOpen { path: root, source }.into())
}

pub(crate) fn model_sources(common: &Common) -> ModelSources {
    ModelSources {
        store: LocalStore::new(
            common
                .ollama_models
                .clone()
                .unwrap_or_else(airlock_bundle::ollama::default_models_dir),
        ),
        all_local: common.from_local,
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
