//! The writing side of a build: the bundle through the age layer into its parts, every
//! entry read from where it is (a streaming download, the cache, a store, a local file) and
//! hashed on the way (`write_bundle`). It also notes where each blob's bytes lie in the
//! plaintext, for the store record that lets the next build read them back.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use airlock_bundle::crypt::{encrypting_writer_keyed, Encryption, OwnKey};
use airlock_bundle::header::{Entry, Header};
use airlock_bundle::parts::{remove_stale, write_sums, Part, PartWriter};
use airlock_bundle::readahead::WriteBehind;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::writer::write_bundle;
use airlock_bundle::{BundleError, Digest};

use super::fetch::{BlobFrom, Ready};
use crate::cache::resume::Resume;
use crate::cache::store::{drop_record, BlobAt, Store, Stores};
use crate::cache::BlobCache;
use crate::ollama::Follow;
use crate::pipe::PipeReader;
use crate::plan::{BlobSource, Plan};
use crate::PackError;

struct Counting<'a, W> {
    inner: W,
    on: &'a dyn Fn(u64),
    /// Plaintext bytes written so far: where the next entry's bytes start.
    count: &'a Cell<u64>,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        (self.on)(n as u64);
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where and how the bundle is written.
pub(super) struct Output<'a> {
    pub path: &'a Path,
    pub split: Option<u64>,
    pub key: &'a SigningKey,
    pub encryption: &'a Encryption,
}

/// Where the writer finds each entry's bytes.
pub(super) struct Sources<'a> {
    pub plan: &'a Plan,
    pub cache: &'a BlobCache,
    pub ready: &'a Ready,
    pub stores: &'a Stores,
    /// The reading ends of the streaming downloads, taken as their entries come up.
    pub pipes: Mutex<HashMap<Digest, PipeReader>>,
}

/// What [`write_file`] left on disk.
pub(super) struct Written {
    pub parts: Vec<Part>,
    /// The parts' paths, in order.
    pub paths: Vec<PathBuf>,
    pub sums: PathBuf,
    pub removed: Vec<String>,
    /// Where each downloadable blob lies in the plaintext, for the store record.
    pub blobs: Vec<BlobAt>,
    pub own_key: Option<OwnKey>,
}

/// Which source an entry's bytes came from, for naming the culprit of a mismatch.
enum Opened {
    Other,
    Store(Digest, Arc<Store>),
    Follow(Arc<Follow>),
}

