//! `load --containerd`: images from a bundle straight into containerd (Kubernetes, k3s and
//! RKE2 nodes, nerdctl), through its gRPC API on the unix socket, with no Docker engine.
//!
//! All or nothing, the way containerd's own clients do it: every write happens under a
//! lease (with a 24 h expiry, in case we die), so the garbage collector leaves half-loaded
//! content alone and removes it once the lease goes. Each blob of the selected images streams
//! from the bundle into the content store with its expected digest and size (containerd
//! checks both on commit); blobs the store already has are only added to the lease. Only
//! after the whole bundle verified are the garbage-collection labels set, the layers unpacked
//! into the snapshotter, and the images created (named by their reference, like
//! `ctr images import`); the lease is deleted last. A failure at any point leaves no image,
//! and the content written so far unreferenced once the lease is gone.
//!
//! An image's target is the manifest of the platform loaded, not the source index: the
//! bundle carries the selected platforms only, and an index naming manifests the store lacks
//! would be an incomplete image (`ctr images check`), which containerd's own import avoids too.

mod api;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use airlock_bundle::header::{Entry, Header, ImageRecord};
use airlock_bundle::inventory::chain_ids;
use airlock_bundle::oci::{self, AnyManifest, ImageConfig, Platform};
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::text::escape;
use airlock_bundle::{BundleError, Digest};
use airlock_progress::Progress;
use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::Status;

use api::{path, Client};

use crate::docker::{select_images, LoadReport, LoadedImage};
use crate::open::{open_bundle, Access};
use crate::policy::{Cleared, LoadGuard};
use crate::restore::{commit, RestoreOptions, Sink, SinkSpec, Staging, Tee};
use crate::UnpackError;

/// containerd's own socket; k3s and RKE2 run theirs at `/run/k3s/containerd/containerd.sock`.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// What the kubelet (CRI) reads; `moby` is Docker's containerd store, `default` ctr's and
/// nerdctl's.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
/// containerd's default snapshotter (what k3s and the CRI plugin use unless told otherwise).
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// How long the lease holds content if we die before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// containerd's gRPC server takes messages up to 16 MiB; 1 MiB writes keep memory flat.
const CHUNK: usize = 1 << 20;
/// Manifests and configs are read back whole; no real one comes near this.
const MAX_DOCUMENT: usize = 16 << 20;

/// `load`'s containerd flags (flattened into it by the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerdArgs {
    /// Load the images straight into containerd over its gRPC socket instead of the Docker
    /// engine (Kubernetes nodes, nerdctl); put it after the bundle when SOCKET is left out
    /// [default SOCKET: /run/containerd/containerd.sock; k3s and RKE2:
    /// /run/k3s/containerd/containerd.sock].
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = DEFAULT_SOCKET, conflicts_with = "ollama_volume")]
    pub containerd: Option<PathBuf>,
    /// containerd namespace: k8s.io is the kubelet's (CRI), moby Docker's containerd image
    /// store, default ctr's and nerdctl's.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE, requires = "containerd")]
    pub namespace: String,
    /// containerd snapshotter to unpack into (native where overlayfs is unavailable).
    #[arg(long, value_name = "NAME", env = "CONTAINERD_SNAPSHOTTER", default_value = DEFAULT_SNAPSHOTTER)]
    pub snapshotter: String,
    /// Only store the images' content; do not unpack the layers into the snapshotter
    /// (containerd unpacks on first use, the kubelet's first start is slower).
    #[arg(long, requires = "containerd")]
    pub no_unpack: bool,
}

impl ContainerdArgs {
    /// Where to load, when `--containerd` was given.
    pub fn options(&self) -> Option<Options> {
        self.containerd.as_ref().map(|socket| Options {
            socket: socket.clone(),
            namespace: self.namespace.clone(),
            snapshotter: self.snapshotter.clone(),
            unpack: !self.no_unpack,
        })
    }
}

/// Where and how to load.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub namespace: String,
    pub snapshotter: String,
    /// Unpack the layers into the snapshotter (so the kubelet finds the image ready).
    pub unpack: bool,
}

fn ctd_err(op: &str, what: &str, s: &Status) -> UnpackError {
    UnpackError::Environment(format!(
        "containerd refused to {op} {what}: {} ({:?})",
        escape(s.message()),
        s.code()
    ))
}

