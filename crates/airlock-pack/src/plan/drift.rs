//! The first step of a plan: the lock still matches the spec, every tag still resolves to
//! its locked digest, every model still has its locked manifest. Everything that drifted is
//! reported at once.

use airlock_bundle::lock::{Drift, Lock, LockedImage};
use airlock_bundle::spec::{ModelWant, Spec};
use airlock_bundle::ImageRef;

use super::Sources;
use crate::PackError;

/// What the lock pins, checked: each image reference with its lock entry, and each model's
/// manifest bytes with whether it comes from the local store.
pub(super) struct Checked<'l> {
    pub images: Vec<(ImageRef, &'l LockedImage)>,
    pub models: Vec<(ModelWant, Vec<u8>, bool)>,
}

pub(super) async fn check<'l>(
    spec: &Spec,
    spec_path: &std::path::Path,
    lock: &'l Lock,
    src: &Sources<'_>,
) -> Result<Checked<'l>, PackError> {
    let mut drift = lock.drift_from(spec);
    let locked = lock.image_refs()?;
    for (r, l) in &locked {
        if r.digest.is_none() {
            let now = src.registry.head_digest(r).await?;
            if now != l.digest {
                drift.push(Drift::Moved {
                    reference: l.reference.clone(),
                    locked: l.digest,
                    now,
                });
            }
        }
    }
    // Models: the tag (or the local store's manifest) must still give the locked digest.
    let mut models = Vec::new();
    if drift.is_empty() {
        for want in spec.model_wants() {
            let key = want.name.to_string();
            let Some(locked) = lock.model(&key) else {
                continue;
            };
            let local = src.models.is_local(&want);
            let (bytes, now) = if local {
                src.models.store.manifest(&want.name)?
            } else {
                src.ollama.manifest(&want.name).await?
            };
            if now != locked.digest {
                drift.push(Drift::Moved {
                    reference: key,
                    locked: locked.digest,
                    now,
                });
                continue;
            }
            models.push((want, bytes, local));
        }
    }
    if !drift.is_empty() {
        return Err(refused("the spec and the registries", &drift, spec_path));
    }
    Ok(Checked {
        images: locked,
        models,
    })
}

/// The error for `drift` found against `what`.
pub(super) fn refused(what: &str, drift: &[Drift], spec_path: &std::path::Path) -> PackError {
    PackError::Drift {
        what: what.into(),
        details: drift
            .iter()
            .map(|d| format!("  - {d}"))
            .collect::<Vec<_>>()
            .join("\n"),
        spec: spec_path.display().to_string(),
    }
}
