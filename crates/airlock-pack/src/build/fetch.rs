//! The download side of a build: blobs the bundle needs and neither the cache nor a store
//! holds, fetched `--jobs` at a time in bundle order. Layers stream into the writer through
//! bounded pipes ([`crate::pipe`]); Ollama model blobs go into the cache (large ones in
//! ranged parts the writer follows, [`Follow`]). [`Ready`] tells the writer when a cached
//! blob is there.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use airlock_bundle::Digest;
use airlock_progress::{human, Progress};
use futures::StreamExt as _;

use crate::cache::BlobCache;
use crate::ollama::{Follow, OllamaRegistry};
use crate::pipe::PipeWriter;
use crate::plan::{BlobSource, PlannedBlob};
use crate::registry::Registry;
use crate::PackError;

/// Which blobs the writer must wait for, and how their downloads are going: a large model
/// blob can be followed while its parts arrive.
pub(super) struct Ready {
    state: Mutex<HashMap<Digest, Pending>>,
    cv: Condvar,
}

pub(super) enum Pending {
    Waiting,
    Following(Arc<Follow>),
    Done(Result<(), String>),
}

/// Where the writer reads a blob from.
pub(super) enum BlobFrom {
    Cache,
    Follow(Arc<Follow>),
}

impl Ready {
    pub(super) fn new(pending: impl Iterator<Item = Digest>) -> Ready {
        Ready {
            state: Mutex::new(pending.map(|d| (d, Pending::Waiting)).collect()),
            cv: Condvar::new(),
        }
    }

    pub(super) fn set(&self, d: Digest, p: Pending) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d, p);
        self.cv.notify_all();
    }

    pub(super) fn mark(&self, d: Digest, r: Result<(), String>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A followed blob that arrived completely stays followed: the writer verifies it
        // and then drops it (its bundle's store serves it from then on).
        if !(r.is_ok() && matches!(g.get(&d), Some(Pending::Following(_)))) {
            g.insert(d, Pending::Done(r));
        }
        drop(g);
        self.cv.notify_all();
    }

    /// Whether `d` is being downloaded into the cache (or was, by this build).
    pub(super) fn covers(&self, d: &Digest) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(d)
    }

    /// Blocks until `d` is in the cache (at once if it never was missing) or can be followed.
    pub(super) fn wait(&self, d: &Digest) -> std::io::Result<BlobFrom> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match g.get(d) {
                None | Some(Pending::Done(Ok(()))) => return Ok(BlobFrom::Cache),
                Some(Pending::Following(f)) => return Ok(BlobFrom::Follow(f.clone())),
                Some(Pending::Done(Err(m))) => {
                    return Err(std::io::Error::other(format!("download failed: {m}")))
                }
                Some(Pending::Waiting) => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

/// Fetches the missing blobs, `jobs` at a time, started in bundle order (the writer's order):
/// a blob with a pipe streams into it (the writer's end), the others go into the cache.
pub(super) async fn download(
    missing: Vec<(PlannedBlob, Option<PipeWriter>)>,
    registry: &Registry,
    ollama: &OllamaRegistry,
    cache: &BlobCache,
    jobs: usize,
    progress: &Progress,
    ready: &Ready,
) -> Result<u64, PackError> {
    let total: u64 = missing.iter().map(|(b, _)| b.size).sum();
    if missing.is_empty() {
        return Ok(0);
    }
    let overall = progress.bytes(total, "download");
    let results = futures::stream::iter(missing)
        .map(|(b, pipe)| {
            let overall = overall.clone();
            async move {
                let bar = progress.item_bytes(b.size, "download", &b.digest.to_string());
                let bar2 = bar.clone();
                let on_bytes = move |delta: i64| {
                    if delta >= 0 {
                        bar2.inc(delta as u64);
                        overall.inc(delta as u64);
                    } else {
                        bar2.set_position(bar2.position().saturating_sub(delta.unsigned_abs()));
                        overall
                            .set_position(overall.position().saturating_sub(delta.unsigned_abs()));
                    }
                };
                let r = match (&b.from, &pipe) {
                    (BlobSource::Image(r), Some(pipe)) => {
                        registry
                            .fetch_blob_streamed(
                                r,
                                b.digest,
                                b.size,
                                &b.media_type,
                                pipe,
                                &on_bytes,
                            )
                            .await
                    }
                    (BlobSource::Image(r), None) => {
                        registry
                            .fetch_blob(r, b.digest, b.size, &b.media_type, cache, &on_bytes)
                            .await
                    }
                    (BlobSource::Model(name), _) => {
                        let follow = |f: Arc<Follow>| ready.set(b.digest, Pending::Following(f));
                        ollama
                            .fetch_blob(
                                name,
                                b.digest,
                                b.size,
                                cache,
                                jobs,
                                &on_bytes,
                                Some(&follow),
                            )
                            .await
                    }
                    (BlobSource::File(p), _) => Err(PackError::NotADownload { path: p.clone() }),
                };
                // The writer's end sees the end of the stream now.
                drop(pipe);
                progress.remove(&bar);
                ready.mark(b.digest, r.as_ref().map(drop).map_err(|e| e.to_string()));
                if r.is_ok() {
                    progress.say(format!("fetched {} ({})", b.digest, human(b.size)));
                }
                r
            }
        })
        .buffered(jobs.max(1))
        .collect::<Vec<_>>()
        .await;
    progress.remove(&overall);
    // A download that found the writer gone says less than one that failed on its own.
    let mut stopped = false;
    for r in results {
        match r {
            Err(PackError::WriterStopped) => stopped = true,
            other => other?,
        }
    }
    if stopped {
        return Err(PackError::WriterStopped);
    }
    Ok(total)
}
