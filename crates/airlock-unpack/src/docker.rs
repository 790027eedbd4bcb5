//! `load`: images from a bundle into the Docker engine at `DOCKER_HOST`, in one pass.
//!
//! The bundle is read, verified and re-framed on the fly into the hybrid archive
//! `POST /images/load` takes (blobs, then `oci-layout`, `index.json` and a docker
//! `manifest.json`), streamed to the engine with no temp copy on our side. The three
//! documents that make the archive loadable are written only after the last digest of the
//! bundle checked; on any failure the upload is aborted mid-body, so the engine has nothing
//! it could load. Afterwards every tag is checked to point at the expected image ID.
//!
//! Before a byte is sent, the engine pre-flight ([`crate::engine`]) must find every image
//! loadable (else exit 13, nothing sent). If the engine still refuses (an error in its load
//! stream, or a tag not at the expected ID afterwards), the load is rolled back
//! ([`Rollback`]): tags it created are removed, tags it moved point back, images it added
//! are removed, so the engine's images and tags are as before. The error names the image
//! the engine was loading (the first of the archive's, in order, it did not report loaded).

use std::collections::HashSet;
use std::io::{self, Read, Write};

use airlock_bundle::header::{Entry, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::text::escape;
use airlock_bundle::{BundleError, Digest};
use airlock_progress::Progress;
use bollard::query_parameters::{
    ImportImageOptions, ListImagesOptions, RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::archive::{repo_tag, Archive};
use crate::engine::{EngineFacts, Problem};
use crate::open::{open_bundle, Access};
use crate::policy::{Cleared, LoadGuard};
use crate::restore::{
    commit, RestoreOptions, RestoredFile, RestoredModel, Sink, SinkSpec, Staging, Tee,
};
use crate::UnpackError;

const CHUNK: usize = 1 << 20;

/// One image as it ended up in the engine.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedImage {
    pub reference: String,
    pub platform: String,
    pub id: String,
    pub config: Digest,
    pub manifest: Digest,
    /// The engine already had it under this tag; nothing was sent.
    pub already_present: bool,
}

#[derive(Debug)]
pub struct LoadReport {
    pub verified: Verified,
    pub images: Vec<LoadedImage>,
    pub models: Vec<RestoredModel>,
    pub files: Vec<RestoredFile>,
    pub engine: String,
    /// What the policy and anti-rollback let through (and `--no-files` skipped).
    pub cleared: Cleared,
}

/// Sends the archive to the upload in 1 MiB chunks.
struct ChanWriter {
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    buf: BytesMut,
}

impl ChanWriter {
    fn send(&mut self, item: Result<Bytes, io::Error>) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        tx.blocking_send(item).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker engine closed the upload",
            )
        })
    }

    fn push(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Ok(chunk))?;
        }
        Ok(())
    }

    /// Ends the body cleanly (only after everything verified).
    fn close(&mut self) -> io::Result<()> {
        self.push()?;
        self.tx = None;
        Ok(())
    }

    /// A writer with no upload behind it (a placeholder until the header is decided).
    fn closed() -> Self {
        ChanWriter {
            tx: None,
            buf: BytesMut::new(),
        }
    }

    /// Ends the body with an error: the HTTP request is aborted mid-body.
    fn abort(&mut self, why: String) {
        self.buf.clear();
        let _ = self.send(Err(io::Error::other(why)));
        self.tx = None;
    }
}

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.push()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the main thread decided once it saw the header: which images go to the engine and
/// where model and file blobs are written while streaming.
struct Route {
    images: Vec<ImageRecord>,
    sinks: std::collections::HashMap<Digest, Vec<SinkSpec>>,
}

struct LoadVisitor {
    archive: Archive<ChanWriter>,
    sinks: std::collections::HashMap<Digest, Vec<SinkSpec>>,
    header_tx: Option<std::sync::mpsc::Sender<Verified>>,
    route_rx: std::sync::mpsc::Receiver<Result<Route, String>>,
}

