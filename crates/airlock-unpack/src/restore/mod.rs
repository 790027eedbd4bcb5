//! Restoring Ollama models and `[[files]]` from a bundle into host directories and Docker
//! named volumes, all or nothing.
//!
//! It runs in three steps around the one pass over the bundle:
//! 1. [`prepare`], once the signed header is read: decide every target, look at what is
//!    already there (never trusted: existing files are hashed, existing volume blobs are
//!    hashed in the background while the bundle streams), refuse conflicting files unless
//!    `--overwrite`, and say where each blob must be written while streaming.
//! 2. While streaming, blobs go to temp files only: for a host models directory, temp files
//!    in its `blobs/` (same filesystem, for the rename); for volumes and files, a private
//!    spool directory (0700, files 0600) under the work dir. A blob already in a models
//!    directory is compared with the stream (which the reader hashes) instead of being
//!    hashed again, and written only from its first difference on.
//! 3. [`commit`], only after the whole bundle verified: every host file and manifest is
//!    written to its temp first, then blobs, manifests and files are renamed into place
//!    (each model's manifest after its blobs, so `ollama list` never shows a half model),
//!    then volumes are filled with one archive per model whose manifest entry comes last.
//!    [`Staging::release`] and [`Staging::abort`] remove the helper and every temp file
//!    instead.
//!
//! Host directories may belong to other users (the `ollama` user owns its models
//! directory), so every host write goes through [`crate::hostfs`]: held directory fds,
//! no symlink followed below a target root, temps with unpredictable names created
//! `O_EXCL|O_NOFOLLOW`, modes set on fds, renames inside the held directories.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use airlock_bundle::hashing::digest_reader;
use airlock_bundle::header::{FileRecord, Header, ModelRecord, Target};
use airlock_bundle::ollama::{self, ModelName};
use airlock_bundle::Digest;
use bollard::Docker;
use bytes::Bytes;
use serde::Serialize;

use airlock_bundle::readahead::WriteBehind;
use airlock_progress::Progress;

use crate::hostfs::{self, Created, Dir, FileId, FsError, Kind};
use crate::volume::{volume_exists, Existing, Helper};
use crate::UnpackError;

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
    /// `written`, `unchanged`, `overwritten` or `directory`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Digest>,
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
pub struct Staging {
    /// Per blob, where it goes while streaming.
    pub sinks: HashMap<Digest, Vec<SinkSpec>>,
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
    pub missing: Vec<String>,
}

/// What a background check found: `Some(true)` once the blob in the volume hashed right.
pub type PresentCell = Mutex<Option<bool>>;

/// A private directory under the work dir for content bound for volumes and files: 0700,
/// its files 0600, removed with the staging (and by the next load if this one is killed).
#[derive(Debug)]
struct Spool {
    work: Dir,
    name: String,
    dir: Arc<Dir>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.work.remove_tree(&self.name);
    }
}

/// A temp file to create when the stream reaches its blob: in a held directory, under an
/// unpredictable name (or a fixed one inside the private spool), `O_CREAT|O_EXCL|O_NOFOLLOW`,
/// mode 0600. What was created is recorded, so that commit places exactly that file.
#[derive(Debug, Clone)]
pub struct TempSpec {
    dir: Arc<Dir>,
    name: String,
    created: Arc<OnceLock<FileId>>,
}

impl TempSpec {
    fn named(dir: &Arc<Dir>, name: String) -> TempSpec {
        TempSpec {
            dir: dir.clone(),
            name,
            created: Arc::default(),
        }
    }

    fn create(&self) -> io::Result<fs::File> {
        let f = self.dir.create_new(&self.name).map_err(fs_io)?;
        let _ = self.created.set(FileId::of_file(&f)?);
        Ok(f)
    }

    /// The file, if it was created.
    fn made(&self) -> Option<FileId> {
        self.created.get().copied()
    }

    fn remove(&self) {
        if self.made().is_some() {
            let _ = self.dir.remove_file(&self.name);
        }
    }

    /// Reopens what we created (checked to be the same file) for reading or `fchmod`.
    fn reopen(&self) -> Result<fs::File, UnpackError> {
        let f = self.dir.open_read(&self.name).map_err(|e| match e {
            FsError::Refused { why, .. } => UnpackError::Conflict(format!(
                "{}: was replaced by someone else while airlock-unpack was writing it ({why})",
                self.path().display()
            )),
            e => fs_err(e),
        })?;
        if Some(FileId::of_file(&f).map_err(|e| env(&self.path(), e))?) != self.made() {
            return Err(UnpackError::Conflict(format!(
                "{}: was replaced by someone else while airlock-unpack was writing it",
                self.path().display()
            )));
        }
        Ok(f)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }
}

/// A host Ollama models directory, held.
#[derive(Debug)]
struct Store {
    root: Arc<Dir>,
    blobs: Arc<Dir>,
    pending: BTreeMap<Digest, TempSpec>,
}

#[derive(Debug)]
struct VolumeCheck {
    volume: String,
    digest: Digest,
    task: tokio::task::JoinHandle<Result<bool, UnpackError>>,
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
    action: &'static str,
    previous: Option<Digest>,
}

impl Staging {
    fn spool_temp(&self, d: &Digest) -> TempSpec {
        let spool = self
            .spool
            .as_ref()
            .expect("spool exists when something is spooled");
        TempSpec::named(&spool.dir, d.hex())
    }

    /// Opens a spooled blob.
    fn spool_file(&self, d: &Digest) -> Result<fs::File, UnpackError> {
        self.spool_temp(d).dir.open_read(&d.hex()).map_err(fs_err)
    }

