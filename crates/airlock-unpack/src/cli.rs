//! The `airlock-unpack` command line: arguments, output, exit codes.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_bundle::crypt::{generate_identity, identity_file_text};
use airlock_bundle::header::Entry;
use airlock_bundle::oci::Platform;
use airlock_bundle::progress::{human, Mode, Progress};
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::sign::write_private;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::open::{open_bundle, Access};
use crate::{exit, UnpackError};

const AFTER_HELP: &str = "\
On the air-gapped host:
  airlock-unpack keygen -o /etc/airlock              # once: prints the recipient to pack for
  cp airlock.pub /etc/airlock/trust.d/               # trust the packing side's key
  airlock-unpack verify llm-stack.airlock --identity /etc/airlock/host.key
  airlock-unpack load   llm-stack.airlock --identity /etc/airlock/host.key

Trust: --trust PUB (repeatable), else every *.pub in $AIRLOCK_TRUST_DIR or /etc/airlock/trust.d.
Identity: --identity FILE or $AIRLOCK_IDENTITY; passphrase bundles ask (or $AIRLOCK_PASSPHRASE).

Exit codes: 0 ok, 1 internal error, 2 usage, 3 bundle corrupt/truncated/tampered,
4 signature missing/invalid/untrusted, 5 cannot decrypt, 6 unsupported format version,
7 environment (Docker engine unreachable, disk full, cannot write).";

