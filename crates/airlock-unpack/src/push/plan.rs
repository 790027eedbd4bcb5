//! The plan, made from the verified header before any blob is read: what each image and
//! model becomes in the registry (repository, tag, the index built for several platforms),
//! which tags already point at the bundle's manifests, which blobs each repository has,
//! which are mounted across now and which must be uploaded from the stream. An image's
//! provenance (`artifacts`) goes into its repository like its layers: the blobs of the
//! artifact manifests the registry lacks are planned with the image blobs, also for an image
//! whose tag is unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};

use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::oci::{self, Descriptor};
use airlock_bundle::reader::Verified;
use airlock_bundle::Digest;
use bytes::Bytes;
use futures::StreamExt as _;

use super::artifacts::{self, Artifact};
use super::client::Client;
use super::naming::{self, Destination};
use super::PlatformManifest;
use crate::UnpackError;

/// HEAD requests in flight while planning.
const HEADS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Present,
    Mounted,
    Uploaded,
}

/// (repository, blob) → what happened or will happen to it.
pub(crate) type Actions = HashMap<(String, Digest), Action>;

/// One tag (or digest) to make visible at the end.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) model: bool,
    pub(crate) source: String,
    pub(crate) dest: Destination,
    /// What the tag points to.
    pub(crate) top: Digest,
    /// The index built for several platforms (bytes and media type); `None` when `top` is
    /// a manifest carried in the bundle.
    pub(crate) index: Option<(Bytes, &'static str)>,
    /// Manifests carried in the bundle, PUT by digest before `top` (when an index) or as
    /// `top` itself.
    pub(crate) manifests: Vec<Digest>,
    pub(crate) platforms: Vec<PlatformManifest>,
    /// Config and layers.
    pub(crate) blobs: Vec<Digest>,
    /// The provenance the bundle carries for the image: published whether or not the tag
    /// is unchanged.
    pub(crate) artifacts: Vec<Artifact>,
    pub(crate) unchanged: bool,
}

impl Item {
    /// The blobs this push needs in the item's repository: the image's unless its tag is
    /// unchanged, and those of every artifact the registry does not have in place.
    fn needed_blobs(&self) -> impl Iterator<Item = &Digest> {
        let image = if self.unchanged {
            &[][..]
        } else {
            &self.blobs[..]
        };
        image.iter().chain(
            self.artifacts
                .iter()
                .filter(|a| !a.present)
                .flat_map(|a| &a.blobs),
        )
    }
}

/// What the reader needs to know once planning is done.
#[derive(Debug, Default)]
pub(crate) struct Streaming {
    /// Blobs to upload while streaming: into which repositories (all at once), then mounted
    /// into which from the first.
    pub(crate) blobs: HashMap<Digest, BlobPlan>,
    /// Manifests to keep (small) for the final PUTs.
    pub(crate) capture: HashSet<Digest>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BlobPlan {
    pub(crate) upload_to: Vec<String>,
    pub(crate) mount_into: Vec<String>,
}

/// Everything planned from the header, before any blob is read.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) items: Vec<Item>,
    pub(crate) streaming: Streaming,
    pub(crate) actions: Actions,
}

/// One blob the changed items need: the repositories that have it and those that lack it,
/// in first-need order.
struct Need {
    digest: Digest,
    have: Vec<String>,
    lack: Vec<String>,
}