    /// Removes every temp file and every directory this load created (the spool goes with
    /// the staging).
    pub fn abort(&mut self) {
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
    pub async fn release(&mut self) {
        for c in self.checks.drain(..) {
            c.task.abort();
        }
        if let Some(mut r) = self.reader.take() {
            r.remove().await;
        }
    }

    /// Waits for the background checks: which (volume, blob) pairs are already in place.
    async fn settle(&mut self) -> Result<BTreeSet<(String, Digest)>, UnpackError> {
        let mut present = BTreeSet::new();
        for c in self.checks.drain(..) {
            let found = c
                .task
                .await
                .map_err(|e| UnpackError::Engine(format!("checking a volume: {e}")))??;
            if found {
                present.insert((c.volume, c.digest));
            }
        }
        if let Some(mut r) = self.reader.take() {
            r.remove().await;
        }
        Ok(present)
    }

    /// A host target root, held: opened once (never through an untrusted symlink) and
    /// reused; `None` if it does not exist yet. With `create`, it is made if missing.
    fn root(&mut self, root: &str, create: bool) -> Result<Option<Arc<Dir>>, UnpackError> {
        if let Some(d) = self.roots.get(root) {
            return Ok(Some(d.clone()));
        }
        let opened = if create {
            Dir::open_trusted(Path::new(root), Some(&mut self.created_dirs))
        } else {
            Dir::open_trusted(Path::new(root), None)
        };
        match opened {
            Ok(d) => {
                let d = Arc::new(d);
                self.roots.insert(root.to_string(), d.clone());
                Ok(Some(d))
            }
            Err(e) if e.is_not_found() && !create => Ok(None),
            Err(e) => Err(fs_err(e)),
        }
    }

    /// A models directory's store, held (created when missing, like `ollama serve` does).
    fn store(&mut self, dir: &Path) -> Result<&mut Store, UnpackError> {
        if !self.stores.contains_key(dir) {
            let root = self
                .root(&dir.to_string_lossy(), true)?
                .expect("created when missing");
            let (blobs, new) = root.create_dir("blobs", 0o755).map_err(fs_err)?;
            if new {
                let parent = root.try_clone().map_err(fs_err)?;
                self.created_dirs.push(Created::new(parent, "blobs"));
            }
            sweep_partials(&blobs);
            self.stores.insert(
                dir.to_path_buf(),
                Store {
                    root,
                    blobs: Arc::new(blobs),
                    pending: BTreeMap::new(),
                },
            );
        }
        Ok(self.stores.get_mut(dir).expect("just inserted"))
    }
}

fn env(p: &Path, e: io::Error) -> UnpackError {
    UnpackError::Environment(format!("{}: {e}", p.display()))
}

/// A host write refused (a symlink or a swapped file in the way: exit 10) or failed (7).
fn fs_err(e: FsError) -> UnpackError {
    match e {
        FsError::Refused { .. } => UnpackError::Conflict(e.to_string()),
        FsError::Io { .. } => UnpackError::Environment(e.to_string()),
    }
}

fn fs_io(e: FsError) -> io::Error {
    match e {
        FsError::Io { path, source } => {
            io::Error::new(source.kind(), format!("{}: {source}", path.display()))
        }
        e @ FsError::Refused { .. } => {
            io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
        }
    }
}

const SPOOL_PREFIX: &str = ".airlock-spool-";
const PARTIAL_MARK: &str = "-partial-airlock-";

/// Removes the temp blobs of loads that were killed (`sha256-HEX-partial-airlock-PID-…`
/// whose process is gone): each is as large as a model layer. Ollama's own `-partial`
/// downloads are left alone.
fn sweep_partials(blobs: &Dir) {
    let Ok(entries) = blobs.entries() else {
        return;
    };
    for (name, kind) in entries {
        let Some(pid) = name
            .split_once(PARTIAL_MARK)
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if kind != Kind::Dir && !hostfs::pid_alive(pid) {
            let _ = blobs.remove_file(&name);
        }
    }
}

/// The target a model goes to: the command line's, else the bundle's.
pub fn model_target(m: &ModelRecord, opts: &RestoreOptions) -> Target {
    opts.models_to.clone().unwrap_or_else(|| m.target.clone())
}

/// Whether restoring this header's models and files needs the Docker engine.
pub fn wants_engine(h: &Header, opts: &RestoreOptions) -> bool {
    h.models
        .iter()
        .any(|m| matches!(model_target(m, opts), Target::Volume(_)))
        || h.files
            .iter()
            .any(|f| matches!(f.target, Target::Volume(_)))
}

/// Hashes a host file below a held target root, if there is one; nothing on the way is
/// followed if it is a symlink.
fn host_existing(root: Option<&Dir>, rel: &str) -> Result<Existing, UnpackError> {
    let Some(root) = root else {
        return Ok(Existing::Missing);
    };
    let (parent, leaf) = match rel.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", rel),
    };
    let dir = match root.open_path(parent) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Existing::Missing),
        Err(e) => return Err(fs_err(e)),
    };
    match dir.kind(leaf).map_err(fs_err)? {
        Kind::Missing => Ok(Existing::Missing),
        Kind::Dir => Ok(Existing::Dir),
        Kind::File { .. } => {
            let f = dir.open_read(leaf).map_err(fs_err)?;
            let (digest, size) = digest_reader(f).map_err(|e| env(&dir.path().join(leaf), e))?;
            Ok(Existing::File { digest, size })
        }
        Kind::Symlink | Kind::Other => Ok(Existing::Other),
    }
}

