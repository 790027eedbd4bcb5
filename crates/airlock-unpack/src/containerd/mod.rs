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
//!
//! The order of a load and its all-or-nothing cleanup are [`crate::load`]'s; this module is
//! containerd's side of it ([`CtdSide`]): the plan ([`plan`]), the blobs streamed into the
//! content store ([`write`]), and the images made visible ([`finish`], [`unpack`]).

mod api;
mod finish;
mod plan;
mod unpack;
mod write;

use std::collections::HashSet;
use std::path::PathBuf;

use crate::GrpcStatus;
use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_progress::Progress;
use bollard::Docker;
use tokio::runtime::Handle;
use tonic::Status;

use crate::engine::select_images;
use crate::load::{EngineSide, LoadReport, LoadedImage};
use crate::open::Access;
use crate::policy::LoadGuard;
use crate::restore::RestoreOptions;
use crate::UnpackError;
use plan::Ctd;
use write::BlobStream;

/// containerd's own socket; k3s and RKE2 run theirs at `/run/k3s/containerd/containerd.sock`.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// What the kubelet (CRI) reads; `moby` is Docker's containerd store, `default` ctr's and
/// nerdctl's.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
/// containerd's default snapshotter (what k3s and the CRI plugin use unless told otherwise).
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

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
    UnpackError::ContainerdRefused {
        op: op.to_string(),
        what: what.to_string(),
        source: GrpcStatus(s.clone()),
    }
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
    let side = CtdSide {
        opts,
        platform,
        ctd: None,
        selected: Vec::new(),
        write: HashSet::new(),
        already: HashSet::new(),
        missing: Vec::new(),
    };
    crate::load::run(path, access, side, restore, guard, progress)
}

/// containerd in a load.
struct CtdSide<'a> {
    opts: &'a Options,
    /// `--platform`, else the host's.
    platform: Option<Platform>,
    /// The connection under the load's lease, when there are images to load.
    ctd: Option<Ctd>,
    /// Every image of the bundle for the platform.
    selected: Vec<ImageRecord>,
    /// The blobs to stream into the content store (the selected images' blobs it lacks).
    write: HashSet<airlock_bundle::Digest>,
    /// References whose image already has the manifest as its target.
    already: HashSet<String>,
    /// What a delta bundle left out that containerd lacks too.
    missing: Vec<String>,
}

impl CtdSide<'_> {
    /// Undoes a load that failed: the lease goes, so what was written to containerd is
    /// unreferenced and its garbage collector removes it.
    async fn let_go(&self) {
        if let Some(c) = &self.ctd {
            let _ = c.drop_lease().await;
        }
    }
}

impl EngineSide for CtdSide<'_> {
    type Stream = BlobStream;
    type Refusal = UnpackError;

    /// The images for the platform, and which of their blobs containerd lacks.
    async fn plan(
        &mut self,
        h: &Header,
        restored: &Header,
        restore: &RestoreOptions,
    ) -> Result<(), UnpackError> {
        if crate::restore::wants_engine(restored, restore) {
            return Err(UnpackError::Usage(
                "this bundle restores models or files into Docker volumes, which need a Docker-compatible engine; with --containerd only host directories can be targets (see --ollama-models DIR), or load it without --containerd".into(),
            ));
        }
        if h.images.is_empty() {
            return Ok(());
        }
        let platform = self.platform.clone().unwrap_or_else(host_platform);
        let selected = select_images(&h.images, &platform);
        if selected.is_empty() {
            let have: Vec<String> = h.images.iter().map(|i| i.platform.to_string()).collect();
            return Err(UnpackError::Usage(format!(
                "the bundle has no image for the platform {platform} (it has: {}); see --platform",
                have.join(", ")
            )));
        }
        let c = plan::connect(self.opts).await?;
        match plan::plan(&c, h, &selected).await {
            Ok(p) => {
                self.write = p.write;
                self.already = p.already;
                self.missing = p.missing;
            }
            Err(e) => {
                let _ = c.drop_lease().await;
                return Err(e);
            }
        }
        self.selected = selected;
        self.ctd = Some(c);
        Ok(())
    }

    fn docker(&self) -> Option<&Docker> {
        None
    }

    async fn missing(&mut self, _header: &Header) -> Result<Vec<String>, UnpackError> {
        Ok(std::mem::take(&mut self.missing))
    }

    async fn hold(&mut self) -> Result<(), UnpackError> {
        // The lease, taken when connecting, holds everything the load writes.
        Ok(())
    }

    fn stream(&mut self, _header: &Header, handle: &Handle) -> BlobStream {
        let client = self.ctd.as_ref().map(|c| c.leased.clone());
        BlobStream::new(handle, client, self.write.clone())
    }

    async fn upload(&mut self) -> Result<Vec<String>, UnpackError> {
        // The blobs go to containerd from the reader's thread, nothing to do here.
        Ok(Vec::new())
    }

    async fn finish(&mut self, header: &Header) -> Result<Vec<LoadedImage>, UnpackError> {
        match &self.ctd {
            Some(ctd) => {
                finish::finish(ctd, self.opts, &self.selected, &self.already, header).await
            }
            None => Ok(Vec::new()),
        }
    }

    async fn refuse(&mut self, e: UnpackError, _header: &Header) -> UnpackError {
        self.let_go().await;
        e
    }

    async fn abandon(&mut self, _progress: &Progress) {
        self.let_go().await;
    }

    async fn committed(&mut self, _placed: bool, progress: &Progress) {
        if let Some(ctd) = &self.ctd {
            // The images hold their content now; the lease has done its job.
            if let Err(e) = ctd.drop_lease().await {
                progress.say(format!(
                    "warning: the images are loaded, but deleting lease {} failed ({e}); it expires by itself within 24 h",
                    ctd.lease
                ));
            }
        }
    }

    fn describe(&self) -> String {
        self.ctd
            .as_ref()
            .map(|c| c.description.clone())
            .unwrap_or_default()
    }
}

/// The host's platform: containerd runs images of its own.
fn host_platform() -> Platform {
    Platform::from_engine("linux", std::env::consts::ARCH)
}
