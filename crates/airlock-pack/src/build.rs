//! `airlock-pack build`: checks the lock, fetches what neither the cache nor an earlier
//! bundle holds (concurrently, bounded, every blob verified), and writes the signed bundle
//! through the age layer into temp files renamed into place only when complete. Writing
//! starts at once and takes each layer as it downloads ([`fetch`]), so a cold build writes
//! every byte once, into the bundle ([`write`]); the finished bundle is then recorded in the
//! cache as the source of its blobs for the next build ([`crate::cache::store`]).

mod fetch;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use airlock_bundle::crypt::Encryption;
use airlock_bundle::header::{left_out_totals, Header, FORMAT_NAME, FORMAT_VERSION};
use airlock_bundle::lock::Lock;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::spec::Spec;
use airlock_progress::{human, Progress};

use crate::cache::lock::{BlobLocks, CacheLock};
use crate::cache::store::{self, Stores};
use crate::cache::BlobCache;
use crate::local::ModelSources;
use crate::ollama::OllamaRegistry;
use crate::pipe::{pipe, PIPE_BOUND};
use crate::plan::{plan, BlobSource, Plan, PlannedBlob, Sources};
use crate::registry::Registry;
use crate::PackError;
use fetch::{download, Ready};
use write::{write_file, Output, Written};

/// `build` mentions the cache's size past this (`AIRLOCK_CACHE_WARN` overrides).
const CACHE_WARN: u64 = 10 << 30;
/// How often a store that served other bytes is replaced by a fetch within one build.
const STORE_RETRIES: usize = 3;

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
    /// `--ca-cert`, `--cert-dir`, `--client-cert`/`--client-key`.
    pub tls: airlock_registry_auth::tls::TlsOptions,
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
    let (registry, ollama) = crate::lock::clients(&spec, &opts.tls)?;
    let rules = crate::provenance::Rules::load(&spec, &opts.spec_path)?;
    // Held to the end: `cache prune` waits for running builds.
    let _cache_lock = CacheLock::shared(&opts.cache).map_err(|source| PackError::CacheOpen {
        path: opts.cache.root().to_path_buf(),
        source,
    })?;
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
    let (images, models, files) = (plan.images.len(), plan.models.len(), plan.files.len());
    let blobs = plan.blobs.len();
    let cache = opts.cache.clone();
    let remote: Vec<PlannedBlob> = plan
        .blobs
        .iter()
        .filter(|b| b.is_remote())
        .cloned()
        .collect();
    let to_fetch = |stores: &Stores| -> Vec<PlannedBlob> {
        remote
            .iter()
            .filter(|b| !cache.has(&b.digest, b.size) && !stores.has(&b.digest, b.size))
            .cloned()
            .collect()
    };
    let (locks, stores, mut missing) = lock_missing(&cache, &to_fetch, progress).await?;
    let mut stores = Arc::new(stores);
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
    let job = Job {
        output: opts.output.clone(),
        split: opts.split,
        key: Arc::new(opts.sign_key),
        encryption: Arc::new(Mutex::new(opts.encryption)),
        header: Arc::new(header),
        plan: Arc::new(plan),
        cache: cache.clone(),
        registry,
        ollama,
        jobs: opts.jobs,
    };
    let mut attempt = 0;
    let (written, downloaded) = loop {
        match write_and_fetch(&job, stores.clone(), missing, progress).await {
            Err(PackError::StoreCorrupt { bundle, source }) if attempt < STORE_RETRIES => {
                airlock_progress::notice(format!(
                    "warning: {source}\nwarning: {} no longer holds what the blob cache recorded; record dropped, fetching that blob again",
                    bundle.display()
                ));
                attempt += 1;
                // Dropped first: it holds the locks of what it took over from killed builds.
                drop(stores);
                stores = Arc::new(Stores::load(&cache, true).0);
                missing = to_fetch(&stores);
            }
            other => break other?,
        }
    };
    // The finished bundle serves its blobs to the next build. Best effort: without the
    // record the next build fetches again.
    if let Err(e) = store::record(
        &cache,
        &written.paths,
        written.own_key.as_ref(),
        written.blobs,
    ) {
        progress.say(format!(
            "could not record the bundle in the blob cache: {e}"
        ));
    }
    if let Some(s) = Arc::get_mut(&mut stores) {
        s.finish_claimed();
    }
    drop(locks);
    warn_cache_size(&cache);
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