fn describe(e: &Existing) -> String {
    match e {
        Existing::File { digest, .. } => format!("content {digest}"),
        Existing::Sized(size) => format!("a file of {size} bytes"),
        Existing::Dir => "a directory".into(),
        Existing::Other => "a symlink or special file".into(),
        Existing::Missing => "nothing".into(),
    }
}

/// Decides every write before a blob is read. Blobs already in place are checked (compared
/// with the stream in a directory, hashed in the background in a volume): kept if right,
/// replaced if damaged. Existing files that differ are conflicts, refused unless
/// `overwrite`.
pub async fn prepare(
    h: &Header,
    opts: &RestoreOptions,
    docker: Option<&Docker>,
) -> Result<Staging, UnpackError> {
    let mut st = Staging::default();
    if h.models.is_empty() && h.files.is_empty() {
        return Ok(st);
    }
    // Volumes that exist are read through a helper; a volume that does not exist yet is
    // known to be empty and is created only at commit.
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    for m in &h.models {
        if let Target::Volume(v) = model_target(m, opts) {
            volumes.insert(v);
        }
    }
    for f in &h.files {
        if let Target::Volume(v) = &f.target {
            volumes.insert(v.clone());
        }
    }
    let mut reader: Option<Helper> = None;
    if !volumes.is_empty() {
        let docker = docker.ok_or_else(|| {
            UnpackError::Environment("restoring into Docker volumes needs the Docker engine".into())
        })?;
        let mut existing = Vec::new();
        for v in &volumes {
            if volume_exists(docker, v).await? {
                existing.push(v.clone());
            }
        }
        if !existing.is_empty() {
            reader = Some(Helper::start(docker, &existing, false).await?);
        }
    }
    let result = prepare_with(h, opts, &mut st, reader.as_ref()).await;
    st.reader = reader;
    st.volumes = volumes;
    if let Err(e) = result {
        st.release().await;
        st.abort();
        return Err(e);
    }
    Ok(st)
}

/// A blob file a delta bundle relies on: there, the right size, the right content.
fn host_blob_intact(blobs: &Dir, name: &str, d: Digest, size: u64) -> bool {
    match blobs.open_read(name) {
        Ok(f) if f.metadata().is_ok_and(|m| m.len() == size) => {
            airlock_bundle::hashing::digest_reader(f).is_ok_and(|(got, _)| got == d)
        }
        _ => false,
    }
}

async fn existing_in(
    reader: Option<&Helper>,
    target: &Target,
    rel: &str,
    host_root: Option<&Dir>,
) -> Result<Existing, UnpackError> {
    match target {
        Target::Path(_) => host_existing(host_root, rel),
        Target::Volume(v) => match reader {
            Some(r) if r.has(v) => r.existing(v, rel).await,
            _ => Ok(Existing::Missing),
        },
    }
}

