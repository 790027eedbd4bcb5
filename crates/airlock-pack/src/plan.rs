//! From a lock to a bundle plan: which platform manifests, configs and layers each pinned
//! image needs, fetched (small documents) or listed for download (blobs), in a fixed order.

use std::collections::HashMap;

use airlock_bundle::header::{Entry, ImageRecord, INDEX_PATH, OCI_LAYOUT_PATH};
use airlock_bundle::lock::{Drift, Lock};
use airlock_bundle::oci::{
    self, AnyManifest, Descriptor, ImageConfig, ImageIndex, ImageManifest, OciPlatform, Platform,
};
use airlock_bundle::spec::Spec;
use airlock_bundle::{Digest, ImageRef};

use crate::cache::BlobCache;
use crate::registry::Registry;
use crate::PackError;
use airlock_bundle::progress::Progress;

/// A blob the bundle carries and where to fetch it from.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub from: ImageRef,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub images: Vec<ImageRecord>,
    /// Every blob, in bundle order, once.
    pub blobs: Vec<PlannedBlob>,
    /// index.json of the bundle's OCI layout.
    pub index_json: Vec<u8>,
    pub oci_layout: Vec<u8>,
}

impl Plan {
    /// Header entries in tar order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v = vec![
            Entry {
                path: OCI_LAYOUT_PATH.into(),
                digest: Digest::of(&self.oci_layout),
                size: self.oci_layout.len() as u64,
                media_type: None,
            },
            Entry {
                path: INDEX_PATH.into(),
                digest: Digest::of(&self.index_json),
                size: self.index_json.len() as u64,
                media_type: Some(oci::OCI_INDEX.into()),
            },
        ];
        v.extend(self.blobs.iter().map(|b| Entry {
            path: b.digest.blob_path(),
            digest: b.digest,
            size: b.size,
            media_type: Some(b.media_type.clone()),
        }));
        v
    }
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
            .map_err(|e| PackError::Environment(format!("blob cache: {e}")))?;
        return Ok(bytes);
    }
    registry
        .fetch_blob(r, d.digest, d.size, &d.media_type, cache, &|_| {})
        .await?;
    cache
        .get_bytes(&d.digest)
        .ok_or_else(|| PackError::Environment(format!("blob cache lost {}", d.digest)))
}

fn parse_image(r: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, PackError> {
    match AnyManifest::parse(bytes) {
        Ok(AnyManifest::Image(m)) => Ok(m),
        Ok(AnyManifest::Index(_)) => Err(PackError::Registry(format!(
            "{r}: nested index where an image manifest was expected"
        ))),
        Err(e) => Err(PackError::Registry(format!(
            "{r}: unreadable manifest: {e}"
        ))),
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
            PackError::Usage(format!(
                "{r}: no manifest for platform {want} (the image has: {})",
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            ))
        })
}

/// Checks the lock against the spec and the registries, then resolves every image to the
/// blobs it needs. Fetches manifests and configs (small), not layers.
pub async fn plan(
    spec: &Spec,
    spec_path: &std::path::Path,
    lock: &Lock,
    registry: &Registry,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<Plan, PackError> {
    let mut drift = lock.drift_from(spec);
    let locked = lock.image_refs()?;
    for (r, l) in &locked {
        if r.digest.is_none() {
            let now = registry.head_digest(r).await?;
            if now != l.digest {
                drift.push(Drift::Moved {
                    reference: l.reference.clone(),
                    locked: l.digest,
                    now,
                });
            }
        }
    }
    if !drift.is_empty() {
        return Err(PackError::Drift {
            what: "the spec and the registries".into(),
            details: drift
                .iter()
                .map(|d| format!("  - {d}"))
                .collect::<Vec<_>>()
                .join("\n"),
            spec: spec_path.display().to_string(),
        });
    }

    let mut images = Vec::new();
    let mut sources: HashMap<Digest, (Descriptor, ImageRef)> = HashMap::new();
    for (r, l) in &locked {
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
            .map_err(|e| PackError::Registry(format!("{r}: unreadable manifest: {e}")))?;
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
                return Err(PackError::Integrity(format!(
                    "digest mismatch for manifest {} of {r}",
                    desc.digest
                )));
            }
            let m = parse_image(r, &mbytes)?;
            let cfg_bytes = document(registry, cache, r, &m.config, false).await?;
            let cfg: ImageConfig = serde_json::from_slice(&cfg_bytes)
                .map_err(|e| PackError::Registry(format!("{r}: unreadable image config: {e}")))?;
            if index.is_none() {
                // A single-platform image: its config says what it is.
                platform = Platform {
                    os: cfg.os.clone(),
                    arch: cfg.architecture.clone(),
                    variant: cfg.variant.clone(),
                };
                if !spec.platforms.iter().any(|p| p.matches(&platform.to_oci())) {
                    return Err(PackError::Usage(format!(
                        "{r}: single-platform image for {platform}, but the spec wants {}",
                        spec.platforms
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
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

    let mut blobs: Vec<PlannedBlob> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (img, _) in &images {
        for d in std::iter::once(&img.manifest)
            .chain(std::iter::once(&img.config))
            .chain(&img.layers)
        {
            if seen.insert(*d) {
                let (desc, from) = &sources[d];
                blobs.push(PlannedBlob {
                    digest: *d,
                    size: desc.size,
                    media_type: desc.media_type.clone(),
                    from: from.clone(),
                });
            }
        }
    }

    let index_json = oci::layout_index(
        images
            .iter()
            .map(|(img, mdesc)| (img.reference.clone(), mdesc.clone())),
    );
    Ok(Plan {
        images: images.into_iter().map(|(i, _)| i).collect(),
        blobs,
        index_json,
        oci_layout: oci::OCI_LAYOUT.to_vec(),
    })
}
