//! The blob cache (`~/.cache/airlock` or `--cache DIR`): what a build needs again without
//! fetching it again, in two kinds.
//!
//! - `blobs/sha256/<hex>`: content-addressed small blobs (manifests, configs, what `lock`
//!   and planning read) and large Ollama model blobs fetched in ranged parts. A blob lands
//!   there only after its size and sha256 checked (temp file in `tmp/`, verify, rename).
//! - `stores/<random>.json` ([`store`]): where each layer a finished build streamed into its
//!   bundle lies in that bundle's files. A cold build writes every layer once, into the
//!   bundle; a warm rebuild reads it back from there. Layers are not copied into `blobs/`.
//!   A build killed mid-way leaves its temp bundle and a record the next one resumes from
//!   ([`resume`]).
//!
//! Concurrency ([`lock`]): builds hold `lock` shared, `cache prune` exclusive; a build also
//! holds one lock file per blob it fetches (`locks/<hex>`), so two builds never fetch the
//! same blob at once. [`usage`] is what `cache ls` and `cache prune` compute.

pub mod lock;
pub mod record;
pub mod resume;
pub mod store;
pub mod usage;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use airlock_bundle::Digest;

/// Creates `dir` (and parents) private to this user: the stores hold bundle keys.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    pub fn open(root: PathBuf) -> io::Result<BlobCache> {
        private_dir(&root)?;
        for d in ["blobs/sha256", "tmp", "stores", "locks"] {
            private_dir(&root.join(d))?;
        }
        Ok(BlobCache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Marks a blob as just used, for `prune --max-size` (least recently used goes first;
    /// access times are not kept on most mounts).
    pub fn touch(&self, d: &Digest) {
        if let Ok(f) = fs::File::options().append(true).open(self.path(d)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`.
    pub fn default_root() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("airlock");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/airlock")
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join(d.blob_path())
    }

    /// Present with the expected size. Content is re-hashed when the bundle is written.
    pub fn has(&self, d: &Digest, size: u64) -> bool {
        fs::metadata(self.path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A fresh temp path on the same filesystem as the blobs, for an atomic rename.
    pub fn temp_path(&self, d: &Digest) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}.{}.{n}.partial", d.hex(), std::process::id()))
    }

    /// The one partial file of a blob fetched in parts: a stable name, so that the next run
    /// resumes it (two builds sharing a cache must not fetch the same blob at once).
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root.join("tmp").join(format!("{}.partial", d.hex()))
    }

    /// Moves a verified temp file into place.
    pub fn commit(&self, tmp: &Path, d: &Digest) -> io::Result<()> {
        fs::rename(tmp, self.path(d))
    }

    /// Stores small verified bytes (manifests, configs).
    pub fn put_bytes(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        if self.has(d, data.len() as u64) {
            return Ok(());
        }
        let tmp = self.temp_path(d);
        fs::write(&tmp, data)?;
        self.commit(&tmp, d)
    }

    /// Reads a small cached blob, verifying it.
    pub fn get_bytes(&self, d: &Digest) -> Option<Vec<u8>> {
        let data = fs::read(self.path(d)).ok()?;
        let ok = Digest::of(&data) == *d;
        if ok {
            self.touch(d);
        }
        ok.then_some(data)
    }
}
