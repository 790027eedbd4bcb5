//! What a bundle carries with each image besides the image: for every subject (the locked
//! top digest and each selected platform manifest) its cosign `.sig`, `.att` and `.sbom`
//! manifests and its OCI 1.1 referrers, and for an index the BuildKit attestation manifests
//! describing a selected platform. Each artifact manifest and its blobs become blob entries
//! (fetched through the cache like image blobs) and one provenance record.

use std::collections::{BTreeMap, HashSet};

use airlock_bundle::lock::LockedImage;
use airlock_bundle::oci::{self, AnyManifest};
use airlock_bundle::provenance::{ArtifactKind, CarriedSignature, Provenance};
use airlock_bundle::{Digest, ImageRef};
use airlock_progress::Progress;
use airlock_sigstore::cosign::{self, ArtifactManifest};
use futures::StreamExt as _;

use super::signed::{self, Verdict};
use crate::cache::BlobCache;
use crate::plan::{BlobSource, PlannedBlob};
use crate::registry::Registry;
use crate::PackError;

/// Lookups in flight at once: small requests, most answered 404.
const LOOKUPS: usize = 8;

/// One image whose provenance is looked up.
pub(crate) struct Subject<'a> {
    pub r: &'a ImageRef,
    pub locked: &'a LockedImage,
    /// The platform manifests the bundle carries (for a single-platform image, the locked
    /// digest itself).
    pub platforms: Vec<Digest>,
    /// What `build` judged of its signatures.
    pub verdict: Option<&'a Verdict>,
}

/// The records and the blobs they need, in bundle order.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    pub records: Vec<Provenance>,
    pub blobs: Vec<PlannedBlob>,
}

/// An artifact manifest found for one subject.
struct Found {
    kind: ArtifactKind,
    subject: Digest,
    digest: Digest,
    bytes: Vec<u8>,
}

