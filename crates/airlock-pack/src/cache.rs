//! The content-addressed blob cache (`~/.cache/airlock` or `--cache DIR`). A blob lands in
//! it only after its size and sha256 checked (temp file, verify, rename), so an interrupted
//! run leaves no half blob under a real name and the next run fetches only what is missing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use airlock_bundle::Digest;

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    pub fn open(root: PathBuf) -> io::Result<BlobCache> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobCache { root })
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
        (Digest::of(&data) == *d).then_some(data)
    }
}
