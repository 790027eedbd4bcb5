//! `push`: a bundle's images and Ollama models into an OCI registry inside the gap
//! (distribution, Harbor, zot), in one pass over the bundle. Behind the `push` feature: the
//! minimal build of `airlock-unpack` has no HTTP client at all.
//!
//! 1. The header verified: every target repository is asked (HEAD, concurrently) which
//!    blobs it has and what its tags point to. A tag that already names the exact manifest
//!    is left alone ("unchanged"); a blob a repository has is not sent again. A blob one
//!    target repository has and another lacks is mounted across (`?mount=&from=`).
//! 2. The bundle streams: each blob still missing is uploaded while it is read (POST for a
//!    session, one monolithic PUT with a Content-Length, the body fed from the reader thread
//!    through a bounded channel), never held in memory. A blob several repositories need is
//!    uploaded once and mounted into the others; where the registry refuses the mount, it
//!    is copied across from the repository that has it (GET streamed into an upload). The
//!    registry checks each digest (`?digest=`).
//! 3. Only once the reader has checked every digest and the end of the archive are the
//!    manifests PUT, i.e. the tags become visible: a corrupt, truncated or tampered bundle
//!    pushes no tag at all.
//!
//! An image the bundle carries for several platforms (it came from a multi-platform index,
//! `ImageRecord::index`) is pushed as a new image index listing the carried platform
//! manifests (the source index itself is not in the bundle, so its digest differs when
//! platforms or attestations were left out); an image with one platform is pushed as its
//! platform manifest under the tag. Models are pushed as what they are, a docker v2
//! manifest with Ollama layers, so `ollama pull HOST/NAMESPACE/MODEL:TAG` works against
//! the registry.

pub mod auth;
pub mod client;
pub mod naming;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::sync::Arc;

use airlock_bundle::header::{Entry, Header};
use airlock_bundle::oci::{self, Descriptor};
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::{BundleError, Digest};
use airlock_progress::Progress;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::open::{open_bundle, Access};
use crate::UnpackError;
use client::Client;
use naming::Destination;

/// Bytes per chunk handed from the reader thread to an upload.
const CHUNK: usize = 1 << 20;
/// Chunks buffered per upload: bounds memory while the HTTP side catches up.
const CHANNEL: usize = 4;
/// Uploads in flight at once (the reader streams one blob at a time; the others are
/// finishing their PUT, the registry's own hashing and moving, or mounts).
const IN_FLIGHT: usize = 4;
/// HEAD requests in flight while planning.
const HEADS: usize = 8;
/// A manifest larger than this is not a manifest (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `host[:port]`, the only host contacted.
    pub registry: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// `--prefix`, validated (see [`naming::normalize_prefix`]).
    pub prefix: String,
    /// `--token-realm`: a token service on another origin that may get the registry's
    /// credentials (see [`client::Client::new`]).
    pub token_realm: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The tag now points at the bundle's manifest.
    Pushed,
    /// The tag already pointed at it; nothing was sent.
    Unchanged,
}

/// One image or model as it ended up in the registry.
#[derive(Debug, Clone, Serialize)]
pub struct PushedItem {
    /// The reference or model name in the bundle.
    pub source: String,
    /// Where it is now: `HOST:PORT/repo:tag` (or `@digest` when the bundle pinned it by
    /// digest only).
    pub reference: String,
    pub repository: String,
    pub tag: Option<String>,
    /// What the tag points to: the manifest, or the index built for several platforms.
    pub manifest: Digest,
    /// Platforms pushed (images only), with their manifest digests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformManifest>,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformManifest {
    pub platform: String,
    pub manifest: Digest,
}

/// What `push` did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub registry: String,
    pub header_digest: Digest,
    pub signer: Option<String>,
    pub signature_verified: bool,
    pub images: Vec<PushedItem>,
    pub models: Vec<PushedItem>,
    /// Distinct (repository, blob) pairs by what happened to them.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub tool: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Present,
    Mounted,
    Uploaded,
}