enum Lookup<'a> {
    Tag(&'a ImageRef, Digest, ArtifactKind),
    Referrers(&'a ImageRef, Digest),
    Digest(&'a ImageRef, Digest, Digest, ArtifactKind),
}

pub(crate) async fn collect(
    registry: &Registry,
    cache: &BlobCache,
    images: &[Subject<'_>],
    progress: &Progress,
) -> Result<Carried, PackError> {
    let mut lookups: Vec<(usize, Lookup<'_>)> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut subjects = vec![img.locked.digest];
        subjects.extend(img.platforms.iter().filter(|d| **d != img.locked.digest));
        for s in &subjects {
            for kind in [
                ArtifactKind::Signature,
                ArtifactKind::Attestation,
                ArtifactKind::Sbom,
            ] {
                lookups.push((i, Lookup::Tag(img.r, *s, kind)));
            }
            lookups.push((i, Lookup::Referrers(img.r, *s)));
        }
        let top = cache.get_bytes(&img.locked.digest);
        if let Some(Ok(AnyManifest::Index(index))) = top.as_deref().map(AnyManifest::parse) {
            for d in &index.manifests {
                match cosign::buildkit_attestation_for(d) {
                    Some(p) if img.platforms.contains(&p) => lookups.push((
                        i,
                        Lookup::Digest(img.r, p, d.digest, ArtifactKind::BuildkitAttestation),
                    )),
                    _ => {}
                }
            }
        }
    }
    let results: Vec<(usize, Result<Vec<Found>, PackError>)> = futures::stream::iter(lookups)
        .map(|(i, l)| async move { (i, look(registry, cache, l).await) })
        .buffered(LOOKUPS)
        .collect()
        .await;
    let mut found: Vec<Vec<Found>> = images.iter().map(|_| Vec::new()).collect();
    for (i, r) in results {
        found[i].extend(r?);
    }
    let mut out = Carried::default();
    for (img, found) in images.iter().zip(found) {
        let counts = carry_image(registry, cache, img, found, &mut out, progress).await?;
        if !counts.is_empty() {
            let said: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            progress.say(format!(
                "provenance of {}: {}",
                img.locked.reference,
                said.join(", ")
            ));
        }
    }
    Ok(out)
}

async fn look(
    registry: &Registry,
    cache: &BlobCache,
    l: Lookup<'_>,
) -> Result<Vec<Found>, PackError> {
    match l {
        Lookup::Tag(r, subject, kind) => {
            let at = signed::tagged(r, &subject, kind);
            Ok(registry
                .manifest_if_any(&at)
                .await?
                .map(|(bytes, digest)| Found {
                    kind,
                    subject,
                    digest,
                    bytes,
                })
                .into_iter()
                .collect())
        }
        Lookup::Referrers(r, subject) => {
            let mut out = Vec::new();
            for d in registry.referrers(r, subject).await? {
                let bytes = manifest(registry, cache, r, d.digest).await?;
                out.push(Found {
                    kind: ArtifactKind::Referrer,
                    subject,
                    digest: d.digest,
                    bytes,
                });
            }
            Ok(out)
        }
        Lookup::Digest(r, subject, digest, kind) => Ok(vec![Found {
            kind,
            subject,
            digest,
            bytes: manifest(registry, cache, r, digest).await?,
        }]),
    }
}

/// A manifest by digest, through the cache (the registry client checks the digest).
async fn manifest(
    registry: &Registry,
    cache: &BlobCache,
    r: &ImageRef,
    digest: Digest,
) -> Result<Vec<u8>, PackError> {
    if let Some(b) = cache.get_bytes(&digest) {
        return Ok(b);
    }
    let (bytes, _) = registry.manifest(&r.with_digest(digest)).await?;
    signed::put(cache, &digest, &bytes)?;
    Ok(bytes)
}

/// Adds one image's artifacts to `out`; returns how many of each kind.
async fn carry_image(
    registry: &Registry,
    cache: &BlobCache,
    img: &Subject<'_>,
    found: Vec<Found>,
    out: &mut Carried,
    progress: &Progress,
) -> Result<BTreeMap<&'static str, usize>, PackError> {
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut counts = BTreeMap::new();
    let reference = &img.locked.reference;
    for f in found {
        if !seen.insert(f.digest) {
            continue;
        }
        let skip = |why: String| {
            progress.say(format!(
                "{reference}: not carrying {} {} of {}: {why}",
                f.kind.name(),
                f.digest,
                f.subject
            ))
        };
        let m = match ArtifactManifest::parse(&f.bytes) {
            Ok(m) => m,
            // The parser's message may quote the registry's bytes.
            Err(e) => {
                skip(airlock_bundle::text::Escaped(&e).to_string());
                continue;
            }
        };
        signed::put(cache, &f.digest, &f.bytes)?;
        let signatures = if f.kind == ArtifactKind::Signature {
            let layers = signed::payloads(registry, cache, img.r, &m).await?;
            match carried_signatures(
                &layers,
                img.verdict.filter(|v| v.verified == Some(f.digest)),
            ) {
                Ok(s) => s,
                Err(why) => {
                    skip(why);
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        out.blobs.push(PlannedBlob {
            digest: f.digest,
            size: f.bytes.len() as u64,
            media_type: m
                .media_type
                .clone()
                .unwrap_or_else(|| oci::OCI_MANIFEST.into()),
            from: BlobSource::Image(img.r.clone()),
        });
        for d in std::iter::once(&m.config).chain(&m.layers) {
            out.blobs.push(PlannedBlob {
                digest: d.digest,
                size: d.size,
                media_type: d.media_type.clone(),
                from: BlobSource::Image(img.r.clone()),
            });
        }
        *counts.entry(f.kind.name()).or_insert(0) += 1;
        out.records.push(Provenance {
            reference: reference.clone(),
            subject: f.subject,
            kind: f.kind,
            manifest: f.digest,
            media_type: m
                .media_type
                .clone()
                .unwrap_or_else(|| oci::OCI_MANIFEST.into()),
            artifact_type: m.artifact_type.clone(),
            blobs: m.blobs(),
            predicate_types: m.predicate_types(f.kind),
            signatures,
        });
    }
    Ok(counts)
}

/// The header's copy of each signature; `verdict` (when it judged this very manifest)
/// says which key verified which payload.
fn carried_signatures(
    layers: &[signed::SigLayer],
    verdict: Option<&Verdict>,
) -> Result<Vec<CarriedSignature>, String> {
    use base64::Engine as _;
    if layers.is_empty() {
        return Err("it holds no signatures".into());
    }
    layers
        .iter()
        .map(|l| {
            let payload = l.payload.as_ref().map_err(|e| e.clone())?;
            let c = CarriedSignature {
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                payload_digest: l.payload_digest,
                signature: l.signature.clone(),
                verified_with: verdict.and_then(|v| v.by.get(&l.payload_digest).cloned()),
            };
            // What the gap host would refuse in a header (an oversized or undecodable
            // signature) is left behind here, not carried to fail there.
            c.signature_bytes()?;
            Ok(c)
        })
        .collect()
}
