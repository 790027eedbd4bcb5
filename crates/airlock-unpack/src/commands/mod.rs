//! One module per `airlock-unpack` subcommand, each taking its parsed arguments from
//! [`crate::cli`] and rendering its own output (text, and the typed `--json` shapes);
//! [`main`] parses, dispatches, and maps a failure to its exit code ([`crate::exit`]).
//! What several commands share is here: opening and reading a bundle, and how a signer is
//! named.

mod extract;
mod inspect;
mod inventory;
mod keygen;
mod load;
#[cfg(feature = "push")]
mod push;
mod verify;

use std::io::Read;
use std::process::ExitCode;

use airlock_bundle::header::Entry;
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_progress::{Mode, Progress};
use clap::Parser as _;

use crate::cli::{Cli, Command, Common};
use crate::exit;
use crate::open::{Access, BundleOnDisk};
use crate::UnpackError;

/// The binary: parse the command line, run the subcommand, print the error chain and exit
/// with its documented code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::exit_code_of(&e))
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Inventory(args) => inventory::run(args),
        Command::Load(args) => load::run(args),
        #[cfg(feature = "push")]
        Command::Push(args) => push::run(args),
    }
}

impl Common {
    /// The keys this run trusts and decrypts with, from `--trust`, `--identity` and the
    /// environment.
    pub(crate) fn access(&self) -> Result<Access, UnpackError> {
        Access::new(&self.trust, self.insecure_skip_signature, &self.identity)
    }
}

/// A visitor that reads every entry to its end (each is checked as it is read) and keeps
/// nothing.
struct Drain;
impl Visitor for Drain {
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A visitor that stops once the signed header verified.
struct HeaderOnly;
impl Visitor for HeaderOnly {
    fn header(&mut self, _: &Verified) -> Result<bool, airlock_bundle::BundleError> {
        Ok(false)
    }
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// Who signed a bundle, and whether that was checked.
fn signer_text(v: &Verified) -> String {
    match (v.signer, v.signature_checked) {
        (Some(k), true) => format!("key {k} (verified)"),
        (Some(k), false) => format!("key {k} (NOT verified)"),
        (None, _) => "unknown (NOT verified)".into(),
    }
}

/// Locates the bundle named by `c` and reads it with `visitor`.
fn read_with(c: &Common, label: &str, visitor: &mut dyn Visitor) -> Result<Verified, UnpackError> {
    let progress = Progress::new(Mode::detect(c.quiet));
    let access = c.access()?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)?;
    read_located(&on_disk, &access, &progress, label, visitor)
}

/// Reads a located bundle with `visitor`; a failure names the part at fault.
fn read_located(
    on_disk: &BundleOnDisk,
    access: &Access,
    progress: &Progress,
    label: &str,
    visitor: &mut dyn Visitor,
) -> Result<Verified, UnpackError> {
    let (input, bar) = on_disk.open(progress, label)?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let r = read_bundle(input, &opts, visitor);
    progress.remove(&bar);
    r.map_err(|e| on_disk.explain(e.into(), progress))
}
