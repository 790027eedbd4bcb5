//! `push`: a bundle's images and Ollama models into an OCI registry inside the gap
//! (distribution, Harbor, zot), in one pass over the bundle. Behind the `push` feature: the
//! minimal build of `airlock-unpack` has no HTTP client at all.
//!
//! 1. The header verified (`plan`): every target repository is asked (HEAD, concurrently) which
//!    blobs it has and what its tags point to. A tag that already names the exact manifest
//!    is left alone ("unchanged"); a blob a repository has is not sent again. A blob one
//!    target repository has and another lacks is mounted across (`?mount=&from=`).
//! 2. The bundle streams (`upload`): each blob still missing is uploaded while it is read (POST for a
//!    session, one monolithic PUT with a Content-Length, the body fed from the reader thread
//!    through a bounded channel), never held in memory. A blob several repositories need is
//!    uploaded once and mounted into the others; where the registry refuses the mount, it
//!    is copied across from the repository that has it (GET streamed into an upload). The
//!    registry checks each digest (`?digest=`).
//! 3. Only once the reader has checked every digest and the end of the archive are the
//!    manifests PUT (`publish`), i.e. the tags become visible: a corrupt, truncated or tampered bundle
//!    pushes no tag at all.
//!
//! Provenance (format v4 `provenance` records: upstream signatures, attestations, SBOMs,
//! referrers, BuildKit attestation manifests) goes into each image's repository with it
//! (`artifacts` plans, `attach` publishes), under the conventions cosign, skopeo
//! (`use-sigstore-attachments`), BuildKit and OCI 1.1 use, so that a `sigstoreSigned`
//! policy or `cosign verify` works inside the gap: cosign kinds under
//! `sha256-<subject hex>.sig|.att|.sbom` (merged into what such a tag already holds),
//! referrers by digest plus the `sha256-<subject hex>` tag-schema index where the registry
//! has no referrers API, BuildKit attestation manifests by digest and in the index push
//! builds. They are published after the platform manifests and before the tag, also for an
//! image whose tag is unchanged.
//!
//! An image the bundle carries for several platforms (it came from a multi-platform index,
//! `ImageRecord::index`) is pushed as a new image index listing the carried platform
//! manifests and their BuildKit attestation manifests (the source index itself is not in
//! the bundle, so its digest differs from upstream's; a signature of the upstream index
//! still goes under the upstream index's tag, where nothing that resolves the pushed tag
//! looks for it); an image with one platform is pushed as its
//! platform manifest under the tag, unless the bundle carries BuildKit attestations for it:
//! then as an index of the two, as BuildKit pushes it. Models are pushed as what they are, a docker v2
//! manifest with Ollama layers, so `ollama pull HOST/NAMESPACE/MODEL:TAG` works against
//! the registry.

mod artifacts;
mod attach;
pub(crate) mod auth;
pub(crate) mod client;
pub mod naming;
mod plan;
mod publish;
mod upload;

use std::sync::Arc;

use airlock_bundle::provenance::ArtifactKind;
use airlock_bundle::reader::{BundleReader, ReadOptions, Verified};
use airlock_bundle::{BundleError, Digest};
use airlock_progress::Progress;
use serde::Serialize;

use crate::open::{open_bundle, Access, BundleOnDisk};
use crate::UnpackError;
use client::Client;
use plan::{Action, Actions, Item};
use upload::{PushVisitor, Upload};

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
    /// credentials (see `client::Client::new`).
    pub token_realm: Option<String>,
    /// `--ca-cert`, `--cert-dir`, `--client-cert`/`--client-key`.
    pub tls: airlock_registry_auth::tls::TlsOptions,
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
    /// The image's provenance as it ended up in the registry (images only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<PushedArtifact>,
}

/// What happened to an artifact the tag's status does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactStatus {
    /// The bundle's manifest is now there (under its tag, or by digest), or the referrers
    /// index gained it.
    Pushed,
    /// It was there already; nothing was sent.
    Unchanged,
    /// Its cosign tag held another manifest (the registry's own signatures): that one now
    /// also has the bundle's layers (`merged_into`).
    Merged,
}

