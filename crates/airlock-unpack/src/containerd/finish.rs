//! After the whole bundle verified: the garbage-collection labels, the layers unpacked,
//! then the images created or moved; rolled back if any of that fails.

use std::collections::{HashMap, HashSet};

use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::oci::{self, AnyManifest, ImageConfig};
use airlock_bundle::text::escape;
use airlock_bundle::Digest;

use super::api::{self, path, Client};
use super::plan::{image, Ctd};
use super::unpack::unpack;
use super::{ctd_err, Options};
use crate::load::LoadedImage;
use crate::UnpackError;

/// Manifests and configs are read back whole; no real one comes near this.
const MAX_DOCUMENT: usize = 16 << 20;

/// After the whole bundle verified: garbage-collection labels, the layers unpacked, then
/// the images created or moved, rolled back if any of that fails.
pub(super) async fn finish(
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
                return Err(UnpackError::ImageContent {
                    image: i.reference.clone(),
                    part: "manifest",
                    blob: i.manifest,
                    problem: "is an index, expected an image manifest".into(),
                })
            }
            Err(e) => {
                return Err(UnpackError::ImageContentUnreadable {
                    image: i.reference.clone(),
                    part: "manifest",
                    blob: i.manifest,
                    source: e.into(),
                })
            }
        };
        let layers_match = manifest
            .layers
            .iter()
            .map(|l| l.digest)
            .eq(i.layers.iter().copied());
        if manifest.config.digest != i.config || !layers_match {
            return Err(UnpackError::ImageContent {
                image: i.reference.clone(),
                part: "manifest",
                blob: i.manifest,
                problem: "does not name the config and layers the bundle's header lists".into(),
            });
        }
        let config: ImageConfig = serde_json::from_slice(&read_blob(client, &i.config).await?)
            .map_err(|e| UnpackError::ImageContentUnreadable {
                image: i.reference.clone(),
                part: "config",
                blob: i.config,
                source: e.into(),
            })?;
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(UnpackError::ImageContent {
                image: i.reference.clone(),
                part: "config",
                blob: i.config,
                problem: format!(
                    "lists {} diff IDs for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            });
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
            return Err(UnpackError::StoreTooLarge {
                blob: *d,
                limit: MAX_DOCUMENT,
            });
        }
    }
    if Digest::of(&out) != *d {
        return Err(UnpackError::StoreMismatch {
            blob: *d,
            got: Digest::of(&out),
        });
    }
    Ok(out)
}