/// Picks, per reference, the image for `platform`.
pub fn select_images(images: &[ImageRecord], platform: &Platform) -> Vec<ImageRecord> {
    let mut seen = HashSet::new();
    images
        .iter()
        .filter(|i| platform.matches(&i.platform.to_oci()))
        .filter(|i| seen.insert(i.reference.clone()))
        .cloned()
        .collect()
}

/// No image of the bundle is for `platform`: asked with `--platform`, a usage error; the
/// engine's own platform, the engine cannot load the bundle (exit 13).
fn no_platform_error(
    facts: &EngineFacts,
    header: &airlock_bundle::Header,
    platform: &Platform,
    explicit: bool,
) -> UnpackError {
    let have: Vec<String> = header
        .images
        .iter()
        .map(|i| i.platform.to_string())
        .collect();
    if explicit {
        return UnpackError::Usage(format!(
            "the bundle has no image for --platform {platform} (it has: {})",
            have.join(", ")
        ));
    }
    let problems = crate::engine::problems(&crate::engine::judge(facts, header, platform));
    UnpackError::EngineCannot {
        engine: facts.describe(),
        remedies: crate::engine::remedies(&problems, platform),
        problems,
    }
}

impl Visitor for LoadVisitor {
    fn header(&mut self, v: &Verified) -> Result<bool, BundleError> {
        // The main thread decides (engine platform, what is already present, conflicts)
        // while this thread waits; nothing past the header is read before that.
        if let Some(tx) = self.header_tx.take() {
            let _ = tx.send(v.clone());
        }
        let route = match self.route_rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(m)) => return Err(BundleError::Usage(m)),
            Err(_) => return Err(BundleError::Usage("load cancelled".into())),
        };
        let out = std::mem::replace(self.archive.out(), ChanWriter::closed());
        self.archive = Archive::new(out, &v.header, route.images);
        self.sinks = route.sinks;
        Ok(true)
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if !entry.path.starts_with("blobs/") {
            return Ok(());
        }
        let to_engine = self.archive.wants(&entry.digest);
        let files = self.sinks.get(&entry.digest).cloned().unwrap_or_default();
        if !to_engine && files.is_empty() {
            return Ok(());
        }
        let mut outs: Vec<Sink> = Vec::new();
        for spec in &files {
            outs.push(Sink::open(spec, entry.size)?);
        }
        if to_engine {
            self.archive.begin_entry(entry)?;
        }
        let mut tee = Tee {
            out: to_engine.then_some(self.archive.out()),
            files: outs,
        };
        airlock_bundle::hashing::copy_large(data, &mut tee)?;
        for f in tee.files {
            f.finish()?;
        }
        if to_engine {
            self.archive.end_entry(entry)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        if self.archive.images().is_empty() {
            return Ok(());
        }
        let err = |e: io::Error| BundleError::Output {
            entry: "manifest.json".into(),
            source: e,
        };
        self.archive.finish().map_err(err)?;
        self.archive.out().close().map_err(err)
    }
}

/// What `load` checks and does beyond verifying: `--no-preflight` turns the engine
/// pre-flight off (an engine refusal is then rolled back, as always).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub preflight: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { preflight: true }
    }
}