async fn prepare_with(
    h: &Header,
    opts: &RestoreOptions,
    st: &mut Staging,
    reader: Option<&Helper>,
) -> Result<(), UnpackError> {
    let size_of: HashMap<Digest, u64> = h.entries.iter().map(|e| (e.digest, e.size)).collect();
    let left_out: HashMap<Digest, u64> = h
        .expected_present
        .iter()
        .filter(|p| p.chain_id.is_none())
        .map(|p| (p.digest, p.size))
        .collect();
    let need_spool = |st: &mut Staging,
                      d: Digest,
                      unless: Option<Arc<PresentCell>>|
     -> Result<(), UnpackError> {
        if st.spool.is_none() {
            let abs = std::path::absolute(&opts.work_dir).map_err(|e| env(&opts.work_dir, e))?;
            let mut made = Vec::new();
            let work = Dir::open_trusted(&abs, Some(&mut made)).map_err(fs_err)?;
            hostfs::sweep_dead(&work, SPOOL_PREFIX);
            let (name, dir) = work
                .create_private_dir(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
                .map_err(fs_err)?;
            st.spool = Some(Spool {
                work,
                name,
                dir: Arc::new(dir),
            });
        }
        st.spool_needs.entry(d).or_default().push(unless);
        Ok(())
    };

    // Models.
    let mut sent_to_volume: BTreeSet<(String, Digest)> = BTreeSet::new();
    for m in &h.models {
        let name = ModelName::parse(&m.name).map_err(|e| {
            UnpackError::Bundle(airlock_bundle::BundleError::Malformed(e.to_string()))
        })?;
        // The manifest is needed in every case (it is written last, from the spool).
        need_spool(st, m.manifest, None)?;
        let blobs: Vec<Digest> = {
            let mut seen = BTreeSet::new();
            std::iter::once(m.config)
                .chain(m.layers.iter().copied())
                .filter(|d| seen.insert(*d))
                .collect()
        };
        match model_target(m, opts) {
            Target::Path(dir) => {
                let dir = PathBuf::from(dir);
                let store = st.store(&dir)?;
                let blobs_dir = store.blobs.clone();
                let mut new_temps = Vec::new();
                let mut missing = Vec::new();
                for d in &blobs {
                    let d = *d;
                    if store.pending.contains_key(&d) {
                        continue;
                    }
                    let final_name = ollama::blob_path(&d)
                        .file_name()
                        .expect("blobs/sha256-HEX")
                        .to_string_lossy()
                        .into_owned();
                    if let Some(size) = left_out.get(&d).filter(|_| !size_of.contains_key(&d)) {
                        // Left out of a delta bundle: it must be here already, intact.
                        if !host_blob_intact(&blobs_dir, &final_name, d, *size) {
                            missing.push(format!(
                                "model blob {d} ({size} bytes) of {} in {}",
                                m.name,
                                blobs_dir.path().join(&final_name).display()
                            ));
                        }
                        continue;
                    }
                    // An unpredictable name: someone who can write the models directory
                    // cannot plant anything where the temp will be.
                    let temp = TempSpec::named(
                        &blobs_dir,
                        format!(
                            "{final_name}{PARTIAL_MARK}{}-{}",
                            std::process::id(),
                            hostfs::random_token()
                        ),
                    );
                    // A blob already there with the right size is compared byte for byte
                    // with the bundle's (which is hashed as it streams): equal means present
                    // and verified without hashing it a second time; a difference switches
                    // to writing the temp file, which then replaces the damaged blob.
                    let spec = match blobs_dir.kind(&final_name).map_err(fs_err)? {
                        Kind::File { size } if Some(&size) == size_of.get(&d) => {
                            SinkSpec::Compare {
                                dir: blobs_dir.clone(),
                                existing: final_name.clone(),
                                temp: temp.clone(),
                            }
                        }
                        Kind::File { .. } | Kind::Missing => SinkSpec::Write(temp.clone()),
                        _ => {
                            return Err(UnpackError::Conflict(format!(
                                "{}: is not a regular file, where the blob {d} goes",
                                blobs_dir.path().join(&final_name).display()
                            )))
                        }
                    };
                    store.pending.insert(d, temp.clone());
                    new_temps.push((d, spec, temp));
                }
                st.missing.append(&mut missing);
                for (d, spec, temp) in new_temps {
                    st.sinks.entry(d).or_default().push(spec);
                    st.temps.push(temp);
                }
                st.host_models.push(HostModel {
                    record: m.clone(),
                    name,
                    dir,
                    blobs,
                });
            }
            Target::Volume(v) => {
                let mut send = Vec::new();
                let blob_count = blobs.len();
                for d in blobs {
                    if sent_to_volume.contains(&(v.clone(), d)) {
                        continue;
                    }
                    let rel = format!("models/{}", ollama::blob_path(&d).display());
                    if let Some(size) = left_out.get(&d).filter(|_| !size_of.contains_key(&d)) {
                        // Left out of a delta bundle: it must be in the volume, intact.
                        let found = match reader.filter(|r| r.has(&v)) {
                            Some(r) => r.existing(&v, &rel).await?,
                            None => Existing::Missing,
                        };
                        if !matches!(found, Existing::File { digest, .. } if digest == d) {
                            st.missing.push(format!(
                                "model blob {d} ({size} bytes) of {} in volume {v}:/{rel}",
                                m.name
                            ));
                        }
                        sent_to_volume.insert((v.clone(), d));
                        continue;
                    }
                    // Only the size is read now; a blob of the right size is hashed in the
                    // background while the bundle streams, and sent only if it differs.
                    let existing = match reader.filter(|r| r.has(&v)) {
                        Some(r) => r.file(&v, &rel).stat().await?,
                        None => Existing::Missing,
                    };
                    let unless = match existing {
                        Existing::Sized(size) if Some(&size) == size_of.get(&d) => {
                            let cell: Arc<PresentCell> = Arc::default();
                            let file = reader.expect("stat went through the reader").file(&v, &rel);
                            let c = cell.clone();
                            let task = tokio::spawn(async move {
                                let found = matches!(
                                    file.existing().await?,
                                    Existing::File { digest, .. } if digest == d
                                );
                                *c.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                                Ok(found)
                            });
                            st.checks.push(VolumeCheck {
                                volume: v.clone(),
                                digest: d,
                                task,
                            });
                            Some(cell)
                        }
                        Existing::Missing | Existing::Sized(_) | Existing::File { .. } => None,
                        other => {
                            return Err(UnpackError::Conflict(format!(
                                "volume {v}: {rel} is {}, not a blob file",
                                describe(&other)
                            )))
                        }
                    };
                    need_spool(st, d, unless)?;
                    sent_to_volume.insert((v.clone(), d));
                    send.push(d);
                }
                let mrel = format!("models/{}", name.manifest_path().display());
                let replaced =
                    match existing_in(reader, &Target::Volume(v.clone()), &mrel, None).await? {
                        Existing::File { digest, .. } if digest != m.manifest => Some(digest),
                        _ => None,
                    };
                st.volume_models.push(VolumeModel {
                    record: m.clone(),
                    name,
                    volume: v,
                    send,
                    blob_count,
                    replaced,
                });
            }
        }
    }

    // Files.
    let mut conflicts = Vec::new();
    for f in &h.files {
        let root = match &f.target {
            Target::Path(p) => st.root(p, false)?,
            Target::Volume(_) => None,
        };
        let existing = existing_in(reader, &f.target, &f.path, root.as_deref()).await?;
        let (action, previous) = match (&f.digest, &existing) {
            (None, Existing::Dir | Existing::Missing) => ("directory", None),
            (Some(d), Existing::File { digest, .. }) if digest == d => ("unchanged", None),
            (Some(_), Existing::Missing) => ("written", None),
            (Some(d), Existing::File { digest, .. }) => {
                if !opts.overwrite {
                    conflicts.push(Conflict {
                        target: f.target.clone(),
                        path: f.path.clone(),
                        existing: describe(&existing),
                        bundle: *d,
                    });
                }
                ("overwritten", Some(*digest))
            }
            (_, other) => {
                // A directory where a file goes, a file where a directory goes, or a
                // symlink: never replaced, not even with --overwrite.
                return Err(UnpackError::Conflict(format!(
                    "{} {}: is {}, the bundle has a {}",
                    f.target,
                    f.path,
                    describe(other),
                    if f.is_dir() { "directory" } else { "file" }
                )));
            }
        };
        if let (Some(d), "written" | "overwritten") = (&f.digest, action) {
            need_spool(st, *d, None)?;
        }
        st.files.push(PlannedFile {
            record: f.clone(),
            action,
            previous,
        });
    }
    // Spool sinks: unconditional if anything needs the blob regardless, else skipped once
    // every check that could spare it found it in place.
    for (d, needs) in std::mem::take(&mut st.spool_needs) {
        let temp = st.spool_temp(&d);
        let spec = if needs.iter().any(Option::is_none) {
            SinkSpec::Write(temp)
        } else {
            SinkSpec::SpoolUnlessPresent {
                temp,
                checks: needs.into_iter().flatten().collect(),
            }
        };
        st.sinks.entry(d).or_default().push(spec);
    }
    if !conflicts.is_empty() {
        return Err(UnpackError::Conflict(format!(
            "{} existing file(s) differ from the bundle; nothing was changed (use --overwrite to replace them):\n{}",
            conflicts.len(),
            conflicts
                .iter()
                .map(|c| format!("  - {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    Ok(())
}

/// Where a blob goes while the bundle streams.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    /// A temp file.
    Write(TempSpec),
    /// A blob already in place (`existing` in `dir`): compared with the stream; written to
    /// `temp` only from the first difference on (the equal prefix copied from `existing`).
    Compare {
        dir: Arc<Dir>,
        existing: String,
        temp: TempSpec,
    },
    /// A spool file, not written if every check has already found the blob in its volume.
    SpoolUnlessPresent {
        temp: TempSpec,
        checks: Vec<Arc<PresentCell>>,
    },
}

/// One bundle entry's bytes to the loader (the engine upload, containerd's content store)
/// and to the temp files of the models and files that share the blob, in one pass.
pub(crate) struct Tee<'a, W> {
    pub(crate) out: Option<&'a mut W>,
    pub(crate) files: Vec<Sink>,
}

impl<W: std::io::Write> std::io::Write for Tee<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if let Some(o) = self.out.as_mut() {
            std::io::Write::write_all(o, b)?;
        }
        for f in &mut self.files {
            f.write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An open [`SinkSpec`].
pub enum Sink {
    /// Not needed after all: the bytes are dropped (they are still hashed by the reader).
    Skip,
    Direct(io::BufWriter<fs::File>),
    Behind(WriteBehind<fs::File>),
    Compare {
        existing: io::BufReader<fs::File>,
        /// The same file again, for copying the equal prefix once they differ.
        original: fs::File,
        temp: TempSpec,
        big: bool,
        pos: u64,
        buf: Vec<u8>,
        diverged: Option<Box<Sink>>,
    },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Skip => "Sink::Skip",
            Sink::Direct(_) => "Sink::Direct",
            Sink::Behind(_) => "Sink::Behind",
            Sink::Compare { .. } => "Sink::Compare",
        })
    }
}

impl Sink {
    /// Opens a sink for an entry of `size` bytes.
    pub fn open(spec: &SinkSpec, size: u64) -> io::Result<Sink> {
        // Large blobs are written on their own thread while the reader hashes: with sha256
        // at ~2 GB/s, writing in line would add half again to a model's load time.
        let big = size >= 4 << 20;
        match spec {
            SinkSpec::Write(t) => Sink::create(t, big),
            SinkSpec::SpoolUnlessPresent { temp, checks } => {
                let all_present = checks
                    .iter()
                    .all(|c| *c.lock().unwrap_or_else(|p| p.into_inner()) == Some(true));
                if all_present {
                    Ok(Sink::Skip)
                } else {
                    Sink::create(temp, big)
                }
            }
            SinkSpec::Compare {
                dir,
                existing,
                temp,
            } => {
                let original = dir.open_read(existing).map_err(fs_io)?;
                Ok(Sink::Compare {
                    existing: io::BufReader::with_capacity(1 << 20, original.try_clone()?),
                    original,
                    temp: temp.clone(),
                    big,
                    pos: 0,
                    buf: Vec::new(),
                    diverged: None,
                })
            }
        }
    }

    fn create(t: &TempSpec, big: bool) -> io::Result<Sink> {
        let f = t.create()?;
        Ok(if big {
            Sink::Behind(WriteBehind::spawn(f, 1 << 20, 4))
        } else {
            Sink::Direct(io::BufWriter::with_capacity(1 << 20, f))
        })
    }

    /// From here on, write: the temp file starts with the existing file's first `pos`
    /// bytes, which equalled the stream's (read with `pread`: the comparing reader shares
    /// the file offset).
    fn diverge(original: &fs::File, temp: &TempSpec, big: bool, pos: u64) -> io::Result<Sink> {
        let mut w = Sink::create(temp, big)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < pos {
            let want = buf.len().min((pos - at) as usize);
            let n = original.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: shrank while being compared", temp.dir.path().display()),
                ));
            }
            w.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(w)
    }

    pub fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(w) => w.write_all(b),
            Sink::Behind(w) => w.write_all(b),
            Sink::Compare {
                existing,
                original,
                temp,
                big,
                pos,
                buf,
                diverged,
            } => {
                if let Some(w) = diverged {
                    return w.write_all(b);
                }
                buf.resize(b.len(), 0);
                let same = existing.read_exact(buf).is_ok() && buf[..] == b[..];
                if same {
                    *pos += b.len() as u64;
                    return Ok(());
                }
                let mut w = Sink::diverge(original, temp, *big, *pos)?;
                w.write_all(b)?;
                *diverged = Some(Box::new(w));
                Ok(())
            }
        }
    }

    pub fn finish(self) -> io::Result<()> {
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(mut w) => w.flush(),
            Sink::Behind(w) => w.finish().map(drop),
            Sink::Compare {
                mut existing,
                original,
                temp,
                big,
                pos,
                diverged,
                ..
            } => match diverged {
                Some(w) => w.finish(),
                None => {
                    // Equal so far; a longer existing file still differs.
                    if existing.read(&mut [0u8; 1])? == 0 {
                        Ok(())
                    } else {
                        Sink::diverge(&original, &temp, big, pos)?.finish()
                    }
                }
            },
        }
    }
}