/// The media type of a manifest carried in the bundle: the header's, else the manifest's.
pub(crate) fn manifest_media_type(h: &Header, d: &Digest, bytes: Option<&[u8]>) -> String {
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
pub(crate) async fn plan(client: &Client, v: &Verified, prefix: &str) -> Result<Plan, UnpackError> {
    let h = &v.header;
    refuse_delta(h)?;
    let mut items = image_items(h, prefix)?;
    items.extend(model_items(h, prefix)?);
    refuse_shared_tags(&items, &client.registry)?;
    mark_unchanged(client, &mut items).await?;
    mark_present(client, &mut items).await?;
    let (mut actions, needs) = blobs_present(client, &items).await?;
    let mut streaming = route_blobs(client, needs, &mut actions).await?;
    for it in &items {
        if !it.unchanged {
            streaming.capture.extend(it.manifests.iter().copied());
        }
        // Every artifact manifest, present or not: a tag may change before publishing,
        // and a referrer's bytes make its entry in the referrers index.
        streaming
            .capture
            .extend(it.artifacts.iter().map(|a| a.manifest));
    }
    Ok(Plan {
        items,
        streaming,
        actions,
    })
}

/// A delta bundle is made for one Docker host's inventory; what it left out is not here to
/// push.
fn refuse_delta(h: &Header) -> Result<(), UnpackError> {
    if h.expected_present.is_empty() {
        return Ok(());
    }
    Err(UnpackError::NotPresent(
        h.expected_present
            .iter()
            .map(|p| format!("{} ({} bytes): left out of this delta bundle, which is for `load` on the host whose inventory it was built against; push a full bundle", p.digest, p.size))
            .collect(),
    ))
}

/// The images, grouped by reference in header order: one item per reference.
fn image_items(h: &Header, prefix: &str) -> Result<Vec<Item>, UnpackError> {
    let mut groups: BTreeMap<usize, Vec<&ImageRecord>> = BTreeMap::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, img) in h.images.iter().enumerate() {
        let at = *first.entry(img.reference.as_str()).or_insert(i);
        groups.entry(at).or_default().push(img);
    }
    groups
        .values()
        .map(|group| image_item(h, group, prefix))
        .collect()
}

/// One reference with the platforms the bundle carries for it.
fn image_item(h: &Header, group: &[&ImageRecord], prefix: &str) -> Result<Item, UnpackError> {
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
    let platforms = group
        .iter()
        .map(|i| PlatformManifest {
            platform: i.platform.to_string(),
            manifest: i.manifest,
        })
        .collect();
    let manifests: Vec<Digest> = group.iter().map(|i| i.manifest).collect();
    let artifacts = artifacts::artifacts_of(h, &source);
    let attestations = artifacts::attestation_entries(&artifacts, &manifests);
    // One platform and nothing attached to it in an index: the manifest itself. With
    // BuildKit attestations, an index as BuildKit pushes it, so tools find them.
    let (top, index) = if group.len() == 1 && attestations.is_empty() {
        (group[0].manifest, None)
    } else {
        let (bytes, media_type) = platform_index(h, group, attestations);
        (Digest::of(&bytes), Some((bytes, media_type)))
    };
    Ok(Item {
        model: false,
        source,
        dest,
        top,
        index,
        manifests,
        platforms,
        blobs,
        artifacts,
        unchanged: false,
    })
}

/// The index listing the platform manifests the bundle carries, then the BuildKit
/// attestation manifests that describe them (an OCI index; a docker manifest list when
/// they all are docker manifests and there are no attestations), and its media type.
fn platform_index(
    h: &Header,
    group: &[&ImageRecord],
    attestations: Vec<Descriptor>,
) -> (Bytes, &'static str) {
    let mut descs: Vec<Descriptor> = group
        .iter()
        .map(|i| Descriptor {
            media_type: manifest_media_type(h, &i.manifest, None),
            digest: i.manifest,
            size: h.entry(&i.manifest.blob_path()).map_or(0, |e| e.size),
            platform: Some(i.platform.to_oci()),
            annotations: None,
        })
        .collect();
    descs.extend(attestations);
    let media_type = if descs.iter().all(|d| d.media_type == oci::DOCKER_MANIFEST) {
        oci::DOCKER_LIST
    } else {
        oci::OCI_INDEX
    };
    let bytes = Bytes::from(
        // Plain structs of strings and numbers: serialising cannot fail.
        serde_json::to_vec(&oci::ImageIndex {
            schema_version: 2,
            media_type: Some(media_type.into()),
            manifests: descs,
        })
        .expect("index serialises"),
    );
    (bytes, media_type)
}