/// Loads the bundle at `path` into containerd, restoring models and files into host
/// directories; all or nothing, and only what `guard` lets through.
pub fn load(
    path: &std::path::Path,
    access: &Access,
    opts: &Options,
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
    let (header_tx, header_rx) = std::sync::mpsc::channel();
    let (route_tx, route_rx) = std::sync::mpsc::channel();
    let read_opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let handle = rt.handle().clone();
    let checker: &LoadGuard = guard;
    let mut decided: Option<Decision> = None;
    let produced = std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut v = LoadVisitor {
                handle,
                client: None,
                write: HashSet::new(),
                sinks: HashMap::new(),
                header_tx: Some(header_tx),
                route_rx,
                pending: None,
            };
            let r = read_bundle(input, &read_opts, &mut v);
            if r.is_err() {
                v.abort_pending();
            }
            r
        });
        // Nothing is decided, and nothing written, until the header verified.
        let Ok(verified) = header_rx.recv() else {
            return producer
                .join()
                .expect("bundle reader panicked")
                .map_err(UnpackError::from);
        };
        match rt.block_on(decide(&verified, opts, platform, restore, checker)) {
            Ok(d) => {
                let _ = route_tx.send(Ok(Route {
                    client: d.ctd.as_ref().map(|c| c.leased.clone()),
                    write: d.write.clone(),
                    sinks: d.staging.sinks.clone(),
                }));
                decided = Some(d);
            }
            Err(e) => {
                let _ = route_tx.send(Err(e.to_string()));
                let _ = producer.join();
                return Err(e);
            }
        }
        producer
            .join()
            .expect("bundle reader panicked")
            .map_err(UnpackError::from)
    });
    progress.remove(&bar);
    let Some(mut d) = decided else {
        // Refused before anything was written (or the header itself failed).
        return Err(match produced {
            Err(e) => on_disk.explain(e, progress),
            Ok(_) => UnpackError::Usage("load cancelled".into()),
        });
    };
    let verified = match produced {
        Ok(v) => v,
        Err(e) => {
            rt.block_on(d.abandon());
            return Err(on_disk.explain(e, progress));
        }
    };
    // Everything verified: make the images visible, then the models and files.
    let mut images = Vec::new();
    if let Some(ctd) = &d.ctd {
        match rt.block_on(finish(ctd, opts, &d.selected, &d.already, &verified.header)) {
            Ok(i) => images = i,
            Err(e) => {
                rt.block_on(d.abandon());
                return Err(e);
            }
        }
    }
    let committed = rt.block_on(commit(&mut d.staging, None, progress));
    if let Some(ctd) = &d.ctd {
        // The images hold their content now; the lease has done its job.
        if let Err(e) = rt.block_on(ctd.drop_lease()) {
            progress.say(format!(
                "warning: the images are loaded, but deleting lease {} failed ({e}); it expires by itself within 24 h",
                ctd.lease
            ));
        }
    }
    let (models, files) = match committed {
        Ok(v) => v,
        Err(e) => {
            rt.block_on(d.staging.release());
            d.staging.abort();
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
        engine: d.ctd.map(|c| c.description).unwrap_or_default(),
        cleared: d.cleared,
    })
}

/// containerd as this load uses it: the connection, under the load's lease.
struct Ctd {
    /// Every request made under the lease.
    leased: Client,
    lease: String,
    description: String,
}

impl Ctd {
    async fn drop_lease(&self) -> Result<(), Status> {
        self.leased
            .unary::<_, api::Empty>(
                path::LEASE_DELETE,
                api::LeaseDeleteRequest {
                    id: self.lease.clone(),
                    sync: false,
                },
            )
            .await
            .map(drop)
    }
}

/// What [`decide`] settled once the header verified.
struct Decision {
    ctd: Option<Ctd>,
    /// The blobs to stream into the content store (the selected images' blobs it lacks).
    write: HashSet<Digest>,
    /// Every image of the bundle for the platform.
    selected: Vec<ImageRecord>,
    /// References whose image already has the manifest as its target.
    already: HashSet<String>,
    staging: Staging,
    cleared: Cleared,
}