/// A file written in full to its temp, waiting to be renamed into place.
#[derive(Debug)]
struct Staged {
    temp: TempSpec,
    dest: Arc<Dir>,
    to: String,
    /// `false`: the destination must not exist (a file that appeared meanwhile is kept).
    replace: bool,
}

impl Staged {
    fn place(&self) -> Result<(), UnpackError> {
        let id = self.temp.made().expect("staged temps were created");
        self.temp
            .dir
            .place(&self.temp.name, id, &self.dest, &self.to, self.replace)
            .map_err(|e| match e {
                FsError::Io { path, source } if source.kind() == io::ErrorKind::AlreadyExists => {
                    UnpackError::Conflict(format!(
                        "{}: appeared while the bundle was loading; left as it is",
                        path.display()
                    ))
                }
                e => fs_err(e),
            })
    }
}

/// Makes everything visible, after the whole bundle verified.
pub async fn commit(
    st: &mut Staging,
    docker: Option<&Docker>,
    progress: &Progress,
) -> Result<(Vec<RestoredModel>, Vec<RestoredFile>), UnpackError> {
    // 1. Every manifest and host file is written to its temp beside its destination, and
    //    every directory made, before anything is renamed: a failure here (a full disk, a
    //    symlink in the way) leaves nothing visible changed.
    let mut staged = Vec::new();
    let mut replaced = Vec::new();
    for hm in &st.host_models {
        let bytes = read_all(st.spool_file(&hm.record.manifest)?, &hm.record.manifest)?;
        let store = &st.stores[&hm.dir];
        let (s, previous) =
            stage_manifest(store, &hm.name, &bytes, &mut st.created_dirs, &mut st.temps)?;
        staged.push(s);
        replaced.push(previous);
    }
    let spool = st.spool.as_ref().map(|s| s.dir.clone());
    let mut dir_modes = Vec::new();
    let host_files: Vec<(String, usize)> = st
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, pf)| match &pf.record.target {
            Target::Path(root) if pf.action != "unchanged" => Some((root.clone(), i)),
            _ => None,
        })
        .collect();
    for (root, i) in host_files {
        let root = st.root(&root, true)?.expect("created when missing");
        let pf = &st.files[i];
        if let Some(s) = stage_host_file(
            &root,
            pf,
            spool.as_deref(),
            &mut st.created_dirs,
            &mut st.temps,
        )? {
            staged.push(s);
        }
        if pf.action == "directory" {
            let mode = pf.record.mode_bits().map_err(UnpackError::Usage)?;
            dir_modes.push((root, pf.record.path.clone(), mode));
        }
    }

    // 2. Renames: blobs, then manifests (a model appears only once its blobs are there),
    //    then files. A blob without a temp file matched the one already there byte for byte.
    let mut written: BTreeSet<(PathBuf, Digest)> = BTreeSet::new();
    for (dir, store) in &st.stores {
        for (d, temp) in &store.pending {
            let Some(id) = temp.made() else {
                continue;
            };
            hostfs::set_mode(&temp.reopen()?, 0o644).map_err(|e| env(&temp.path(), e))?;
            let final_name = format!("sha256-{}", d.hex());
            temp.dir
                .place(&temp.name, id, &store.blobs, &final_name, true)
                .map_err(fs_err)?;
            written.insert((dir.clone(), *d));
        }
    }
    for s in &staged {
        s.place()?;
    }
    st.temps.clear();
    // Directory modes last (deepest first), on their descriptors: a read-only directory
    // must not stop its own files.
    for (root, path, mode) in dir_modes.iter().rev() {
        root.open_path(path)
            .and_then(|d| d.chmod(*mode))
            .map_err(fs_err)?;
    }

    let mut models = Vec::new();
    for (hm, replaced) in st.host_models.iter().zip(replaced) {
        let n_written = hm
            .blobs
            .iter()
            .filter(|d| written.contains(&(hm.dir.clone(), **d)))
            .count();
        models.push(RestoredModel {
            name: hm.name.to_string(),
            target: hm.dir.display().to_string(),
            manifest: hm.record.manifest,
            blobs_written: n_written,
            blobs_present: hm.blobs.len() - n_written,
            replaced,
        });
    }
    // Volumes: models (one archive each, manifest last), then files (one archive per volume).
    if !st.volumes.is_empty() {
        let docker = docker.expect("engine connected when volumes are targets");
        let present = st.settle().await?;
        let volumes: Vec<String> = st.volumes.iter().cloned().collect();
        let mut helper = Helper::start(docker, &volumes, true).await?;
        let r = fill_volumes(st, &helper, &mut models, &present, progress).await;
        helper.remove().await;
        r?;
    }
    let mut files = Vec::new();
    for pf in &st.files {
        files.push(RestoredFile {
            target: pf.record.target.to_string(),
            path: pf.record.path.clone(),
            action: pf.action,
            digest: pf.record.digest,
            previous: pf.previous,
        });
    }
    st.created_dirs.clear();
    st.spool = None;
    Ok((models, files))
}

