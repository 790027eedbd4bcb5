//! Restoring Ollama models and `[[files]]` from a bundle into host directories and Docker
//! named volumes, all or nothing.
//!
//! It runs in three steps around the one pass over the bundle:
//! 1. `prepare`, once the signed header is read: decide every target, look at what is
//!    already there (never trusted: existing files are hashed, existing volume blobs are
//!    hashed in the background while the bundle streams), refuse conflicting files unless
//!    `--overwrite`, and say where each blob must be written while streaming.
//! 2. While streaming, blobs go to temp files only: for a host models directory, temp files
//!    in its `blobs/` (same filesystem, for the rename); for volumes and files, a private
//!    spool directory (0700, files 0600) under the work dir. A blob already in a models
//!    directory is compared with the stream (which the reader hashes) instead of being
//!    hashed again, and written only from its first difference on.
//! 3. `commit`, only after the whole bundle verified: every host file and manifest is
//!    written to its temp first, then blobs, manifests and files are renamed into place
//!    (each model's manifest after its blobs, so `ollama list` never shows a half model),
//!    then volumes are filled with one archive per model whose manifest entry comes last.
//!    `Staging::release` and `Staging::abort` remove the helper and every temp file
//!    instead.
//!
//! Host directories may belong to other users (the `ollama` user owns its models
//! directory), so every host write goes through [`crate::hostfs`]: held directory fds,
//! no symlink followed below a target root, temps with unpredictable names created
//! `O_EXCL|O_NOFOLLOW`, modes set on fds, renames inside the held directories.
//!
//! The steps live in `prepare`, `sink` (the streaming step: `SinkSpec`, `Sink`, `Tee`)
//! and `commit`; `volumes` fills Docker named volumes through [`crate::volume::Helper`],
//! and `fs` holds restore's own fd-based host writing (temps, the spool, staged files,
//! sweeping what killed loads left).

mod commit;
mod fs;
mod prepare;
mod sink;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_bundle::header::{FileRecord, Header, ModelRecord, Target};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use serde::Serialize;

use self::fs::{fs_err, Spool, Store, TempSpec};
use self::volumes::VolumeCheck;
use crate::hostfs::{Created, Dir};
use crate::volume::Helper;
use crate::UnpackError;

pub(crate) use self::commit::commit;
pub(crate) use self::prepare::prepare;
pub(crate) use self::sink::{PresentCell, Sink, SinkSpec, Tee};

/// Where models go when the command line overrides the bundle's targets, and how files are
/// treated.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// `--ollama-models DIR` or `--ollama-volume NAME`: every model goes there.
    pub models_to: Option<Target>,
    /// Replace existing files whose content differs.
    pub overwrite: bool,
    /// Where volume-bound content is spooled until the bundle verified.
    pub work_dir: PathBuf,
}

/// One model as restored.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredModel {
    pub name: String,
    pub target: String,
    pub manifest: Digest,
    pub blobs_written: usize,
    pub blobs_present: usize,
    /// The manifest digest the tag had before, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Digest>,
}

/// One file or directory as restored.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredFile {
    pub target: String,
    pub path: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Digest>,
}

/// What restoring does with one `[[files]]` record, decided at prepare. It reads (in the
/// report's JSON and in the printed lines) as `written`, `overwritten`, `unchanged` or
/// `directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A file where there was none.
    Written,
    /// A file replacing one with other content (`--overwrite`).
    Overwritten,
    /// A file already there with the bundle's content: left alone.
    Unchanged,
    /// A directory, made if missing.
    Directory,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Written => "written",
            Action::Overwritten => "overwritten",
            Action::Unchanged => "unchanged",
            Action::Directory => "directory",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An existing file that differs from the bundle's.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub target: Target,
    pub path: String,
    pub existing: String,
    pub bundle: Digest,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: exists with {}, the bundle has {}",
            self.target, self.path, self.existing, self.bundle
        )
    }
}

/// What happens where, decided before any blob is read.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    /// Per blob, where it goes while streaming.
    pub(crate) sinks: HashMap<Digest, Vec<SinkSpec>>,
    spool: Option<Spool>,
    host_models: Vec<HostModel>,
    /// Per models directory: the store, and the temps of blobs to rename into place.
    stores: BTreeMap<PathBuf, Store>,
    /// Host target roots that exist, held from the first look on.
    roots: BTreeMap<String, Arc<Dir>>,
    volume_models: Vec<VolumeModel>,
    files: Vec<PlannedFile>,
    volumes: BTreeSet<String>,
    temps: Vec<TempSpec>,
    /// Directories this load created, outermost first: removed again (if empty) on abort.
    created_dirs: Vec<Created>,
    /// Per spooled blob, who needs it: `None` always, `Some(check)` unless the check finds
    /// the blob already in its volume.
    spool_needs: BTreeMap<Digest, Vec<Option<Arc<PresentCell>>>>,
    /// Volume blobs of the right size already there, being hashed while the bundle streams.
    checks: Vec<VolumeCheck>,
    /// The helper those checks read through; removed once they are done.
    reader: Option<Helper>,
    /// Blobs a delta bundle expects in place that are not (or not intact).
    pub(crate) missing: Vec<String>,
}

