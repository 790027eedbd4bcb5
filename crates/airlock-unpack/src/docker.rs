//! `load`: images from a bundle into the Docker engine at `DOCKER_HOST`, in one pass.
//!
//! The bundle is read, verified and re-framed on the fly into the hybrid archive
//! `POST /images/load` takes (blobs, then `oci-layout`, `index.json` and a docker
//! `manifest.json`), streamed to the engine with no temp copy on our side. The three
//! documents that make the archive loadable are written only after the last digest of the
//! bundle checked; on any failure the upload is aborted mid-body, so the engine has nothing
//! it could load. Afterwards every tag is checked to point at the expected image ID.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::Duration;

use airlock_bundle::header::{Entry, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_bundle::progress::Progress;
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::{BundleError, Digest};
use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::archive::{repo_tag, Archive};
use crate::open::{open_bundle, Access};
use crate::policy::{Cleared, LoadGuard};
use crate::restore::{
    commit, RestoreOptions, RestoredFile, RestoredModel, Sink, SinkSpec, Staging,
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

fn engine_err(e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Engine(e.to_string())
}

/// Connects to the engine (honours `DOCKER_HOST`) with a timeout long enough for a large
/// upload: the engine answers only after it consumed the whole body.
pub async fn connect() -> Result<Docker, UnpackError> {
    let where_ =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| UnpackError::Engine(format!("cannot connect to {where_}: {e}")))?
        .with_timeout(Duration::from_secs(24 * 3600));
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| UnpackError::Engine(format!("cannot reach the engine at {where_}: {e}")))?;
    Ok(docker)
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

/// The engine's platform has no image in a bundle that carries images.
fn no_platform_error(images: &[ImageRecord], platform: &Platform) -> UnpackError {
    let have: Vec<String> = images.iter().map(|i| i.platform.to_string()).collect();
    UnpackError::Usage(format!(
        "the bundle has no image for the engine's platform {platform} (it has: {}); see --platform",
        have.join(", ")
    ))
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
            engine: to_engine.then_some(self.archive.out()),
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

/// Writes one entry's bytes to the engine upload and to temp files at once.
struct Tee<'a> {
    engine: Option<&'a mut ChanWriter>,
    files: Vec<Sink>,
}

impl Write for Tee<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.engine.as_mut() {
            e.write_all(b)?;
        }
        for f in &mut self.files {
            f.write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Loads the bundle at `path`: images into the engine, models and files into their host
/// directories and volumes. Nothing becomes visible unless all of it verified, and nothing
/// is written or sent unless `guard` (the host's policy, anti-rollback) let the verified
/// header through; a successful load is recorded in `guard`'s state.
pub fn load(
    path: &std::path::Path,
    access: &Access,
    platform: Option<Platform>,
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
    let mut engine_info: Option<(Docker, String)> = None;
    let mut all_selected: Vec<ImageRecord> = Vec::new();
    let mut cleared: Option<Cleared> = None;
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
        let decided = rt.block_on(decide(&verified, platform.clone(), restore, checker));
        let route = match decided {
            Ok(d) => {
                staging = d.staging;
                engine_info = d.engine;
                all_selected = d.selected;
                cleared = Some(d.cleared);
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
    // A verification failure explains an aborted upload better than the engine's error.
    let (verified, selected) = match produced.and_then(|p| uploaded.map(|u| (p, u))) {
        Ok((p, messages)) => {
            for m in messages.unwrap_or_default() {
                progress.say(format!("engine: {m}"));
            }
            p
        }
        Err(e) => {
            rt.block_on(staging.release());
            staging.abort();
            return Err(on_disk.explain(e, progress));
        }
    };

    let docker = engine_info.as_ref().map(|(d, _)| d);
    let mut images = Vec::new();
    let checked = rt.block_on(async {
        if let Some(docker) = docker {
            images = check_tags(docker, &all_selected, &selected).await?;
        }
        Ok::<_, UnpackError>(())
    });
    if let Err(e) = checked {
        staging.abort();
        return Err(e);
    }
    let committed = rt.block_on(commit(&mut staging, docker, progress));
    let (models, files) = match committed {
        Ok(v) => v,
        Err(e) => {
            rt.block_on(staging.release());
            staging.abort();
            return Err(e);
        }
    };
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
        engine: engine_info.map(|(_, e)| e).unwrap_or_default(),
        cleared: cleared.expect("decided before anything was loaded"),
    })
}

/// Decides, from the verified header: first whether this host's policy and anti-rollback
/// allow it at all (before the engine is contacted or anything is written), then the engine
/// (only if images or volumes need it), the images to load (those already in the engine
/// under the right ID are skipped), and where model and file blobs go.
async fn decide(
    v: &Verified,
    platform: Option<Platform>,
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
        let docker = connect().await?;
        let info = docker.info().await.map_err(engine_err)?;
        let desc = format!(
            "{} {} ({}, storage {})",
            info.operating_system.clone().unwrap_or_default(),
            info.server_version.clone().unwrap_or_default(),
            info.architecture.clone().unwrap_or_default(),
            info.driver.clone().unwrap_or_default()
        );
        let platform = platform.clone().unwrap_or_else(|| {
            Platform::from_engine(
                info.os_type.as_deref().unwrap_or("linux"),
                info.architecture.as_deref().unwrap_or("x86_64"),
            )
        });
        engine_info = Some((docker, desc, platform));
    }
    let mut images = Vec::new();
    let mut all = Vec::new();
    if let Some((docker, _, platform)) = &engine_info {
        all = select_images(&h.images, platform);
        if all.is_empty() && !h.images.is_empty() {
            return Err(no_platform_error(&h.images, platform));
        }
        for i in &all {
            if !already_loaded(docker, i).await {
                images.push(i.clone());
            }
        }
    }
    let docker = engine_info.as_ref().map(|(d, _, _)| d);
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
    let sinks = staging.sinks.clone();
    Ok(Decision {
        route: Route { images, sinks },
        staging,
        engine: engine_info.map(|(d, desc, _)| (d, desc)),
        selected: all,
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
    /// The engine and how to describe it, when images or volumes needed it.
    engine: Option<(Docker, String)>,
    /// Every image for the engine's platform, loaded now or already there.
    selected: Vec<ImageRecord>,
    cleared: Cleared,
}

/// An engine's image ID is the config digest (classic store) or the manifest digest
/// (containerd store).
fn is_image(id: &str, i: &ImageRecord) -> bool {
    id == i.config.to_string() || id == i.manifest.to_string()
}

/// The tag already names this exact image: loading it again would change nothing.
async fn already_loaded(docker: &Docker, i: &ImageRecord) -> bool {
    let Some(name) = repo_tag(&i.reference) else {
        return false;
    };
    match docker.inspect_image(&name).await {
        Ok(inspect) => is_image(&inspect.id.unwrap_or_default(), i),
        Err(_) => false,
    }
}

/// Streams the archive body to `POST /images/load` and collects the engine's messages.
async fn upload(
    docker: &Docker,
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> Result<Vec<String>, UnpackError> {
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
        let info = r.map_err(engine_err)?;
        if let Some(s) = info.stream {
            let line = s.trim().to_string();
            if line.starts_with("Error") {
                return Err(UnpackError::Engine(line));
            }
            if !line.is_empty() {
                messages.push(line);
            }
        }
    }
    Ok(messages)
}

/// Every image of the bundle for the engine's platform is in the engine under its tag, with
/// the expected ID (loaded now, or already there).
async fn check_tags(
    docker: &Docker,
    selected: &[ImageRecord],
    loaded_now: &[ImageRecord],
) -> Result<Vec<LoadedImage>, UnpackError> {
    let mut images = Vec::new();
    for i in selected {
        let name = repo_tag(&i.reference).unwrap_or_else(|| i.config.to_string());
        let inspect = docker.inspect_image(&name).await.map_err(|e| {
            UnpackError::Engine(format!("{name} is not in the engine after loading: {e}"))
        })?;
        let id = inspect.id.unwrap_or_default();
        if !is_image(&id, i) {
            return Err(UnpackError::Engine(format!(
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