/// One tag (or digest) to make visible at the end.
#[derive(Debug, Clone)]
struct Item {
    model: bool,
    source: String,
    dest: Destination,
    /// What the tag points to.
    top: Digest,
    /// The index built for several platforms (bytes and media type); `None` when `top` is
    /// a manifest carried in the bundle.
    index: Option<(Bytes, &'static str)>,
    /// Manifests carried in the bundle, PUT by digest before `top` (when an index) or as
    /// `top` itself.
    manifests: Vec<Digest>,
    platforms: Vec<PlatformManifest>,
    /// Config and layers.
    blobs: Vec<Digest>,
    unchanged: bool,
}

/// What the reader thread needs to know once planning is done.
#[derive(Debug, Default)]
struct Streaming {
    /// Blobs to upload while streaming: into which repositories (all at once), then mounted
    /// into which from the first.
    blobs: HashMap<Digest, BlobPlan>,
    /// Manifests to keep (small) for the final PUTs.
    capture: HashSet<Digest>,
}

#[derive(Debug, Clone, Default)]
struct BlobPlan {
    upload_to: Vec<String>,
    mount_into: Vec<String>,
}

/// What happened to one streamed blob.
#[derive(Debug)]
struct BlobDone {
    digest: Digest,
    uploaded: Vec<String>,
    mounted: Vec<String>,
}

type Upload = tokio::task::JoinHandle<Result<BlobDone, UnpackError>>;

/// (repository, blob) → what happened or will happen to it.
type Actions = HashMap<(String, Digest), Action>;

struct PushVisitor {
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    slots: Arc<Semaphore>,
    header_tx: Option<std::sync::mpsc::Sender<Verified>>,
    plan_rx: std::sync::mpsc::Receiver<Result<Streaming, String>>,
    plan: Streaming,
    uploads: Vec<Upload>,
    captured: HashMap<Digest, Bytes>,
}

impl Visitor for PushVisitor {
    fn header(&mut self, v: &Verified) -> Result<bool, BundleError> {
        // The main thread asks the registry what it has while this thread waits; nothing
        // past the header is read before that.
        if let Some(tx) = self.header_tx.take() {
            let _ = tx.send(v.clone());
        }
        match self.plan_rx.recv() {
            Ok(Ok(p)) => self.plan = p,
            Ok(Err(m)) => return Err(BundleError::Usage(m)),
            Err(_) => return Err(BundleError::Usage("push cancelled".into())),
        }
        Ok(true)
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if self.plan.capture.contains(&entry.digest) {
            if entry.size > MAX_MANIFEST {
                return Err(io::Error::other(format!(
                    "manifest {} is {} bytes, more than {MAX_MANIFEST}",
                    entry.digest, entry.size
                )));
            }
            let mut buf = Vec::with_capacity(entry.size as usize);
            data.read_to_end(&mut buf)?;
            // Kept, not used: the reader checks the digest after this returns, and the PUTs
            // happen only once the whole bundle verified.
            self.captured.insert(entry.digest, buf.into());
            return Ok(());
        }
        let Some(plan) = self.plan.blobs.get(&entry.digest).cloned() else {
            return Ok(());
        };
        let permit = self
            .handle
            .block_on(self.slots.clone().acquire_owned())
            .map_err(io::Error::other)?;
        let mut senders = Vec::new();
        let mut bodies = Vec::new();
        for _ in &plan.upload_to {
            let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL);
            senders.push(tx);
            bodies.push(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )));
        }
        let client = self.client.clone();
        let (digest, size) = (entry.digest, entry.size);
        self.uploads.push(self.handle.spawn(async move {
            let _permit = permit;
            upload_blob(&client, digest, size, plan, bodies).await
        }));
        let sent = stream_into(data, entry.size, &senders);
        if let Err(e) = &sent {
            // Abort the PUT mid-body: the registry discards the session.
            for tx in &senders {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
        sent
    }
}

