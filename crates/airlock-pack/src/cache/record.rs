//! The record files under `stores/`: their format (a bundle's files and identity, its key,
//! where its blobs lie) and how they are written. [`super::store`] reads bundles through
//! them, [`super::resume`] keeps one for a build in progress.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use airlock_bundle::crypt::OwnKey;
use airlock_bundle::Digest;
use serde::{Deserialize, Serialize};

use super::BlobCache;

pub(super) const RECORD_VERSION: u32 = 1;
/// A record is a few hundred bytes per blob; anything larger is not ours.
const MAX_RECORD: u64 = 64 << 20;

/// One file of a bundle, as it was when the record was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PartId {
    pub(super) path: PathBuf,
    dev: u64,
    ino: u64,
    pub(super) size: u64,
    mtime_ns: i128,
}

impl PartId {
    /// A file still being written (its identity is taken when it is claimed).
    pub(super) fn growing(path: &Path) -> PartId {
        PartId {
            path: path.to_path_buf(),
            dev: 0,
            ino: 0,
            size: 0,
            mtime_ns: 0,
        }
    }

    pub(super) fn of(path: &Path) -> io::Result<PartId> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(PartId {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    pub(super) fn still_there(&self) -> bool {
        PartId::of(&self.path).is_ok_and(|now| now == *self)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    /// Hex of the 16-byte age file key.
    pub(super) file_key: String,
    pub(super) payload_start: u64,
}

impl KeyRecord {
    pub(super) fn of(k: &OwnKey) -> KeyRecord {
        KeyRecord {
            file_key: k.file_key.iter().map(|b| format!("{b:02x}")).collect(),
            payload_start: k.payload_start,
        }
    }
}

/// Where one blob's bytes lie in the bundle's plaintext.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BlobAt {
    pub digest: Digest,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Record {
    pub(super) version: u32,
    pub(super) parts: Vec<PartId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<KeyRecord>,
    pub(super) blobs: Vec<BlobAt>,
    /// A build still writing its temp file (or killed while it did): see [`super::resume`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) partial: bool,
    /// The temp file of a killed build, kept under another name for the next build.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) resumed: bool,
}

pub(super) fn read_record(path: &Path) -> Option<Record> {
    let f = File::open(path).ok()?;
    let mut text = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut text).ok()?;
    let r: Record = serde_json::from_slice(&text).ok()?;
    (r.version == RECORD_VERSION && !r.parts.is_empty()).then_some(r)
}

/// The JSON of a record (wiped when dropped: it may hold a file key).
pub(super) fn record_bytes(record: &Record) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    Ok(zeroize::Zeroizing::new(
        serde_json::to_vec(record).map_err(io::Error::other)?,
    ))
}

/// A new record file (0600, created new) under a temp name, and the name it gets.
pub(super) fn new_record_file(cache: &BlobCache) -> io::Result<(File, PathBuf, PathBuf)> {
    let dir = cache.root().join("stores");
    let mut rnd = [0u8; 12];
    rustix::rand::getrandom(&mut rnd[..], rustix::rand::GetRandomFlags::empty())?;
    let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    let f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    Ok((f, tmp, path))
}
