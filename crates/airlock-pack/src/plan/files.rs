//! Files: each `[[files]]` source walked in a fixed order (symlinks and special files
//! refused), each `[[compose]]` stack's compose file and `.env`, their records for the
//! header, and their content checked against the lock.

use std::path::{Path, PathBuf};

use airlock_bundle::header::{ComposeRecord, FileRecord, Target};
use airlock_bundle::lock::{Drift, Lock};
use airlock_bundle::spec::Spec;
use airlock_bundle::Digest;
use airlock_progress::Progress;

use super::{BlobSource, Blobs, PlannedBlob};
use crate::cache::BlobCache;
use crate::PackError;

/// The spec's files and compose stacks, their blobs added to `blobs`; refused when they are
/// not what the lock pinned. A `.env` made for a stack (its source plus the spec's `env`)
/// is put in the blob cache, and read from there like any local file.
pub(super) fn plan(
    spec: &Spec,
    spec_path: &Path,
    lock: &Lock,
    cache: &BlobCache,
    progress: &Progress,
    blobs: &mut Blobs,
) -> Result<(Vec<FileRecord>, Vec<ComposeRecord>), PackError> {
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let mut add = |rec: FileRecord, path: PathBuf, size: u64, files: &mut Vec<FileRecord>| {
        if let Some(d) = rec.digest {
            blobs.add(PlannedBlob {
                digest: d,
                size,
                media_type: FILE_MEDIA_TYPE.into(),
                from: BlobSource::File(path),
            });
        }
        files.push(rec);
    };
    for want in spec.files_wants(spec_dir) {
        progress.say(format!("reading {}", want.source.display()));
        for (rec, path, size) in walk_files(&want.source, &want.target, &want.dest)? {
            add(rec, path, size, &mut files);
        }
    }
    let stacks = compose_files(spec, spec_dir, progress)?;
    for (rec, content) in stacks.files {
        let (path, size) = match content {
            Content::Path(p, size) => (p, size),
            Content::Bytes(b) => {
                let d = rec.digest.expect("a file");
                cache
                    .put_bytes(&d, &b)
                    .map_err(|source| PackError::CacheWrite { blob: d, source })?;
                (cache.path(&d), b.len() as u64)
            }
        };
        add(rec, path, size, &mut files);
    }
    let now = airlock_bundle::lock::files_digest(&files);
    if now != lock.files {
        let drift = Drift::Files {
            locked: lock.files,
            now,
        };
        return Err(super::drift::refused(
            "the [[files]] and [[compose]] sources",
            &[drift],
            spec_path,
        ));
    }
    Ok((files, stacks.records))
}

/// Where a carried file's bytes are: a local file (and its size), or made here.
pub(super) enum Content {
    Path(PathBuf, u64),
    Bytes(Vec<u8>),
}

/// The files the compose stacks carry and the stacks' header records.
pub(super) struct ComposeFiles {
    pub files: Vec<(FileRecord, Content)>,
    pub records: Vec<ComposeRecord>,
}

/// Each stack's compose file (under its own name) and `.env` (when there is one) in the
/// stack's directory.
pub(super) fn compose_files(
    spec: &Spec,
    spec_dir: &Path,
    progress: &Progress,
) -> Result<ComposeFiles, PackError> {
    let mut out = ComposeFiles {
        files: Vec::new(),
        records: Vec::new(),
    };
    for want in spec.compose_wants(spec_dir) {
        progress.say(format!("reading {}", want.file.display()));
        let stack = crate::compose::read(&want)?;
        let mut walked = walk_files(&stack.file, &stack.target, "")?;
        let (rec, path, size) = walked.pop().expect("one file: read refuses others");
        out.records.push(ComposeRecord {
            target: stack.target.clone(),
            path: rec.path.clone(),
            services: stack.services,
        });
        out.files.push((rec, Content::Path(path, size)));
        if let Some(env) = stack.env {
            let rec = FileRecord {
                target: stack.target.clone(),
                path: ".env".into(),
                mode: format!("{:04o}", env.mode),
                digest: Some(Digest::of(&env.bytes)),
            };
            let content = match env.verbatim {
                Some(p) => Content::Path(p, env.bytes.len() as u64),
                None => Content::Bytes(env.bytes),
            };
            out.files.push((rec, content));
        }
    }
    Ok(out)
}

/// What the lock pins for the spec's `[[files]]` and compose files now (see [`airlock_bundle::lock::files_digest`]).
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
    files.extend(
        compose_files(spec, spec_dir, progress)?
            .files
            .into_iter()
            .map(|(rec, _)| rec),
    );
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