fn read_all(mut f: fs::File, d: &Digest) -> Result<Vec<u8>, UnpackError> {
    let mut b = Vec::new();
    f.read_to_end(&mut b)
        .map_err(|e| env(Path::new(&d.blob_path()), e))?;
    Ok(b)
}

/// Writes a model's manifest to a temp file directly in `manifests/` (not four levels
/// deep, where `ollama list` looks), to be renamed into place. Returns the digest it will
/// replace.
fn stage_manifest(
    store: &Store,
    name: &ModelName,
    bytes: &[u8],
    created: &mut Vec<Created>,
    temps: &mut Vec<TempSpec>,
) -> Result<(Staged, Option<Digest>), UnpackError> {
    let mpath = name.manifest_path();
    let rel = mpath.to_string_lossy();
    let (parent, tag) = rel.rsplit_once('/').expect("manifests/…/TAG");
    let leaf = Arc::new(
        store
            .root
            .create_path(parent, 0o755, created)
            .map_err(fs_err)?,
    );
    let previous = match leaf.kind(tag).map_err(fs_err)? {
        Kind::Missing => None,
        Kind::File { .. } => {
            let f = leaf.open_read(tag).map_err(fs_err)?;
            let (d, _) = digest_reader(f).map_err(|e| env(&leaf.path().join(tag), e))?;
            Some(d).filter(|d| *d != Digest::of(bytes))
        }
        _ => {
            return Err(UnpackError::Conflict(format!(
                "{}: is not a regular file, where the manifest of {name} goes",
                leaf.path().join(tag).display()
            )))
        }
    };
    let manifests = Arc::new(store.root.open_dir("manifests").map_err(fs_err)?);
    let temp = TempSpec::named(
        &manifests,
        format!(
            ".airlock-{}-{}.tmp",
            std::process::id(),
            hostfs::random_token()
        ),
    );
    let mut f = temp.create().map_err(|e| env(&temp.path(), e))?;
    temps.push(temp.clone());
    f.write_all(bytes)
        .and_then(|()| hostfs::set_mode(&f, 0o644))
        .map_err(|e| env(&temp.path(), e))?;
    Ok((
        Staged {
            temp,
            dest: leaf,
            to: tag.to_string(),
            replace: true,
        },
        previous,
    ))
}

