//! Restore's own host writing, on the held directories of [`crate::hostfs`]: temp files
//! created when the stream reaches their blob ([`TempSpec`]), the private spool for content
//! bound for volumes and files ([`Spool`]), a held models directory ([`Store`]), manifests
//! and files written to temps beside their destinations and renamed into place ([`Staged`]),
//! the sweeping of what killed loads left behind, and how a host failure maps to an exit
//! code. `hostfs` stays the generic layer; what is here only makes sense for a restore.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use airlock_bundle::hashing::digest_reader;
use airlock_bundle::header::FileRecord;
use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;

use crate::hostfs::{self, Created, Dir, FileId, FsError, Kind};
use crate::volume::Existing;
use crate::{Destined, UnpackError};

/// Names of spool directories under the work dir: `PREFIX` + pid + random.
pub(super) const SPOOL_PREFIX: &str = ".airlock-spool-";
/// Between a blob's final name and the pid in the name of its temp file.
pub(super) const PARTIAL_MARK: &str = "-partial-airlock-";

pub(super) fn env(p: &Path, e: io::Error) -> UnpackError {
    UnpackError::io(p, e)
}

/// A host write refused (a symlink or a swapped file in the way: exit 10) or failed (7).
pub(super) fn fs_err(e: FsError) -> UnpackError {
    e.into()
}

pub(super) fn fs_io(e: FsError) -> io::Error {
    e.into()
}

/// A private directory under the work dir for content bound for volumes and files: 0700,
/// its files 0600, removed with the staging (and by the next load if this one is killed).
#[derive(Debug)]
pub(super) struct Spool {
    work: Dir,
    name: String,
    pub(super) dir: Arc<Dir>,
}

impl Spool {
    /// Makes this load's spool under `work_dir` (created if missing), first removing the
    /// spools of loads that were killed.
    pub(super) fn create(work_dir: &Path) -> Result<Spool, UnpackError> {
        let abs = std::path::absolute(work_dir).map_err(|e| env(work_dir, e))?;
        let mut made = Vec::new();
        let work = Dir::open_trusted(&abs, Some(&mut made)).map_err(fs_err)?;
        hostfs::sweep_dead(&work, SPOOL_PREFIX);
        let (name, dir) = work
            .create_private_dir(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
            .map_err(fs_err)?;
        Ok(Spool {
            work,
            name,
            dir: Arc::new(dir),
        })
    }
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
pub(crate) struct TempSpec {
    pub(super) dir: Arc<Dir>,
    pub(super) name: String,
    created: Arc<OnceLock<FileId>>,
}

impl TempSpec {
    pub(super) fn named(dir: &Arc<Dir>, name: String) -> TempSpec {
        TempSpec {
            dir: dir.clone(),
            name,
            created: Arc::default(),
        }
    }

    pub(super) fn create(&self) -> io::Result<fs::File> {
        let f = self.dir.create_new(&self.name).map_err(fs_io)?;
        let _ = self.created.set(FileId::of_file(&f)?);
        Ok(f)
    }

    /// The file, if it was created.
    pub(super) fn made(&self) -> Option<FileId> {
        self.created.get().copied()
    }

    pub(super) fn remove(&self) {
        if self.made().is_some() {
            let _ = self.dir.remove_file(&self.name);
        }
    }

    /// Reopens what we created (checked to be the same file) for reading or `fchmod`.
    pub(super) fn reopen(&self) -> Result<fs::File, UnpackError> {
        let f = self.dir.open_read(&self.name).map_err(|e| match e {
            FsError::Refused { why, .. } => UnpackError::Replaced {
                path: self.path(),
                why: Some(why),
            },
            e => fs_err(e),
        })?;
        if Some(FileId::of_file(&f).map_err(|e| env(&self.path(), e))?) != self.made() {
            return Err(UnpackError::Replaced {
                path: self.path(),
                why: None,
            });
        }
        Ok(f)
    }

    pub(super) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(&self.name)
    }
}

/// A host Ollama models directory, held.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) root: Arc<Dir>,
    pub(super) blobs: Arc<Dir>,
    /// Per blob, the temp to rename into `blobs/` at commit.
    pub(super) pending: BTreeMap<Digest, TempSpec>,
}

