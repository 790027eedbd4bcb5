//! What several commands share: the keys a run uses, reading a bundle (whole, or its
//! signed header alone), how its signer is named, and this host's policy and its
//! `[[verify]]` check for the commands other than `load`.

use std::io::Read;
use std::path::Path;

use airlock_bundle::header::Entry;
use airlock_bundle::reader::{BundleReader, ReadOptions, Verified, Visitor};
use airlock_progress::{Mode, Progress};

use crate::cli::Common;
use crate::open::{Access, BundleOnDisk};
use crate::policy::{Policy, TrustNames};
use crate::provenance::ImageProvenance;
use crate::UnpackError;

impl Common {
    /// The keys this run trusts and decrypts with, from `--trust`, `--identity` and the
    /// environment.
    pub(crate) fn access(&self) -> Result<Access, UnpackError> {
        Access::new(&self.trust, self.insecure_skip_signature, &self.identity)
    }
}

/// A visitor that reads every entry to its end (each is checked as it is read) and keeps
/// nothing.
pub(super) struct Drain;
impl Visitor for Drain {
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A check of the verified header before the body is read (the `[[verify]]` rules).
pub(super) type HeaderCheck<'v> = &'v dyn Fn(&Verified) -> Result<(), UnpackError>;

/// How much of a bundle a command reads.
pub(super) enum Depth<'v> {
    /// The signed header alone: opened and verified, the body left unread.
    Header,
    /// Every entry, each checked as the visitor reads it, once the check of the verified
    /// header passed.
    Checked(HeaderCheck<'v>, &'v mut dyn Visitor),
}

/// Who signed a bundle, and whether that was checked.
pub(super) fn signer_text(v: &Verified) -> String {
    match (v.signer, v.signature_checked) {
        (Some(k), true) => format!("key {k} (verified)"),
        (Some(k), false) => format!("key {k} (NOT verified)"),
        (None, _) => "unknown (NOT verified)".into(),
    }
}

/// Locates the bundle named by `c` and reads it to `depth`.
pub(super) fn read_with(
    c: &Common,
    label: &str,
    depth: Depth<'_>,
) -> Result<Verified, UnpackError> {
    let progress = Progress::new(Mode::new(c.progress, c.quiet));
    let access = c.access()?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)?;
    read_located(&on_disk, &access, &progress, label, depth)
}

/// Reads a located bundle to `depth`; a failure names the part at fault.
pub(super) fn read_located(
    on_disk: &BundleOnDisk,
    access: &Access,
    progress: &Progress,
    label: &str,
    depth: Depth<'_>,
) -> Result<Verified, UnpackError> {
    let (input, bar) = on_disk.open(progress, label)?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let r = BundleReader::open(input, &opts)
        .map_err(UnpackError::from)
        .and_then(|(verified, body)| match depth {
            Depth::Header => Ok(verified),
            Depth::Checked(check, visitor) => {
                check(&verified)?;
                Ok(body.read(visitor).map(|()| verified)?)
            }
        });
    progress.remove(&bar);
    r.map_err(|e| on_disk.explain(e, progress))
}

/// This host's policy for the `[[verify]]` rules of `verify`, `push` and `inspect`: the one
/// named, else `$AIRLOCK_POLICY` (clap's `env`), else the default if it exists; read as
/// `load` reads it (its `[signer.*]` sections checked against the trusted keys' names).
pub(super) fn host_policy(c: &Common, named: Option<&Path>) -> Result<Option<Policy>, UnpackError> {
    let Some(path) = crate::policy::locate(named)? else {
        return Ok(None);
    };
    let names = if c.insecure_skip_signature {
        None
    } else {
        Some(TrustNames::read(&c.trust)?)
    };
    Policy::load(&path, names.as_ref()).map(Some)
}

/// The `[[verify]]` rules of `policy` applied to a verified header: refused (exit 14) if a
/// required one is not satisfied, else each verification said on stderr.
pub(super) fn check_provenance(
    policy: Option<&Policy>,
    v: &Verified,
    progress: &Progress,
) -> Result<Vec<ImageProvenance>, UnpackError> {
    let Some(p) = policy else {
        return Ok(Vec::new());
    };
    let checked = crate::provenance::check(&v.header, &p.verify);
    crate::provenance::refusal(&checked, &p.describe())?;
    for line in crate::provenance::verified_lines(&checked) {
        progress.say(line);
    }
    Ok(checked)
}