/// Makes a file's directories and writes the file to a temp beside it with its mode (set
/// on the descriptor), to be renamed into place; a directory record is just made.
fn stage_host_file(
    root: &Dir,
    pf: &PlannedFile,
    spool: Option<&Dir>,
    created: &mut Vec<Created>,
    temps: &mut Vec<TempSpec>,
) -> Result<Option<Staged>, UnpackError> {
    let f = &pf.record;
    let mode = f.mode_bits().map_err(UnpackError::Usage)?;
    match (pf.action, f.digest) {
        ("directory", _) => {
            root.create_path(&f.path, 0o755, created).map_err(fs_err)?;
            Ok(None)
        }
        ("written" | "overwritten", Some(d)) => {
            let (parent, leaf) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
            let dir = Arc::new(root.create_path(parent, 0o755, created).map_err(fs_err)?);
            let temp = TempSpec::named(
                &dir,
                format!(".{leaf}.airlock-{}.tmp", hostfs::random_token()),
            );
            let mut out = temp.create().map_err(|e| env(&temp.path(), e))?;
            temps.push(temp.clone());
            let mut src = spool
                .expect("spooled")
                .open_read(&d.hex())
                .map_err(fs_err)?;
            io::copy(&mut src, &mut out)
                .and_then(|_| hostfs::set_mode(&out, mode))
                .map_err(|e| env(&temp.path(), e))?;
            Ok(Some(Staged {
                temp,
                dest: dir,
                to: leaf.to_string(),
                replace: pf.action == "overwritten",
            }))
        }
        _ => Ok(None),
    }
}

async fn fill_volumes(
    st: &Staging,
    helper: &Helper,
    models: &mut Vec<RestoredModel>,
    present: &BTreeSet<(String, Digest)>,
    progress: &Progress,
) -> Result<(), UnpackError> {
    // One bar per archive: a model's blobs can be gigabytes.
    let put = |volume: &str, items: Vec<TarItem>| {
        let total: u64 = items
            .iter()
            .map(|i| match i {
                TarItem::File(_, src, _) => src.metadata().map(|m| m.len()).unwrap_or(0),
                TarItem::Dir(..) => 0,
            })
            .sum();
        let bar = progress.bytes(total, volume);
        let on = bar.clone();
        let body = tar_stream(items, Box::new(move |n| on.inc(n)));
        let volume = volume.to_string();
        async move {
            let r = helper.put(&volume, body).await;
            progress.remove(&bar);
            r
        }
    };
    for vm in &st.volume_models {
        let mut entries: Vec<TarItem> = vec![
            TarItem::Dir("models".into(), 0o755),
            TarItem::Dir("models/blobs".into(), 0o755),
        ];
        let mut n_present = vm.blob_count - vm.send.len();
        let mut n_sent = 0;
        for d in &vm.send {
            if present.contains(&(vm.volume.clone(), *d)) {
                n_present += 1;
                continue;
            }
            n_sent += 1;
            entries.push(TarItem::File(
                format!("models/{}", ollama::blob_path(d).display()),
                st.spool_file(d)?,
                0o644,
            ));
        }
        let mpath = vm.name.manifest_path();
        let mut dir = PathBuf::from("models");
        for c in mpath.parent().expect("parent").components() {
            dir.push(c);
            entries.push(TarItem::Dir(dir.display().to_string(), 0o755));
        }
        // Last: once the engine extracted this entry, the model is complete.
        entries.push(TarItem::File(
            format!("models/{}", mpath.display()),
            st.spool_file(&vm.record.manifest)?,
            0o644,
        ));
        put(&vm.volume, entries).await?;
        models.push(RestoredModel {
            name: vm.name.to_string(),
            target: format!("volume {}", vm.volume),
            manifest: vm.record.manifest,
            blobs_written: n_sent,
            blobs_present: n_present,
            replaced: vm.replaced,
        });
    }
    let mut per_volume: BTreeMap<&str, Vec<TarItem>> = BTreeMap::new();
    for pf in &st.files {
        let Target::Volume(v) = &pf.record.target else {
            continue;
        };
        let mode = pf.record.mode_bits().map_err(UnpackError::Usage)?;
        let items = per_volume.entry(v).or_default();
        match (pf.action, pf.record.digest) {
            ("directory", _) => items.push(TarItem::Dir(pf.record.path.clone(), mode)),
            ("written" | "overwritten", Some(d)) => items.push(TarItem::File(
                pf.record.path.clone(),
                st.spool_file(&d)?,
                mode,
            )),
            _ => {}
        }
    }
    for (v, items) in per_volume {
        if !items.is_empty() {
            put(v, items).await?;
        }
    }
    Ok(())
}

