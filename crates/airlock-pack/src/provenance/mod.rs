//! Upstream provenance on the packing side: the spec's `[[verify]]` rules (`rules`), the
//! cosign signatures an image has in its registry and what the rules make of them
//! (`signed`: `lock` records the signature manifest that verified, `build` finds it again),
//! and the signatures, attestations, SBOMs and referrers a bundle carries with each image
//! (`carry`).

mod carry;
mod rules;
mod signed;

pub(crate) use carry::{collect, Subject};
pub(crate) use rules::Rules;
pub(crate) use signed::Verdict;

use airlock_bundle::{Digest, ImageRef};

use crate::cache::BlobCache;
use crate::registry::Registry;
use crate::PackError;

/// Checks the signatures of the image `r` pinned at `digest` (its lock entry `reference`)
/// under the rules covering it: `None` when no rule does (nothing is fetched).
pub(crate) async fn verify(
    registry: &Registry,
    cache: &BlobCache,
    rules: &Rules,
    reference: &str,
    r: &ImageRef,
    digest: Digest,
) -> Result<Option<Verdict>, PackError> {
    if rules.matching(r).is_empty() {
        return Ok(None);
    }
    let sig = signed::fetch(registry, cache, r, digest).await?;
    signed::judge(rules, reference, r, &digest, sig.as_ref()).map(Some)
}

/// `build`'s check: the signature manifest the lock recorded is still the one upstream
/// (anything else, or none, is drift), then the rules judge again.
pub(crate) async fn recheck(
    registry: &Registry,
    cache: &BlobCache,
    rules: &Rules,
    locked: &airlock_bundle::lock::LockedImage,
    r: &ImageRef,
    spec: &std::path::Path,
) -> Result<Option<Verdict>, PackError> {
    if locked.signatures.is_empty() && rules.matching(r).is_empty() {
        return Ok(None);
    }
    let sig = signed::fetch(registry, cache, r, locked.digest).await?;
    let now = sig.as_ref().map(|s| s.digest);
    if !locked.signatures.is_empty() && !now.is_some_and(|d| locked.signatures.contains(&d)) {
        return Err(PackError::SignatureDrift(Box::new(
            crate::error::SignatureDrift {
                reference: locked.reference.clone(),
                digest: locked.digest,
                locked: locked.signatures.clone(),
                now,
                spec: spec.display().to_string(),
            },
        )));
    }
    signed::judge(rules, &locked.reference, r, &locked.digest, sig.as_ref()).map(Some)
}
