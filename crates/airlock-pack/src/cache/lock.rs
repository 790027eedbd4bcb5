//! Advisory locks (`flock(2)`) that let several builds and a prune share one cache.
//!
//! The scheme, and why it cannot deadlock:
//! - `lock` (the cache lock): every build holds it shared from start to end, `cache prune`
//!   exclusive. A prune therefore never removes what a running build reads or records.
//! - `locks/<hex>` (one per blob): before its downloads start, a build takes the lock of
//!   every blob it must fetch, exclusive, **in one global order (sorted by digest)**, and
//!   holds them until its store record is written (the end of the build). Two builds that
//!   need the same blobs queue in the same order, so neither holds one the other waits for
//!   while waiting for one the other holds. A build that had to wait looks in the cache and
//!   the stores again and reads what the other build wrote instead of fetching it.
//!
//! The locks are advisory and released by the kernel when a build dies, so a killed build
//! never leaves the cache locked. Lock files are left in place (removing one another process
//! is waiting on would split the queue); `cache prune` removes them under the exclusive lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use airlock_bundle::Digest;
use rustix::fs::{flock, FlockOperation};

use super::BlobCache;

fn open_lock_file(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Takes `op` on `file`; true if it had to wait for another holder first.
fn take(file: &File, blocking: FlockOperation, nonblocking: FlockOperation) -> io::Result<bool> {
    match flock(file, nonblocking) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            flock(file, blocking)?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// The cache-wide lock, held until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Held by every build: many at once, but not during a prune.
    pub fn shared(cache: &BlobCache) -> io::Result<CacheLock> {
        let file = open_lock_file(&cache.root().join("lock"))?;
        take(
            &file,
            FlockOperation::LockShared,
            FlockOperation::NonBlockingLockShared,
        )?;
        Ok(CacheLock { _file: file })
    }

    /// Held by `cache prune`: waits for running builds to end. True if it had to wait.
    pub fn exclusive(cache: &BlobCache) -> io::Result<(CacheLock, bool)> {
        let file = open_lock_file(&cache.root().join("lock"))?;
        let waited = take(
            &file,
            FlockOperation::LockExclusive,
            FlockOperation::NonBlockingLockExclusive,
        )?;
        Ok((CacheLock { _file: file }, waited))
    }
}

/// The per-blob locks a build holds for the blobs it fetches.
#[derive(Debug, Default)]
pub struct BlobLocks {
    _held: Vec<File>,
    /// Blobs another build held first: look for them again before fetching.
    pub waited: Vec<Digest>,
}

impl BlobLocks {
    /// Locks every blob of `digests`, in sorted order (see the module doc), blocking while
    /// another build holds one. Call it off the async runtime.
    pub fn acquire(cache: &BlobCache, digests: &[Digest]) -> io::Result<BlobLocks> {
        let mut sorted: Vec<Digest> = digests.to_vec();
        sorted.sort_by_key(|d| d.hex());
        sorted.dedup();
        let mut locks = BlobLocks::default();
        for d in sorted {
            let file = open_lock_file(&cache.root().join("locks").join(d.hex()))?;
            if take(
                &file,
                FlockOperation::LockExclusive,
                FlockOperation::NonBlockingLockExclusive,
            )? {
                locks.waited.push(d);
            }
            locks._held.push(file);
        }
        Ok(locks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_blob_lock_makes_the_second_taker_wait_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().to_path_buf()).unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let first = BlobLocks::acquire(&cache, &[b, a]).unwrap();
        assert!(first.waited.is_empty());
        let cache2 = cache.clone();
        let t = std::thread::spawn(move || BlobLocks::acquire(&cache2, &[a]).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!t.is_finished(), "the second taker must wait");
        drop(first);
        assert_eq!(t.join().unwrap().waited, vec![a]);
    }

    #[test]
    fn prune_waits_for_builds() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().to_path_buf()).unwrap();
        let build = CacheLock::shared(&cache).unwrap();
        let _other_build = CacheLock::shared(&cache).unwrap();
        let cache2 = cache.clone();
        let t = std::thread::spawn(move || CacheLock::exclusive(&cache2).unwrap().1);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!t.is_finished(), "prune must wait for the builds");
        drop(build);
        drop(_other_build);
        assert!(t.join().unwrap(), "prune says it waited");
    }
}
