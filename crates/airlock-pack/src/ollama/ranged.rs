//! The ranged-download machinery behind `OllamaRegistry::fetch_blob`: how a large
//! blob is cut into parts, the partial file in the blob cache that the parts are written
//! into, the journal that lets an interrupted pull resume, the in-order hashing that runs
//! while later parts still arrive, and [`Follow`], which lets the bundle writer read a blob
//! while it downloads. Nothing here speaks HTTP: the registry client fetches each part and
//! reports it here.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use sha2::Digest as _;

use crate::cache::BlobCache;
use crate::PackError;

/// Parts are size/16, within these bounds (Ollama itself uses 100 MB – 1 GB; smaller parts
/// keep resume fine-grained on slow links at a negligible cost in requests).
const MIN_PART: u64 = 8 << 20;
const MAX_PART: u64 = 1 << 30;

/// The part size for a blob of `size` bytes (before checking the server serves ranges).
pub(super) fn part_size(size: u64) -> u64 {
    (size / 16).clamp(MIN_PART, MAX_PART)
}

/// How one attempt at a blob ended.
pub(super) enum Fetched {
    Done,
    /// Every part arrived; the follower verifies and commits.
    Handed,
    StaleResume,
}

/// One blob being fetched into its partial file: the parts' layout, the journal of finished
/// parts, and their progress shared with the hasher or the follower.
pub(super) struct Download {
    digest: Digest,
    size: u64,
    partial: PathBuf,
    file: Arc<File>,
    /// `(start, end)` byte range of each part.
    pub(super) parts: Vec<(u64, u64)>,
    journal: Journal,
    pub(super) progress: Arc<Progressive>,
    /// Bytes kept from an earlier run (parts the journal names).
    pub(super) resumed: u64,
}

impl Download {
    /// Opens (or creates) the partial file of `digest` in the cache, sized to the blob, and
    /// its journal for parts of `part` bytes.
    pub(super) fn open(
        cache: &BlobCache,
        digest: Digest,
        size: u64,
        part: u64,
    ) -> Result<Download, PackError> {
        let partial = cache.partial_path(&digest);
        let env = |source: std::io::Error| PackError::Io {
            path: partial.clone(),
            source,
        };
        let parts: Vec<(u64, u64)> = (0..size.div_ceil(part).max(1))
            .map(|i| (i * part, ((i + 1) * part).min(size)))
            .collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(env)?;
        if file.metadata().map_err(env)?.len() != size {
            file.set_len(size).map_err(env)?;
        }
        let journal = Journal::open(&partial, parts.len(), size, part).map_err(env)?;
        let resumed: u64 = journal
            .done_parts()
            .iter()
            .map(|&i| parts[i].1 - parts[i].0)
            .sum();
        let progress = Arc::new(Progressive::new(parts.len(), &journal));
        Ok(Download {
            digest,
            size,
            partial,
            file: Arc::new(file),
            parts,
            journal,
            progress,
            resumed,
        })
    }

    /// The file the parts are written into (each at its own offset).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    fn env(&self, e: std::io::Error) -> PackError {
        PackError::Io {
            path: self.partial.clone(),
            source: e,
        }
    }

    /// A handle for the bundle writer to read the blob in order while it arrives.
    pub(super) fn follow(&self) -> Arc<Follow> {
        Arc::new(Follow {
            digest: self.digest,
            file: self.file.clone(),
            parts: self.parts.clone(),
            progress: self.progress.clone(),
            partial: self.partial.clone(),
            journal: self.journal.path.clone(),
        })
    }

    /// Hashes the blob on its own thread as its parts complete, in order.
    pub(super) fn spawn_hasher(&self) -> std::thread::JoinHandle<std::io::Result<Option<Digest>>> {
        let (file, progress, parts) =
            (self.file.clone(), self.progress.clone(), self.parts.clone());
        std::thread::spawn(move || hash_in_order(&file, &parts, &progress))
    }

    /// Records how the download of part `i` ended: a finished part goes into the journal
    /// (so a later run resumes past it), a failure stops the hasher and the follower.
    pub(super) fn part_ended(&self, i: usize, r: Result<(), PackError>) -> Result<(), PackError> {
        match r {
            Ok(()) => {
                self.journal.record(i).map_err(|e| self.env(e))?;
                self.progress.finish(i);
                Ok(())
            }
            Err(e) => {
                self.progress.fail();
                Err(e)
            }
        }
    }

    /// Every part arrived and `computed` is the whole blob's sha256: gives the blob its
    /// real name in the cache if it matches, else drops the partial file (and asks for one
    /// more attempt if it held bytes from an earlier run, which a crash may have lost).
    pub(super) fn verify_and_commit(
        &self,
        name: &ModelName,
        cache: &BlobCache,
        computed: std::io::Result<Option<Digest>>,
        on_bytes: &(dyn Fn(i64) + Sync),
    ) -> Result<Fetched, PackError> {
        let digest = self.digest;
        let computed = computed.map_err(|e| self.env(e))?;
        if computed != Some(digest) {
            self.journal.remove();
            let _ = std::fs::remove_file(&self.partial);
            on_bytes(-(self.size as i64));
            if self.resumed > 0 {
                return Ok(Fetched::StaleResume);
            }
            return Err(PackError::ModelBlobDigest {
                model: name.to_string(),
                blob: digest,
                actual: computed,
            });
        }
        self.journal.remove();
        cache
            .commit(&self.partial, &digest)
            .map_err(|e| self.env(e))?;
        Ok(Fetched::Done)
    }
}

