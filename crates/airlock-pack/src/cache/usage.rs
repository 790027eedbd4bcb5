//! What the cache holds and what a lock needs of it: the numbers behind `cache ls`, and
//! the removals of `cache prune` (run under the exclusive cache lock, see [`super::lock`]).
//!
//! What a lock needs is found offline from the lock's digests down: an image's index or
//! manifest, a model's manifest and a cosign signature manifest are cached documents, and
//! every `digest` (with its `size`) they name is needed in turn. Layers and model blobs are
//! found this way, whether `blobs/` or a store holds them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use airlock_bundle::lock::Lock;
use airlock_bundle::Digest;
use serde::Serialize;

use super::store::Stores;
use super::BlobCache;

/// Documents larger than this are not walked (no manifest is anywhere near it).
const MAX_DOCUMENT: u64 = 4 << 20;

/// One file in `blobs/` or `tmp/`.
#[derive(Debug, Clone)]
pub struct CachedFile {
    pub path: PathBuf,
    /// The blob it holds (a partial download's name starts with it).
    pub digest: Option<Digest>,
    pub size: u64,
    pub used: SystemTime,
}

/// Every file of `blobs/sha256` and `tmp/`.
pub fn files(cache: &BlobCache) -> Vec<CachedFile> {
    let mut out = Vec::new();
    for dir in ["blobs/sha256", "tmp"] {
        let Ok(rd) = std::fs::read_dir(cache.root().join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.split('.').next().unwrap_or_default();
            out.push(CachedFile {
                path: e.path(),
                digest: Digest::from_hex(hex).ok(),
                size: m.len(),
                used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out
}

/// Bytes the cache's files take (stores are the bundles' own files and not counted).
pub fn total(cache: &BlobCache) -> u64 {
    files(cache).iter().map(|f| f.size).sum()
}

/// The blobs `lock` needs, with their sizes where a document gave them.
pub fn needs(cache: &BlobCache, lock: &Lock) -> BTreeMap<Digest, Option<u64>> {
    let mut need: BTreeMap<Digest, Option<u64>> = BTreeMap::new();
    let mut todo: Vec<Digest> = Vec::new();
    for i in &lock.images {
        todo.push(i.digest);
        todo.extend(i.signatures.iter().copied());
    }
    todo.extend(lock.models.iter().map(|m| m.digest));
    for d in &todo {
        need.insert(*d, None);
    }
    // Manifests name shared children (a layer in several images): walk each document once.
    let mut walked: BTreeSet<Digest> = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !walked.insert(d) {
            continue;
        }
        if std::fs::metadata(cache.path(&d)).map_or(true, |m| m.len() > MAX_DOCUMENT) {
            continue;
        }
        // Read, not `get_bytes`: looking must not count as use for `prune --max-size`.
        let Ok(bytes) = std::fs::read(cache.path(&d)) else {
            continue;
        };
        if Digest::of(&bytes) != d {
            continue;
        }
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let mut found = Vec::new();
        descriptors(&doc, &mut found);
        for (child, size) in found {
            let slot = need.entry(child).or_insert(None);
            if slot.is_none() {
                *slot = size;
            }
            todo.push(child);
        }
    }
    need
}

/// Every `{"digest": "sha256:…", "size": N}` in a JSON document.
fn descriptors(v: &serde_json::Value, out: &mut Vec<(Digest, Option<u64>)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(d) = m
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(|s| s.parse::<Digest>().ok())
            {
                out.push((d, m.get("size").and_then(|s| s.as_u64())));
            }
            for x in m.values() {
                descriptors(x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                descriptors(x, out);
            }
        }
        _ => {}
    }
}

/// `--max-size`: a plain byte count (0 empties the cache) or a size as `--split` takes
/// them (`20G`, `500MiB`).
pub fn parse_max_size(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => airlock_bundle::parts::parse_size(s),
    }
}

/// What the cache holds of one lock.
#[derive(Debug, Serialize)]
pub struct Coverage {
    pub lock: PathBuf,
    pub blobs: usize,
    /// Held in `blobs/`.
    pub cached: usize,
    /// Held by a bundle's store (and not in `blobs/`).
    pub in_stores: usize,
    pub missing: usize,
    /// Bytes of the blobs still to fetch, where known.
    pub missing_bytes: u64,
}

pub fn coverage(cache: &BlobCache, stores: &Stores, lock_path: PathBuf, lock: &Lock) -> Coverage {
    let mut c = Coverage {
        lock: lock_path,
        blobs: 0,
        cached: 0,
        in_stores: 0,
        missing: 0,
        missing_bytes: 0,
    };
    for (d, size) in needs(cache, lock) {
        c.blobs += 1;
        let in_cache = std::fs::metadata(cache.path(&d))
            .is_ok_and(|m| m.is_file() && size.is_none_or(|s| s == m.len()));
        if in_cache {
            c.cached += 1;
        } else if stores.store_of(&d).is_some() {
            c.in_stores += 1;
        } else {
            c.missing += 1;
            c.missing_bytes += size.unwrap_or(0);
        }
    }
    c
}

/// What a prune removed.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
    pub stores: usize,
    pub kept_bytes: u64,
}

/// Removes what `keep` (the union of some locks' needs; `None`: everything is kept) does
/// not need, then the least recently used files until at most `max_size` bytes remain.
/// Stores that serve nothing kept are forgotten (the bundles themselves stay).
pub fn prune(
    cache: &BlobCache,
    stores: &Stores,
    keep: Option<&BTreeSet<Digest>>,
    max_size: Option<u64>,
) -> Pruned {
    let mut out = Pruned::default();
    let mut remaining = Vec::new();
    for f in files(cache) {
        let needed = match (keep, f.digest) {
            (None, _) => true,
            (Some(k), Some(d)) => k.contains(&d),
            (Some(_), None) => false,
        };
        if needed {
            remaining.push(f);
        } else if std::fs::remove_file(&f.path).is_ok() {
            out.files += 1;
            out.bytes += f.size;
        }
    }
    if let Some(max) = max_size {
        remaining.sort_by_key(|f| f.used);
        let mut total: u64 = remaining.iter().map(|f| f.size).sum();
        remaining.retain(|f| {
            if total <= max {
                return true;
            }
            if std::fs::remove_file(&f.path).is_ok() {
                out.files += 1;
                out.bytes += f.size;
                total -= f.size;
                // A ranged download's journal goes with its partial file.
                let _ = std::fs::remove_file(f.path.with_extension("parts"));
            }
            false
        });
    }
    out.kept_bytes = remaining.iter().map(|f| f.size).sum();
    if let Some(k) = keep {
        for s in &stores.stores {
            if !s.blobs().any(|b| k.contains(&b.digest)) {
                super::store::drop_record(s);
                out.stores += 1;
            }
        }
    }
    // No build runs (prune holds the cache exclusively): the per-blob lock files can go.
    if let Ok(rd) = std::fs::read_dir(cache.root().join("locks")) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    out
}
