//! Turning command-line trust and identity options into what the bundle reader needs, and
//! opening the bundle file with a byte counter for progress.

use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};

use airlock_bundle::crypt::Decryption;
use airlock_bundle::progress::Progress;
use airlock_bundle::reader::Trust;
use airlock_bundle::sign::{TrustSet, TrustedKey};
use airlock_bundle::BundleError;

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
            eprintln!(
                "WARNING: --insecure-skip-signature: the bundle's signature is NOT checked. Anyone could have made it.\n\
                 WARNING: digests are still checked, but only against what the unsigned header claims."
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

/// The bundle file, feeding a progress bar as it is read.
#[derive(Debug)]
pub struct ProgressFile {
    file: std::fs::File,
    bar: indicatif::ProgressBar,
}

impl Read for ProgressFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Opens the bundle with a byte bar labelled `label`.
pub fn open_bundle(
    path: &Path,
    progress: &Progress,
    label: &str,
) -> Result<(ProgressFile, indicatif::ProgressBar), UnpackError> {
    let file = std::fs::File::open(path)
        .map_err(|e| UnpackError::Usage(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress.bytes(size, label);
    Ok((
        ProgressFile {
            file,
            bar: bar.clone(),
        },
        bar,
    ))
}