/// The models, each pushed as its own manifest.
fn model_items(h: &Header, prefix: &str) -> Result<Vec<Item>, UnpackError> {
    h.models
        .iter()
        .map(|m| {
            let dest = naming::model_destination(&m.name, prefix).map_err(UnpackError::Usage)?;
            let mut seen = HashSet::new();
            let blobs = std::iter::once(m.config)
                .chain(m.layers.iter().copied())
                .filter(|d| seen.insert(*d))
                .collect();
            Ok(Item {
                model: true,
                source: m.name.clone(),
                dest,
                top: m.manifest,
                index: None,
                manifests: vec![m.manifest],
                platforms: Vec::new(),
                blobs,
                artifacts: Vec::new(),
                unchanged: false,
            })
        })
        .collect()
}

/// Two sources must not land on one tag.
fn refuse_shared_tags(items: &[Item], registry: &str) -> Result<(), UnpackError> {
    let mut taken: HashMap<(String, Option<String>), &str> = HashMap::new();
    for it in items {
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
                it.dest.display(registry, &it.top)
            )));
        }
    }
    Ok(())
}

/// Asks what the tags point to now: an item whose tag already names its manifest is left
/// alone.
async fn mark_unchanged(client: &Client, items: &mut [Item]) -> Result<(), UnpackError> {
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
    Ok(())
}

/// Asks the registry which artifacts are in place already: a cosign tag that names the
/// carried manifest, a manifest by digest that exists. Whatever else a tag holds is merged
/// at publishing (`attach`), which needs the carried blobs.
async fn mark_present(client: &Client, items: &mut [Item]) -> Result<(), UnpackError> {
    let asks: Vec<(usize, usize)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| (0..it.artifacts.len()).map(move |j| (i, j)))
        .collect();
    let answers = futures::stream::iter(asks.iter().map(|&(i, j)| {
        let repo = &items[i].dest.repository;
        let a = &items[i].artifacts[j];
        async move {
            let reference = a.tag.clone().unwrap_or_else(|| a.manifest.to_string());
            client
                .manifest_digest(repo, &reference)
                .await
                .map(|d| d == Some(a.manifest))
        }
    }))
    .buffered(HEADS)
    .collect::<Vec<_>>()
    .await;
    for (&(i, j), present) in asks.iter().zip(answers) {
        items[i].artifacts[j].present = present?;
    }
    Ok(())
}

/// Asks which blobs each repository needs ([`Item::needed_blobs`]) and has: those are
/// marked present, and every blob is returned with where it is and where it is missing.
async fn blobs_present(
    client: &Client,
    items: &[Item],
) -> Result<(Actions, Vec<Need>), UnpackError> {
    let mut pairs: Vec<(String, Digest)> = Vec::new();
    let mut seen = HashSet::new();
    for it in items {
        for d in it.needed_blobs() {
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
    let mut needs: Vec<Need> = Vec::new();
    let mut slot: HashMap<Digest, usize> = HashMap::new();
    for ((repo, d), has) in pairs.iter().zip(present) {
        let has = has?;
        let i = *slot.entry(*d).or_insert_with(|| {
            needs.push(Need {
                digest: *d,
                have: Vec::new(),
                lack: Vec::new(),
            });
            needs.len() - 1
        });
        if has {
            actions.insert((repo.clone(), *d), Action::Present);
            needs[i].have.push(repo.clone());
        } else {
            needs[i].lack.push(repo.clone());
        }
    }
    Ok((actions, needs))
}

/// A blob one repository has is mounted into the others now (it is already in the
/// registry); where the registry refuses, it is uploaded from the stream instead, and
/// blobs the bundle must upload go to every repository that needs them.
async fn route_blobs(
    client: &Client,
    needs: Vec<Need>,
    actions: &mut Actions,
) -> Result<Streaming, UnpackError> {
    let mut mounts_refused = false;
    let mut streaming = Streaming::default();
    for Need { digest, have, lack } in needs {
        if lack.is_empty() {
            continue;
        }
        let mut plan = BlobPlan::default();
        if let Some(from) = have.first() {
            for repo in lack {
                if !mounts_refused && client.mount(&repo, from, &digest).await? {
                    actions.insert((repo, digest), Action::Mounted);
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
            streaming.blobs.insert(digest, plan);
        }
    }
    Ok(streaming)
}