/// Reads an entry in 1 MiB chunks and hands each to every upload.
fn stream_into(
    data: &mut dyn Read,
    size: u64,
    senders: &[mpsc::Sender<Result<Bytes, io::Error>>],
) -> io::Result<()> {
    let mut left = size;
    let mut buf = BytesMut::new();
    while left > 0 {
        let want = CHUNK.min(left as usize);
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match data.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            // The reader reports the truncation itself.
            return Ok(());
        }
        buf.truncate(filled);
        let chunk = buf.split().freeze();
        left -= filled as u64;
        for tx in senders {
            tx.blocking_send(Ok(chunk.clone())).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the registry upload stopped")
            })?;
        }
    }
    Ok(())
}

/// Uploads one blob into every repository of `plan.upload_to` at once, then mounts it
/// into the rest from the first.
async fn upload_blob(
    client: &Client,
    digest: Digest,
    size: u64,
    plan: BlobPlan,
    bodies: Vec<reqwest::Body>,
) -> Result<BlobDone, UnpackError> {
    let uploads = plan
        .upload_to
        .iter()
        .zip(bodies)
        .map(|(repo, body)| client.upload(repo, &digest, size, body));
    for r in futures::future::join_all(uploads).await {
        r?;
    }
    let mut done = BlobDone {
        digest,
        uploaded: plan.upload_to.clone(),
        mounted: Vec::new(),
    };
    let from = &plan.upload_to[0];
    for repo in &plan.mount_into {
        if client.mount(repo, from, &digest).await? {
            done.mounted.push(repo.clone());
        } else {
            // Mount refused (202: the session it opened is cancelled). The bundle's bytes
            // have streamed by, but the registry has them: copy them across.
            client.copy_blob(repo, from, &digest, size).await?;
            done.uploaded.push(repo.clone());
        }
    }
    Ok(done)
}

/// Everything planned from the header, before any blob is read.
struct Plan {
    items: Vec<Item>,
    streaming: Streaming,
    actions: Actions,
}

/// The media type of a manifest carried in the bundle: the header's, else the manifest's.
fn manifest_media_type(h: &Header, d: &Digest, bytes: Option<&[u8]>) -> String {
    if let Some(mt) = h.entry(&d.blob_path()).and_then(|e| e.media_type.clone()) {
        return mt;
    }
    bytes
        .and_then(|b| oci::AnyManifest::parse(b).ok())
        .map(|m| m.media_type().to_string())
        .unwrap_or_else(|| oci::OCI_MANIFEST.into())
}