/// Loads the bundle at `path`: images into the engine, models and files into their host
/// directories and volumes. Nothing becomes visible unless all of it verified, and nothing
/// is written or sent unless `guard` (the host's policy, anti-rollback) let the verified
/// header through and the engine pre-flight found every image loadable; a successful load
/// is recorded in `guard`'s state. If the engine refuses what it was sent, what the load
/// changed in the engine is undone ([`Rollback`]).
pub fn load(
    path: &std::path::Path,
    access: &Access,
    platform: Option<Platform>,
    engine_opts: EngineOptions,
    restore: &RestoreOptions,
    guard: &mut LoadGuard,
    progress: &Progress,
) -> Result<LoadReport, UnpackError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UnpackError::Environment(format!("async runtime: {e}")))?;

    let (input, bar, on_disk) = open_bundle(path, access, progress, "load")?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    let (header_tx, header_rx) = std::sync::mpsc::channel();
    let (route_tx, route_rx) = std::sync::mpsc::channel();
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };

    let mut staging = Staging::default();
    let mut engine_info: Option<(Docker, EngineFacts)> = None;
    let mut all_selected: Vec<ImageRecord> = Vec::new();
    let mut sending: Vec<ImageRecord> = Vec::new();
    let mut before: Option<Before> = None;
    let mut cleared: Option<Cleared> = None;
    let mut header: Option<airlock_bundle::Header> = None;
    let checker: &LoadGuard = guard;
    let (produced, uploaded) = std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let out = ChanWriter {
                tx: Some(tx),
                buf: BytesMut::with_capacity(CHUNK),
            };
            let mut v = LoadVisitor {
                archive: Archive::empty(out),
                sinks: Default::default(),
                header_tx: Some(header_tx),
                route_rx,
            };
            let r = read_bundle(input, &opts, &mut v);
            if let Err(e) = &r {
                v.archive.out().abort(e.to_string());
            }
            r.map(|verified| (verified, v.archive.images().to_vec()))
        });
        // Nothing is decided, and nothing sent to the engine, until the header verified.
        let Ok(verified) = header_rx.recv() else {
            return (
                producer
                    .join()
                    .expect("bundle reader panicked")
                    .map_err(UnpackError::from),
                Ok(None),
            );
        };
        header = Some(verified.header.clone());
        let decided = rt.block_on(decide(
            &verified,
            platform.clone(),
            engine_opts,
            restore,
            checker,
        ));
        let route = match decided {
            Ok(d) => {
                staging = d.staging;
                engine_info = d.engine;
                all_selected = d.selected;
                before = d.before;
                cleared = Some(d.cleared);
                sending = d.route.images.clone();
                d.route
            }
            Err(e) => {
                let _ = route_tx.send(Err(e.to_string()));
                let _ = producer.join();
                return (Err(e), Ok(None));
            }
        };
        let to_engine = !route.images.is_empty();
        let _ = route_tx.send(Ok(route));
        let uploaded = match (&engine_info, to_engine) {
            (Some((docker, _)), true) => rt.block_on(upload(docker, rx)).map(Some),
            _ => {
                drop(rx);
                Ok(None)
            }
        };
        (
            producer
                .join()
                .expect("bundle reader panicked")
                .map_err(UnpackError::from),
            uploaded,
        )
    });
    progress.remove(&bar);
    let docker = engine_info.as_ref().map(|(d, _)| d);
    // Whatever the engine took of a load that failed is undone; with nothing sent, there
    // is nothing to undo (and no engine call is made).
    let undo = || -> Option<Rollback> {
        let (docker, _) = engine_info.as_ref()?;
        Some(rt.block_on(rollback(docker, before.as_ref()?, &sending)))
    };
    // After the load, or its rollback: the hold names go (see `Before`).
    let release = || {
        if let (Some((docker, _)), Some(b)) = (engine_info.as_ref(), before.as_ref()) {
            rt.block_on(b.release(docker));
        }
    };
    let refused_error = |refused: Refused, rollback: Option<Rollback>| match (&engine_info, &header)
    {
        (Some((_, facts)), Some(h)) => {
            refusal(facts, h, &sending, refused, rollback.unwrap_or_default())
        }
        _ => UnpackError::Engine(escape(&refused.said)),
    };
    // A verification failure explains an aborted upload better than the engine's error.
    let (verified, selected) = match (produced, uploaded) {
        (Ok(p), Ok(messages)) => {
            for m in messages.unwrap_or_default() {
                progress.say(format!("engine: {}", escape(&m)));
            }
            p
        }
        (Err(e), _) => {
            // The archive never got its documents, so the engine should have nothing to
            // undo; should it have kept anything, it is undone and said.
            if let Some(rb) = undo().filter(|rb| !rb.is_empty()) {
                progress.say(format!("engine: {}", rb.describe()));
            }
            release();
            rt.block_on(staging.release());
            staging.abort();
            return Err(on_disk.explain(e, progress));
        }
        (Ok(_), Err(refused)) => {
            let e = refused_error(refused, undo());
            release();
            rt.block_on(staging.release());
            staging.abort();
            return Err(e);
        }
    };

    let mut images = Vec::new();
    let checked = rt.block_on(async {
        if let Some(docker) = docker {
            images = check_tags(docker, &all_selected, &selected).await?;
        }
        Ok::<_, Refused>(())
    });
    if let Err(refused) = checked {
        let e = refused_error(refused, undo());
        release();
        rt.block_on(staging.release());
        staging.abort();
        return Err(e);
    }
    let committed = rt.block_on(commit(&mut staging, docker, progress));
    let (models, files) = match committed {
        Ok(v) => v,
        Err(e) => {
            // The images went in, but the models or files beside them could not be placed:
            // a load is all or nothing, so the images it added are undone too.
            if let Some(rb) = undo().filter(|rb| !rb.is_empty()) {
                progress.say(format!("engine: {}", rb.describe()));
            }
            release();
            rt.block_on(staging.release());
            staging.abort();
            return Err(e);
        }
    };
    release();
    guard.record(&verified).map_err(|e| {
        UnpackError::Environment(format!(
            "everything was loaded, but recording it for anti-rollback failed, so an older bundle of this name would not be refused until a later load is recorded: {e}"
        ))
    })?;
    Ok(LoadReport {
        verified,
        images,
        models,
        files,
        engine: engine_info.map(|(_, f)| f.describe()).unwrap_or_default(),
        cleared: cleared.expect("decided before anything was loaded"),
    })
}

