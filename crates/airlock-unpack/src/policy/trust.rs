//! The names `[signer.NAME]` sections use for trusted keys: each trust file's stem, by the
//! id of the key it holds.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use airlock_bundle::sign::{KeyId, TrustedKey};

use crate::UnpackError;

/// The names of the trusted keys: the file stem of each trust file (`trust.d/pack.pub` is
/// `pack`), by key id. Read from the same sources `load` trusts (`--trust` files, else the
/// `*.pub` files of `$AIRLOCK_TRUST_DIR` or `/etc/airlock/trust.d`), as
/// [`crate::open::Access::new`] reads them.
#[derive(Debug, Default)]
pub struct TrustNames {
    by_key: HashMap<KeyId, BTreeSet<String>>,
    pub(super) names: BTreeSet<String>,
}

impl TrustNames {
    pub fn read(trust_args: &[PathBuf]) -> Result<TrustNames, UnpackError> {
        let paths: Vec<PathBuf> = if !trust_args.is_empty() {
            trust_args.to_vec()
        } else {
            let dir = std::env::var_os("AIRLOCK_TRUST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(crate::open::DEFAULT_TRUST_DIR));
            match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(UnpackError::io(dir, e)),
            }
        };
        let mut t = TrustNames::default();
        for p in paths {
            let key = TrustedKey::load(&p)?;
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            t.by_key.entry(key.id).or_default().insert(name.clone());
            t.names.insert(name);
        }
        Ok(t)
    }

    /// The trust file names of key `id` (several if one key is in several files).
    pub fn of(&self, id: KeyId) -> Vec<String> {
        self.by_key
            .get(&id)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}
