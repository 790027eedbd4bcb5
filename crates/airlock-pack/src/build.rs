//! `airlock-pack build`: checks the lock, downloads what the cache lacks (concurrently,
//! bounded, every blob verified), and writes the signed bundle through the age layer into a
//! temp file that is renamed into place only when complete. Writing starts at once and
//! waits, entry by entry, for blobs still downloading, so network and disk overlap.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use airlock_bundle::crypt::{encrypting_writer, Encryption};
use airlock_bundle::header::{left_out_totals, Entry, Header, FORMAT_NAME, FORMAT_VERSION};
use airlock_bundle::lock::Lock;
use airlock_bundle::parts::{remove_stale, write_sums, Part, PartWriter};
use airlock_bundle::readahead::WriteBehind;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::spec::Spec;
use airlock_bundle::writer::write_bundle;
use airlock_bundle::Digest;
use airlock_progress::{human, Progress};
use futures::StreamExt as _;

use crate::cache::BlobCache;
use crate::local::ModelSources;
use crate::ollama::{Follow, OllamaRegistry};
use crate::plan::{plan, BlobSource, Plan, PlannedBlob, Sources};
use crate::registry::Registry;
use crate::PackError;

#[derive(Debug)]
pub struct BuildOptions {
    pub spec_path: PathBuf,
    pub output: PathBuf,
    pub sign_key: SigningKey,
    pub encryption: Encryption,
    pub cache: BlobCache,
    pub models: ModelSources,
    pub jobs: usize,
    /// Cut the bundle into parts of at most this many bytes (`--split`).
    pub split: Option<u64>,
    /// The target host's inventory: leave out what it has (`--have`, a delta bundle).
    pub have: Option<airlock_bundle::inventory::Inventory>,
    /// Carry the images' upstream signatures, attestations, SBOMs and referrers
    /// (`--no-provenance` says no; `[[verify]]` rules are checked either way).
    pub provenance: bool,
}

#[derive(Debug)]
pub struct BuildSummary {
    pub output: PathBuf,
    pub images: usize,
    pub models: usize,
    pub files: usize,
    pub blobs: usize,
    pub file_bytes: u64,
    pub downloaded_bytes: u64,
    pub encrypted: bool,
    pub key_id: String,
    /// The files written: the bundle (or its parts), then the sums and their signature.
    pub parts: Vec<airlock_bundle::parts::Part>,
    pub sums: PathBuf,
    /// Files of an earlier build of the same name that this one replaced.
    pub removed: Vec<String>,
}

pub async fn build(opts: BuildOptions, progress: &Progress) -> Result<BuildSummary, PackError> {
    let (spec, _) = crate::compose::load_spec(&opts.spec_path)?;
    let lock_path = Lock::path_for(&opts.spec_path);
    if !lock_path.exists() {
        return Err(PackError::Drift {
            what: "the spec".into(),
            details: format!("  - {} does not exist", lock_path.display()),
            spec: opts.spec_path.display().to_string(),
        });
    }
    let lock = Lock::load(&lock_path)?;
    let registry = Registry::new(&spec.insecure_registries());
    let ollama = OllamaRegistry::new(&spec.insecure_registries())?;
    let rules = crate::provenance::Rules::load(&spec, &opts.spec_path)?;
    let mut plan = plan(
        &spec,
        &opts.spec_path,
        &lock,
        &Sources {
            registry: &registry,
            ollama: &ollama,
            models: &opts.models,
            cache: &opts.cache,
            rules: &rules,
            carry: opts.provenance,
        },
        progress,
    )
    .await?;

    let header = header_for(&opts, &spec, &lock, &mut plan, progress)?;
    let payload_bytes = header.payload_size();
    let encrypted = !matches!(opts.encryption, Encryption::None);
    let key_id = opts.sign_key.key_id().to_string();
    let images = plan.images.len();
    let (models, files) = (plan.models.len(), plan.files.len());
    let blobs = plan.blobs.len();
    let missing: Vec<PlannedBlob> = plan
        .blobs
        .iter()
        .filter(|b| b.is_remote() && !opts.cache.has(&b.digest, b.size))
        .cloned()
        .collect();
    progress.say(format!(
        "writing {} ({images} images, {models} models, {files} files and directories, {blobs} blobs, {}{}); {} blobs to download ({})",
        opts.output.display(),
        human(payload_bytes),
        if encrypted {
            ", encrypted"
        } else {
            ", not encrypted"
        },
        missing.len(),
        human(missing.iter().map(|b| b.size).sum()),
    ));

    let ready = Arc::new(Ready::new(missing.iter().map(|b| b.digest)));
    let write_bar = progress.bytes(payload_bytes, "write");
    let writer = {
        let (bar, ready, plan, cache) = (
            write_bar.clone(),
            ready.clone(),
            Arc::new(plan),
            opts.cache.clone(),
        );
        let (output, key, encryption, split) = (
            opts.output.clone(),
            opts.sign_key,
            opts.encryption,
            opts.split,
        );
        tokio::task::spawn_blocking(move || {
            write_file(
                &Output {
                    path: &output,
                    split,
                    key: &key,
                    encryption: &encryption,
                },
                &header,
                &plan,
                &cache,
                &ready,
                &|n| bar.inc(n),
            )
        })
    };
    let downloaded = download(
        &missing,
        &registry,
        &ollama,
        &opts.cache,
        opts.jobs,
        progress,
        &ready,
    )
    .await;
    let written = writer.await.map_err(|source| PackError::WorkerFailed {
        what: "writer",
        source,
    })?;
    progress.remove(&write_bar);
    // A failed download explains a failed write better than the writer's own error.
    let downloaded = downloaded?;
    let written = written?;
    Ok(BuildSummary {
        output: opts.output,
        images,
        models,
        files,
        blobs,
        file_bytes: written.parts.iter().map(|p| p.size).sum(),
        downloaded_bytes: downloaded,
        encrypted,
        key_id,
        parts: written.parts,
        sums: written.sums,
        removed: written.removed,
    })
}