enum TarItem {
    Dir(String, u32),
    /// A spooled file, opened through the spool's descriptor.
    File(String, fs::File, u32),
}

/// A tar built on a blocking thread from spooled files and streamed in 1 MiB chunks.
fn tar_stream(
    items: Vec<TarItem>,
    on_bytes: Box<dyn Fn(u64) + Send>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    std::thread::spawn(move || {
        struct Chan(
            tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
            Vec<u8>,
            Box<dyn Fn(u64) + Send>,
        );
        impl io::Write for Chan {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.extend_from_slice(b);
                if self.1.len() >= 1 << 20 {
                    self.flush()?;
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                if !self.1.is_empty() {
                    let chunk = Bytes::from(std::mem::take(&mut self.1));
                    (self.2)(chunk.len() as u64);
                    self.0.blocking_send(Ok(chunk)).map_err(|_| {
                        io::Error::new(io::ErrorKind::BrokenPipe, "engine closed the upload")
                    })?;
                }
                Ok(())
            }
        }
        let tx2 = tx.clone();
        let r = (|| -> io::Result<()> {
            let mut b = tar::Builder::new(Chan(tx, Vec::with_capacity(1 << 20), on_bytes));
            b.mode(tar::HeaderMode::Deterministic);
            for item in items {
                let mut h = tar::Header::new_gnu();
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                match item {
                    TarItem::Dir(path, mode) => {
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_mode(mode);
                        h.set_size(0);
                        b.append_data(&mut h, &path, io::empty())?;
                    }
                    TarItem::File(path, f, mode) => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_mode(mode);
                        h.set_size(f.metadata()?.len());
                        b.append_data(&mut h, &path, io::BufReader::with_capacity(1 << 20, f))?;
                    }
                }
            }
            let mut chan = b.into_inner()?;
            chan.flush()
        })();
        if let Err(e) = r {
            let _ = tx2.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_max() -> u64 {
        fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn spools_of_dead_loads_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // No process can have an id above pid_max.
        let dead = dir
            .path()
            .join(format!("{SPOOL_PREFIX}{}-abc", pid_max() + 1));
        let live = dir
            .path()
            .join(format!("{SPOOL_PREFIX}{}-abc", std::process::id()));
        let other = dir.path().join("unrelated");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/blob"), b"x").unwrap();
        }
        hostfs::sweep_dead(&Dir::open_trusted(dir.path(), None).unwrap(), SPOOL_PREFIX);
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn partial_blobs_of_dead_loads_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let dead = format!("sha256-{hex}{PARTIAL_MARK}{}-Xy", pid_max() + 1);
        let old_style = format!("sha256-{hex}{PARTIAL_MARK}{}", pid_max() + 1);
        let live = format!("sha256-{hex}{PARTIAL_MARK}{}-Xy", std::process::id());
        let ollamas = format!("sha256-{hex}-partial-0");
        for n in [&dead, &old_style, &live, &ollamas] {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        sweep_partials(&Dir::open_trusted(dir.path(), None).unwrap());
        assert!(!dir.path().join(&dead).exists());
        assert!(!dir.path().join(&old_style).exists());
        assert!(dir.path().join(&live).exists() && dir.path().join(&ollamas).exists());
    }

    #[test]
    fn compare_sinks_write_only_from_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(Dir::open_trusted(dir.path(), None).unwrap());
        let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect();
        let run = |existing: &[u8]| -> Option<Vec<u8>> {
            let _ = fs::remove_file(dir.path().join("temp"));
            fs::write(dir.path().join("existing"), existing).unwrap();
            let temp = TempSpec::named(&held, "temp".into());
            let spec = SinkSpec::Compare {
                dir: held.clone(),
                existing: "existing".into(),
                temp: temp.clone(),
            };
            let mut s = Sink::open(&spec, data.len() as u64).unwrap();
            for c in data.chunks(100_000) {
                s.write_all(c).unwrap();
            }
            s.finish().unwrap();
            let out = fs::read(dir.path().join("temp")).ok();
            assert_eq!(
                out.is_some(),
                temp.made().is_some(),
                "made is what was created"
            );
            out
        };
        assert_eq!(run(&data), None, "equal: nothing written");
        let mut damaged = data.clone();
        damaged[3_333_333] ^= 1;
        assert_eq!(run(&damaged).as_deref(), Some(&data[..]), "one bit off");
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(run(&longer).as_deref(), Some(&data[..]), "longer");
        assert_eq!(run(&data[..1000]).as_deref(), Some(&data[..]), "shorter");
    }
}