/// Decides what goes where: names, the index for several platforms, and what the registry
/// already has.
async fn plan(client: &Client, v: &Verified, prefix: &str) -> Result<Plan, UnpackError> {
    let h = &v.header;
    // A delta bundle is made for one Docker host's inventory; what it left out is not here
    // to push.
    if !h.expected_present.is_empty() {
        return Err(UnpackError::NotPresent(
            h.expected_present
                .iter()
                .map(|p| format!("{} ({} bytes): left out of this delta bundle, which is for `load` on the host whose inventory it was built against; push a full bundle", p.digest, p.size))
                .collect(),
        ));
    }
    let mut items: Vec<Item> = Vec::new();
    // Images, grouped by reference in header order.
    let mut groups: BTreeMap<usize, Vec<&airlock_bundle::header::ImageRecord>> = BTreeMap::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, img) in h.images.iter().enumerate() {
        let at = *first.entry(img.reference.as_str()).or_insert(i);
        groups.entry(at).or_default().push(img);
    }
    for group in groups.values() {
        let source = group[0].reference.clone();
        let dest = naming::image_destination(&source, prefix).map_err(UnpackError::Usage)?;
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        for img in group {
            for d in std::iter::once(&img.config).chain(&img.layers) {
                if seen.insert(*d) {
                    blobs.push(*d);
                }
            }
        }
        let platforms: Vec<PlatformManifest> = group
            .iter()
            .map(|i| PlatformManifest {
                platform: i.platform.to_string(),
                manifest: i.manifest,
            })
            .collect();
        let manifests: Vec<Digest> = group.iter().map(|i| i.manifest).collect();
        let (top, index) = if group.len() == 1 {
            (group[0].manifest, None)
        } else {
            let descs: Vec<Descriptor> = group
                .iter()
                .map(|i| Descriptor {
                    media_type: manifest_media_type(h, &i.manifest, None),
                    digest: i.manifest,
                    size: h.entry(&i.manifest.blob_path()).map_or(0, |e| e.size),
                    platform: Some(i.platform.to_oci()),
                    annotations: None,
                })
                .collect();
            let media_type = if descs.iter().all(|d| d.media_type == oci::DOCKER_MANIFEST) {
                oci::DOCKER_LIST
            } else {
                oci::OCI_INDEX
            };
            let bytes = Bytes::from(
                serde_json::to_vec(&oci::ImageIndex {
                    schema_version: 2,
                    media_type: Some(media_type.into()),
                    manifests: descs,
                })
                .expect("index serialises"),
            );
            (Digest::of(&bytes), Some((bytes, media_type)))
        };
        items.push(Item {
            model: false,
            source,
            dest,
            top,
            index,
            manifests,
            platforms,
            blobs,
            unchanged: false,
        });
    }
    for m in &h.models {
        let dest = naming::model_destination(&m.name, prefix).map_err(UnpackError::Usage)?;
        let mut seen = HashSet::new();
        let blobs = std::iter::once(m.config)
            .chain(m.layers.iter().copied())
            .filter(|d| seen.insert(*d))
            .collect();
        items.push(Item {
            model: true,
            source: m.name.clone(),
            dest,
            top: m.manifest,
            index: None,
            manifests: vec![m.manifest],
            platforms: Vec::new(),
            blobs,
            unchanged: false,
        });
    }
    // Two sources must not land on one tag.
    let mut taken: HashMap<(String, Option<String>), &str> = HashMap::new();
    for it in &items {
        if it.dest.tag.is_none() {
            continue;
        }
        if let Some(other) = taken.insert(
            (it.dest.repository.clone(), it.dest.tag.clone()),
            &it.source,
        ) {
            return Err(UnpackError::Usage(format!(
                "{other} and {} would both be pushed as {}",
                it.source,
                it.dest.display(&client.registry, &it.top)
            )));
        }
    }

    // What the tags point to now.
    let tags = futures::stream::iter(items.iter().map(|it| async move {
        let reference = it.dest.tag.clone().unwrap_or_else(|| it.top.to_string());
        client
            .manifest_digest(&it.dest.repository, &reference)
            .await
            .map(|d| d == Some(it.top))
    }))
    .buffered(HEADS)
    .collect::<Vec<_>>()
    .await;
    for (it, same) in items.iter_mut().zip(tags) {
        it.unchanged = same?;
    }

    // Which blobs each repository of a changed item has.
    let mut pairs: Vec<(String, Digest)> = Vec::new();
    let mut seen = HashSet::new();
    for it in items.iter().filter(|it| !it.unchanged) {
        for d in &it.blobs {
            if seen.insert((it.dest.repository.clone(), *d)) {
                pairs.push((it.dest.repository.clone(), *d));
            }
        }
    }
    let present = futures::stream::iter(pairs.iter().map(|(repo, d)| client.has_blob(repo, d)))
        .buffered(HEADS)
        .collect::<Vec<_>>()
        .await;
    let mut actions = HashMap::new();
    // Per blob: repositories that have it and those that lack it, in first-need order.
    let mut by_blob: Vec<(Digest, Vec<String>, Vec<String>)> = Vec::new();
    let mut slot: HashMap<Digest, usize> = HashMap::new();
    for ((repo, d), has) in pairs.iter().zip(present) {
        let has = has?;
        let i = *slot.entry(*d).or_insert_with(|| {
            by_blob.push((*d, Vec::new(), Vec::new()));
            by_blob.len() - 1
        });
        if has {
            actions.insert((repo.clone(), *d), Action::Present);
            by_blob[i].1.push(repo.clone());
        } else {
            by_blob[i].2.push(repo.clone());
        }
    }

    // A blob one repository has is mounted into the others now (it is already in the
    // registry); where the registry refuses, it is uploaded from the stream instead, and
    // blobs the bundle must upload go to every repository that needs them.
    let mut mounts_refused = false;
    let mut streaming = Streaming::default();
    for (d, have, lack) in by_blob {
        if lack.is_empty() {
            continue;
        }
        let mut plan = BlobPlan::default();
        if let Some(from) = have.first() {
            for repo in lack {
                if !mounts_refused && client.mount(&repo, from, &d).await? {
                    actions.insert((repo, d), Action::Mounted);
                } else {
                    mounts_refused = true;
                    plan.upload_to.push(repo);
                }
            }
        } else if mounts_refused {
            plan.upload_to = lack;
        } else {
            let mut lack = lack.into_iter();
            plan.upload_to.extend(lack.next());
            plan.mount_into.extend(lack);
        }
        if !plan.upload_to.is_empty() {
            streaming.blobs.insert(d, plan);
        }
    }
    for it in items.iter().filter(|it| !it.unchanged) {
        streaming.capture.extend(it.manifests.iter().copied());
    }
    Ok(Plan {
        items,
        streaming,
        actions,
    })
}