pub(super) fn write_file(
    out: &Output<'_>,
    header: &Header,
    src: &Sources<'_>,
    on_bytes: &dyn Fn(u64),
) -> Result<Written, PackError> {
    let output = out.path;
    let env = |source: std::io::Error| PackError::Io {
        path: output.to_path_buf(),
        source,
    };
    let sources: HashMap<Digest, &BlobSource> =
        src.plan.blobs.iter().map(|b| (b.digest, &b.from)).collect();
    let base = output
        .file_name()
        .ok_or_else(|| PackError::NotAFileName {
            path: output.to_path_buf(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Parts are written under temporary names, hashed as they are written, and renamed
    // when all is done.
    let parts = PartWriter::new(&dir, &base, out.split);
    // A followed blob's partial file goes once the writer verified it (which write_bundle
    // has done by the time it asks for the next entry, or returns): the bundle's store
    // record serves it from then on, as it serves layers.
    let mut opened = Opened::Other;
    let count = Cell::new(0u64);
    let mut blobs = Vec::new();
    let mut own_key = None;
    let mut resume: Option<Resume> = None;
    let result = (|| {
        // Three stages on their own threads: this one reads and hashes entries, the next
        // encrypts, the last hashes the parts and writes them. On one thread, encryption
        // and the part hashes made the writer the bottleneck of an encrypted build.
        let sink = WriteBehind::spawn(BufWriter::with_capacity(1 << 20, parts), 1 << 20, 4);
        let (enc, key) = encrypting_writer_keyed(sink, out.encryption)?;
        own_key = key;
        // A build killed mid-way leaves what it wrote for the next one (whole bundles only:
        // a split one's parts are not one file).
        if out.split.is_none() {
            resume = Resume::begin(
                src.cache,
                &dir.join(format!(".{base}.partial")),
                own_key.as_ref(),
            )
            .ok();
        }
        let enc = WriteBehind::spawn(enc, 1 << 20, 4);
        let mut counting = Counting {
            inner: enc,
            on: on_bytes,
            count: &count,
        };
        write_bundle(
            &mut counting,
            header,
            out.key,
            &mut |e: &Entry| -> std::io::Result<Box<dyn Read>> {
                if let Opened::Follow(f) = std::mem::replace(&mut opened, Opened::Other) {
                    f.verified();
                }
                match e.path.as_str() {
                    airlock_bundle::header::OCI_LAYOUT_PATH => {
                        return Ok(Box::new(std::io::Cursor::new(src.plan.oci_layout.clone())))
                    }
                    airlock_bundle::header::INDEX_PATH => {
                        return Ok(Box::new(std::io::Cursor::new(src.plan.index_json.clone())))
                    }
                    _ => {}
                }
                let p = match sources.get(&e.digest) {
                    Some(BlobSource::File(p)) => p.clone(),
                    _ => {
                        // Every blob before this one is all in the writer.
                        if let Some(r) = resume.as_mut() {
                            r.update(&blobs);
                        }
                        blobs.push(BlobAt {
                            digest: e.digest,
                            offset: count.get(),
                            size: e.size,
                        });
                        let (reader, from) = open_blob(src, e)?;
                        opened = from;
                        return Ok(reader);
                    }
                };
                std::fs::File::open(&p)
                    .map(|f| Box::new(f) as Box<dyn Read>)
                    .map_err(|err| {
                        std::io::Error::new(err.kind(), format!("{}: {err}", p.display()))
                    })
            },
        )?;
        if let Opened::Follow(f) = std::mem::replace(&mut opened, Opened::Other) {
            f.verified();
        }
        let sink = counting
            .inner
            .finish()
            .map_err(env)?
            .finish()
            .map_err(env)?;
        // No fsync: a bundle torn by a crash is refused by `verify` (every byte is covered
        // by the signature), and an fsync of gigabytes costs seconds on every build.
        sink.finish()
            .map_err(env)?
            .into_inner()
            .map_err(|e| env(e.into_error()))?
            .finish()
            .map_err(env)
    })();
    match result {
        Ok(parts) => {
            let removed = remove_stale(&dir, &base, &parts);
            let (sums, _) = write_sums(&dir, &base, &parts, out.split, out.key)?;
            Ok(Written {
                paths: parts.iter().map(|p| dir.join(&p.name)).collect(),
                parts,
                sums,
                removed,
                blobs,
                own_key,
            })
        }
        Err(e) => Err(evict_corrupt(e, src.cache, &sources, &opened)),
    }
}

/// A downloadable blob's bytes: from its streaming download, from the cache (after its
/// download into the cache, if one runs), else from a store.
fn open_blob(src: &Sources<'_>, e: &Entry) -> std::io::Result<(Box<dyn Read>, Opened)> {
    let d = e.digest;
    let pipe = src
        .pipes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&d);
    if let Some(pipe) = pipe {
        return Ok((Box::new(pipe), Opened::Other));
    }
    if src.ready.covers(&d) {
        // Hashed by the writer like every other source.
        if let BlobFrom::Follow(f) = src.ready.wait(&d)? {
            return Ok((Box::new(f.reader()), Opened::Follow(f)));
        }
    } else if !src.cache.has(&d, e.size) {
        if let Some(store) = src.stores.store_of(&d) {
            let store = store.clone();
            if let Some(r) = src.stores.open(&d)? {
                // Read and decrypted on a thread of its own: on the writer's, beside its
                // hash, decryption made a warm encrypted rebuild half again as slow.
                let r = airlock_bundle::readahead::ReadAhead::spawn(r, 1 << 20, 4);
                return Ok((Box::new(r), Opened::Store(d, store)));
            }
        }
    }
    let p = src.cache.path(&d);
    src.cache.touch(&d);
    let f = std::fs::File::open(&p)
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", p.display())))?;
    Ok((Box::new(f), Opened::Other))
}

/// The blob an error of the writer is about, if it names one.
fn failed_blob(e: &PackError) -> Option<Digest> {
    use airlock_bundle::BundleError::{DigestMismatch, Read, SizeMismatch};
    match e {
        PackError::Bundle(
            DigestMismatch { entry, .. } | SizeMismatch { entry, .. } | Read { entry, .. },
        ) => entry
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok()),
        _ => None,
    }
}

/// A cache entry that no longer matches its digest (disk corruption, a hand edit) is
/// removed, so that the next run fetches it again instead of failing forever; a store whose
/// bundle gave other bytes (or bytes that do not decrypt) is forgotten likewise. A blob the
/// writer was following as it downloaded is dropped (the registry sent other bytes), and so
/// is a streamed one. A local file (an Ollama store blob, a `[[files]]` source) that changed
/// or rotted is named, not touched.
fn evict_corrupt(
    e: PackError,
    cache: &BlobCache,
    sources: &HashMap<Digest, &BlobSource>,
    opened: &Opened,
) -> PackError {
    let Some(d) = failed_blob(&e) else {
        return e;
    };
    let source = match e {
        PackError::Bundle(b) => b,
        other => return other,
    };
    if let Opened::Store(sd, store) = opened {
        if *sd == d {
            drop_record(store);
            return PackError::StoreCorrupt {
                bundle: store.bundle().to_path_buf(),
                source,
            };
        }
    }
    // A source that failed to read is not a corrupt copy: say what failed.
    if matches!(source, BundleError::Read { .. }) {
        return PackError::Bundle(source);
    }
    if let Some(BlobSource::File(p)) = sources.get(&d) {
        return PackError::LocalBlobChanged {
            path: p.clone(),
            source,
        };
    }
    if let Opened::Follow(f) = opened {
        if f.digest == d {
            f.discard();
            return PackError::DownloadCorrupt { source };
        }
    }
    let path = cache.path(&d);
    if std::fs::metadata(&path).is_err() {
        // Not from the cache: a streamed download, which kept nothing.
        return PackError::DownloadCorrupt { source };
    }
    let _ = std::fs::remove_file(&path);
    PackError::CacheCorrupt { path, source }
}