/// Decides, from the verified header: first whether this host's policy and anti-rollback
/// allow it at all (before the engine is contacted or anything is written), then the engine
/// (only if images or volumes need it), the images to load (those already in the engine
/// under the right ID are skipped), whether the engine can load them (the pre-flight), and
/// where model and file blobs go.
async fn decide(
    v: &Verified,
    platform: Option<Platform>,
    engine_opts: EngineOptions,
    restore: &RestoreOptions,
    guard: &LoadGuard,
) -> Result<Decision, UnpackError> {
    let cleared = guard.check(v, restore.models_to.as_ref())?;
    // --no-files: restoring sees a header without [[files]]; their blobs are still read and
    // verified with the rest, and written nowhere.
    let without_files;
    let restored: &airlock_bundle::Header = if guard.no_files {
        without_files = airlock_bundle::Header {
            files: Vec::new(),
            ..v.header.clone()
        };
        &without_files
    } else {
        &v.header
    };
    let h = &v.header;
    let mut engine_info = None;
    if !h.images.is_empty() || crate::restore::wants_engine(restored, restore) {
        let docker = crate::engine::connect().await?;
        let facts = crate::engine::facts(&docker).await?;
        engine_info = Some((docker, facts));
    }
    let mut images = Vec::new();
    let mut all = Vec::new();
    let mut before_tags = None;
    if let Some((docker, facts)) = &engine_info {
        let explicit = platform.is_some();
        let platform = platform.unwrap_or_else(|| facts.platform());
        all = select_images(&h.images, &platform);
        if all.is_empty() && !h.images.is_empty() {
            return Err(no_platform_error(facts, h, &platform, explicit));
        }
        let mut tags = Vec::new();
        for i in &all {
            let (present, tag) = tagged_as(docker, i).await;
            if !present {
                images.push(i.clone());
                if let Some(t) = tag {
                    tags.push(t);
                }
            }
        }
        if engine_opts.preflight {
            let problems: Vec<Problem> =
                crate::engine::problems(&crate::engine::judge(facts, h, &platform))
                    .into_iter()
                    .filter(|p| {
                        p.remedy == crate::engine::Remedy::Platform
                            || images.iter().any(|i| {
                                i.reference == p.image && i.platform.to_string() == p.platform
                            })
                    })
                    .collect();
            if !problems.is_empty() {
                let remedies = crate::engine::remedies(&problems, &platform);
                return Err(UnpackError::EngineCannot {
                    engine: facts.describe(),
                    problems,
                    remedies,
                });
            }
        }
        if !images.is_empty() {
            before_tags = Some((tags, facts.containerd_store));
        }
    }
    let docker = engine_info.as_ref().map(|(d, _)| d);
    let mut staging = crate::restore::prepare(restored, restore, docker).await?;
    // A delta bundle: what it left out must be here before anything is loaded.
    let mut missing = match docker {
        Some(d) => missing_layers(d, h, &images).await?,
        None => Vec::new(),
    };
    missing.append(&mut staging.missing);
    if !missing.is_empty() {
        staging.release().await;
        staging.abort();
        return Err(UnpackError::NotPresent(missing));
    }
    // Last, so that no refusal above leaves a hold behind.
    let before = match (docker, before_tags) {
        (Some(d), Some((tags, hold))) => match Before::take(d, tags, hold).await {
            Ok(b) => Some(b),
            Err(e) => {
                staging.release().await;
                staging.abort();
                return Err(e);
            }
        },
        _ => None,
    };
    let sinks = staging.sinks.clone();
    Ok(Decision {
        route: Route { images, sinks },
        staging,
        engine: engine_info,
        selected: all,
        before,
        cleared,
    })
}