impl Decision {
    /// Undoes a load that failed: nothing staged is kept, and the lease goes, so what was
    /// written to containerd is unreferenced and its garbage collector removes it.
    async fn abandon(&mut self) {
        self.staging.release().await;
        self.staging.abort();
        if let Some(c) = &self.ctd {
            let _ = c.drop_lease().await;
        }
    }
}

/// For the bundle reader: where each blob goes.
struct Route {
    client: Option<Client>,
    write: HashSet<Digest>,
    sinks: HashMap<Digest, Vec<SinkSpec>>,
}

/// The host's platform: containerd runs images of its own.
fn host_platform() -> Platform {
    Platform::from_engine("linux", std::env::consts::ARCH)
}

/// Decides from the verified header: the host's policy and anti-rollback first (before
/// containerd is contacted or anything is written), then the images for the platform, which
/// of their blobs containerd lacks, and where model and file blobs go.
async fn decide(
    v: &Verified,
    opts: &Options,
    platform: Option<Platform>,
    restore: &RestoreOptions,
    guard: &LoadGuard,
) -> Result<Decision, UnpackError> {
    let cleared = guard.check(v, restore.models_to.as_ref())?;
    let without_files;
    let restored: &Header = if guard.no_files {
        without_files = Header {
            files: Vec::new(),
            ..v.header.clone()
        };
        &without_files
    } else {
        &v.header
    };
    if crate::restore::wants_engine(restored, restore) {
        return Err(UnpackError::Usage(
            "this bundle restores models or files into Docker volumes, which need a Docker-compatible engine; with --containerd only host directories can be targets (see --ollama-models DIR), or load it without --containerd".into(),
        ));
    }
    let h = &v.header;
    let mut ctd = None;
    let mut write = HashSet::new();
    let mut selected = Vec::new();
    let mut already = HashSet::new();
    let mut missing = Vec::new();
    if !h.images.is_empty() {
        let platform = platform.unwrap_or_else(host_platform);
        selected = select_images(&h.images, &platform);
        if selected.is_empty() {
            let have: Vec<String> = h.images.iter().map(|i| i.platform.to_string()).collect();
            return Err(UnpackError::Usage(format!(
                "the bundle has no image for the platform {platform} (it has: {}); see --platform",
                have.join(", ")
            )));
        }
        let c = connect(opts).await?;
        let plan = plan(&c, h, &selected).await;
        match plan {
            Ok(p) => {
                write = p.write;
                already = p.already;
                missing = p.missing;
            }
            Err(e) => {
                let _ = c.drop_lease().await;
                return Err(e);
            }
        }
        ctd = Some(c);
    }
    let mut staging = match crate::restore::prepare(restored, restore, None).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(c) = &ctd {
                let _ = c.drop_lease().await;
            }
            return Err(e);
        }
    };
    missing.append(&mut staging.missing);
    let mut d = Decision {
        ctd,
        write,
        selected,
        already,
        staging,
        cleared,
    };
    if !missing.is_empty() {
        d.abandon().await;
        return Err(UnpackError::NotPresent(missing));
    }
    Ok(d)
}

/// Connects, says which containerd this is, and takes the load's lease.
async fn connect(opts: &Options) -> Result<Ctd, UnpackError> {
    let at = opts.socket.display().to_string();
    let client = Client::connect(&opts.socket, &opts.namespace)
        .await
        .map_err(|e| {
            UnpackError::Environment(format!(
                "cannot connect to containerd at {at}: {}",
                escape(&e)
            ))
        })?;
    let version: api::VersionResponse = client
        .unary(path::VERSION, api::Empty {})
        .await
        .map_err(|s| ctd_err("report its version at", &at, &s))?;
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let lease = format!("airlock-load-{}-{nanos}", std::process::id());
    let expire = humantime::format_rfc3339_seconds(now + LEASE_EXPIRY).to_string();
    client
        .unary::<_, api::Empty>(
            path::LEASE_CREATE,
            api::LeaseCreateRequest {
                id: lease.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
            },
        )
        .await
        .map_err(|s| ctd_err("create lease", &lease, &s))?;
    Ok(Ctd {
        leased: client.with_lease(&lease),
        description: format!(
            "containerd {} at {at}, namespace {}, {}",
            escape(&version.version),
            opts.namespace,
            if opts.unpack {
                format!("unpacked into {}", opts.snapshotter)
            } else {
                "not unpacked".to_string()
            }
        ),
        lease,
    })
}