#[derive(Debug, Parser)]
#[command(name = "airlock-unpack", version, about = "Verify an airlock bundle offline and load it into the local Docker engine.", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write this host's age identity (host.key, 0600) and recipient (host.pub, also printed).
    Keygen {
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check signature, every digest and size. Reads everything, writes nothing.
    Verify(Common),
    /// Show what a bundle carries (reads only the signed header).
    Inspect {
        #[command(flatten)]
        common: Common,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the verified OCI image layout into DIR (usable by skopeo as oci:DIR:REF).
    Extract {
        #[command(flatten)]
        common: Common,
        /// Destination directory (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Verify and load the images into the Docker engine at DOCKER_HOST, all or nothing.
    Load {
        #[command(flatten)]
        common: Common,
        /// Load images for this platform instead of the engine's (os/arch[/variant]).
        #[arg(long)]
        platform: Option<Platform>,
        /// Print the load report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The bundle file.
    bundle: PathBuf,
    /// Trust signatures by this minisign public key (repeatable).
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// age identity file to decrypt with (repeatable).
    #[arg(short, long, env = "AIRLOCK_IDENTITY")]
    identity: Vec<PathBuf>,
    /// Do not check the signature. Dangerous: anyone could have made the bundle.
    #[arg(long)]
    insecure_skip_signature: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

impl Common {
    fn access(&self) -> Result<Access, UnpackError> {
        Access::new(&self.trust, self.insecure_skip_signature, &self.identity)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| {
                    c.downcast_ref::<UnpackError>()
                        .map(UnpackError::exit_code)
                        .or_else(|| {
                            c.downcast_ref::<airlock_bundle::BundleError>()
                                .map(crate::bundle_exit_code)
                        })
                })
                .unwrap_or(exit::INTERNAL);
            ExitCode::from(code)
        }
    }
}

struct Drain;
impl Visitor for Drain {
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

struct HeaderOnly;
impl Visitor for HeaderOnly {
    fn header(&mut self, _: &Verified) -> Result<bool, airlock_bundle::BundleError> {
        Ok(false)
    }
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

fn signer_text(v: &Verified) -> String {
    match (v.signer, v.signature_checked) {
        (Some(k), true) => format!("key {k} (verified)"),
        (Some(k), false) => format!("key {k} (NOT verified)"),
        (None, _) => "unknown (NOT verified)".into(),
    }
}

fn read_with(c: &Common, label: &str, visitor: &mut dyn Visitor) -> Result<Verified, UnpackError> {
    let progress = Progress::new(Mode::detect(c.quiet));
    let access = c.access()?;
    let (input, bar) = open_bundle(&c.bundle, &progress, label)?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let r = read_bundle(input, &opts, visitor);
    progress.remove(&bar);
    Ok(r?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { output } => {
            std::fs::create_dir_all(&output)
                .map_err(|e| UnpackError::Environment(format!("{}: {e}", output.display())))?;
            let (secret, recipient) = generate_identity();
            let created =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let key = output.join("host.key");
            let public = output.join("host.pub");
            if key.exists() || public.exists() {
                return Err(UnpackError::Usage(format!(
                    "{} or {} already exists; not overwriting a key",
                    key.display(),
                    public.display()
                ))
                .into());
            }
            write_private(
                &key,
                identity_file_text(&secret, &recipient, &created).as_bytes(),
            )?;
            std::fs::write(&public, format!("{recipient}\n"))
                .map_err(|e| UnpackError::Environment(format!("{}: {e}", public.display())))?;
            eprintln!("wrote identity {} (never leaves this host)", key.display());
            eprintln!(
                "wrote recipient {} (give it to the packing side: --recipients-file)",
                public.display()
            );
            println!("{recipient}");
            Ok(())
        }
        Command::Verify(c) => {
            let v = read_with(&c, "verify", &mut Drain)
                .with_context(|| c.bundle.display().to_string())?;
            println!(
                "OK {}: {} entries, {} verified, signed by {}{}",
                c.bundle.display(),
                v.header.entries.len(),
                human(v.header.payload_size()),
                signer_text(&v),
                if v.encrypted {
                    ", decrypted"
                } else {
                    ", not encrypted"
                }
            );
            Ok(())
        }
        Command::Inspect { common, json } => {
            let v = read_with(&common, "inspect", &mut HeaderOnly)
                .with_context(|| common.bundle.display().to_string())?;
            let h = &v.header;
            if json {
                let out = json!({
                    "name": h.name,
                    "format": h.format,
                    "version": h.version,
                    "tool": h.tool,
                    "created": h.created,
                    "signer": v.signer.map(|k| k.to_string()),
                    "signature_verified": v.signature_checked,
                    "encrypted": v.encrypted,
                    "header_digest": v.header_digest,
                    "payload_bytes": h.payload_size(),
                    "images": h.images.iter().map(|i| json!({
                        "ref": i.reference,
                        "platform": i.platform,
                        "manifest": i.manifest,
                        "config": i.config,
                        "index": i.index,
                        "layers": i.layers,
                        "size": std::iter::once(&i.manifest).chain(std::iter::once(&i.config)).chain(&i.layers)
                            .filter_map(|d| h.entry(&d.blob_path())).map(|e| e.size).sum::<u64>(),
                    })).collect::<Vec<_>>(),
                    "entries": h.entries,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("bundle   {}", h.name);
                println!("created  {}", h.created);
                println!("tool     {} (format {} v{})", h.tool, h.format, h.version);
                println!("signer   {}", signer_text(&v));
                println!(
                    "payload  {} in {} entries{}",
                    human(h.payload_size()),
                    h.entries.len(),
                    if v.encrypted {
                        ", encrypted"
                    } else {
                        ", not encrypted"
                    }
                );
                println!();
                println!(
                    "{:<56} {:<14} {:>10}  MANIFEST",
                    "IMAGE", "PLATFORM", "SIZE"
                );
                for i in &h.images {
                    let size: u64 = std::iter::once(&i.manifest)
                        .chain(std::iter::once(&i.config))
                        .chain(&i.layers)
                        .filter_map(|d| h.entry(&d.blob_path()))
                        .map(|e| e.size)
                        .sum();
                    println!(
                        "{:<56} {:<14} {:>10}  {}",
                        i.reference,
                        i.platform.to_string(),
                        human(size),
                        i.manifest
                    );
                }
            }
            Ok(())
        }
        Command::Extract { common, to } => {
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let (input, bar) = open_bundle(&common.bundle, &progress, "extract")?;
            let opts = ReadOptions {
                trust: access.trust(),
                decryption: &access.decryption,
            };
            let r = crate::extract::extract(input, &opts, &to);
            progress.remove(&bar);
            let v = r.with_context(|| common.bundle.display().to_string())?;
            println!(
                "extracted {} images into {} (signed by {})",
                v.header.images.len(),
                to.display(),
                signer_text(&v)
            );
            Ok(())
        }
        Command::Load {
            common,
            platform,
            json,
        } => {
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let report = crate::docker::load(&common.bundle, &access, platform, &progress)
                .with_context(|| common.bundle.display().to_string())?;
            if json {
                let out = json!({
                    "bundle": common.bundle,
                    "header_digest": report.verified.header_digest,
                    "signer": report.verified.signer.map(|k| k.to_string()),
                    "signature_verified": report.verified.signature_checked,
                    "engine": report.engine,
                    "images": report.images,
                    "tool": airlock_bundle::tool_version("airlock-unpack"),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for i in &report.images {
                    println!("loaded {} ({}) as {}", i.reference, i.platform, i.id);
                }
                progress.say(format!(
                    "{} images verified and loaded into {}",
                    report.images.len(),
                    report.engine
                ));
            }
            Ok(())
        }
    }
}
