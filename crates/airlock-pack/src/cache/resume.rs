//! Resuming a killed build from the bundle it was writing.
//!
//! While a build writes a bundle (whole, not `--split`), a record marked `partial` names its
//! temp file and lists each blob once the writer has taken all of its bytes. The build holds
//! an `flock` on the record for as long as it runs; its end (success or failure) removes the
//! record. A build killed mid-way leaves the temp file and the record, unlocked. The next
//! build takes it over: it renames the temp file out of the way (the new build writes the
//! same temp name), keeps only the blobs whose bytes reached the file (for an encrypted
//! bundle, every STREAM chunk they touch sealed and written), and reads them from there like
//! any store, hashed by the writer. When that build completes, the file and record go.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use airlock_bundle::agestream::{PAYLOAD_NONCE, PLAIN_CHUNK, SEALED_CHUNK};
use airlock_bundle::crypt::OwnKey;
use rustix::fs::{flock, FlockOperation};

use super::record::{
    new_record_file, read_record, record_bytes, BlobAt, KeyRecord, PartId, Record, RECORD_VERSION,
};
use super::BlobCache;

/// Rewrites the record in place: the flock is on this file, a rename would move past it.
fn rewrite(f: &File, record: &Record) -> io::Result<()> {
    let bytes = record_bytes(record)?;
    f.set_len(0)?;
    f.write_all_at(&bytes, 0)
}

/// The record of a bundle being written, locked while this build runs.
#[derive(Debug)]
pub struct Resume {
    path: PathBuf,
    file: File,
    record: Record,
    written: usize,
}

impl Resume {
    /// Starts the record of `temp`, the bundle's temp file.
    pub fn begin(cache: &BlobCache, temp: &Path, key: Option<&OwnKey>) -> io::Result<Resume> {
        let (file, tmp, path) = new_record_file(cache)?;
        flock(&file, FlockOperation::NonBlockingLockExclusive)?;
        let record = Record {
            version: RECORD_VERSION,
            parts: vec![PartId::growing(temp)],
            key: key.map(KeyRecord::of),
            blobs: Vec::new(),
            partial: true,
            resumed: false,
        };
        rewrite(&file, &record)?;
        std::fs::rename(&tmp, &path)?;
        Ok(Resume {
            path,
            file,
            record,
            written: 0,
        })
    }

    /// `blobs` have all their bytes in the writer (not necessarily on disk yet: the next
    /// build checks the file's length).
    pub fn update(&mut self, blobs: &[BlobAt]) {
        if blobs.len() == self.written {
            return;
        }
        self.record.blobs = blobs.to_vec();
        self.written = blobs.len();
        // Best effort: a record that lags behind only resumes less.
        let _ = rewrite(&self.file, &self.record);
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        // Completed (the bundle gets its own record) or failed (its temp file is removed).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A killed build's file this build took over.
#[derive(Debug)]
pub struct Claimed {
    record: PathBuf,
    file: PathBuf,
    _lock: File,
}

impl Claimed {
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.record);
    }
}

pub(super) enum Consider {
    Use(Record, Claimed),
    /// Its build still runs, or this is no build (`cache ls`).
    Skip,
    Drop(Record),
}

/// File bytes a blob ending at plaintext `end` needs written.
fn needed(key: Option<&KeyRecord>, end: u64) -> u64 {
    match key {
        None => end,
        Some(k) => k.payload_start + PAYLOAD_NONCE + end.div_ceil(PLAIN_CHUNK) * SEALED_CHUNK,
    }
}

/// What to do with the `partial` or `resumed` record at `path`.
pub(super) fn consider(path: &Path, claim: bool) -> Consider {
    if !claim {
        return Consider::Skip;
    }
    let Ok(lock) = File::options().read(true).write(true).open(path) else {
        return Consider::Skip;
    };
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Consider::Skip;
    }
    // Read under the lock: the build may have ended since the caller looked.
    let Some(mut record) = read_record(path) else {
        return Consider::Skip;
    };
    let Some(part) = record.parts.first().cloned() else {
        return Consider::Drop(record);
    };
    if record.partial {
        if !part.path.is_file() {
            return Consider::Drop(record);
        }
        let name = part
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let moved = part.path.with_file_name(format!("{name}.resume-{stem}"));
        if std::fs::rename(&part.path, &moved).is_err() {
            return Consider::Drop(record);
        }
        let Ok(id) = PartId::of(&moved) else {
            return Consider::Drop(record);
        };
        record.parts = vec![id];
        record.partial = false;
        record.resumed = true;
    } else if !part.still_there() {
        // Ours alone (a `.resume-` name): it goes with its record.
        let _ = std::fs::remove_file(&part.path);
        return Consider::Drop(record);
    }
    let len = record.parts[0].size;
    let key = record.key.clone();
    record
        .blobs
        .retain(|b| needed(key.as_ref(), b.offset + b.size) <= len);
    if rewrite(&lock, &record).is_err() {
        return Consider::Drop(record);
    }
    let file = record.parts[0].path.clone();
    Consider::Use(
        record,
        Claimed {
            record: path.to_path_buf(),
            file,
            _lock: lock,
        },
    )
}