struct Plan {
    write: HashSet<Digest>,
    already: HashSet<String>,
    missing: Vec<String>,
}

/// Which blobs of `selected` containerd lacks (those present join the lease, so the garbage
/// collector cannot take them mid-load), and which a delta bundle left out that it lacks too.
async fn plan(c: &Ctd, h: &Header, selected: &[ImageRecord]) -> Result<Plan, UnpackError> {
    let mut p = Plan {
        write: HashSet::new(),
        already: HashSet::new(),
        missing: Vec::new(),
    };
    let mut seen = HashSet::new();
    for i in selected {
        let blobs = [i.manifest, i.config]
            .into_iter()
            .chain(i.layers.iter().copied());
        for d in blobs {
            if !seen.insert(d) {
                continue;
            }
            if present(&c.leased, &d).await? {
                c.leased
                    .unary::<_, api::Empty>(
                        path::LEASE_ADD_RESOURCE,
                        api::AddResourceRequest {
                            id: c.lease.clone(),
                            resource: Some(api::LeaseResource {
                                id: d.to_string(),
                                r#type: "content".into(),
                            }),
                        },
                    )
                    .await
                    .map_err(|s| ctd_err("add to the load's lease", &d.to_string(), &s))?;
            } else if h.entry(&d.blob_path()).is_some() {
                p.write.insert(d);
            } else {
                let size = h
                    .expected_present
                    .iter()
                    .find(|e| e.digest == d)
                    .map(|e| format!("{} bytes, ", e.size))
                    .unwrap_or_default();
                p.missing.push(format!(
                    "blob {d} ({size}of {}), in containerd's content store (namespace {})",
                    i.reference, c.leased.namespace
                ));
            }
        }
        let existing = image(&c.leased, &i.reference).await?;
        if existing.and_then(|e| e.target).map(|t| t.digest) == Some(i.manifest.to_string()) {
            p.already.insert(i.reference.clone());
        }
    }
    Ok(p)
}

/// Whether the content store has the blob `d`.
async fn present(c: &Client, d: &Digest) -> Result<bool, UnpackError> {
    match c
        .unary::<_, api::InfoResponse>(
            path::CONTENT_INFO,
            api::InfoRequest {
                digest: d.to_string(),
            },
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if api::not_found(&s) => Ok(false),
        Err(s) => Err(ctd_err("look up", &d.to_string(), &s)),
    }
}

/// The image named `name`, if there is one.
async fn image(c: &Client, name: &str) -> Result<Option<api::Image>, UnpackError> {
    match c
        .unary::<_, api::ImageResponse>(path::IMAGE_GET, api::ImageName { name: name.into() })
        .await
    {
        Ok(r) => Ok(r.image),
        Err(s) if api::not_found(&s) => Ok(None),
        Err(s) => Err(ctd_err("look up image", &escape(name), &s)),
    }
}

struct LoadVisitor {
    handle: Handle,
    client: Option<Client>,
    write: HashSet<Digest>,
    sinks: HashMap<Digest, Vec<SinkSpec>>,
    header_tx: Option<std::sync::mpsc::Sender<Verified>>,
    route_rx: std::sync::mpsc::Receiver<Result<Route, String>>,
    /// The last blob streamed, its commit held until the reader verified it.
    pending: Option<BlobWriter>,
}

