//! Files: each `[[files]]` source walked in a fixed order (symlinks and special files
//! refused), its records for the header, and its content checked against the lock.

use std::path::{Path, PathBuf};

use airlock_bundle::header::{FileRecord, Target};
use airlock_bundle::lock::{Drift, Lock};
use airlock_bundle::spec::Spec;
use airlock_bundle::Digest;
use airlock_progress::Progress;

use super::{BlobSource, Blobs, PlannedBlob};
use crate::PackError;

/// The spec's files, their blobs added to `blobs`; refused when they are not what the lock
/// pinned.
pub(super) fn plan(
    spec: &Spec,
    spec_path: &Path,
    lock: &Lock,
    progress: &Progress,
    blobs: &mut Blobs,
) -> Result<Vec<FileRecord>, PackError> {
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for want in spec.files_wants(spec_dir) {
        progress.say(format!("reading {}", want.source.display()));
        for (rec, path, size) in walk_files(&want.source, &want.target, &want.dest)? {
            if let Some(d) = rec.digest {
                blobs.add(PlannedBlob {
                    digest: d,
                    size,
                    media_type: FILE_MEDIA_TYPE.into(),
                    from: BlobSource::File(path),
                });
            }
            files.push(rec);
        }
    }
    let now = airlock_bundle::lock::files_digest(&files);
    if now != lock.files {
        let drift = Drift::Files {
            locked: lock.files,
            now,
        };
        return Err(super::drift::refused(
            "the [[files]] sources",
            &[drift],
            spec_path,
        ));
    }
    Ok(files)
}

/// What the lock pins for the spec's `[[files]]` now (see [`airlock_bundle::lock::files_digest`]).
pub fn files_now(
    spec: &Spec,
    spec_path: &Path,
    progress: &Progress,
) -> Result<Option<Digest>, PackError> {
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for want in spec.files_wants(spec_dir) {
        progress.say(format!("reading {}", want.source.display()));
        for (rec, _, _) in walk_files(&want.source, &want.target, &want.dest)? {
            files.push(rec);
        }
    }
    Ok(airlock_bundle::lock::files_digest(&files))
}

/// Media type of a `[[files]]` blob in the header's entries.
pub const FILE_MEDIA_TYPE: &str = "application/octet-stream";

/// The files and directories of one `[[files]]` source, in a fixed (sorted) order: a single
/// file lands in the target under its own name, a directory's contents land in the target.
/// Symlinks and special files are refused, not followed: a link could point anywhere on
/// the gap host, and following it here would carry content the spec does not name.
pub(super) fn walk_files(
    source: &Path,
    target: &Target,
    dest: &str,
) -> Result<Vec<(FileRecord, PathBuf, u64)>, PackError> {
    use std::os::unix::fs::PermissionsExt as _;
    let input = |p: &Path, source: std::io::Error| PackError::Input {
        path: p.to_path_buf(),
        source,
    };
    let join = |rel: &str| -> String {
        match (dest.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => dest.to_string(),
            (false, false) => format!("{dest}/{rel}"),
        }
    };
    let mut out = Vec::new();
    let mut stack = vec![(source.to_path_buf(), String::new())];
    let top = std::fs::symlink_metadata(source).map_err(|e| input(source, e))?;
    if top.is_file() {
        let name =
            source
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| PackError::NotUtf8 {
                    path: source.to_path_buf(),
                })?;
        stack = vec![(source.to_path_buf(), name.to_string())];
    } else if !dest.is_empty() && top.is_dir() {
        out.push((
            FileRecord {
                target: target.clone(),
                path: dest.to_string(),
                mode: format!("{:04o}", top.permissions().mode() & 0o777),
                digest: None,
            },
            source.to_path_buf(),
            0,
        ));
    }
    while let Some((path, rel)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| input(&path, e))?;
        let mode = format!("{:04o}", meta.permissions().mode() & 0o777);
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(PackError::Symlink { path });
        }
        if ft.is_file() {
            let (d, size) = airlock_bundle::hashing::digest_reader(
                std::fs::File::open(&path).map_err(|e| input(&path, e))?,
            )
            .map_err(|e| input(&path, e))?;
            let rec_path = join(&rel);
            airlock_bundle::header::check_relative(&rec_path).map_err(|why| {
                PackError::BadBundlePath {
                    path: path.clone(),
                    why,
                }
            })?;
            out.push((
                FileRecord {
                    target: target.clone(),
                    path: rec_path,
                    mode,
                    digest: Some(d),
                },
                path,
                size,
            ));
        } else if ft.is_dir() {
            if !rel.is_empty() {
                out.push((
                    FileRecord {
                        target: target.clone(),
                        path: join(&rel),
                        mode,
                        digest: None,
                    },
                    path.clone(),
                    0,
                ));
            }
            let mut children = Vec::new();
            for e in std::fs::read_dir(&path).map_err(|e| input(&path, e))? {
                let e = e.map_err(|e| input(&path, e))?;
                let name = e
                    .file_name()
                    .into_string()
                    .map_err(|name| PackError::NotUtf8Entry {
                        dir: path.clone(),
                        name,
                    })?;
                children.push(name);
            }
            // Reverse-sorted onto the stack: popped in sorted order.
            children.sort();
            for c in children.into_iter().rev() {
                let child_rel = if rel.is_empty() {
                    c.clone()
                } else {
                    format!("{rel}/{c}")
                };
                stack.push((path.join(&c), child_rel));
            }
        } else {
            return Err(PackError::NotRegular { path });
        }
    }
    Ok(out)
}
