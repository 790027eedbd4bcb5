//! `airlock-pack lock`: resolves every image of a spec (its `[[image]]`s and its
//! `[[compose]]` stacks' images) to the digest of its manifest or index, and every model to the sha256 of its raw manifest (from its registry or a local Ollama
//! store), and writes `SPEC.lock` beside the spec.

use std::path::Path;

use airlock_bundle::lock::{Lock, LockedImage, LockedModel};
use airlock_bundle::oci::AnyManifest;
use airlock_bundle::spec::Spec;

use crate::cache::BlobCache;
// Kept at its old path too: lock is where callers first met it.
pub use crate::local::ModelSources;
use crate::ollama::OllamaRegistry;
use crate::provenance::Rules;
use crate::registry::Registry;
use crate::PackError;
use airlock_progress::Progress;

/// What `lock` did, for the user.
#[derive(Debug)]
pub struct LockOutcome {
    pub lock: Lock,
    pub changed: Vec<String>,
    pub written: bool,
}

/// RFC 3339 "now" (or `SOURCE_DATE_EPOCH`, for reproducible builds).
pub fn now_rfc3339() -> String {
    let t = match std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(secs) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        None => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "Now", but strictly later than `previous` (the time of the lock being replaced): gap
/// hosts refuse a bundle that is not newer than the one of its name they loaded, and a lock
/// updated within the same second would otherwise carry the same time. `SOURCE_DATE_EPOCH`
/// is taken as given.
fn after(previous: &str) -> String {
    let now = now_rfc3339();
    if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        return now;
    }
    match (
        humantime::parse_rfc3339(previous),
        humantime::parse_rfc3339(&now),
    ) {
        (Ok(p), Ok(n)) if n <= p => {
            humantime::format_rfc3339_seconds(p + std::time::Duration::from_secs(1)).to_string()
        }
        _ => now,
    }
}

/// The signature manifests that verify `entry` under the rules covering it (none when no
/// rule does); a required rule unsatisfied refuses.
async fn signatures(
    registry: &Registry,
    cache: &BlobCache,
    rules: &Rules,
    r: &airlock_bundle::ImageRef,
    entry: &LockedImage,
    progress: &Progress,
) -> Result<Vec<airlock_bundle::Digest>, PackError> {
    let verdict =
        crate::provenance::verify(registry, cache, rules, &entry.reference, r, entry.digest)
            .await?;
    let Some(v) = verdict else {
        return Ok(Vec::new());
    };
    for n in &v.notes {
        progress.say(format!("warning: {n}"));
    }
    Ok(v.verified.into_iter().collect())
}

/// "ref: signature … verified" for each image whose verified signatures are new to the
/// lock (first verified, or another manifest than before for the same digest).
fn newly_verified(old: Option<&Lock>, images: &[LockedImage]) -> Vec<String> {
    let mut out = Vec::new();
    for i in images {
        let was = old
            .and_then(|l| l.get(&i.reference))
            .filter(|p| p.digest == i.digest)
            .map(|p| p.signatures.clone())
            .unwrap_or_default();
        if i.signatures != was && !i.signatures.is_empty() {
            let list: Vec<String> = i.signatures.iter().map(|d| d.to_string()).collect();
            out.push(format!(
                "{}: signature {} verified",
                i.reference,
                list.join(", ")
            ));
        }
    }
    out
}

/// Writes `text` to the lock `path` through the temp file `NAME.lock.tmp`, renamed over
/// it. The temp is removed, then created new: a link planted at that name is replaced,
/// never written through.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("lock.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// The clients for the spec's image and model registries, with the TLS trust of the flags
/// and of each (https) registry's certs.d directory. One client serves every registry, so
/// the CA certificates found for one are trusted for all of the spec's registries.
pub fn clients(
    spec: &Spec,
    tls: &airlock_registry_auth::tls::TlsOptions,
) -> Result<(Registry, OllamaRegistry), PackError> {
    let insecure = spec.insecure_registries();
    let mut hosts: std::collections::BTreeSet<String> = spec.registries.keys().cloned().collect();
    hosts.extend(spec.image_refs().into_iter().map(|r| r.registry));
    hosts.extend(spec.model_wants().into_iter().map(|w| w.name.host));
    let hosts: Vec<&str> = hosts
        .iter()
        .filter(|h| !insecure.contains(*h))
        .map(String::as_str)
        .collect();
    let material = tls
        .material_for(&hosts)
        .map_err(|e| PackError::Usage(e.to_string()))?;
    Ok((
        Registry::new(&insecure, &material)?,
        OllamaRegistry::new(&insecure, &material)?,
    ))
}

/// A registry's refusal of an image a compose file names says which file and service.
fn from_compose(e: PackError, origin: Option<&str>) -> PackError {
    match (e, origin) {
        (
            PackError::Registry {
                subject,
                what,
                source,
                retryable,
            },
            Some(o),
        ) => PackError::Registry {
            subject: format!("{subject} (from {o})"),
            what,
            source,
            retryable,
        },
        (e, _) => e,
    }
}

