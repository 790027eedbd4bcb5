//! Images: for each pinned reference, the platform manifests the spec wants (from an index,
//! or the one manifest of a single-platform image), their configs (fetched: small) and
//! layers (listed for download), in a fixed order.

use std::collections::HashMap;

use airlock_bundle::header::ImageRecord;
use airlock_bundle::lock::LockedImage;
use airlock_bundle::oci::{
    self, AnyManifest, Descriptor, ImageConfig, ImageIndex, ImageManifest, OciPlatform, Platform,
};
use airlock_bundle::spec::Spec;
use airlock_bundle::{Digest, ImageRef};
use airlock_progress::Progress;

use super::{BlobSource, Blobs, PlannedBlob, Sources};
use crate::cache::BlobCache;
use crate::registry::Registry;
use crate::PackError;

/// The images of a plan.
pub(super) struct Images {
    pub records: Vec<ImageRecord>,
    /// index.json of the bundle's OCI layout.
    pub index_json: Vec<u8>,
    pub diff_ids: HashMap<Digest, Vec<Digest>>,
}

pub(super) async fn plan(
    spec: &Spec,
    locked: &[(ImageRef, &LockedImage)],
    src: &Sources<'_>,
    progress: &Progress,
    blobs: &mut Blobs,
) -> Result<Images, PackError> {
    let (registry, cache) = (src.registry, src.cache);
    let mut images = Vec::new();
    let mut diff_ids = HashMap::new();
    let mut sources: HashMap<Digest, (Descriptor, ImageRef)> = HashMap::new();
    for (r, l) in locked {
        progress.say(format!("planning {}", l.reference));
        let top = Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest,
            size: 0,
            platform: None,
            annotations: None,
        };
        let bytes = document(registry, cache, r, &top, true).await?;
        let manifest = AnyManifest::parse(&bytes)
            .map_err(|e| PackError::registry(r, "unreadable manifest", e))?;
        let mut picked: Vec<(Platform, Descriptor, Option<Digest>)> = Vec::new();
        match &manifest {
            AnyManifest::Index(index) => {
                for want in &spec.platforms {
                    picked.push((want.clone(), select(r, index, want)?, Some(l.digest)));
                }
            }
            AnyManifest::Image(_) => {
                let desc = Descriptor {
                    size: bytes.len() as u64,
                    media_type: manifest.media_type().to_string(),
                    ..top.clone()
                };
                picked.push((
                    Platform {
                        os: String::new(),
                        arch: String::new(),
                        variant: None,
                    },
                    desc,
                    None,
                ));
            }
        }
        for (mut platform, desc, index) in picked {
            let mbytes = document(registry, cache, r, &desc, true).await?;
            if Digest::of(&mbytes) != desc.digest {
                return Err(PackError::PlatformManifestDigest {
                    reference: r.to_string(),
                    expected: desc.digest,
                    actual: Digest::of(&mbytes),
                });
            }
            let m = parse_image(r, &mbytes)?;
            let cfg_bytes = document(registry, cache, r, &m.config, false).await?;
            let cfg: ImageConfig = serde_json::from_slice(&cfg_bytes)
                .map_err(|e| PackError::registry(r, "unreadable image config", e))?;
            if let Some(rootfs) = &cfg.rootfs {
                diff_ids.insert(m.config.digest, rootfs.diff_ids.clone());
            }
            if index.is_none() {
                // A single-platform image: its config says what it is.
                platform = Platform {
                    os: cfg.os.clone(),
                    arch: cfg.architecture.clone(),
                    variant: cfg.variant.clone(),
                };
                if !spec.platforms.iter().any(|p| p.matches(&platform.to_oci())) {
                    return Err(PackError::WrongPlatform {
                        reference: r.to_string(),
                        platform: platform.to_string(),
                        wanted: spec.platforms.iter().map(|p| p.to_string()).collect(),
                    });
                }
            }
            let mdesc = Descriptor {
                size: mbytes.len() as u64,
                platform: Some(platform.to_oci()),
                annotations: None,
                ..desc.clone()
            };
            sources
                .entry(mdesc.digest)
                .or_insert((mdesc.clone(), r.clone()));
            sources
                .entry(m.config.digest)
                .or_insert((m.config.clone(), r.clone()));
            for layer in &m.layers {
                sources
                    .entry(layer.digest)
                    .or_insert((layer.clone(), r.clone()));
            }
            images.push((
                ImageRecord {
                    reference: l.reference.clone(),
                    platform,
                    manifest: desc.digest,
                    config: m.config.digest,
                    layers: m.layers.iter().map(|d| d.digest).collect(),
                    index,
                },
                mdesc,
            ));
        }
    }
    images.sort_by(|a, b| {
        (&a.0.reference, a.0.platform.to_string()).cmp(&(&b.0.reference, b.0.platform.to_string()))
    });

    for (img, _) in &images {
        for d in std::iter::once(&img.manifest)
            .chain(std::iter::once(&img.config))
            .chain(&img.layers)
        {
            let (desc, from) = &sources[d];
            blobs.add(PlannedBlob {
                digest: *d,
                size: desc.size,
                media_type: desc.media_type.clone(),
                from: BlobSource::Image(from.clone()),
            });
        }
    }

    let index_json = oci::layout_index(
        images
            .iter()
            .map(|(img, mdesc)| (img.reference.clone(), mdesc.clone())),
    );
    Ok(Images {
        records: images.into_iter().map(|(i, _)| i).collect(),
        index_json,
        diff_ids,
    })
}

/// Fetches a small document (manifest or config) through the cache.
async fn document(
    registry: &Registry,
    cache: &BlobCache,
    r: &ImageRef,
    d: &Descriptor,
    is_manifest: bool,
) -> Result<Vec<u8>, PackError> {
    if let Some(b) = cache.get_bytes(&d.digest) {
        return Ok(b);
    }
    if is_manifest {
        let (bytes, _) = registry.manifest(&r.with_digest(d.digest)).await?;
        cache
            .put_bytes(&d.digest, &bytes)
            .map_err(|source| PackError::CacheWrite {
                blob: d.digest,
                source,
            })?;
        return Ok(bytes);
    }
    registry
        .fetch_blob(r, d.digest, d.size, &d.media_type, cache, &|_| {})
        .await?;
    cache
        .get_bytes(&d.digest)
        .ok_or(PackError::CacheLost { blob: d.digest })
}

fn parse_image(r: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, PackError> {
    match AnyManifest::parse(bytes) {
        Ok(AnyManifest::Image(m)) => Ok(m),
        Ok(AnyManifest::Index(_)) => Err(PackError::registry_said(
            r,
            "nested index where an image manifest was expected",
        )),
        Err(e) => Err(PackError::registry(r, "unreadable manifest", e)),
    }
}

fn is_attestation(p: &OciPlatform) -> bool {
    p.os == "unknown" || p.architecture == "unknown"
}

fn select(r: &ImageRef, index: &ImageIndex, want: &Platform) -> Result<Descriptor, PackError> {
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| !is_attestation(p) && want.matches(p))
        })
        .cloned()
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| !is_attestation(p))
                .map(|p| Platform::from(p).to_string())
                .collect();
            PackError::NoSuchPlatform {
                reference: r.to_string(),
                want: want.to_string(),
                have,
            }
        })
}