/// The bundle's header for `plan` (with what a delta leaves out), checked as the gap host
/// will check it.
fn header_for(
    opts: &BuildOptions,
    spec: &Spec,
    lock: &Lock,
    plan: &mut Plan,
    progress: &Progress,
) -> Result<Header, PackError> {
    let expected_present = match &opts.have {
        Some(inv) => {
            let left_out = plan.leave_out(inv);
            let (blobs, bytes) = left_out_totals(&left_out);
            progress.say(format!(
                "delta against {} (inventory of {}): leaving out {blobs} blobs ({}) the host has",
                if inv.host.is_empty() { "?" } else { &inv.host },
                inv.created,
                human(bytes)
            ));
            left_out
        }
        None => Vec::new(),
    };
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(_) => crate::lock::now_rfc3339(),
        Err(_) => lock.created.clone(),
    };
    let header = Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        provenance: plan.provenance.clone(),
        tool: airlock_bundle::tool_version("airlock-pack"),
        name: spec.name.clone(),
        created,
        entries: plan.entries(),
        images: plan.images.clone(),
        models: plan.models.clone(),
        files: plan.files.clone(),
        expected_present,
        compose: plan.compose.clone(),
    };
    // The gap host validates the header before it trusts anything in it. A header it would
    // refuse (a control character in a name, two records claiming one place on the host) is
    // a problem of the spec: say so here, before a byte is written or a blob fetched.
    header
        .validate()
        .map_err(|source| PackError::Unbundleable {
            spec: opts.spec_path.to_path_buf(),
            source,
        })?;
    Ok(header)
}

/// Which blobs the writer must wait for, and how their downloads are going: a large model
/// blob can be followed while its parts arrive.
struct Ready {
    state: Mutex<HashMap<Digest, Pending>>,
    cv: Condvar,
}

enum Pending {
    Waiting,
    Following(Arc<Follow>),
    Done(Result<(), String>),
}

/// Where the writer reads a blob from.
enum BlobFrom {
    Cache,
    Follow(Arc<Follow>),
}

impl Ready {
    fn new(pending: impl Iterator<Item = Digest>) -> Ready {
        Ready {
            state: Mutex::new(pending.map(|d| (d, Pending::Waiting)).collect()),
            cv: Condvar::new(),
        }
    }