#[derive(Debug)]
struct HostModel {
    record: ModelRecord,
    name: ModelName,
    dir: PathBuf,
    blobs: Vec<Digest>,
}

#[derive(Debug)]
struct VolumeModel {
    record: ModelRecord,
    name: ModelName,
    volume: String,
    /// Blobs this model's archive may carry (not carried by an earlier model); those a
    /// background check finds in place are left out at commit.
    send: Vec<Digest>,
    /// Distinct blobs (config and layers) the model has.
    blob_count: usize,
    replaced: Option<Digest>,
}

#[derive(Debug)]
struct PlannedFile {
    record: FileRecord,
    action: Action,
    previous: Option<Digest>,
}

impl Staging {
    /// The spool, made at prepare by the first blob that needed it.
    fn spool_dir(&self) -> Result<&Arc<Dir>, UnpackError> {
        self.spool
            .as_ref()
            .map(|s| &s.dir)
            .ok_or(UnpackError::NoSpool)
    }

    fn spool_temp(&self, d: &Digest) -> Result<TempSpec, UnpackError> {
        Ok(TempSpec::named(self.spool_dir()?, d.hex()))
    }

    /// Opens a spooled blob.
    fn spool_file(&self, d: &Digest) -> Result<std::fs::File, UnpackError> {
        self.spool_dir()?.open_read(&d.hex()).map_err(fs_err)
    }

    /// Removes every temp file and every directory this load created (the spool goes with
    /// the staging).
    pub(crate) fn abort(&mut self) {
        for t in self.temps.drain(..) {
            t.remove();
        }
        // Only empty ones go: a directory that gained anything else is left alone.
        for d in self.created_dirs.drain(..).rev() {
            d.undo();
        }
        self.spool = None;
    }

    /// Stops background checks and removes their helper container (call before [`abort`]
    /// when an engine was used).
    ///
    /// [`abort`]: Staging::abort
    pub(crate) async fn release(&mut self) {
        for c in self.checks.drain(..) {
            c.task.abort();
        }
        if let Some(mut r) = self.reader.take() {
            r.remove().await;
        }
    }

    /// A host target root, held: opened once (never through an untrusted symlink) and
    /// reused; `None` if it does not exist yet.
    fn root(&mut self, root: &str) -> Result<Option<Arc<Dir>>, UnpackError> {
        if let Some(d) = self.roots.get(root) {
            return Ok(Some(d.clone()));
        }
        match Dir::open_trusted(Path::new(root), None) {
            Ok(d) => {
                let d = Arc::new(d);
                self.roots.insert(root.to_string(), d.clone());
                Ok(Some(d))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(fs_err(e)),
        }
    }

    /// A host target root, held like [`Staging::root`], made if missing.
    fn root_made(&mut self, root: &str) -> Result<Arc<Dir>, UnpackError> {
        if let Some(d) = self.roots.get(root) {
            return Ok(d.clone());
        }
        let d = Dir::open_trusted(Path::new(root), Some(&mut self.created_dirs)).map_err(fs_err)?;
        let d = Arc::new(d);
        self.roots.insert(root.to_string(), d.clone());
        Ok(d)
    }

    /// A models directory's store, held (created when missing, like `ollama serve` does).
    fn store(&mut self, dir: &Path) -> Result<&mut Store, UnpackError> {
        let store = match self.stores.remove(dir) {
            Some(s) => s,
            None => {
                let root = self.root_made(&dir.to_string_lossy())?;
                Store::open(root, &mut self.created_dirs)?
            }
        };
        Ok(self.stores.entry(dir.to_path_buf()).or_insert(store))
    }
}

/// The target a model goes to: the command line's, else the bundle's.
pub(crate) fn model_target(m: &ModelRecord, opts: &RestoreOptions) -> Target {
    opts.models_to.clone().unwrap_or_else(|| m.target.clone())
}

/// Whether restoring this header's models and files needs the Docker engine.
pub(crate) fn wants_engine(h: &Header, opts: &RestoreOptions) -> bool {
    h.models
        .iter()
        .any(|m| matches!(model_target(m, opts), Target::Volume(_)))
        || h.files
            .iter()
            .any(|f| matches!(f.target, Target::Volume(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_the_words_of_the_report() {
        for (a, word) in [
            (Action::Written, "written"),
            (Action::Overwritten, "overwritten"),
            (Action::Unchanged, "unchanged"),
            (Action::Directory, "directory"),
        ] {
            assert_eq!(a.to_string(), word);
            assert_eq!(a.as_str(), word);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{word}\""));
        }
    }
}
