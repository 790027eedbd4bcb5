//! Turning command-line trust and identity options into what the bundle reader needs, and
//! opening the bundle file with a byte counter for progress.

use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};

use airlock_bundle::crypt::Decryption;
use airlock_bundle::parts::{BundleFiles, PartProblem, PartsReader, SignedSums};
use airlock_bundle::reader::Trust;
use airlock_bundle::sign::{TrustSet, TrustedKey};
use airlock_bundle::{BundleError, ErrorClass};
use airlock_progress::Progress;

use crate::UnpackError;

pub const DEFAULT_TRUST_DIR: &str = "/etc/airlock/trust.d";

/// Where signatures may come from and how to decrypt, as the user asked.
#[derive(Debug)]
pub struct Access {
    pub trust: Option<TrustSet>,
    pub decryption: Decryption,
}

impl Access {
    pub fn trust(&self) -> Trust<'_> {
        match &self.trust {
            Some(t) => Trust::Keys(t),
            None => Trust::InsecureSkip,
        }
    }

    /// `--trust` keys, else every `*.pub` in the trust dir; `skip` disables the check.
    pub fn new(
        trust_keys: &[PathBuf],
        skip_signature: bool,
        identities: &[PathBuf],
    ) -> Result<Access, UnpackError> {
        let trust = if skip_signature {
            airlock_progress::notice(
                "WARNING: --insecure-skip-signature: the bundle's signature is NOT checked. Anyone could have made it.\n\
                 WARNING: digests are still checked, but only against what the unsigned header claims.",
            );
            None
        } else if !trust_keys.is_empty() {
            Some(TrustSet::new(
                trust_keys
                    .iter()
                    .map(|p| TrustedKey::load(p))
                    .collect::<Result<_, _>>()?,
            ))
        } else {
            let dir = std::env::var_os("AIRLOCK_TRUST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TRUST_DIR));
            let set = TrustSet::from_dir(&dir)?;
            if set.is_empty() {
                return Err(UnpackError::Bundle(BundleError::NoTrustedKeys));
            }
            Some(set)
        };
        let mut decryption = Decryption::default();
        for id in identities {
            decryption.add_identity_file(id)?;
        }
        decryption.passphrase = Some(Box::new(|| {
            if let Ok(p) = std::env::var("AIRLOCK_PASSPHRASE") {
                return Some(p.into());
            }
            if !std::io::stdin().is_terminal() {
                return None;
            }
            rpassword::prompt_password("bundle passphrase: ")
                .ok()
                .map(Into::into)
        }));
        Ok(Access { trust, decryption })
    }
}

/// The bundle's files as found on disk, with the sums checked as far as they can be without
/// reading content.
#[derive(Debug)]
pub struct BundleOnDisk {
    pub files: BundleFiles,
    pub sums: Option<SignedSums>,
}

impl BundleOnDisk {
    /// Finds the bundle from the first part, any part, the sums file or the bundle file.
    /// With a sums file, its signature is checked (a bad one is refused; a missing one is
    /// only a warning, since the signed header inside covers every byte anyway, and then
    /// the sums do not choose the files: the warning says which are read), and a missing
    /// or wrong-sized part is named (by [`BundleOnDisk::open`]) before anything is read.
    /// (`_progress` stays for callers: warnings are not progress, and print with `--quiet`.)
    pub fn locate(path: &Path, access: &Access, _progress: &Progress) -> Result<Self, UnpackError> {
        let files = BundleFiles::locate(path)?;
        let sums = match (&files.sums, files.sums_signature()) {
            (Some(_), Some(sig)) if !files.listed_by_sums() => {
                // A warning, not progress: shown with --quiet too.
                airlock_progress::notice(format!(
                    "warning: {} is missing: the sums are not checked and do not choose the files (the bundle's own signature still is checked); reading {}",
                    sig.display(),
                    files.describe_parts()
                ));
                None
            }
            (Some(_), _) => Some(SignedSums::load(&files, access.trust.as_ref())?),
            (None, _) => None,
        };
        Ok(BundleOnDisk { files, sums })
    }

    /// Whether the bundle is age-encrypted to recipients' keys (as opposed to a passphrase,
    /// or not at all), from the age header at the start of its first part.
    pub fn encrypted_to_keys(&self) -> Result<bool, UnpackError> {
        let first = &self.files.parts[0];
        let mut head = Vec::with_capacity(4096);
        self.files
            .open_part(0)?
            .take(4096)
            .read_to_end(&mut head)
            .map_err(|e| UnpackError::Usage(format!("{}: {e}", first.display())))?;
        let age = head.starts_with(b"age-encryption.org/v1\n");
        let scrypt = head.windows(10).any(|w| w == b"\n-> scrypt");
        Ok(age && !scrypt)
    }

