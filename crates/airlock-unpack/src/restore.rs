//! Restoring Ollama models and `[[files]]` from a bundle into host directories and Docker
//! named volumes, all or nothing.
//!
//! It runs in three steps around the one pass over the bundle:
//! 1. [`prepare`], once the signed header is read: decide every target, look at what is
//!    already there (never trusted: existing files are hashed, existing volume blobs are
//!    hashed in the background while the bundle streams), refuse conflicting files unless
//!    `--overwrite`, and say where each blob must be written while streaming.
//! 2. While streaming, blobs go to temp files only: for a host models directory, temp files
//!    in its `blobs/` (same filesystem, for the rename); for volumes and files, a spool
//!    directory under the work dir. A blob already in a models directory is compared with
//!    the stream (which the reader hashes) instead of being hashed again, and written only
//!    from its first difference on.
//! 3. [`commit`], only after the whole bundle verified: blobs renamed into place, each
//!    model's manifest written last and atomically (so `ollama list` never shows a half
//!    model), files written through temp + rename, volumes filled with one archive per model
//!    whose manifest entry comes last. [`Staging::release`] and [`Staging::abort`] remove
//!    the helper and every temp file instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use airlock_bundle::hashing::digest_reader;
use airlock_bundle::header::{FileRecord, Header, ModelRecord, Target};
use airlock_bundle::ollama::{self, ModelName};
use airlock_bundle::Digest;
use bollard::Docker;
use bytes::Bytes;
use serde::Serialize;

