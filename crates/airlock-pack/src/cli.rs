//! The `airlock-pack` command line: argument parsing, prompts, exit codes. The work is done
//! by the library modules.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_bundle::crypt::{parse_recipient, read_recipients_file, Encryption};
use airlock_bundle::sign::{generate_keypair, SigningKey};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::build::{build, BuildOptions};
use crate::cache::BlobCache;
use crate::local::LocalStore;
use crate::lock::ModelSources;
use crate::PackError;
use airlock_bundle::progress::{human, Mode, Progress};

pub const EXIT_OK: u8 = 0;
pub const EXIT_INTERNAL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTEGRITY: u8 = 3;
pub const EXIT_ENVIRONMENT: u8 = 7;
pub const EXIT_DRIFT: u8 = 8;
pub const EXIT_REGISTRY: u8 = 9;

const AFTER_HELP: &str = "\
Typical use, on the connected machine:
  airlock-pack keygen -o ~/.config/airlock           # once: the signing key pair
  airlock-pack lock manifests/llm-stack.toml         # pin every image and model to a digest
  airlock-pack build manifests/llm-stack.toml -o llm-stack.airlock \\
      --sign-key ~/.config/airlock/airlock.key --recipients-file gap-host.pub

The bundle comes with llm-stack.airlock.sums and .sums.minisig: a transfer station checks
it with standard tools, without the decryption key (in the bundle's directory):
  minisign -Vm llm-stack.airlock.sums -p airlock.pub && sha256sum -c llm-stack.airlock.sums
For media: --split fat32 (or 4G, 700M, dvd, bd25) writes llm-stack.airlock.001, .002, …

Models already pulled with `ollama pull`: add --from-local to lock and build (no download;
the store is --ollama-models DIR, else $OLLAMA_MODELS, else ~/.ollama/models).

Exit codes: 0 ok, 2 usage, 3 content failed verification, 7 environment (disk, files),
8 lock out of date (run `lock --update`), 9 registry unreachable or refused.";

#[derive(Debug, Parser)]
#[command(name = "airlock-pack", version, about = "Pin, pull and pack container images, Ollama models and files into one signed, encrypted bundle for an air-gapped host.", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a minisign key pair (airlock.key 0600, airlock.pub 0644) for signing bundles.
    /// Both are created new, never over an existing file or through a symbolic link.
    Keygen {
        /// Directory to write the key pair into. Created with mode 0700 if missing; an
        /// existing one keeps its mode, but is refused if it is a symbolic link or writable
        /// by others.
        #[arg(short, long)]
        output: PathBuf,
        /// Protect the secret key with a password (from AIRLOCK_KEY_PASSWORD, else a prompt).
        #[arg(long)]
        password: bool,
    },
    /// Resolve every image and model of SPEC to a digest and write SPEC.lock beside it.
    Lock {
        /// The bundle spec (manifests/NAME.toml).
        spec: PathBuf,
        /// Resolve every tag again, not only images the lock lacks.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Pull the locked images and models, read the spec's files, and write one signed (and
    /// encrypted) bundle.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Blob cache directory [default: $XDG_CACHE_HOME/airlock or ~/.cache/airlock].
    #[arg(long, env = "AIRLOCK_CACHE")]
    cache: Option<PathBuf>,
    /// Local Ollama store for models with source = "local" (or all, with --from-local)
    /// [default: $OLLAMA_MODELS, else ~/.ollama/models].
    #[arg(long, value_name = "DIR")]
    ollama_models: Option<PathBuf>,
    /// Take every model from the local Ollama store instead of its registry (no network
    /// for models).
    #[arg(long)]
    from_local: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The bundle spec; its lock (SPEC.lock) must be up to date.
    spec: PathBuf,
    /// The bundle file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// minisign secret key to sign with (its password from AIRLOCK_KEY_PASSWORD, else a prompt).
    #[arg(long, env = "AIRLOCK_SIGN_KEY")]
    sign_key: PathBuf,
    /// Encrypt to this recipient: age1… or "ssh-ed25519 AAAA…". Repeatable.
    #[arg(short, long = "recipient")]
    recipients: Vec<String>,
    /// Encrypt to every recipient listed in this file (one per line). Repeatable.
    #[arg(short = 'R', long = "recipients-file")]
    recipients_files: Vec<PathBuf>,
    /// Encrypt with a passphrase instead (from AIRLOCK_PASSPHRASE, else a prompt).
    #[arg(long, conflicts_with_all = ["recipients", "recipients_files"])]
    passphrase: bool,
    /// Cut the bundle into parts of at most SIZE for media: NAME.001, NAME.002, … Sizes like
    /// 4G, 4GiB, 700M (powers of 1024), 4GB (powers of 1000), or fat32 (4 GiB − 1 byte),
    /// dvd (4.7 GB), bd25 (25 GB). Split or not, NAME.sums and NAME.sums.minisig are written.
    #[arg(long, value_name = "SIZE", value_parser = airlock_bundle::parts::parse_size)]
    split: Option<u64>,
    /// Build a delta bundle for the host this inventory describes (written there by
    /// `airlock-unpack inventory`): image layers and model blobs it already has are left
    /// out, recorded in the signed header as expected present, and checked by `load`.
    #[arg(long, value_name = "INVENTORY")]
    have: Option<PathBuf>,
    /// Concurrent blob downloads (and Range parts per large model blob).
    #[arg(short, long, default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    common: Common,
}

/// Runs the CLI and maps every failure to its documented exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<PackError>().map(PackError::exit_code))
                .or_else(|| {
                    e.chain().find_map(|c| {
                        c.downcast_ref::<airlock_bundle::BundleError>()
                            .map(crate::bundle_exit_code)
                    })
                })
                .unwrap_or(EXIT_INTERNAL);
            ExitCode::from(code)
        }
    }
}

