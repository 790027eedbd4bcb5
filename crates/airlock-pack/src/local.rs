//! A local Ollama store (`--ollama-models`, `$OLLAMA_MODELS`, `~/.ollama/models`) as a model
//! source, for users who already pulled their models. Nothing here is trusted: Ollama never
//! re-checks a blob after its pull, so every blob is hashed again when the bundle is written,
//! and a mismatch names the store file. [`ModelSources`] says which models come from it (lock,
//! plan and build all ask).

use std::path::{Path, PathBuf};

use airlock_bundle::ollama::{self, ModelName};
use airlock_bundle::Digest;

use crate::PackError;

/// Where models marked (or forced) local are read from.
#[derive(Debug, Clone)]
pub struct ModelSources {
    pub store: LocalStore,
    /// `--from-local`: every model comes from the store, whatever the spec says.
    pub all_local: bool,
}

impl ModelSources {
    pub fn is_local(&self, want: &airlock_bundle::spec::ModelWant) -> bool {
        self.all_local || want.source == airlock_bundle::spec::ModelSource::Local
    }
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.root.join(name.manifest_path())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join(ollama::blob_path(d))
    }

    /// The raw manifest bytes of a model in the store, with their sha256.
    pub fn manifest(&self, name: &ModelName) -> Result<(Vec<u8>, Digest), PackError> {
        let p = self.manifest_path(name);
        let bytes = std::fs::read(&p).map_err(|source| PackError::NotInLocalStore {
            model: name.to_string(),
            pull: name.short(),
            store: self.root.clone(),
            manifest: p.clone(),
            source,
        })?;
        let d = Digest::of(&bytes);
        Ok((bytes, d))
    }

    /// A blob the manifest names is present with its size (its content is hashed while the
    /// bundle is written).
    pub fn check_blob(
        &self,
        name: &ModelName,
        d: &Digest,
        size: u64,
    ) -> Result<PathBuf, PackError> {
        let p = self.blob_path(d);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.len() == size => Ok(p),
            Ok(m) => Err(PackError::LocalBlobSize {
                model: name.to_string(),
                path: p,
                expected: size,
                actual: m.len(),
            }),
            Err(source) => Err(PackError::LocalBlobMissing {
                model: name.to_string(),
                path: p,
                source,
            }),
        }
    }
}