    fn set(&self, d: Digest, p: Pending) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d, p);
        self.cv.notify_all();
    }

    fn mark(&self, d: Digest, r: Result<(), String>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A followed blob that arrived completely stays followed: the writer verifies it
        // and moves it into the cache.
        if !(r.is_ok() && matches!(g.get(&d), Some(Pending::Following(_)))) {
            g.insert(d, Pending::Done(r));
        }
        drop(g);
        self.cv.notify_all();
    }

    /// Blocks until `d` is in the cache (at once if it never was missing) or can be followed.
    fn wait(&self, d: &Digest) -> std::io::Result<BlobFrom> {
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

/// Fetches the missing blobs, `jobs` at a time, started in bundle order (the writer's order).
async fn download(
    missing: &[PlannedBlob],
    registry: &Registry,
    ollama: &OllamaRegistry,
    cache: &BlobCache,
    jobs: usize,
    progress: &Progress,
    ready: &Ready,
) -> Result<u64, PackError> {
    let total: u64 = missing.iter().map(|b| b.size).sum();
    if missing.is_empty() {
        return Ok(0);
    }
    let overall = progress.bytes(total, "download");
    let results = futures::stream::iter(missing)
        .map(|b| {
            let overall = overall.clone();
            async move {
                let bar = progress.bytes(b.size, &b.digest.short());
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
                let r = match &b.from {
                    BlobSource::Image(r) => {
                        registry
                            .fetch_blob(r, b.digest, b.size, &b.media_type, cache, &on_bytes)
                            .await
                    }
                    BlobSource::Model(name) => {
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
                    BlobSource::File(p) => Err(PackError::NotADownload { path: p.clone() }),
                };
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
    for r in results {
        r?;
    }
    Ok(total)
}

struct Counting<'a, W> {
    inner: W,
    on: &'a dyn Fn(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        (self.on)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where and how the bundle is written.
struct Output<'a> {
    path: &'a Path,
    split: Option<u64>,
    key: &'a SigningKey,
    encryption: &'a Encryption,
}

/// What [`write_file`] left on disk.
struct Written {
    parts: Vec<Part>,
    sums: PathBuf,
    removed: Vec<String>,
}

fn write_file(
    out: &Output<'_>,
    header: &Header,
    plan: &Plan,
    cache: &BlobCache,
    ready: &Ready,
    on_bytes: &dyn Fn(u64),
) -> Result<Written, PackError> {
    let output = out.path;
    let env = |source: std::io::Error| PackError::Io {
        path: output.to_path_buf(),
        source,
    };
    let sources: HashMap<Digest, &BlobSource> =
        plan.blobs.iter().map(|b| (b.digest, &b.from)).collect();
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
    // A followed blob is committed to the cache once the writer verified it, which
    // write_bundle has done by the time it asks for the next entry (or returns).
    let mut verifying: Option<Arc<Follow>> = None;
    let result = (|| {
        // Three stages on their own threads: this one reads and hashes entries, the next
        // encrypts, the last hashes the parts and writes them. On one thread, encryption
        // and the part hashes made the writer the bottleneck of an encrypted build.
        let sink = WriteBehind::spawn(BufWriter::with_capacity(1 << 20, parts), 1 << 20, 4);
        let enc = WriteBehind::spawn(encrypting_writer(sink, out.encryption)?, 1 << 20, 4);
        let mut counting = Counting {
            inner: enc,
            on: on_bytes,
        };
        write_bundle(
            &mut counting,
            header,
            out.key,
            &mut |e: &Entry| -> std::io::Result<Box<dyn Read>> {
                if let Some(f) = verifying.take() {
                    f.commit()?;
                }
                match e.path.as_str() {
                    airlock_bundle::header::OCI_LAYOUT_PATH => {
                        Ok(Box::new(std::io::Cursor::new(plan.oci_layout.clone())))
                    }
                    airlock_bundle::header::INDEX_PATH => {
                        Ok(Box::new(std::io::Cursor::new(plan.index_json.clone())))
                    }
                    _ => {
                        let p = match sources.get(&e.digest) {
                            Some(BlobSource::File(p)) => p.clone(),
                            _ => match ready.wait(&e.digest)? {
                                BlobFrom::Cache => cache.path(&e.digest),
                                // Hashed by the writer like every other source.
                                BlobFrom::Follow(f) => {
                                    let reader = f.reader();
                                    verifying = Some(f);
                                    return Ok(Box::new(reader));
                                }
                            },
                        };
                        std::fs::File::open(&p)
                            .map(|f| Box::new(f) as Box<dyn Read>)
                            .map_err(|err| {
                                std::io::Error::new(err.kind(), format!("{}: {err}", p.display()))
                            })
                    }
                }
            },
        )?;
        if let Some(f) = verifying.take() {
            f.commit().map_err(env)?;
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
                parts,
                sums,
                removed,
            })
        }
        Err(e) => Err(evict_corrupt(e, cache, &sources, verifying.as_deref())),
    }
}

/// A cache entry that no longer matches its digest (disk corruption, a hand edit) is
/// removed, so that the next run fetches it again instead of failing forever. A blob the
/// writer was following as it downloaded is dropped (the registry sent other bytes). A
/// local file (an Ollama store blob, a `[[files]]` source) that changed or rotted is named,
/// not touched.
fn evict_corrupt(
    e: PackError,
    cache: &BlobCache,
    sources: &HashMap<Digest, &BlobSource>,
    followed: Option<&Follow>,
) -> PackError {
    use airlock_bundle::BundleError::{DigestMismatch, SizeMismatch};
    let blob = match &e {
        PackError::Bundle(DigestMismatch { entry, .. } | SizeMismatch { entry, .. }) => entry
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok()),
        _ => None,
    };
    let Some(d) = blob else {
        return e;
    };
    let source = match e {
        PackError::Bundle(b) => b,
        other => return other,
    };
    if let Some(BlobSource::File(p)) = sources.get(&d) {
        return PackError::LocalBlobChanged {
            path: p.clone(),
            source,
        };
    }
    if let Some(f) = followed.filter(|f| f.digest == d) {
        f.discard();
        return PackError::DownloadCorrupt { source };
    }
    let path = cache.path(&d);
    let _ = std::fs::remove_file(&path);
    PackError::CacheCorrupt { path, source }
}