/// The layers a delta bundle left out for `loading` whose chain ID the engine lacks.
async fn missing_layers(
    docker: &Docker,
    h: &airlock_bundle::Header,
    loading: &[ImageRecord],
) -> Result<Vec<String>, UnpackError> {
    let wanted: Vec<_> = h
        .expected_present
        .iter()
        .filter_map(|p| p.chain_id.map(|c| (p, c)))
        .filter(|(p, _)| loading.iter().any(|i| i.layers.contains(&p.digest)))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let have: HashSet<Digest> = crate::inventory::engine_images(docker)
        .await?
        .iter()
        .flat_map(|i| airlock_bundle::inventory::chain_ids(&i.diff_ids))
        .collect();
    Ok(wanted
        .into_iter()
        .filter(|(_, c)| !have.contains(c))
        .map(|(p, c)| {
            let users: Vec<&str> = loading
                .iter()
                .filter(|i| i.layers.contains(&p.digest))
                .map(|i| i.reference.as_str())
                .collect();
            format!(
                "image layer {} ({} bytes, chain ID {c}) of {}, in the Docker engine",
                p.digest,
                p.size,
                users.join(", ")
            )
        })
        .collect())
}

/// What [`decide`] settled once the header verified.
struct Decision {
    /// For the bundle reader: images to send, where blobs go.
    route: Route,
    staging: Staging,
    /// The engine and its facts, when images or volumes needed it.
    engine: Option<(Docker, EngineFacts)>,
    /// Every image for the engine's platform, loaded now or already there.
    selected: Vec<ImageRecord>,
    /// The engine's images and the tags about to be loaded, for a rollback.
    before: Option<Before>,
    cleared: Cleared,
}

/// An engine's image ID is the config digest (classic store) or the manifest digest
/// (containerd store).
fn is_image(id: &str, i: &ImageRecord) -> bool {
    id == i.config.to_string() || id == i.manifest.to_string()
}

/// Whether the image's tag already names this exact image (loading it again would change
/// nothing), and otherwise its tag with the image ID it names now, if any.
async fn tagged_as(docker: &Docker, i: &ImageRecord) -> (bool, Option<(String, Option<String>)>) {
    let Some(name) = repo_tag(&i.reference) else {
        return (false, None);
    };
    let id = docker
        .inspect_image(&name)
        .await
        .ok()
        .and_then(|inspect| inspect.id);
    match id {
        Some(id) if is_image(&id, i) => (true, None),
        id => (false, Some((name, id))),
    }
}

/// The engine before a load: the image each tag being loaded named (or none), and every
/// image ID it had. What a failed load changed is undone against this.
///
/// On the containerd image store an image is its name: when a load moves a tag, the image
/// it named is gone, and with it the snapshots only it held. A delta that relies on those
/// (its left-out layers under the old image's chain) then fails inside the engine ("parent
/// snapshot does not exist"), and a rollback has nothing to point the tag back at. So there,
/// each image a moved tag names is held by a name of its own for the length of the load
/// (`airlock-hold-RANDOM:N`), removed by [`Before::release`].
#[derive(Debug)]
struct Before {
    tags: Vec<(String, Option<String>)>,
    ids: HashSet<String>,
    holds: Vec<String>,
}