impl Visitor for LoadVisitor {
    fn header(&mut self, v: &Verified) -> Result<bool, BundleError> {
        // The main thread decides while this thread waits; nothing past the header is read
        // before that.
        if let Some(tx) = self.header_tx.take() {
            let _ = tx.send(v.clone());
        }
        let route = match self.route_rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(m)) => return Err(BundleError::Usage(m)),
            Err(_) => return Err(BundleError::Usage("load cancelled".into())),
        };
        self.client = route.client;
        self.write = route.write;
        self.sinks = route.sinks;
        Ok(true)
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        // The previous entry verified (the reader checks each digest before the next).
        self.commit_pending()?;
        if !entry.path.starts_with("blobs/") {
            return Ok(());
        }
        let client = self
            .client
            .as_ref()
            .filter(|_| self.write.contains(&entry.digest));
        let files = self.sinks.get(&entry.digest).cloned().unwrap_or_default();
        if client.is_none() && files.is_empty() {
            return Ok(());
        }
        let mut outs: Vec<Sink> = Vec::new();
        for spec in &files {
            outs.push(Sink::open(spec, entry.size)?);
        }
        let mut blob = client.map(|c| BlobWriter::start(&self.handle, c, entry));
        let mut tee = Tee {
            out: blob.as_mut(),
            files: outs,
        };
        let copied = airlock_bundle::hashing::copy_large(data, &mut tee).and_then(|_| {
            for f in std::mem::take(&mut tee.files) {
                f.finish()?;
            }
            Ok(())
        });
        match (copied, blob) {
            // Committed when the reader comes back: only then has it checked the digest,
            // and a bad blob must fail as the bundle's fault, not containerd's refusal.
            (Ok(()), b) => {
                self.pending = b;
                Ok(())
            }
            (Err(e), Some(b)) => {
                b.abort();
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        self.commit_pending().map_err(|e| BundleError::Output {
            entry: "content store".into(),
            source: e,
        })
    }
}

impl LoadVisitor {
    /// Commits the blob the reader has verified since.
    fn commit_pending(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(b) => b.commit(),
            None => Ok(()),
        }
    }

    /// The read failed: the blob in flight goes, never committed.
    fn abort_pending(&mut self) {
        if let Some(b) = self.pending.take() {
            b.abort();
        }
    }
}

/// One blob streaming into containerd's content store (a `Content/Write` call), fed from
/// the bundle reader's thread.
struct BlobWriter {
    handle: Handle,
    client: Client,
    tx: Option<mpsc::Sender<api::WriteContentRequest>>,
    task: Option<tokio::task::JoinHandle<Result<(), Status>>>,
    reference: String,
    digest: Digest,
    size: u64,
    offset: u64,
    buf: BytesMut,
    /// containerd had the blob after all (another writer committed it first).
    done: bool,
}

impl BlobWriter {
    fn start(handle: &Handle, client: &Client, entry: &Entry) -> BlobWriter {
        let (tx, rx) = mpsc::channel::<api::WriteContentRequest>(4);
        let input =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let c = client.clone();
        let task = handle.spawn(async move {
            let mut answers = match c
                .streaming::<_, api::WriteContentResponse, _>(path::CONTENT_WRITE, input)
                .await
            {
                Ok(a) => a,
                Err(s) if api::already_exists(&s) => return Ok(()),
                Err(s) => return Err(s),
            };
            loop {
                match answers.message().await {
                    Ok(Some(m)) if m.action == api::COMMIT => return Ok(()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(Status::aborted("the write ended before its commit")),
                    Err(s) if api::already_exists(&s) => return Ok(()),
                    Err(s) => return Err(s),
                }
            }
        });
        BlobWriter {
            handle: handle.clone(),
            client: client.clone(),
            tx: Some(tx),
            task: Some(task),
            // Unique per load: a crashed earlier load's ingest of the same blob is not ours.
            reference: format!(
                "airlock-{}-{}",
                client_lease_tag(client),
                entry.digest.to_string().replace(':', "-")
            ),
            digest: entry.digest,
            size: entry.size,
            offset: 0,
            buf: BytesMut::with_capacity(CHUNK),
            done: false,
        }
    }

    fn request(&self, action: i32, data: bytes::Bytes) -> api::WriteContentRequest {
        api::WriteContentRequest {
            action,
            r#ref: self.reference.clone(),
            total: self.size as i64,
            expected: self.digest.to_string(),
            offset: self.offset as i64,
            data,
        }
    }

    /// Sends one request; if containerd ended the call, its answer says why.
    fn send(&mut self, action: i32) -> io::Result<()> {
        let data = self.buf.split().freeze();
        let req = self.request(action, data.clone());
        self.offset += data.len() as u64;
        let Some(tx) = self.tx.as_ref() else {
            return Ok(());
        };
        if tx.blocking_send(req).is_err() {
            self.tx = None;
            self.wait()?;
            // The call ended without an error: containerd has the blob already.
            self.done = true;
        }
        Ok(())
    }

    /// Waits for the call to end and turns its status into an error naming the blob.
    fn wait(&mut self) -> io::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match self.handle.block_on(task) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) => Err(io::Error::other(format!(
                "containerd refused blob {} ({} bytes): {} ({:?})",
                self.digest,
                self.size,
                escape(s.message()),
                s.code()
            ))),
            Err(e) => Err(io::Error::other(format!(
                "writing blob {} to containerd: {e}",
                self.digest
            ))),
        }
    }

    /// The last bytes and the commit: containerd checks size and digest against the
    /// expected ones and only then makes the blob content.
    fn commit(mut self) -> io::Result<()> {
        if !self.done {
            self.send(api::COMMIT)?;
        }
        self.tx = None;
        self.wait()
    }

    /// Ends the call without a commit and drops what containerd received so far.
    fn abort(mut self) {
        self.tx = None;
        let _ = self.wait();
        let req = api::AbortRequest {
            r#ref: self.reference.clone(),
        };
        let c = self.client.clone();
        let _ = self
            .handle
            .block_on(async move { c.unary::<_, api::Empty>(path::CONTENT_ABORT, req).await });
    }
}