/// Which parts of a partial blob are complete: one line per finished part index, after a
/// first line naming the blob size and part size (a journal for another layout is ignored).
struct Journal {
    path: PathBuf,
    done: Vec<usize>,
    file: Mutex<File>,
}

impl Journal {
    fn open(partial: &Path, parts: usize, size: u64, part: u64) -> std::io::Result<Journal> {
        let path = partial.with_extension("parts");
        let head = format!("{size} {part}");
        let mut done = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            let mut lines = text.lines();
            if lines.next() == Some(head.as_str()) {
                done = lines
                    .filter_map(|l| l.parse::<usize>().ok())
                    .filter(|&i| i < parts)
                    .collect();
            }
        }
        let mut f = File::create(&path)?;
        writeln!(f, "{head}")?;
        for i in &done {
            writeln!(f, "{i}")?;
        }
        Ok(Journal {
            path,
            done,
            file: Mutex::new(f),
        })
    }

    fn done_parts(&self) -> &[usize] {
        &self.done
    }

    fn record(&self, i: usize) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // No fsync: after a power loss the journal may claim a part whose bytes never
        // reached the disk; the whole-blob sha256 then fails and the partial is discarded.
        writeln!(f, "{i}")
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parts finished so far, shared with the hashing thread and the bundle writer.
pub(super) struct Progressive {
    state: Mutex<PartsState>,
    cv: Condvar,
}

struct PartsState {
    done: Vec<bool>,
    /// Bytes written so far from the start of each part (its current attempt).
    filled: Vec<u64>,
    failed: bool,
}

/// A blob still downloading, readable in order as far as its parts have arrived: the bundle
/// writer follows the download instead of waiting for its end. What it reads is hashed by
/// the writer itself (every bundle entry is), and then dropped ([`Follow::verified`]): the
/// bundle's store record serves it to the next build. Following trusts nothing new.
pub struct Follow {
    /// The blob being followed.
    pub digest: Digest,
    file: Arc<File>,
    parts: Vec<(u64, u64)>,
    progress: Arc<Progressive>,
    partial: PathBuf,
    journal: PathBuf,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follow")
    }
}

impl Follow {
    /// The follower read the whole blob and it verified: the partial file is not needed
    /// any more (the bundle's store record serves the blob to the next build; keeping it
    /// too would be a second full copy). Only for the follower.
    pub fn verified(&self) {
        self.discard();
    }

    /// Drops what was downloaded: the follower found it does not match the digest.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
        let _ = std::fs::remove_file(&self.journal);
    }

    /// A reader of the whole blob that blocks until the bytes it needs have arrived. What it
    /// yields is unverified until the reader's own hash says otherwise.
    pub fn reader(self: &Arc<Self>) -> FollowReader {
        FollowReader {
            follow: self.clone(),
            pos: 0,
        }
    }
}

#[derive(Debug)]
pub struct FollowReader {
    follow: Arc<Follow>,
    pos: u64,
}

impl std::io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let f = &self.follow;
        let size = f.parts.last().map(|p| p.1).unwrap_or(0);
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        // Read only bytes the part's download has written: the writer stays right behind
        // the first unfinished part instead of waiting for whole parts.
        // The parts tile 0..size, so this finds one; an error (not a panic) if they did not.
        let Some(i) = f
            .parts
            .iter()
            .position(|&(s, e)| s <= self.pos && self.pos < e)
        else {
            return Err(std::io::Error::other("read outside the parts of the blob"));
        };
        let (start, end) = f.parts[i];
        let Some(filled) = f.progress.wait_past(i, self.pos - start, end - start) else {
            return Err(std::io::Error::other("the download failed"));
        };
        let n = ((start + filled - self.pos) as usize).min(buf.len());
        f.file.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Progressive {
    fn new(n: usize, journal: &Journal) -> Progressive {
        let mut done = vec![false; n];
        for &i in journal.done_parts() {
            done[i] = true;
        }
        Progressive {
            state: Mutex::new(PartsState {
                done,
                filled: vec![0; n],
                failed: false,
            }),
            cv: Condvar::new(),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, PartsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(super) fn is_done(&self, i: usize) -> bool {
        self.lock().done[i]
    }
    fn finish(&self, i: usize) {
        self.lock().done[i] = true;
        self.cv.notify_all();
    }
    /// Part `i` holds `bytes` valid bytes from its start (a retry starts again from 0).
    pub(super) fn fill(&self, i: usize, bytes: u64) {
        self.lock().filled[i] = bytes;
        self.cv.notify_all();
    }
    pub(super) fn fail(&self) {
        self.lock().failed = true;
        self.cv.notify_all();
    }
    /// Waits for part `i`; false if the download failed first.
    fn wait(&self, i: usize) -> bool {
        let mut g = self.lock();
        loop {
            if g.done[i] {
                return true;
            }
            if g.failed {
                return false;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
    /// Waits until part `i` (of `len` bytes) holds more than `offset` bytes; returns how many
    /// it holds, or `None` if the download failed first.
    fn wait_past(&self, i: usize, offset: u64, len: u64) -> Option<u64> {
        let mut g = self.lock();
        loop {
            if g.done[i] {
                return Some(len);
            }
            if g.filled[i] > offset {
                return Some(g.filled[i]);
            }
            if g.failed {
                return None;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Hashes the partial file part by part, in order, as parts complete: the sha256 is ready
/// moments after the last byte arrives. `None` if the download failed.
fn hash_in_order(
    file: &File,
    parts: &[(u64, u64)],
    progress: &Progressive,
) -> std::io::Result<Option<Digest>> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, &(start, end)) in parts.iter().enumerate() {
        if !progress.wait(i) {
            return Ok(None);
        }
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(Some(Digest::from_bytes(h.finalize().into())))
}