impl Before {
    async fn take(
        docker: &Docker,
        tags: Vec<(String, Option<String>)>,
        hold: bool,
    ) -> Result<Before, UnpackError> {
        let mut before = Before {
            tags,
            ids: image_ids(docker).await?,
            holds: Vec::new(),
        };
        if hold {
            // Repository names are lowercase alphanumerics (and separators, not at the ends).
            let token: String = crate::hostfs::random_token()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let repo = format!("airlock-hold-{token}");
            for (n, (_, prev)) in before.tags.iter().enumerate() {
                let Some(prev) = prev else { continue };
                let opts = TagImageOptions {
                    repo: Some(repo.clone()),
                    tag: Some(n.to_string()),
                };
                if let Err(e) = docker.tag_image(prev, Some(opts)).await {
                    before.release(docker).await;
                    return Err(UnpackError::Engine(format!(
                        "holding image {prev} for the length of the load: {e}"
                    )));
                }
                before.holds.push(format!("{repo}:{n}"));
            }
        }
        Ok(before)
    }

    /// Removes the hold names; the images keep whatever other names they have (an image a
    /// moved tag no longer names goes, as it would have without the hold).
    async fn release(&self, docker: &Docker) {
        for h in &self.holds {
            let opts = RemoveImageOptions {
                noprune: true,
                ..Default::default()
            };
            let _ = docker.remove_image(h, Some(opts), None).await;
        }
    }
}

