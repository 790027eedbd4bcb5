//! Store records: a finished bundle serves as the cache of the layers it carries.
//!
//! A cold build streams each downloaded layer straight into the bundle and never writes it
//! to `blobs/`. When the bundle is complete it records, in `stores/<random>.json` (0600, in
//! the 0700 cache), the bundle's files with their identity (device, inode, size, mtime),
//! where each blob's bytes lie in the bundle's plaintext, and for an encrypted bundle the age
//! file key. A later build reads a blob from there while the files are unchanged: random
//! access across the parts, and for an encrypted bundle into the age STREAM (each 64 KiB
//! chunk decrypts and authenticates on its own, see `airlock_bundle::agestream::PayloadKey`).
//! What it reads is hashed by the bundle writer like any source; a mismatch drops the record
//! and the blob is fetched again. A record whose files are gone or changed is dropped when
//! the stores are loaded.
//!
//! The file key in a record is no weaker than before: the cache used to hold every layer in
//! plaintext, readable by the same user.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_bundle::agestream::{PayloadKey, PAYLOAD_NONCE, PLAIN_CHUNK, SEALED_CHUNK};
use airlock_bundle::crypt::OwnKey;
use airlock_bundle::Digest;

pub use super::record::BlobAt;
use super::record::{
    new_record_file, read_record, record_bytes, KeyRecord, PartId, Record, RECORD_VERSION,
};
use super::BlobCache;

/// One loaded record whose files still match.
#[derive(Debug)]
pub struct Store {
    /// The record file.
    pub path: PathBuf,
    record: Record,
}

impl Store {
    /// The bundle's first file (what a message names).
    pub fn bundle(&self) -> &Path {
        self.record
            .parts
            .first()
            .map_or(Path::new("?"), |p| p.path.as_path())
    }

    pub fn blobs(&self) -> impl Iterator<Item = &BlobAt> {
        self.record.blobs.iter()
    }

    /// Bytes of blobs the bundle serves.
    pub fn blob_bytes(&self) -> u64 {
        self.record.blobs.iter().map(|b| b.size).sum()
    }

    pub fn encrypted(&self) -> bool {
        self.record.key.is_some()
    }

    /// The bundle's files, opened now (so a rebuild that replaces them keeps reading the
    /// ones recorded).
    fn open_parts(&self) -> io::Result<Parts> {
        let mut files = Vec::new();
        let mut at = 0;
        for p in &self.record.parts {
            let f = File::options()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&p.path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.path.display())))?;
            files.push((f, at, p.size));
            at += p.size;
        }
        Ok(Parts { files, total: at })
    }
}

/// Every usable store of a cache, indexed by blob.
#[derive(Debug, Default)]
pub struct Stores {
    pub stores: Vec<Arc<Store>>,
    index: HashMap<Digest, (usize, BlobAt)>,
    /// Killed builds' temp files this build took over (locked while it runs).
    claimed: Vec<super::resume::Claimed>,
}