/// A password or passphrase, wiped from memory when dropped.
fn secret_from_env_or_prompt(
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

fn load_sign_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    match SigningKey::load(
        path,
        std::env::var("AIRLOCK_KEY_PASSWORD")
            .ok()
            .map(Zeroizing::new),
    ) {
        Ok(k) => Ok(k),
        Err(airlock_bundle::BundleError::Key { detail, .. })
            if detail.contains("password-protected") && std::io::stdin().is_terminal() =>
        {
            let pw = Zeroizing::new(rpassword::prompt_password(format!(
                "password for {}: ",
                path.display()
            ))?);
            Ok(SigningKey::load(path, Some(pw))?)
        }
        Err(e) => Err(e.into()),
    }
}

fn cache(common: &Common) -> anyhow::Result<BlobCache> {
    let root = common.cache.clone().unwrap_or_else(BlobCache::default_root);
    BlobCache::open(root.clone())
        .map_err(|e| PackError::Environment(format!("blob cache {}: {e}", root.display())).into())
}

fn model_sources(common: &Common) -> ModelSources {
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { output, password } => {
            let pw = if password {
                Some(secret_from_env_or_prompt(
                    "AIRLOCK_KEY_PASSWORD",
                    "new key password",
                    true,
                )?)
            } else {
                None
            };
            let (sk, pk, id) = generate_keypair(&output, pw)?;
            eprintln!(
                "wrote secret key {} (keep it on this machine)",
                sk.display()
            );
            eprintln!(
                "wrote public key {} (copy it to the gap host's trust directory)",
                pk.display()
            );
            println!("{id}");
            Ok(())
        }
        Command::Lock {
            spec,
            update,
            common,
        } => {
            let progress = Progress::new(Mode::detect(common.quiet));
            let cache = cache(&common)?;
            let outcome = runtime()?.block_on(crate::lock::lock(
                &spec,
                update,
                &cache,
                &model_sources(&common),
                &progress,
            ))?;
            for c in &outcome.changed {
                println!("{c}");
            }
            let lock_path = airlock_bundle::lock::Lock::path_for(&spec);
            if outcome.written {
                progress.say(format!(
                    "wrote {} ({} images, {} models pinned)",
                    lock_path.display(),
                    outcome.lock.images.len(),
                    outcome.lock.models.len()
                ));
            } else {
                progress.say(format!("{} is up to date", lock_path.display()));
            }
            Ok(())
        }
        Command::Build(args) => {
            let progress = Progress::new(Mode::detect(args.common.quiet));
            let encryption = if args.passphrase {
                let mut p =
                    secret_from_env_or_prompt("AIRLOCK_PASSPHRASE", "bundle passphrase", true)?;
                // Moved, not copied, into the SecretString (which wipes it in turn).
                Encryption::Passphrase(std::mem::take(&mut *p).into())
            } else {
                let mut rs = Vec::new();
                for r in &args.recipients {
                    rs.push(parse_recipient(r)?);
                }
                for f in &args.recipients_files {
                    rs.extend(read_recipients_file(f)?);
                }
                if rs.is_empty() {
                    progress.say("warning: no recipients: the bundle is signed but NOT encrypted");
                    Encryption::None
                } else {
                    Encryption::Recipients(rs)
                }
            };
            let opts = BuildOptions {
                spec_path: args.spec.clone(),
                output: args.output.clone(),
                sign_key: load_sign_key(&args.sign_key)?,
                encryption,
                cache: cache(&args.common)?,
                models: model_sources(&args.common),
                jobs: args.jobs,
                split: args.split,
                have: match &args.have {
                    Some(p) => Some(airlock_bundle::inventory::Inventory::parse(
                        &std::fs::read(p)
                            .map_err(|e| PackError::Usage(format!("{}: {e}", p.display())))?,
                        &p.display().to_string(),
                    )?),
                    None => None,
                },
            };
            let s = runtime()?.block_on(build(opts, &progress))?;
            if !s.removed.is_empty() {
                progress.say(format!(
                    "removed {} left by an earlier build of this bundle",
                    s.removed.join(", ")
                ));
            }
            println!(
                "{}{}: {} images, {} models, {} files, {} blobs, {} ({} downloaded), {}, signed by {}",
                s.output.display(),
                if s.parts.len() > 1 {
                    format!(" in {} parts", s.parts.len())
                } else {
                    String::new()
                },
                s.images,
                s.models,
                s.files,
                s.blobs,
                human(s.file_bytes),
                human(s.downloaded_bytes),
                if s.encrypted {
                    "encrypted"
                } else {
                    "not encrypted"
                },
                s.key_id
            );
            println!(
                "{} (check: minisign -Vm {} -p airlock.pub && sha256sum -c {})",
                s.sums.display(),
                s.sums.display(),
                s.sums.file_name().unwrap_or_default().to_string_lossy()
            );
            Ok(())
        }
    }
}