use airlock_bundle::progress::Progress;
use airlock_bundle::readahead::WriteBehind;

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
    spool: Option<tempfile::TempDir>,
    host_models: Vec<HostModel>,
    /// Per models directory: blobs to rename into place.
    host_blobs: BTreeMap<PathBuf, BTreeMap<Digest, PathBuf>>,
    volume_models: Vec<VolumeModel>,
    files: Vec<PlannedFile>,
    volumes: BTreeSet<String>,
    temps: Vec<PathBuf>,
    /// Directories created for temp files, outermost first: removed again on abort.
    created_dirs: Vec<PathBuf>,
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
    fn spool_path(&self, d: &Digest) -> PathBuf {
        self.spool
            .as_ref()
            .expect("spool exists when something is spooled")
            .path()
            .join(d.hex())
    }

    /// Removes every temp file (the spool goes with the staging).
    pub fn abort(&mut self) {
        for t in self.temps.drain(..) {
            let _ = fs::remove_file(t);
        }
        // Only empty ones go: a directory that gained anything else is left alone.
        for d in self.created_dirs.drain(..).rev() {
            let _ = fs::remove_dir(d);
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

    /// `create_dir_all`, remembering which directories did not exist before.
    fn create_dirs(&mut self, dir: &Path) -> Result<(), UnpackError> {
        let mut missing = Vec::new();
        let mut p = Some(dir);
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        fs::create_dir_all(dir).map_err(|e| env(dir, e))?;
        self.created_dirs.extend(missing.into_iter().rev());
        Ok(())
    }
}

fn env(p: &Path, e: io::Error) -> UnpackError {
    UnpackError::Environment(format!("{}: {e}", p.display()))
}

const SPOOL_PREFIX: &str = ".airlock-spool-";

/// Removes spools left by loads that were killed (their process is gone): a spool can hold
/// gigabytes. A spool whose process id is in use, by that load or by a stranger that
/// reused the id, is left alone.
fn remove_stale_spools(work_dir: &Path) {
    let Ok(entries) = fs::read_dir(work_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SPOOL_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
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

/// Hashes a host file, if there is one.
fn host_existing(p: &Path) -> Result<Existing, UnpackError> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Missing),
        Err(e) => Err(env(p, e)),
        Ok(m) if m.is_dir() => Ok(Existing::Dir),
        Ok(m) if m.is_file() => {
            let (digest, size) =
                digest_reader(fs::File::open(p).map_err(|e| env(p, e))?).map_err(|e| env(p, e))?;
            Ok(Existing::File { digest, size })
        }
        Ok(_) => Ok(Existing::Other),
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
fn host_blob_intact(path: &Path, d: Digest, size: u64) -> bool {
    match fs::File::open(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file() && m.len() == size) => {
            airlock_bundle::hashing::digest_reader(f).is_ok_and(|(got, _)| got == d)
        }
        _ => false,
    }
}

async fn existing_in(
    reader: Option<&Helper>,
    target: &Target,
    rel: &str,
    host_root: Option<&Path>,
) -> Result<Existing, UnpackError> {
    match target {
        Target::Path(_) => host_existing(&host_root.expect("host root").join(rel)),
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
            fs::create_dir_all(&opts.work_dir).map_err(|e| env(&opts.work_dir, e))?;
            remove_stale_spools(&opts.work_dir);
            st.spool = Some(
                tempfile::Builder::new()
                    .prefix(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
                    .tempdir_in(&opts.work_dir)
                    .map_err(|e| env(&opts.work_dir, e))?,
            );
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
                let blob_dir = dir.join("blobs");
                for d in &blobs {
                    let d = *d;
                    let pending = st.host_blobs.entry(dir.clone()).or_default();
                    if pending.contains_key(&d) {
                        continue;
                    }
                    let final_path = dir.join(ollama::blob_path(&d));
                    if let Some(size) = left_out.get(&d).filter(|_| !size_of.contains_key(&d)) {
                        // Left out of a delta bundle: it must be here already, intact.
                        if !host_blob_intact(&final_path, d, *size) {
                            st.missing.push(format!(
                                "model blob {d} ({size} bytes) of {} in {}",
                                m.name,
                                final_path.display()
                            ));
                        }
                        continue;
                    }
                    let tmp = blob_dir.join(format!(
                        "sha256-{}-partial-airlock-{}",
                        d.hex(),
                        std::process::id()
                    ));
                    // A blob already there with the right size is compared byte for byte
                    // with the bundle's (which is hashed as it streams): equal means present
                    // and verified without hashing it a second time; a difference switches
                    // to writing the temp file, which then replaces the damaged blob.
                    let spec = match fs::symlink_metadata(&final_path) {
                        Ok(m) if m.is_file() && Some(&m.len()) == size_of.get(&d) => {
                            SinkSpec::Compare {
                                existing: final_path.clone(),
                                temp: tmp.clone(),
                            }
                        }
                        Ok(m) if !m.is_file() => {
                            return Err(UnpackError::Conflict(format!(
                                "{}: is not a regular file, where the blob {d} goes",
                                final_path.display()
                            )))
                        }
                        _ => SinkSpec::Write(tmp.clone()),
                    };
                    st.create_dirs(&blob_dir)?;
                    st.sinks.entry(d).or_default().push(spec);
                    st.temps.push(tmp.clone());
                    st.host_blobs.entry(dir.clone()).or_default().insert(d, tmp);
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
            Target::Path(p) => Some(PathBuf::from(p)),
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
        let path = st.spool_path(&d);
        let spec = if needs.iter().any(Option::is_none) {
            SinkSpec::Write(path)
        } else {
            SinkSpec::SpoolUnlessPresent {
                path,
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
    Write(PathBuf),
    /// A blob already in place: compared with the stream; written to `temp` only from the
    /// first difference on (the equal prefix copied from `existing`).
    Compare { existing: PathBuf, temp: PathBuf },
    /// A spool file, not written if every check has already found the blob in its volume.
    SpoolUnlessPresent {
        path: PathBuf,
        checks: Vec<Arc<PresentCell>>,
    },
}

/// An open [`SinkSpec`].
pub enum Sink {
    /// Not needed after all: the bytes are dropped (they are still hashed by the reader).
    Skip,
    Direct(io::BufWriter<fs::File>),
    Behind(WriteBehind<fs::File>),
    Compare {
        existing: io::BufReader<fs::File>,
        existing_path: PathBuf,
        temp: PathBuf,
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

fn io_at(p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

impl Sink {
    /// Opens a sink for an entry of `size` bytes.
    pub fn open(spec: &SinkSpec, size: u64) -> io::Result<Sink> {
        // Large blobs are written on their own thread while the reader hashes: with sha256
        // at ~2 GB/s, writing in line would add half again to a model's load time.
        let big = size >= 4 << 20;
        match spec {
            SinkSpec::Write(p) => Sink::create(p, big),
            SinkSpec::SpoolUnlessPresent { path, checks } => {
                let all_present = checks
                    .iter()
                    .all(|c| *c.lock().unwrap_or_else(|p| p.into_inner()) == Some(true));
                if all_present {
                    Ok(Sink::Skip)
                } else {
                    Sink::create(path, big)
                }
            }
            SinkSpec::Compare { existing, temp } => Ok(Sink::Compare {
                existing: io::BufReader::with_capacity(
                    1 << 20,
                    fs::File::open(existing).map_err(|e| io_at(existing, e))?,
                ),
                existing_path: existing.clone(),
                temp: temp.clone(),
                big,
                pos: 0,
                buf: Vec::new(),
                diverged: None,
            }),
        }
    }

    fn create(p: &Path, big: bool) -> io::Result<Sink> {
        let f = fs::File::create(p).map_err(|e| io_at(p, e))?;
        Ok(if big {
            Sink::Behind(WriteBehind::spawn(f, 1 << 20, 4))
        } else {
            Sink::Direct(io::BufWriter::with_capacity(1 << 20, f))
        })
    }

    /// From here on, write: the temp file starts with the existing file's first `pos`
    /// bytes, which equalled the stream's.
    fn diverge(existing_path: &Path, temp: &Path, big: bool, pos: u64) -> io::Result<Sink> {
        use std::io::Read as _;
        let mut w = Sink::create(temp, big)?;
        let mut src = fs::File::open(existing_path)
            .map_err(|e| io_at(existing_path, e))?
            .take(pos);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
        }
        Ok(w)
    }

    pub fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        use std::io::Read as _;
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(w) => w.write_all(b),
            Sink::Behind(w) => w.write_all(b),
            Sink::Compare {
                existing,
                existing_path,
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
                let mut w = Sink::diverge(existing_path, temp, *big, *pos)?;
                w.write_all(b)?;
                *diverged = Some(Box::new(w));
                Ok(())
            }
        }
    }

    pub fn finish(self) -> io::Result<()> {
        use std::io::Read as _;
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(mut w) => w.flush(),
            Sink::Behind(w) => w.finish().map(drop),
            Sink::Compare {
                mut existing,
                existing_path,
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
                        Sink::diverge(&existing_path, &temp, big, pos)?.finish()
                    }
                }
            },
        }
    }
}

/// Makes everything visible, after the whole bundle verified.
pub async fn commit(
    st: &mut Staging,
    docker: Option<&Docker>,
    progress: &Progress,
) -> Result<(Vec<RestoredModel>, Vec<RestoredFile>), UnpackError> {
    let mut models = Vec::new();
    // Host models directories: blobs, then manifests. A blob without a temp file matched
    // the one already there byte for byte.
    let mut written: BTreeSet<(PathBuf, Digest)> = BTreeSet::new();
    for (dir, blobs) in std::mem::take(&mut st.host_blobs) {
        for (d, tmp) in blobs {
            if !tmp.exists() {
                continue;
            }
            let final_path = dir.join(ollama::blob_path(&d));
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
                .map_err(|e| env(&tmp, e))?;
            fs::rename(&tmp, &final_path).map_err(|e| env(&final_path, e))?;
            written.insert((dir.clone(), d));
        }
    }
    for hm in &st.host_models {
        let n_written = hm
            .blobs
            .iter()
            .filter(|d| written.contains(&(hm.dir.clone(), **d)))
            .count();
        let manifest = fs::read(st.spool_path(&hm.record.manifest))
            .map_err(|e| env(&st.spool_path(&hm.record.manifest), e))?;
        let replaced = write_manifest(&hm.dir, &hm.name, &manifest)?;
        models.push(RestoredModel {
            name: hm.name.to_string(),
            target: hm.dir.display().to_string(),
            manifest: hm.record.manifest,
            blobs_written: n_written,
            blobs_present: hm.blobs.len() - n_written,
            replaced,
        });
    }
    // Host files.
    let mut files = Vec::new();
    for pf in &st.files {
        if let Target::Path(root) = &pf.record.target {
            write_host_file(Path::new(root), pf, st)?;
        }
    }
    // Directory modes last (deepest first): a read-only directory must not stop its files.
    for pf in st.files.iter().rev() {
        if let (Target::Path(root), "directory") = (&pf.record.target, pf.action) {
            let path = Path::new(root).join(&pf.record.path);
            let mode = pf.record.mode_bits().map_err(UnpackError::Usage)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| env(&path, e))?;
        }
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
    for pf in &st.files {
        files.push(RestoredFile {
            target: pf.record.target.to_string(),
            path: pf.record.path.clone(),
            action: pf.action,
            digest: pf.record.digest,
            previous: pf.previous,
        });
    }
    st.spool = None;
    Ok((models, files))
}

/// Writes a model's manifest atomically: a temp file directly in `manifests/` (not four
/// levels deep, where `ollama list` looks), then a rename. Returns the digest it replaced.
fn write_manifest(
    dir: &Path,
    name: &ModelName,
    bytes: &[u8],
) -> Result<Option<Digest>, UnpackError> {
    let manifests = dir.join("manifests");
    let final_path = dir.join(name.manifest_path());
    let parent = final_path.parent().expect("manifest has a parent");
    create_dirs_0755(&manifests, parent)?;
    let previous = match fs::read(&final_path) {
        Ok(b) => Some(Digest::of(&b)).filter(|d| *d != Digest::of(bytes)),
        Err(_) => None,
    };
    let tmp = manifests.join(format!(".airlock-{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &final_path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        env(&final_path, e)
    })?;
    Ok(previous)
}

/// Creates `leaf` and its parents below `root` with mode 0755.
fn create_dirs_0755(root: &Path, leaf: &Path) -> Result<(), UnpackError> {
    fs::create_dir_all(leaf).map_err(|e| env(leaf, e))?;
    let mut p = leaf;
    while p.starts_with(root) {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    Ok(())
}

fn write_host_file(root: &Path, pf: &PlannedFile, st: &Staging) -> Result<(), UnpackError> {
    let f = &pf.record;
    let mode = f.mode_bits().map_err(UnpackError::Usage)?;
    let path = root.join(&f.path);
    match (pf.action, f.digest) {
        ("directory", _) => fs::create_dir_all(&path).map_err(|e| env(&path, e)),
        ("written" | "overwritten", Some(d)) => {
            let parent = path.parent().expect("file has a parent");
            fs::create_dir_all(parent).map_err(|e| env(parent, e))?;
            let tmp = parent.join(format!(
                ".{}.airlock-{}.tmp",
                path.file_name().expect("file name").to_string_lossy(),
                std::process::id()
            ));
            let r = fs::copy(st.spool_path(&d), &tmp)
                .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
                .and_then(|()| fs::rename(&tmp, &path));
            r.map_err(|e| {
                let _ = fs::remove_file(&tmp);
                env(&path, e)
            })
        }
        _ => Ok(()),
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
                TarItem::File(_, src, _) => fs::metadata(src).map(|m| m.len()).unwrap_or(0),
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
                st.spool_path(d),
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
            st.spool_path(&vm.record.manifest),
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
                st.spool_path(&d),
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
    File(String, PathBuf, u32),
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
                    TarItem::File(path, src, mode) => {
                        let f = fs::File::open(&src)?;
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

    #[test]
    fn spools_of_dead_loads_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // No process can have an id above pid_max.
        let dead = dir
            .path()
            .join(format!("{SPOOL_PREFIX}{}-abc", pid_max + 1));
        let live = dir
            .path()
            .join(format!("{SPOOL_PREFIX}{}-abc", std::process::id()));
        let other = dir.path().join("unrelated");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/blob"), b"x").unwrap();
        }
        remove_stale_spools(dir.path());
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn compare_sinks_write_only_from_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect();
        let run = |existing: &[u8]| -> Option<Vec<u8>> {
            let e = dir.path().join("existing");
            let t = dir.path().join("temp");
            let _ = fs::remove_file(&t);
            fs::write(&e, existing).unwrap();
            let spec = SinkSpec::Compare {
                existing: e,
                temp: t.clone(),
            };
            let mut s = Sink::open(&spec, data.len() as u64).unwrap();
            for c in data.chunks(100_000) {
                s.write_all(c).unwrap();
            }
            s.finish().unwrap();
            fs::read(&t).ok()
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