impl Stores {
    /// Loads the records of `cache`, dropping those whose files vanished or changed (and
    /// any that do not parse). Returns the records dropped, by bundle name. With `claim`
    /// (a build), the temp files of killed builds are taken over too ([`super::resume`]).
    pub fn load(cache: &BlobCache, claim: bool) -> (Stores, Vec<PathBuf>) {
        let mut stores = Stores::default();
        let mut dropped = Vec::new();
        let Ok(dir) = std::fs::read_dir(cache.root().join("stores")) else {
            return (stores, dropped);
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        // Newest records first: their bundles are the likeliest to be intact.
        paths.sort_by_key(|p| {
            std::cmp::Reverse(std::fs::metadata(p).and_then(|m| m.modified()).ok())
        });
        for path in paths {
            let record = match read_record(&path) {
                Some(r) if r.partial || r.resumed => match super::resume::consider(&path, claim) {
                    super::resume::Consider::Use(r, c) => {
                        stores.claimed.push(c);
                        r
                    }
                    super::resume::Consider::Skip => continue,
                    super::resume::Consider::Drop(r) => {
                        dropped.extend(r.parts.first().map(|p| p.path.clone()));
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                },
                Some(r) if r.parts.iter().all(PartId::still_there) => r,
                other => {
                    if let Some(r) = other {
                        dropped.extend(r.parts.first().map(|p| p.path.clone()));
                    }
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let i = stores.stores.len();
            for b in &record.blobs {
                stores.index.entry(b.digest).or_insert((i, *b));
            }
            stores.stores.push(Arc::new(Store { path, record }));
        }
        (stores, dropped)
    }

    /// After a build that completed: the killed builds' files it took over are not needed
    /// any more (its own bundle holds what they held).
    pub fn finish_claimed(&mut self) {
        for c in self.claimed.drain(..) {
            c.remove();
        }
    }

    /// Whether a store serves `d` with this size.
    pub fn has(&self, d: &Digest, size: u64) -> bool {
        self.index.get(d).is_some_and(|(_, b)| b.size == size)
    }

    /// The store that serves `d`.
    pub fn store_of(&self, d: &Digest) -> Option<&Arc<Store>> {
        self.index.get(d).map(|(i, _)| &self.stores[*i])
    }

    /// A reader of `d`'s bytes in its store (unverified: the bundle writer hashes them).
    pub fn open(&self, d: &Digest) -> io::Result<Option<StoreReader>> {
        let Some((i, at)) = self.index.get(d) else {
            return Ok(None);
        };
        let store = &self.stores[*i];
        let parts = store.open_parts()?;
        let key = match &store.record.key {
            None => None,
            Some(k) => {
                let mut nonce = [0u8; 16];
                parts.read_exact_at(&mut nonce, k.payload_start)?;
                let file_key = decode_key(&k.file_key).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "malformed key in store record")
                })?;
                Some((
                    PayloadKey::new(&file_key, &nonce),
                    k.payload_start + PAYLOAD_NONCE,
                ))
            }
        };
        Ok(Some(StoreReader {
            parts,
            key,
            pos: at.offset,
            end: at.offset + at.size,
            chunk: Vec::new(),
            chunk_index: u64::MAX,
        }))
    }
}

fn decode_key(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Drops a record that served bytes other than it promised (and a killed build's file
/// with it: nothing else knows it).
pub fn drop_record(store: &Store) {
    let _ = std::fs::remove_file(&store.path);
    if store.record.resumed {
        for p in &store.record.parts {
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

/// Writes the record of a finished bundle: `parts` are its files (whole, or `.001`, …, in
/// order), `blobs` where each blob's bytes lie in its plaintext.
pub fn record(
    cache: &BlobCache,
    parts: &[PathBuf],
    key: Option<&OwnKey>,
    blobs: Vec<BlobAt>,
) -> io::Result<PathBuf> {
    let record = Record {
        version: RECORD_VERSION,
        parts: parts
            .iter()
            .map(|p| PartId::of(p))
            .collect::<io::Result<_>>()?,
        key: key.map(KeyRecord::of),
        blobs,
        partial: false,
        resumed: false,
    };
    let (mut f, tmp, path) = new_record_file(cache)?;
    f.write_all(&record_bytes(&record)?)?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The files of a bundle read as one stream of bytes.
#[derive(Debug)]
struct Parts {
    /// Each file, where it starts in the stream, and its length.
    files: Vec<(File, u64, u64)>,
    total: u64,
}

impl Parts {
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let Some((f, start, len)) =
                self.files.iter().find(|(_, s, l)| *s <= pos && pos < s + l)
            else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the bundle is shorter than its record",
                ));
            };
            let n = ((start + len - pos) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], pos - start)?;
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }
}

/// One blob's bytes read back from a bundle, decrypted chunk by chunk if need be.
pub struct StoreReader {
    parts: Parts,
    /// The payload key and where the first sealed chunk starts, for an encrypted bundle.
    key: Option<(PayloadKey, u64)>,
    /// Plaintext positions.
    pos: u64,
    end: u64,
    chunk: Vec<u8>,
    chunk_index: u64,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreReader({}..{})", self.pos, self.end)
    }
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let Some((key, sealed_start)) = &self.key else {
            self.parts.read_exact_at(&mut buf[..want], self.pos)?;
            self.pos += want as u64;
            return Ok(want);
        };
        let index = self.pos / PLAIN_CHUNK;
        if index != self.chunk_index {
            let at = sealed_start + index * SEALED_CHUNK;
            let len = SEALED_CHUNK.min(self.parts.total.saturating_sub(at)) as usize;
            self.chunk.resize(len, 0);
            self.parts.read_exact_at(&mut self.chunk, at)?;
            // A short chunk must be the last; a full one almost never is. A wrong guess
            // scrambles the buffer: read it again for the other.
            let guess = (len as u64) < SEALED_CHUNK;
            let n = match key.open_chunk_as(index, &mut self.chunk, guess) {
                Some(n) => n,
                None => {
                    self.parts.read_exact_at(&mut self.chunk, at)?;
                    key.open_chunk_as(index, &mut self.chunk, !guess).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("age payload chunk {index} does not authenticate (corrupt or truncated)"),
                        )
                    })?
                }
            };
            self.chunk.truncate(n);
            self.chunk_index = index;
        }
        let from = (self.pos - index * PLAIN_CHUNK) as usize;
        let n = want.min(self.chunk.len().saturating_sub(from));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the bundle's payload ends before the blob",
            ));
        }
        buf[..n].copy_from_slice(&self.chunk[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_across_parts_and_is_dropped_when_a_part_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().join("cache")).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let (a, b) = (dir.path().join("b.001"), dir.path().join("b.002"));
        std::fs::write(&a, &data[..6000]).unwrap();
        std::fs::write(&b, &data[6000..]).unwrap();
        let blob = &data[5000..7000];
        let d = Digest::of(blob);
        record(
            &cache,
            &[a.clone(), b.clone()],
            None,
            vec![BlobAt {
                digest: d,
                offset: 5000,
                size: 2000,
            }],
        )
        .unwrap();
        let (stores, dropped) = Stores::load(&cache, true);
        assert!(dropped.is_empty());
        assert!(stores.has(&d, 2000) && !stores.has(&d, 2001));
        let mut got = Vec::new();
        stores
            .open(&d)
            .unwrap()
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, blob);
        // Another file under the same name: the record goes.
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&b, &data[6000..9000]).unwrap();
        let (stores, dropped) = Stores::load(&cache, true);
        assert!(!stores.has(&d, 2000));
        assert_eq!(dropped, vec![a]);
        assert_eq!(
            std::fs::read_dir(cache.root().join("stores"))
                .unwrap()
                .count(),
            0
        );
    }
}