    /// The parts as one stream, feeding a byte bar labelled `label`.
    pub fn open(
        &self,
        progress: &Progress,
        label: &str,
    ) -> Result<(ProgressFile, indicatif::ProgressBar), UnpackError> {
        if let Some(s) = &self.sums {
            let problems = s.check_layout(&self.files);
            let (fatal, strays): (Vec<_>, Vec<_>) =
                problems.into_iter().partition(|p| !p.is_stray());
            for p in strays {
                airlock_progress::notice(format!("warning: {p}"));
            }
            if !fatal.is_empty() {
                // Worth hashing the rest to say where a missing part went (renamed?).
                let problems = match self.hash_parts(s, progress, "which part?") {
                    Ok(all) if !all.is_empty() => all,
                    _ => fatal,
                };
                if let Some(hint) = s.repair_hint(&problems) {
                    airlock_progress::notice(hint);
                }
                return Err(BundleError::Parts {
                    sums: s.path.clone(),
                    problems,
                }
                .into());
            }
        }
        let reader = self.files.reader()?;
        let bar = progress.bytes(self.files.total_size(), label);
        Ok((
            ProgressFile {
                inner: reader,
                bar: bar.clone(),
            },
            bar,
        ))
    }

    /// Every part (and stray) hashed against the signed sums, with a byte bar.
    fn hash_parts(
        &self,
        sums: &SignedSums,
        progress: &Progress,
        label: &str,
    ) -> Result<Vec<PartProblem>, BundleError> {
        let bar = progress.bytes(self.files.total_size(), label);
        let found = sums.check_all(&self.files, &|n| bar.inc(n));
        progress.remove(&bar);
        found
    }

    /// The outer check alone: every part hashed against the signed sums (no key needed).
    pub fn check_outer(&self, progress: &Progress) -> Result<&SignedSums, UnpackError> {
        if let (Some(_), None, Some(sig)) =
            (&self.files.sums, &self.sums, self.files.sums_signature())
        {
            return Err(BundleError::BadSignature {
                key_id: "none".into(),
                file: sig.display().to_string(),
                detail: "the signature file is missing".into(),
            }
            .into());
        }
        let sums = self.sums.as_ref().ok_or_else(|| {
            UnpackError::Usage(format!(
                "{}: no signed sums beside the bundle ({}.sums and .sums.minisig): the outer layer cannot be checked without the key; give --identity to check the content",
                self.files.parts[0].display(),
                self.files.base
            ))
        })?;
        let problems = self.hash_parts(sums, progress, "verify parts")?;
        if let Some(hint) = sums.repair_hint(&problems) {
            airlock_progress::notice(hint);
        }
        if problems.is_empty() {
            Ok(sums)
        } else {
            Err(BundleError::Parts {
                sums: sums.path.clone(),
                problems,
            }
            .into())
        }
    }

    /// A failed read of a bundle with sums says which part is at fault: the parts are
    /// hashed against their signed sums, and any difference is added to the error.
    pub fn explain(&self, e: UnpackError, progress: &Progress) -> UnpackError {
        let integrity = matches!(&e, UnpackError::Bundle(b) if b.class() == ErrorClass::Integrity);
        let Some(sums) = self.sums.as_ref().filter(|_| integrity) else {
            return e;
        };
        match self.hash_parts(sums, progress, "which part?") {
            Ok(problems) if !problems.is_empty() => {
                if let Some(hint) = sums.repair_hint(&problems) {
                    airlock_progress::notice(hint);
                }
                UnpackError::Parts {
                    inner: Box::new(e),
                    parts: BundleError::Parts {
                        sums: sums.path.clone(),
                        problems,
                    },
                }
            }
            _ => e,
        }
    }
}

/// The bundle's parts, feeding a progress bar as they are read.
#[derive(Debug)]
pub struct ProgressFile {
    inner: PartsReader,
    bar: indicatif::ProgressBar,
}

impl Read for ProgressFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Opens the bundle named by `path` (file, part or sums) with a byte bar labelled `label`.
pub fn open_bundle(
    path: &Path,
    access: &Access,
    progress: &Progress,
    label: &str,
) -> Result<(ProgressFile, indicatif::ProgressBar, BundleOnDisk), UnpackError> {
    let on_disk = BundleOnDisk::locate(path, access, progress)?;
    let (input, bar) = on_disk.open(progress, label)?;
    Ok((input, bar, on_disk))
}