/// Pushes the bundle at `path` into the registry `opts` names. Tags become visible only
/// after the whole bundle verified.
pub fn push(
    path: &std::path::Path,
    access: &Access,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<PushReport, UnpackError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UnpackError::Environment(format!("async runtime: {e}")))?;
    let client = Arc::new(Client::new(
        &opts.registry,
        opts.insecure,
        opts.token_realm.as_deref(),
    )?);

    let (input, bar, on_disk) = open_bundle(path, access, progress, "push")?;
    let (header_tx, header_rx) = std::sync::mpsc::channel();
    let (plan_tx, plan_rx) = std::sync::mpsc::channel();
    let read_opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let mut planned: Option<(Vec<Item>, Actions)> = None;
    let visitor = PushVisitor {
        handle: rt.handle().clone(),
        client: client.clone(),
        slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        header_tx: Some(header_tx),
        plan_rx,
        plan: Streaming::default(),
        uploads: Vec::new(),
        captured: HashMap::new(),
    };
    let (read, plan_err) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut v = visitor;
            let r = read_bundle(input, &read_opts, &mut v);
            (r, v.uploads, v.captured)
        });
        // Nothing is asked of the registry until the header verified.
        let Ok(verified) = header_rx.recv() else {
            return (reader.join().expect("bundle reader panicked"), None);
        };
        match rt.block_on(plan(&client, &verified, &opts.prefix)) {
            Ok(p) => {
                let _ = plan_tx.send(Ok(p.streaming));
                planned = Some((p.items, p.actions));
                (reader.join().expect("bundle reader panicked"), None)
            }
            Err(e) => {
                let _ = plan_tx.send(Err(e.to_string()));
                (reader.join().expect("bundle reader panicked"), Some(e))
            }
        }
    });
    progress.remove(&bar);
    if let Some(e) = plan_err {
        return Err(e);
    }
    let (result, uploads, captured) = read;
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            // An upload that failed stops the stream: its error says why, better than the
            // reader's "output failed". Any other failure of the bundle comes first.
            if matches!(e, BundleError::Output { .. }) {
                for r in rt.block_on(futures::future::join_all(uploads)) {
                    if let Ok(Err(upload_err)) = r {
                        return Err(upload_err);
                    }
                }
            } else {
                for u in &uploads {
                    u.abort();
                }
            }
            return Err(on_disk.explain(e.into(), progress));
        }
    };
    let Some((mut items, mut actions)) = planned else {
        return Err(UnpackError::Usage("push cancelled before planning".into()));
    };

    // Every digest checked. Wait for the uploads, then make the tags visible.
    for r in rt.block_on(futures::future::join_all(uploads)) {
        let done = r.map_err(|e| UnpackError::Environment(format!("upload task: {e}")))??;
        for repo in done.uploaded {
            actions.insert((repo, done.digest), Action::Uploaded);
        }
        for repo in done.mounted {
            actions.insert((repo, done.digest), Action::Mounted);
        }
    }
    let h = &verified.header;
    rt.block_on(async {
        for it in items.iter().filter(|it| !it.unchanged) {
            publish(&client, h, it, &captured).await?;
        }
        Ok::<_, UnpackError>(())
    })?;

    // A tag already at the bundle's digest has every blob it names (the registry checked
    // that when the tag was pushed): they count as present.
    for it in items.iter().filter(|it| it.unchanged) {
        for d in &it.blobs {
            actions
                .entry((it.dest.repository.clone(), *d))
                .or_insert(Action::Present);
        }
    }
    let mut report = PushReport {
        registry: opts.registry.clone(),
        header_digest: verified.header_digest,
        signer: verified.signer.map(|k| k.to_string()),
        signature_verified: verified.signature_checked,
        images: Vec::new(),
        models: Vec::new(),
        blobs_uploaded: 0,
        bytes_uploaded: 0,
        blobs_mounted: 0,
        blobs_present: 0,
        tool: airlock_bundle::tool_version("airlock-unpack"),
    };
    for ((_, d), a) in &actions {
        match a {
            Action::Uploaded => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += h.entry(&d.blob_path()).map_or(0, |e| e.size);
            }
            Action::Mounted => report.blobs_mounted += 1,
            Action::Present => report.blobs_present += 1,
        }
    }
    for it in items.drain(..) {
        let count = |want: Action| {
            it.blobs
                .iter()
                .filter(|d| actions.get(&(it.dest.repository.clone(), **d)) == Some(&want))
                .count()
        };
        let pushed = PushedItem {
            reference: it.dest.display(&opts.registry, &it.top),
            repository: it.dest.repository.clone(),
            tag: it.dest.tag.clone(),
            manifest: it.top,
            blobs_uploaded: count(Action::Uploaded),
            blobs_mounted: count(Action::Mounted),
            blobs_present: count(Action::Present),
            status: if it.unchanged {
                Status::Unchanged
            } else {
                Status::Pushed
            },
            source: it.source,
            platforms: it.platforms,
        };
        if it.model {
            report.models.push(pushed);
        } else {
            report.images.push(pushed);
        }
    }
    Ok(report)
}