/// One carried signature, attestation, SBOM, referrer or BuildKit attestation manifest in
/// the registry.
#[derive(Debug, Clone, Serialize)]
pub struct PushedArtifact {
    pub kind: ArtifactKind,
    /// What it is attached to: the image's manifest, one of its platform manifests, or the
    /// upstream index (which push does not recreate: see the module documentation).
    pub subject: Digest,
    /// The artifact manifest the bundle carries.
    pub manifest: Digest,
    /// `HOST:PORT/repo:sha256-<hex>.sig` (cosign kinds) or `HOST:PORT/repo@digest`.
    pub reference: String,
    pub status: ArtifactStatus,
    /// The manifest the cosign tag holds when that is not the carried one: the merge of the
    /// registry's own and the carried layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<Digest>,
    /// The referrers tag-schema index that lists a referrer, on a registry without the
    /// referrers API: `HOST:PORT/repo:sha256-<subject hex>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers_tag: Option<String>,
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

/// Pushes the bundle at `path` into the registry `opts` names. Tags become visible only
/// after the whole bundle verified. `admit` judges the verified header (this host's
/// `[[verify]]` rules) before the registry is asked anything; its refusal ends the push with
/// nothing sent. It sees the same header that is then pushed: one read, no window for the
/// file to change between the check and the push.
pub fn push(
    path: &std::path::Path,
    access: &Access,
    opts: &PushOptions,
    progress: &Progress,
    admit: &mut dyn FnMut(&Verified) -> Result<(), UnpackError>,
) -> Result<PushReport, UnpackError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(UnpackError::Runtime)?;
    let client = Arc::new(Client::new(
        &opts.registry,
        opts.insecure,
        opts.token_realm.as_deref(),
        &opts.tls,
    )?);

    let (input, bar, on_disk) = open_bundle(path, access, progress, "push")?;
    let read_opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    // Nothing is asked of the registry until the header verified, and nothing past the
    // header is read until the plan is made.
    let (verified, body) = match BundleReader::open(input, &read_opts) {
        Ok(opened) => opened,
        Err(e) => {
            progress.remove(&bar);
            return Err(on_disk.explain(e.into(), progress));
        }
    };
    if let Err(e) = admit(&verified) {
        progress.remove(&bar);
        return Err(e);
    }
    let planned = match rt.block_on(plan::plan(&client, &verified, &opts.prefix)) {
        Ok(p) => p,
        Err(e) => {
            progress.remove(&bar);
            return Err(e);
        }
    };

    // The body streams on this thread; the uploads it feeds run on the runtime's.
    let mut visitor = PushVisitor::new(rt.handle().clone(), client.clone(), planned.streaming);
    let read = body.read(&mut visitor);
    progress.remove(&bar);
    let PushVisitor {
        uploads, captured, ..
    } = visitor;
    if let Err(e) = read {
        return Err(read_failure(&rt, e, uploads, &on_disk, progress));
    }

    // Every digest checked. Wait for the uploads, then make the tags visible.
    let mut actions = planned.actions;
    finish_uploads(&rt, uploads, &mut actions)?;
    let items = planned.items;
    let attached = rt.block_on(publish::publish_all(
        &client,
        &verified.header,
        &items,
        &captured,
    ))?;
    Ok(report(opts, &verified, items, attached, actions))
}

/// The error of a push whose bundle did not read to the end. An upload that failed stops
/// the stream: its error says why, better than the reader's "output failed". Any other
/// failure of the bundle comes first, and stops the uploads.
fn read_failure(
    rt: &tokio::runtime::Runtime,
    e: BundleError,
    uploads: Vec<Upload>,
    on_disk: &BundleOnDisk,
    progress: &Progress,
) -> UnpackError {
    if matches!(e, BundleError::Output { .. }) {
        for r in rt.block_on(futures::future::join_all(uploads)) {
            if let Ok(Err(upload_err)) = r {
                return upload_err;
            }
        }
    } else {
        for u in &uploads {
            u.abort();
        }
    }
    on_disk.explain(e.into(), progress)
}

/// Waits for every upload and records what happened to each blob.
fn finish_uploads(
    rt: &tokio::runtime::Runtime,
    uploads: Vec<Upload>,
    actions: &mut Actions,
) -> Result<(), UnpackError> {
    for r in rt.block_on(futures::future::join_all(uploads)) {
        let done = r.map_err(|source| UnpackError::Task {
            what: "upload task",
            source,
        })??;
        for repo in done.uploaded {
            actions.insert((repo, done.digest), Action::Uploaded);
        }
        for repo in done.mounted {
            actions.insert((repo, done.digest), Action::Mounted);
        }
    }
    Ok(())
}

/// What the push did, per item and in total.
fn report(
    opts: &PushOptions,
    verified: &Verified,
    items: Vec<Item>,
    attached: Vec<Vec<PushedArtifact>>,
    mut actions: Actions,
) -> PushReport {
    let h = &verified.header;
    // A tag already at the bundle's digest has every blob it names (the registry checked
    // that when the tag was pushed): they count as present. So has an artifact in place.
    for it in &items {
        let image = if it.unchanged { &it.blobs[..] } else { &[] };
        let artifacts = it.artifacts.iter().filter(|a| a.present);
        for d in image.iter().chain(artifacts.flat_map(|a| &a.blobs)) {
            actions
                .entry((it.dest.repository.clone(), *d))
                .or_insert(Action::Present);
        }
    }
    let mut report = PushReport {
        registry: opts.registry.clone(),
        header_digest: verified.header_digest,
        signer: verified.signer.as_ref().map(|k| k.to_string()),
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
    for (it, artifacts) in items.into_iter().zip(attached) {
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
            artifacts,
        };
        if it.model {
            report.models.push(pushed);
        } else {
            report.images.push(pushed);
        }
    }
    report
}