impl Write for BlobWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.done {
            return Ok(b.len());
        }
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send(api::WRITE)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A short, unique tag for ingest references: the lease id.
fn client_lease_tag(c: &Client) -> String {
    c.lease_id().unwrap_or("nolease").to_string()
}

/// After the whole bundle verified: garbage-collection labels, the layers unpacked, then
/// the images created or moved, rolled back if any of that fails.
async fn finish(
    c: &Ctd,
    opts: &Options,
    selected: &[ImageRecord],
    already: &HashSet<String>,
    h: &Header,
) -> Result<Vec<LoadedImage>, UnpackError> {
    let client = &c.leased;
    let mut targets = Vec::new();
    for i in selected {
        let manifest_bytes = read_blob(client, &i.manifest).await?;
        let manifest = match AnyManifest::parse(&manifest_bytes) {
            Ok(AnyManifest::Image(m)) => m,
            Ok(AnyManifest::Index(_)) => {
                return Err(UnpackError::Environment(format!(
                    "{}: manifest {} is an index, expected an image manifest",
                    escape(&i.reference),
                    i.manifest
                )))
            }
            Err(e) => {
                return Err(UnpackError::Environment(format!(
                    "{}: manifest {}: {e}",
                    escape(&i.reference),
                    i.manifest
                )))
            }
        };
        let layers_match = manifest
            .layers
            .iter()
            .map(|l| l.digest)
            .eq(i.layers.iter().copied());
        if manifest.config.digest != i.config || !layers_match {
            return Err(UnpackError::Environment(format!(
                "{}: manifest {} does not name the config and layers the bundle's header lists",
                escape(&i.reference),
                i.manifest
            )));
        }
        let config: ImageConfig = serde_json::from_slice(&read_blob(client, &i.config).await?)
            .map_err(|e| {
                UnpackError::Environment(format!(
                    "{}: config {}: {e}",
                    escape(&i.reference),
                    i.config
                ))
            })?;
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(UnpackError::Environment(format!(
                "{}: config {} lists {} diff IDs for {} layers",
                escape(&i.reference),
                i.config,
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        // What containerd's garbage collector follows from an image to its content: the
        // manifest names its config and layers, the config its unpacked snapshot.
        let mut refs = vec![(
            "containerd.io/gc.ref.content.config".to_string(),
            i.config.to_string(),
        )];
        for (n, l) in manifest.layers.iter().enumerate() {
            refs.push((
                format!("containerd.io/gc.ref.content.l.{n}"),
                l.digest.to_string(),
            ));
        }
        set_labels(client, &i.manifest, refs).await?;
        for (l, d) in manifest.layers.iter().zip(&diff_ids) {
            set_labels(
                client,
                &l.digest,
                vec![("containerd.io/uncompressed".into(), d.to_string())],
            )
            .await?;
        }
        if opts.unpack {
            let top = unpack(c, opts, &i.reference, &manifest.layers, &diff_ids).await?;
            if let Some(top) = top {
                set_labels(
                    client,
                    &i.config,
                    vec![(
                        format!("containerd.io/gc.ref.snapshot.{}", opts.snapshotter),
                        top.to_string(),
                    )],
                )
                .await?;
            }
        }
        let media_type = manifest
            .media_type
            .clone()
            .or_else(|| {
                h.entry(&i.manifest.blob_path())
                    .and_then(|e| e.media_type.clone())
            })
            .unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        targets.push((
            i,
            api::Descriptor {
                media_type,
                digest: i.manifest.to_string(),
                size: manifest_bytes.len() as i64,
            },
        ));
    }
    // Images last: each is created, or moved to its new target; on any refusal the ones
    // this load made are removed and the moved ones put back.
    let mut undo: Vec<(String, Option<api::Image>)> = Vec::new();
    let mut images = Vec::new();
    for (i, target) in targets {
        let done = put_image(client, &i.reference, target).await;
        match done {
            Ok(previous) => {
                if !already.contains(&i.reference) {
                    undo.push((i.reference.clone(), previous));
                }
            }
            Err(e) => {
                roll_back(client, undo).await;
                return Err(e);
            }
        }
        images.push(LoadedImage {
            reference: i.reference.clone(),
            platform: i.platform.to_string(),
            id: i.manifest.to_string(),
            config: i.config,
            manifest: i.manifest,
            already_present: already.contains(&i.reference),
        });
    }
    Ok(images)
}

/// Creates the image `name` with `target`, or points the existing one at it; returns the
/// image as it was before.
async fn put_image(
    c: &Client,
    name: &str,
    target: api::Descriptor,
) -> Result<Option<api::Image>, UnpackError> {
    let previous = image(c, name).await?;
    let current = previous.as_ref().and_then(|p| p.target.as_ref());
    if current.is_some_and(|t| t.digest == target.digest) {
        return Ok(previous);
    }
    let img = api::Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target),
    };
    let r = if previous.is_some() {
        c.unary::<_, api::ImageResponse>(
            path::IMAGE_UPDATE,
            api::UpdateImageRequest {
                image: Some(img),
                update_mask: Some(api::FieldMask {
                    paths: vec!["target".into()],
                }),
            },
        )
        .await
    } else {
        c.unary::<_, api::ImageResponse>(
            path::IMAGE_CREATE,
            api::CreateImageRequest { image: Some(img) },
        )
        .await
    };
    r.map_err(|s| ctd_err("create image", &escape(name), &s))?;
    Ok(previous)
}

/// Puts images back as they were before this load.
async fn roll_back(c: &Client, undo: Vec<(String, Option<api::Image>)>) {
    for (name, previous) in undo.into_iter().rev() {
        let _ = match previous {
            None => c
                .unary::<_, api::Empty>(
                    path::IMAGE_DELETE,
                    api::DeleteImageRequest { name, sync: false },
                )
                .await
                .map(drop),
            Some(p) => c
                .unary::<_, api::ImageResponse>(
                    path::IMAGE_UPDATE,
                    api::UpdateImageRequest {
                        image: Some(p),
                        update_mask: Some(api::FieldMask {
                            paths: vec!["target".into()],
                        }),
                    },
                )
                .await
                .map(drop),
        };
    }
}

/// Adds `labels` to the blob `d`'s content info (other labels stay).
async fn set_labels(
    c: &Client,
    d: &Digest,
    labels: Vec<(String, String)>,
) -> Result<(), UnpackError> {
    let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
    c.unary::<_, api::InfoResponse>(
        path::CONTENT_UPDATE,
        api::ContentUpdateRequest {
            info: Some(api::ContentInfo {
                digest: d.to_string(),
                size: 0,
                labels: labels.into_iter().collect(),
            }),
            update_mask: Some(api::FieldMask { paths }),
        },
    )
    .await
    .map_err(|s| ctd_err("label", &d.to_string(), &s))?;
    Ok(())
}

/// A manifest or config, read back from the content store.
async fn read_blob(c: &Client, d: &Digest) -> Result<Vec<u8>, UnpackError> {
    let mut s = c
        .server_streaming::<_, api::ReadContentResponse>(
            path::CONTENT_READ,
            api::ReadContentRequest {
                digest: d.to_string(),
                offset: 0,
                size: 0,
            },
        )
        .await
        .map_err(|s| ctd_err("read", &d.to_string(), &s))?;
    let mut out = Vec::new();
    while let Some(m) = s
        .message()
        .await
        .map_err(|s| ctd_err("read", &d.to_string(), &s))?
    {
        out.extend_from_slice(&m.data);
        if out.len() > MAX_DOCUMENT {
            return Err(UnpackError::Environment(format!(
                "{d} in containerd's content store is larger than {MAX_DOCUMENT} bytes; not a manifest or config"
            )));
        }
    }
    if Digest::of(&out) != *d {
        return Err(UnpackError::Environment(format!(
            "containerd's content store returned {} for {d}",
            Digest::of(&out)
        )));
    }
    Ok(out)
}

/// Unpacks the layers into the snapshotter, one committed snapshot per chain ID, skipping
/// those it has; returns the top chain ID.
async fn unpack(
    c: &Ctd,
    opts: &Options,
    reference: &str,
    layers: &[oci::Descriptor],
    diff_ids: &[Digest],
) -> Result<Option<Digest>, UnpackError> {
    let client = &c.leased;
    let chains = chain_ids(diff_ids);
    let sn = &opts.snapshotter;
    for (k, layer) in layers.iter().enumerate() {
        let chain = chains[k].to_string();
        let stat = client
            .unary::<_, api::Empty>(
                path::SNAPSHOT_STAT,
                api::SnapshotKey {
                    snapshotter: sn.clone(),
                    key: chain.clone(),
                },
            )
            .await;
        match stat {
            Ok(_) => continue,
            Err(s) if api::not_found(&s) => {}
            Err(s) => return Err(ctd_err(&format!("look up snapshot in {sn}"), &chain, &s)),
        }
        let key = format!("{}-extract-{chain}", c.lease);
        let parent = if k == 0 {
            String::new()
        } else {
            chains[k - 1].to_string()
        };
        let mounts: api::MountsResponse = client
            .unary(
                path::SNAPSHOT_PREPARE,
                api::PrepareRequest {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                    parent,
                },
            )
            .await
            .map_err(|s| ctd_err(&format!("prepare a snapshot in {sn} for"), &chain, &s))?;
        let applied = apply_and_commit(client, sn, &key, &chain, layer, &diff_ids[k], mounts).await;
        if let Err(e) = applied {
            let _ = client
                .unary::<_, api::Empty>(
                    path::SNAPSHOT_REMOVE,
                    api::SnapshotKey {
                        snapshotter: sn.clone(),
                        key,
                    },
                )
                .await;
            return Err(UnpackError::Environment(format!(
                "unpacking layer {} of {}: {e}",
                layer.digest,
                escape(reference)
            )));
        }
    }
    Ok(chains.last().copied())
}

async fn apply_and_commit(
    client: &Client,
    sn: &str,
    key: &str,
    chain: &str,
    layer: &oci::Descriptor,
    diff_id: &Digest,
    mounts: api::MountsResponse,
) -> Result<(), UnpackError> {
    let applied: api::ApplyResponse = client
        .unary(
            path::DIFF_APPLY,
            api::ApplyRequest {
                diff: Some(api::Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.to_string(),
                    size: layer.size as i64,
                }),
                mounts: mounts.mounts,
            },
        )
        .await
        .map_err(|s| ctd_err("apply", &layer.digest.to_string(), &s))?;
    let got = applied.applied.map(|d| d.digest).unwrap_or_default();
    if got != diff_id.to_string() {
        return Err(UnpackError::Environment(format!(
            "the unpacked layer's digest is {}, the config says {diff_id}",
            escape(&got)
        )));
    }
    match client
        .unary::<_, api::Empty>(
            path::SNAPSHOT_COMMIT,
            api::CommitSnapshotRequest {
                snapshotter: sn.to_string(),
                name: chain.to_string(),
                key: key.to_string(),
            },
        )
        .await
    {
        Ok(_) => Ok(()),
        // Another unpack of the same chain won: it is there, which is what counts; our
        // prepared copy goes.
        Err(s) if api::already_exists(&s) => {
            let _ = client
                .unary::<_, api::Empty>(
                    path::SNAPSHOT_REMOVE,
                    api::SnapshotKey {
                        snapshotter: sn.to_string(),
                        key: key.to_string(),
                    },
                )
                .await;
            Ok(())
        }
        Err(s) => Err(ctd_err("commit snapshot", chain, &s)),
    }
}