/// Pins the spec's images. Without `update`, existing pins are kept and only images the
/// lock lacks are resolved; with it, every tag is resolved again.
pub async fn lock(
    spec_path: &Path,
    update: bool,
    cache: &BlobCache,
    models: &ModelSources,
    tls: &airlock_registry_auth::tls::TlsOptions,
    progress: &Progress,
) -> Result<LockOutcome, PackError> {
    let (spec, _) = crate::compose::load_spec(spec_path)?;
    let lock_path = Lock::path_for(spec_path);
    let old = if lock_path.exists() {
        Some(Lock::load(&lock_path)?)
    } else {
        None
    };
    let (registry, ollama) = clients(&spec, tls)?;
    let rules = Rules::load(&spec, spec_path)?;
    let mut images = Vec::new();
    let mut changed = Vec::new();
    for r in spec.image_refs() {
        let key = r.to_string();
        let kept = old.as_ref().and_then(|l| l.get(&key)).filter(|_| !update);
        if let Some(k) = kept {
            // A kept pin is verified again: the rules may be new since it was pinned.
            let mut k = k.clone();
            k.signatures = signatures(&registry, cache, &rules, &r, &k, progress).await?;
            images.push(k);
            continue;
        }
        progress.say(format!("resolving {key}"));
        let (bytes, digest) = registry
            .manifest(&r)
            .await
            .map_err(|e| from_compose(e, spec.image_origin(&r)))?;
        let manifest = AnyManifest::parse(&bytes)
            .map_err(|e| PackError::registry(&key, "unreadable manifest", e))?;
        cache
            .put_bytes(&digest, &bytes)
            .map_err(|source| PackError::CacheWrite {
                blob: digest,
                source,
            })?;
        let mut entry = LockedImage {
            reference: key.clone(),
            digest,
            media_type: manifest.media_type().to_string(),
            signatures: Vec::new(),
        };
        entry.signatures = signatures(&registry, cache, &rules, &r, &entry, progress).await?;
        match old.as_ref().and_then(|l| l.get(&key)) {
            Some(prev) if prev.digest == digest => {}
            Some(prev) => changed.push(format!("{key}: {} -> {digest}", prev.digest)),
            None => changed.push(format!("{key}: pinned {digest}")),
        }
        images.push(entry);
    }
    changed.extend(newly_verified(old.as_ref(), &images));
    let mut locked_models = Vec::new();
    for want in spec.model_wants() {
        let key = want.name.to_string();
        let kept = old.as_ref().and_then(|l| l.model(&key)).filter(|_| !update);
        if let Some(k) = kept {
            locked_models.push(k.clone());
            continue;
        }
        let (bytes, digest) = if models.is_local(&want) {
            progress.say(format!(
                "reading {key} from {}",
                models.store.root().display()
            ));
            models.store.manifest(&want.name)?
        } else {
            progress.say(format!("resolving {key}"));
            ollama.manifest(&want.name).await?
        };
        cache
            .put_bytes(&digest, &bytes)
            .map_err(|source| PackError::CacheWrite {
                blob: digest,
                source,
            })?;
        match old.as_ref().and_then(|l| l.model(&key)) {
            Some(prev) if prev.digest == digest => {}
            Some(prev) => changed.push(format!("{key}: {} -> {digest}", prev.digest)),
            None => changed.push(format!("{key}: pinned {digest}")),
        }
        locked_models.push(LockedModel { name: key, digest });
    }
    if let Some(o) = &old {
        for l in &o.models {
            if !locked_models.iter().any(|m| m.name == l.name) {
                changed.push(format!("{}: removed (no longer in the spec)", l.name));
            }
        }
        for l in &o.images {
            if !images.iter().any(|i| i.reference == l.reference) {
                changed.push(format!("{}: removed (no longer in the spec)", l.reference));
            }
        }
    }
    // [[files]] are pinned by their content. Without --update a lock keeps what it pinned,
    // so a changed source shows as drift at build, as a moved tag does. With [[compose]]
    // stacks, a lock that pins something new reads the files again: an edited compose file
    // (a bumped tag) is then usually why, and its new images were just pinned.
    let reread = !spec.compose.is_empty() && !changed.is_empty();
    let files = match (&old, update) {
        (Some(o), false)
            if !reread
                && (o.files.is_some() || (spec.files.is_empty() && spec.compose.is_empty())) =>
        {
            o.files
        }
        _ => {
            let now = crate::plan::files_now(&spec, spec_path, progress)?;
            let was = old.as_ref().and_then(|o| o.files);
            if now != was {
                changed.push(match now {
                    Some(d) => format!("[[files]]: pinned {d}"),
                    None => "[[files]]: removed (no longer in the spec)".into(),
                });
            }
            now
        }
    };
    let created = match &old {
        Some(o) if changed.is_empty() => o.created.clone(),
        Some(o) => after(&o.created),
        None => now_rfc3339(),
    };
    let lock = Lock::new(&spec, created, images, locked_models).with_files(files);
    let written = old.as_ref() != Some(&lock);
    if written {
        write_replacing(&lock_path, &lock.to_toml()).map_err(|source| PackError::Io {
            path: lock_path.clone(),
            source,
        })?;
    }
    Ok(LockOutcome {
        lock,
        changed,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_updated_lock_is_strictly_newer_than_the_one_it_replaces() {
        let t = |s: &str| humantime::parse_rfc3339(s).unwrap();
        // Updated within the same second (or with a clock behind the lock's): one second on.
        let ahead = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        )
        .to_string();
        let next = after(&ahead);
        assert_eq!(
            t(&next),
            t(&ahead) + std::time::Duration::from_secs(1),
            "{ahead} -> {next}"
        );
        // An old lock: simply now.
        let now = std::time::SystemTime::now();
        let next = t(&after("2020-01-01T00:00:00Z"));
        assert!(
            next + std::time::Duration::from_secs(5) > now
                && next < now + std::time::Duration::from_secs(5)
        );
    }
}