/// The stores, the blobs neither they nor the cache hold (`to_fetch`), and the locks of
/// those blobs: another build fetching some of them makes this one wait, then read them
/// from its bundle.
async fn lock_missing(
    cache: &BlobCache,
    to_fetch: &dyn Fn(&Stores) -> Vec<PlannedBlob>,
    progress: &Progress,
) -> Result<(BlobLocks, Stores, Vec<PlannedBlob>), PackError> {
    let (mut stores, dropped) = Stores::load(cache, true);
    for b in dropped {
        progress.say(format!(
            "the blob cache forgot {}: its files changed or are gone",
            b.display()
        ));
    }
    let mut missing = to_fetch(&stores);
    let locks = {
        let (held, digests) = (
            cache.clone(),
            missing.iter().map(|b| b.digest).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || BlobLocks::acquire(&held, &digests))
            .await
            .map_err(|source| PackError::WorkerFailed {
                what: "lock",
                source,
            })?
            .map_err(|source| PackError::CacheOpen {
                path: cache.root().join("locks"),
                source,
            })?
    };
    if !locks.waited.is_empty() {
        // Dropped first: it holds the locks of what it took over from killed builds.
        drop(std::mem::take(&mut stores));
        stores = Stores::load(cache, true).0;
        missing = to_fetch(&stores);
        progress.say(format!(
            "waited for another build fetching {} of these blobs; {} still to fetch",
            locks.waited.len(),
            missing.len()
        ));
    }
    Ok((locks, stores, missing))
}

/// One line on stderr when the cache holds more than the threshold.
fn warn_cache_size(cache: &BlobCache) {
    let limit = std::env::var("AIRLOCK_CACHE_WARN")
        .ok()
        .and_then(|v| crate::cache::usage::parse_max_size(&v).ok())
        .unwrap_or(CACHE_WARN);
    let held = crate::cache::usage::total(cache);
    if held > limit {
        airlock_progress::notice(format!(
            "note: the blob cache {} holds {}; `airlock-pack cache prune --keep SPEC.lock` or `--max-size SIZE` trims it",
            cache.root().display(),
            human(held)
        ));
    }
}

/// What one attempt at writing the bundle needs.
struct Job {
    output: PathBuf,
    split: Option<u64>,
    key: Arc<SigningKey>,
    /// In a mutex only to cross into the writer thread (recipients are `Send`, not `Sync`).
    encryption: Arc<Mutex<Encryption>>,
    header: Arc<Header>,
    plan: Arc<Plan>,
    cache: BlobCache,
    registry: Registry,
    ollama: OllamaRegistry,
    jobs: usize,
}

/// Writes the bundle while fetching `missing`: layers stream through pipes into the writer,
/// model blobs go through the cache. Returns what was written and the bytes fetched.
async fn write_and_fetch(
    job: &Job,
    stores: Arc<Stores>,
    missing: Vec<PlannedBlob>,
    progress: &Progress,
) -> Result<(Written, u64), PackError> {
    let mut readers = HashMap::new();
    let mut fetches = Vec::new();
    let mut cached = Vec::new();
    for b in missing {
        if matches!(b.from, BlobSource::Image(_)) {
            let (w, r) = pipe(PIPE_BOUND);
            readers.insert(b.digest, r);
            fetches.push((b, Some(w)));
        } else {
            cached.push(b.digest);
            fetches.push((b, None));
        }
    }
    let ready = Arc::new(Ready::new(cached.into_iter()));
    // The writer's counter sees the tar framing too: its total is the whole plaintext.
    let write_bar = progress.bytes(
        airlock_bundle::writer::plaintext_size(&job.header, &job.key),
        "write",
    );
    let writer = {
        let (bar, ready, plan, cache, header) = (
            write_bar.clone(),
            ready.clone(),
            job.plan.clone(),
            job.cache.clone(),
            job.header.clone(),
        );
        let (output, key, encryption, split) = (
            job.output.clone(),
            job.key.clone(),
            job.encryption.clone(),
            job.split,
        );
        tokio::task::spawn_blocking(move || {
            let encryption = encryption.lock().unwrap_or_else(|p| p.into_inner());
            write_file(
                &Output {
                    path: &output,
                    split,
                    key: &key,
                    encryption: &encryption,
                },
                &header,
                &write::Sources {
                    plan: &plan,
                    cache: &cache,
                    ready: &ready,
                    stores: &stores,
                    pipes: Mutex::new(readers),
                },
                &|n| bar.inc(n),
            )
        })
    };
    let downloaded = download(
        fetches,
        &job.registry,
        &job.ollama,
        &job.cache,
        job.jobs,
        progress,
        &ready,
    )
    .await;
    let written = writer.await.map_err(|source| PackError::WorkerFailed {
        what: "writer",
        source,
    })?;
    progress.remove(&write_bar);
    match (downloaded, written) {
        // The writer stopped first: its error says why.
        (Err(PackError::WriterStopped), Err(w)) => Err(w),
        // A failed download explains a failed write better than the writer's own error.
        (Err(d), _) => Err(d),
        (Ok(_), Err(w)) => Err(w),
        (Ok(n), Ok(w)) => Ok((w, n)),
    }
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
