//! Cosign signatures in the registry: the manifest under an image's `sha256-<hex>.sig` tag,
//! its payloads fetched (bounded, verified, through the cache), and the judgment of the
//! `[[verify]]` rules on them. `lock` records which signature manifest verified; `build`
//! finds the same one again or refuses, then judges again.

use std::collections::BTreeMap;

use airlock_bundle::provenance::ArtifactKind;
use airlock_bundle::{Digest, ImageRef};
use airlock_sigstore::cosign::{self, ArtifactManifest};
use airlock_sigstore::payload::MAX_PAYLOAD_SIZE;
use airlock_sigstore::{Judgment, SignatureInput};

use super::rules::{Rule, Rules};
use crate::cache::BlobCache;
use crate::registry::Registry;
use crate::PackError;

/// A signature manifest as the registry serves it.
#[derive(Debug, Clone)]
pub(crate) struct SigManifest {
    pub digest: Digest,
    pub layers: Vec<SigLayer>,
}

/// One signature layer: its payload (`Err` when it was not fetched: too large) and the
/// annotation's signature text as written.
#[derive(Debug, Clone)]
pub(crate) struct SigLayer {
    pub payload_digest: Digest,
    pub payload: Result<Vec<u8>, String>,
    pub signature: String,
}

/// The tag `kind` of `subject` has in `r`'s repository.
pub(crate) fn tagged(r: &ImageRef, subject: &Digest, kind: ArtifactKind) -> ImageRef {
    ImageRef {
        tag: cosign::tag(subject, kind),
        digest: None,
        ..r.clone()
    }
}

/// The signature manifest of `subject` in `r`'s repository, if it has one; it and its
/// payloads land in the cache (the bundle carries them).
pub(crate) async fn fetch(
    registry: &Registry,
    cache: &BlobCache,
    r: &ImageRef,
    subject: Digest,
) -> Result<Option<SigManifest>, PackError> {
    let at = tagged(r, &subject, ArtifactKind::Signature);
    let Some((bytes, digest)) = registry.manifest_if_any(&at).await? else {
        return Ok(None);
    };
    put(cache, &digest, &bytes)?;
    let manifest = ArtifactManifest::parse(&bytes).map_err(|e| {
        PackError::registry_refused(
            &at,
            format!(
                "signature manifest {digest}: {}",
                airlock_bundle::text::Escaped(&e)
            ),
        )
    })?;
    let layers = payloads(registry, cache, r, &manifest).await?;
    Ok(Some(SigManifest { digest, layers }))
}

/// The payloads of a signature manifest's signature layers. A payload larger than any
/// simple-signing document is not fetched: its signature is judged unreadable.
pub(crate) async fn payloads(
    registry: &Registry,
    cache: &BlobCache,
    r: &ImageRef,
    manifest: &ArtifactManifest,
) -> Result<Vec<SigLayer>, PackError> {
    let mut out = Vec::new();
    for (desc, sig) in manifest.signatures() {
        let payload = if desc.size > MAX_PAYLOAD_SIZE as u64 {
            Err(format!(
                "payload of {} bytes is larger than {MAX_PAYLOAD_SIZE}; not fetched",
                desc.size
            ))
        } else {
            Ok(small_blob(registry, cache, r, desc.digest, desc.size, &desc.media_type).await?)
        };
        out.push(SigLayer {
            payload_digest: desc.digest,
            payload,
            signature: sig.to_string(),
        });
    }
    Ok(out)
}

/// A small blob through the cache, verified (size and digest) by the registry client.
pub(crate) async fn small_blob(
    registry: &Registry,
    cache: &BlobCache,
    r: &ImageRef,
    digest: Digest,
    size: u64,
    media_type: &str,
) -> Result<Vec<u8>, PackError> {
    if let Some(b) = cache.get_bytes(&digest) {
        return Ok(b);
    }
    registry
        .fetch_blob(r, digest, size, media_type, cache, &|_| {})
        .await?;
    cache
        .get_bytes(&digest)
        .ok_or(PackError::CacheLost { blob: digest })
}

pub(crate) fn put(cache: &BlobCache, digest: &Digest, bytes: &[u8]) -> Result<(), PackError> {
    cache
        .put_bytes(digest, bytes)
        .map_err(|source| PackError::CacheWrite {
            blob: *digest,
            source,
        })
}

/// What the rules made of an image's signatures.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The signature manifest, when one of its signatures verified under some rule.
    pub verified: Option<Digest>,
    /// Payload digest → fingerprint of the (first) key that verified it.
    pub by: BTreeMap<Digest, String>,
    /// Rules with `require = false` that no signature satisfied, said for the user.
    pub notes: Vec<String>,
}

/// Judges `sig` (the `.sig` manifest of `digest`, if any) under every rule covering `r`;
/// a required rule that no signature satisfies refuses, naming what was found.
pub(crate) fn judge(
    rules: &Rules,
    reference: &str,
    r: &ImageRef,
    digest: &Digest,
    sig: Option<&SigManifest>,
) -> Result<Verdict, PackError> {
    let mut verdict = Verdict::default();
    for rule in rules.matching(r) {
        let j = judge_one(rule, r, digest, sig);
        if j.verified() {
            let sig = sig.expect("a verified judgment had signatures");
            verdict.verified = Some(sig.digest);
            for label in j.verified_labels() {
                if let Some(l) = sig.layers.iter().find(|l| label_of(sig, l) == label) {
                    verdict
                        .by
                        .entry(l.payload_digest)
                        .or_insert_with(|| rule.key.fingerprint().to_string());
                }
            }
        } else if rule.require {
            return Err(PackError::Unverified(Box::new(crate::error::Unverified {
                reference: reference.to_string(),
                digest: *digest,
                key: rule.key_path.clone(),
                fingerprint: rule.key.fingerprint().to_string(),
                found: found(&j, sig),
            })));
        } else {
            verdict.notes.push(format!(
                "{reference}: no signature by {} ({}) verifies {digest} (require = false): {}",
                rule.key_path.display(),
                rule.key.fingerprint(),
                found(&j, sig)
            ));
        }
    }
    Ok(verdict)
}

fn found(j: &Judgment, sig: Option<&SigManifest>) -> String {
    match sig {
        Some(s) if s.layers.is_empty() => {
            format!("signature manifest {} holds no signatures", s.digest)
        }
        _ => j.to_string(),
    }
}

fn label_of(sig: &SigManifest, l: &SigLayer) -> String {
    format!("signature {} in {}", l.payload_digest, sig.digest)
}

fn judge_one(rule: &Rule, r: &ImageRef, digest: &Digest, sig: Option<&SigManifest>) -> Judgment {
    use base64::Engine as _;
    let Some(sig) = sig else {
        return airlock_sigstore::judge(&rule.key, digest, &r.name(), &[]);
    };
    let inputs: Vec<SignatureInput<'_>> = sig
        .layers
        .iter()
        .map(|l| {
            let (payload, signature) = match &l.payload {
                Ok(p) => (
                    p.as_slice(),
                    base64::engine::general_purpose::STANDARD
                        .decode(l.signature.trim())
                        .map_err(|e| format!("signature is not base64: {e}")),
                ),
                Err(problem) => (&[][..], Err(problem.clone())),
            };
            SignatureInput {
                label: label_of(sig, l),
                payload,
                signature,
            }
        })
        .collect();
    airlock_sigstore::judge(&rule.key, digest, &r.name(), &inputs)
}