async fn image_ids(docker: &Docker) -> Result<HashSet<String>, UnpackError> {
    let list = docker
        .list_images(Some(ListImagesOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(|e| UnpackError::Engine(format!("listing the engine's images: {e}")))?;
    Ok(list.into_iter().map(|i| i.id).collect())
}

/// What undoing a failed load did in the engine (recorded in the load report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollback {
    /// Tags this load created, removed again.
    pub untagged: Vec<String>,
    /// Tags this load moved, pointed back at the image they named before.
    pub repointed: Vec<Repointed>,
    /// Images this load added, removed.
    pub removed: Vec<String>,
    /// What could not be undone, and why.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Repointed {
    pub tag: String,
    pub from: Option<String>,
    pub to: String,
}

impl Rollback {
    fn is_empty(&self) -> bool {
        self.untagged.is_empty()
            && self.repointed.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }

    /// One sentence: what was undone, and whether the engine is as before.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing of it stayed in the engine (nothing to roll back)".into();
        }
        let mut done = Vec::new();
        if !self.removed.is_empty() {
            done.push(format!("removed image {}", self.removed.join(", ")));
        }
        if !self.untagged.is_empty() {
            done.push(format!(
                "removed tag {}",
                self.untagged
                    .iter()
                    .map(|t| escape(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for r in &self.repointed {
            done.push(format!("pointed {} back at {}", escape(&r.tag), r.to));
        }
        let mut s = format!("rolled back: {}", done.join("; "));
        if self.failed.is_empty() {
            s.push_str("; the engine's images and tags are as before this load");
        } else {
            s.push_str(&format!(
                "; NOT undone: {}",
                self.failed
                    .iter()
                    .map(|t| escape(t))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        s
    }
}

/// Undoes what a failed load changed in the engine: tags it created are removed, tags it
/// moved point back at their previous image, and images it added are removed. Only images
/// of this load (`sent`: their config or manifest digest) that were not in the engine before
/// are removed, so another client's concurrent work is never touched.
async fn rollback(docker: &Docker, before: &Before, sent: &[ImageRecord]) -> Rollback {
    let mut rb = Rollback::default();
    // What this load added, listed before any tag is touched: removing an image's last tag
    // removes the image.
    let mut added: Vec<String> = match image_ids(docker).await {
        Ok(now) => now
            .into_iter()
            .filter(|id| !before.ids.contains(id) && sent.iter().any(|i| is_image(id, i)))
            .collect(),
        Err(e) => {
            rb.failed.push(format!("images this load added: {e}"));
            Vec::new()
        }
    };
    added.sort();
    for (tag, prev) in &before.tags {
        let now = docker.inspect_image(tag).await.ok();
        let now_id = now.as_ref().and_then(|i| i.id.clone());
        if now_id == *prev {
            continue;
        }
        match (prev, now_id) {
            (Some(prev), now_id) => {
                let (repo, t) = split_tag(tag);
                let opts = TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(t.to_string()),
                };
                match docker.tag_image(prev, Some(opts)).await {
                    Ok(()) => rb.repointed.push(Repointed {
                        tag: tag.clone(),
                        from: now_id,
                        to: prev.clone(),
                    }),
                    Err(e) => rb
                        .failed
                        .push(format!("pointing {tag} back at {prev}: {e}")),
                }
            }
            (None, Some(id)) => {
                let other_tags = now
                    .as_ref()
                    .and_then(|i| i.repo_tags.as_ref())
                    .is_some_and(|t| t.len() > 1);
                // Removing an image's only tag removes the image: right for one this load
                // added, wrong for one that was there (untagged) before.
                if before.ids.contains(&id) && !other_tags {
                    rb.failed.push(format!(
                        "tag {tag} stays on image {id}: it was in the engine before, untagged, and removing its only tag would remove it"
                    ));
                    continue;
                }
                let opts = RemoveImageOptions {
                    noprune: true,
                    ..Default::default()
                };
                match docker.remove_image(tag, Some(opts), None).await {
                    Ok(_) => rb.untagged.push(tag.clone()),
                    Err(e) => rb.failed.push(format!("removing tag {tag}: {e}")),
                }
            }
            (None, None) => {}
        }
    }
    let left = match image_ids(docker).await {
        Ok(left) => left,
        Err(e) => {
            rb.failed.push(format!("images this load added: {e}"));
            return rb;
        }
    };
    for id in added {
        if !left.contains(&id) {
            // Gone with its last tag.
            rb.removed.push(id);
            continue;
        }
        let opts = RemoveImageOptions {
            force: true,
            noprune: true,
            ..Default::default()
        };
        match docker.remove_image(&id, Some(opts), None).await {
            Ok(_) => rb.removed.push(id),
            Err(e) => rb.failed.push(format!("removing image {id}: {e}")),
        }
    }
    rb
}

/// `registry:5000/a/b:v1` → (`registry:5000/a/b`, `v1`).
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rfind(':') {
        Some(at) if !tag[at..].contains('/') => (&tag[..at], &tag[at + 1..]),
        _ => (tag, "latest"),
    }
}

/// The engine refused what it was sent (or its tags are not as loaded afterwards).
#[derive(Debug)]
struct Refused {
    /// What the engine streamed before it failed ("Loaded image: …").
    messages: Vec<String>,
    /// Its error, as it said it.
    said: String,
    /// The image at fault, when known without the archive order.
    image: Option<String>,
}

/// Streams the archive body to `POST /images/load` and collects the engine's messages.
async fn upload(
    docker: &Docker,
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> Result<Vec<String>, Refused> {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut responses = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut messages = Vec::new();
    while let Some(r) = responses.next().await {
        let info = match r {
            Ok(info) => info,
            Err(e) => {
                let said = match e {
                    bollard::errors::Error::DockerStreamError { error } => error,
                    e => e.to_string(),
                };
                return Err(Refused {
                    messages,
                    said,
                    image: None,
                });
            }
        };
        if let Some(s) = info.stream {
            let line = s.trim().to_string();
            if line.starts_with("Error") {
                return Err(Refused {
                    messages,
                    said: line,
                    image: None,
                });
            }
            if !line.is_empty() {
                messages.push(line);
            }
        }
    }
    Ok(messages)
}

/// The image a refused load failed at: the first, in archive order, the engine did not
/// report loaded.
fn failed_image<'a>(sent: &'a [ImageRecord], messages: &[String]) -> Option<&'a ImageRecord> {
    let reported: HashSet<&str> = messages
        .iter()
        .filter_map(|m| {
            m.strip_prefix("Loaded image ID: ")
                .or_else(|| m.strip_prefix("Loaded image: "))
        })
        .map(str::trim)
        .collect();
    sent.iter().find(|i| {
        let tag = repo_tag(&i.reference);
        !(tag.as_deref().is_some_and(|t| reported.contains(t))
            || reported.contains(i.config.to_string().as_str())
            || reported.contains(i.manifest.to_string().as_str()))
    })
}

/// The error for an engine refusal: which image, which layers the pre-flight would have
/// named (else all of the image's), that the bundle verified, and what the rollback did.
fn refusal(
    facts: &EngineFacts,
    header: &airlock_bundle::Header,
    sent: &[ImageRecord],
    refused: Refused,
    rollback: Rollback,
) -> UnpackError {
    let image = match &refused.image {
        Some(name) => sent
            .iter()
            .find(|i| repo_tag(&i.reference).as_deref() == Some(name.as_str())),
        None => failed_image(sent, &refused.messages),
    };
    let layers: Vec<String> = image
        .map(|i| match crate::engine::verdict(facts, i, header) {
            Err(problems) => problems
                .iter()
                .filter_map(|p| {
                    p.layer.map(|l| {
                        format!(
                            "layer {l}, media type {}",
                            escape(p.media_type.as_deref().unwrap_or("unknown"))
                        )
                    })
                })
                .collect(),
            Ok(()) => i
                .layers
                .iter()
                .map(|l| {
                    let mt = header
                        .entry(&l.blob_path())
                        .and_then(|e| e.media_type.as_deref())
                        .unwrap_or("unknown");
                    format!("layer {l}, media type {}", escape(mt))
                })
                .collect(),
        })
        .unwrap_or_default();
    UnpackError::EngineRefused {
        engine: facts.describe(),
        image: image
            .map(|i| i.reference.clone())
            .or(refused.image)
            .map(|r| escape(&r)),
        layers,
        said: escape(&refused.said),
        unreadable_layer: refused.said.contains("unexpected EOF")
            || refused.said.contains("Error processing tar file"),
        rollback: Box::new(rollback),
    }
}

/// Every image of the bundle for the engine's platform is in the engine under its tag, with
/// the expected ID (loaded now, or already there).
async fn check_tags(
    docker: &Docker,
    selected: &[ImageRecord],
    loaded_now: &[ImageRecord],
) -> Result<Vec<LoadedImage>, Refused> {
    let mut images = Vec::new();
    for i in selected {
        let name = repo_tag(&i.reference).unwrap_or_else(|| i.config.to_string());
        let refused = |said: String| Refused {
            messages: Vec::new(),
            said,
            image: Some(name.clone()),
        };
        let inspect = docker
            .inspect_image(&name)
            .await
            .map_err(|e| refused(format!("{name} is not in the engine after loading: {e}")))?;
        let id = inspect.id.unwrap_or_default();
        if !is_image(&id, i) {
            return Err(refused(format!(
                "{name}: the engine reports image ID {id}, expected {} (config) or {} (manifest)",
                i.config, i.manifest
            )));
        }
        images.push(LoadedImage {
            reference: i.reference.clone(),
            platform: i.platform.to_string(),
            id,
            config: i.config,
            manifest: i.manifest,
            already_present: !loaded_now.iter().any(|l| l.reference == i.reference),
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reference: &str, platform: &str) -> ImageRecord {
        ImageRecord {
            reference: reference.into(),
            platform: platform.parse().unwrap(),
            manifest: Digest::of(platform.as_bytes()),
            config: Digest::of(reference.as_bytes()),
            layers: vec![],
            index: None,
        }
    }

    #[test]
    fn selects_one_image_per_reference_for_the_platform() {
        let images = [
            record("r/a:1", "linux/amd64"),
            record("r/a:1", "linux/arm64/v8"),
            record("r/b:1", "linux/arm64/v8"),
        ];
        let amd: Vec<String> = select_images(&images, &"linux/amd64".parse().unwrap())
            .into_iter()
            .map(|i| format!("{} {}", i.reference, i.platform))
            .collect();
        assert_eq!(amd, ["r/a:1 linux/amd64"]);
        // No variant asked: any variant of the architecture will do.
        let arm = select_images(&images, &"linux/arm64".parse().unwrap());
        assert_eq!(arm.len(), 2);
        assert!(select_images(&images, &"linux/s390x".parse().unwrap()).is_empty());
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b:v1").as_deref(),
            Some("127.0.0.1:5000/a/b:v1")
        );
        assert_eq!(repo_tag(&format!("a/b@{}", Digest::of(b"x"))), None);
    }
}