impl Store {
    /// Holds the models directory `root`, making its `blobs/` when missing (like
    /// `ollama serve` does) and sweeping the temps of killed loads out of it.
    pub(super) fn open(root: Arc<Dir>, created: &mut Vec<Created>) -> Result<Store, UnpackError> {
        let (blobs, new) = root.create_dir("blobs", 0o755).map_err(fs_err)?;
        if new {
            let parent = root.try_clone().map_err(fs_err)?;
            created.push(Created::new(parent, "blobs"));
        }
        sweep_partials(&blobs);
        Ok(Store {
            root,
            blobs: Arc::new(blobs),
            pending: BTreeMap::new(),
        })
    }
}

/// Removes the temp blobs of loads that were killed (`sha256-HEX-partial-airlock-PID-…`
/// whose process is gone): each is as large as a model layer. Ollama's own `-partial`
/// downloads are left alone.
pub(super) fn sweep_partials(blobs: &Dir) {
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

/// Hashes a host file below a held target root, if there is one; nothing on the way is
/// followed if it is a symlink.
pub(super) fn host_existing(root: Option<&Dir>, rel: &str) -> Result<Existing, UnpackError> {
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

/// A blob file a delta bundle relies on: there, the right size, the right content.
pub(super) fn host_blob_intact(blobs: &Dir, name: &str, d: Digest, size: u64) -> bool {
    match blobs.open_read(name) {
        Ok(f) if f.metadata().is_ok_and(|m| m.len() == size) => {
            digest_reader(f).is_ok_and(|(got, _)| got == d)
        }
        _ => false,
    }
}

pub(super) fn read_all(mut f: fs::File, d: &Digest) -> Result<Vec<u8>, UnpackError> {
    let mut b = Vec::new();
    f.read_to_end(&mut b)
        .map_err(|e| env(Path::new(&d.blob_path()), e))?;
    Ok(b)
}

/// A file written in full to its temp, waiting to be renamed into place.
#[derive(Debug)]
pub(super) struct Staged {
    temp: TempSpec,
    dest: Arc<Dir>,
    to: String,
    /// `false`: the destination must not exist (a file that appeared meanwhile is kept).
    replace: bool,
}

impl Staged {
    pub(super) fn place(&self) -> Result<(), UnpackError> {
        let id = self.temp.made().ok_or_else(|| UnpackError::NeverWritten {
            path: self.temp.path(),
        })?;
        self.temp
            .dir
            .place(&self.temp.name, id, &self.dest, &self.to, self.replace)
            .map_err(|e| match e {
                FsError::Io { path, source } if source.kind() == io::ErrorKind::AlreadyExists => {
                    UnpackError::Appeared { path }
                }
                e => fs_err(e),
            })
    }
}

/// Writes a model's manifest to a temp file directly in `manifests/` (not four levels
/// deep, where `ollama list` looks), to be renamed into place. Returns the digest it will
/// replace.
pub(super) fn stage_manifest(
    store: &Store,
    name: &ModelName,
    bytes: &[u8],
    created: &mut Vec<Created>,
    temps: &mut Vec<TempSpec>,
) -> Result<(Staged, Option<Digest>), UnpackError> {
    let mpath = name.manifest_path();
    let rel = mpath.to_string_lossy();
    // Always `manifests/HOST/NAMESPACE/MODEL/TAG`.
    let (parent, tag) = rel.rsplit_once('/').unwrap_or(("", rel.as_ref()));
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
            return Err(UnpackError::NotAFile {
                path: leaf.path().join(tag),
                meant: Destined::Manifest(name.clone()),
            })
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

/// Makes a file's directories and copies the file `src` (from the spool) to a temp beside
/// it with its mode (set on the descriptor), to be renamed into place; `replace` when it
/// overwrites an existing file.
pub(super) fn stage_host_file(
    root: &Dir,
    f: &FileRecord,
    mut src: fs::File,
    replace: bool,
    created: &mut Vec<Created>,
    temps: &mut Vec<TempSpec>,
) -> Result<Staged, UnpackError> {
    let mode = f.mode_bits().map_err(UnpackError::Usage)?;
    let (parent, leaf) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
    let dir = Arc::new(root.create_path(parent, 0o755, created).map_err(fs_err)?);
    let temp = TempSpec::named(
        &dir,
        format!(".{leaf}.airlock-{}.tmp", hostfs::random_token()),
    );
    let mut out = temp.create().map_err(|e| env(&temp.path(), e))?;
    temps.push(temp.clone());
    io::copy(&mut src, &mut out)
        .and_then(|_| hostfs::set_mode(&out, mode))
        .map_err(|e| env(&temp.path(), e))?;
    Ok(Staged {
        temp,
        dest: dir,
        to: leaf.to_string(),
        replace,
    })
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
}