/// PUTs an item's manifests: platform manifests by digest, then what the tag points to.
async fn publish(
    client: &Client,
    h: &Header,
    it: &Item,
    captured: &HashMap<Digest, Bytes>,
) -> Result<(), UnpackError> {
    let repo = &it.dest.repository;
    let carried = |d: &Digest| {
        captured.get(d).cloned().ok_or_else(|| {
            UnpackError::Bundle(BundleError::Malformed(format!(
                "manifest {d} of {} is not in the bundle",
                it.source
            )))
        })
    };
    let top_ref = it.dest.tag.clone().unwrap_or_else(|| it.top.to_string());
    match &it.index {
        Some((bytes, media_type)) => {
            for d in &it.manifests {
                let b = carried(d)?;
                let mt = manifest_media_type(h, d, Some(&b));
                client.put_manifest(repo, &d.to_string(), &mt, b).await?;
            }
            client
                .put_manifest(repo, &top_ref, media_type, bytes.clone())
                .await
        }
        None => {
            let b = carried(&it.top)?;
            let mt = if it.model {
                oci::AnyManifest::parse(&b)
                    .map(|m| m.media_type().to_string())
                    .unwrap_or_else(|_| oci::DOCKER_MANIFEST.into())
            } else {
                manifest_media_type(h, &it.top, Some(&b))
            };
            client.put_manifest(repo, &top_ref, &mt, b).await
        }
    }
}
