//! The lock file (`SPEC.lock` beside `SPEC.toml`): every image reference of a spec pinned to
//! the digest of its manifest or index, and every Ollama model to the sha256 of its raw
//! manifest bytes (Ollama's model ID), so tags never float between `lock` and `build`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;
use crate::spec::Spec;
use crate::{BundleError, Digest};

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// The spec's `name`.
    pub spec: String,
    /// When the pinned content last changed (RFC 3339, UTC). Bundles take it as their
    /// `created` time, which keeps rebuilds from one lock byte-identical.
    pub created: String,
    #[serde(default, rename = "image")]
    pub images: Vec<LockedImage>,
    #[serde(default, rename = "model", skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<LockedModel>,
    /// The content of the spec's `[[files]]`, as [`files_digest`] of their records (paths,
    /// modes, blob digests): a changed file is a change of the pinned content, so it gets a
    /// new `created` time and the gap host's anti-rollback sees a newer bundle, not the same
    /// one with other content. Absent when the spec carries no files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Digest>,
}

/// The digest a lock pins for a spec's `[[files]]`: sha256 of the JSON of their header
/// records, in the order the spec and the walk give them; `None` for no records.
pub fn files_digest(records: &[crate::header::FileRecord]) -> Option<Digest> {
    if records.is_empty() {
        return None;
    }
    let json = serde_json::to_vec(records).expect("file records serialise");
    Some(Digest::of(&json))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedModel {
    /// Fully qualified: `host/namespace/model:tag`.
    pub name: String,
    /// sha256 of the raw manifest bytes.
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The normalised reference as the spec names it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Digest of the manifest or index the reference resolved to.
    pub digest: Digest,
    pub media_type: String,
    /// The cosign signature manifests (under `sha256-<digest hex>.sig`) that verified this
    /// image under the spec's `[[verify]]` rules when it was locked; `build` finds the same
    /// ones upstream or refuses (a signature that vanished or changed is drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Digest>,
}

/// One way a lock no longer matches its spec or the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The spec names an image the lock does not pin.
    NotLocked { reference: String },
    /// The lock pins an image the spec no longer names.
    NotInSpec { reference: String },
    /// The spec pins a digest (`ref@sha256:…`) other than the lock's.
    SpecDigest {
        reference: String,
        locked: Digest,
        spec: Digest,
    },
    /// The tag now resolves to another digest at the registry.
    Moved {
        reference: String,
        locked: Digest,
        now: Digest,
    },
    /// The `[[files]]` sources no longer hold what the lock pinned (content, modes or
    /// layout), or the lock pins none (written before files were pinned, or files added).
    Files {
        locked: Option<Digest>,
        now: Option<Digest>,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::NotLocked { reference } => {
                write!(f, "{reference}: in the spec but not in the lock")
            }
            Drift::NotInSpec { reference } => {
                write!(f, "{reference}: in the lock but no longer in the spec")
            }
            Drift::SpecDigest {
                reference,
                locked,
                spec,
            } => {
                write!(
                    f,
                    "{reference}: the spec pins {spec}, the lock has {locked}"
                )
            }
            Drift::Moved {
                reference,
                locked,
                now,
            } => {
                write!(
                    f,
                    "{reference}: locked at {locked}, the registry now serves {now}"
                )
            }
            Drift::Files { locked, now } => {
                let show = |d: &Option<Digest>| match d {
                    Some(d) => d.to_string(),
                    None => "no files".into(),
                };
                write!(
                    f,
                    "[[files]]: the lock pins {}, the sources now hold {} (content, modes or layout changed)",
                    show(locked),
                    show(now)
                )
            }
        }
    }
}

impl Lock {
    pub fn new(
        spec: &Spec,
        created: String,
        mut images: Vec<LockedImage>,
        mut models: Vec<LockedModel>,
    ) -> Lock {
        images.sort();
        models.sort();
        Lock {
            version: LOCK_VERSION,
            spec: spec.name.clone(),
            created,
            images,
            models,
            files: None,
        }
    }

    /// The lock with `files` ([`files_digest`] of the spec's `[[files]]`) pinned too.
    pub fn with_files(self, files: Option<Digest>) -> Lock {
        Lock { files, ..self }
    }

    pub fn model(&self, name: &str) -> Option<&LockedModel> {
        self.models.iter().find(|m| m.name == name)
    }

    /// `manifests/x.toml` → `manifests/x.lock`.
    pub fn path_for(spec_path: &Path) -> PathBuf {
        spec_path.with_extension("lock")
    }

    pub fn load(path: &Path) -> Result<Lock, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
        Lock::from_toml(&text, path)
    }

    /// Parses lock text read from `origin` (named in errors), as [`Lock::load`] does; the
    /// fuzz target `lock` feeds it directly.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Lock, BundleError> {
        let lock: Lock = toml::from_str(text)
            .map_err(|e| BundleError::Usage(format!("{}: {e}", origin.display())))?;
        if lock.version != LOCK_VERSION {
            return Err(BundleError::Usage(format!(
                "{}: lock version {} is not supported (expected {LOCK_VERSION})",
                origin.display(),
                lock.version
            )));
        }
        Ok(lock)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("lock serialises");
        format!(
            "# Written by `airlock-pack lock`: every image and model pinned to a digest.\n\
             # Commit it next to the spec; update with `airlock-pack lock --update SPEC`.\n{body}"
        )
    }

    pub fn get(&self, reference: &str) -> Option<&LockedImage> {
        self.images.iter().find(|i| i.reference == reference)
    }

    /// Compares the lock with the spec (not the registry): what is missing, stale or
    /// contradicts a digest the spec pins.
    pub fn drift_from(&self, spec: &Spec) -> Vec<Drift> {
        let mut drift = Vec::new();
        let refs = spec.image_refs();
        for r in &refs {
            let key = r.to_string();
            match self.get(&key) {
                None => drift.push(Drift::NotLocked { reference: key }),
                Some(l) => {
                    if let Some(d) = r.digest {
                        if d != l.digest {
                            drift.push(Drift::SpecDigest {
                                reference: key,
                                locked: l.digest,
                                spec: d,
                            });
                        }
                    }
                }
            }
        }
        for l in &self.images {
            if !refs.iter().any(|r| r.to_string() == l.reference) {
                drift.push(Drift::NotInSpec {
                    reference: l.reference.clone(),
                });
            }
        }
        let models: Vec<String> = spec
            .model_wants()
            .iter()
            .map(|m| m.name.to_string())
            .collect();
        for m in &models {
            if self.model(m).is_none() {
                drift.push(Drift::NotLocked {
                    reference: m.clone(),
                });
            }
        }
        for l in &self.models {
            if !models.contains(&l.name) {
                drift.push(Drift::NotInSpec {
                    reference: l.name.clone(),
                });
            }
        }
        drift
    }

    /// Parsed references of the locked images.
    pub fn image_refs(&self) -> Result<Vec<(ImageRef, &LockedImage)>, BundleError> {
        self.images
            .iter()
            .map(|l| {
                ImageRef::parse(&l.reference)
                    .map(|r| (r, l))
                    .map_err(|e| BundleError::Usage(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::from_toml(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn round_trip_is_sorted_and_stable() {
        let s = spec("name = \"t\"\n[[image]]\nref = \"b\"\n[[image]]\nref = \"a\"");
        let lock = Lock::new(
            &s,
            "2026-01-01T00:00:00Z".into(),
            vec![
                LockedImage {
                    reference: "docker.io/library/b:latest".into(),
                    digest: Digest::of(b"b"),
                    media_type: crate::oci::OCI_INDEX.into(),
                    signatures: vec![],
                },
                LockedImage {
                    reference: "docker.io/library/a:latest".into(),
                    digest: Digest::of(b"a"),
                    media_type: crate::oci::OCI_MANIFEST.into(),
                    signatures: vec![],
                },
            ],
            vec![],
        );
        let text = lock.to_toml();
        assert!(text.find("library/a").unwrap() < text.find("library/b").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.lock");
        std::fs::write(&p, &text).unwrap();
        let back = Lock::load(&p).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.to_toml(), text);
        assert!(lock.drift_from(&s).is_empty());
    }

    #[test]
    fn drift_is_named() {
        let s = spec(&format!(
            "name = \"t\"\n[[image]]\nref = \"a\"\n[[image]]\nref = \"c@{}\"",
            Digest::of(b"spec")
        ));
        let lock = Lock::new(
            &s,
            "2026-01-01T00:00:00Z".into(),
            vec![
                LockedImage {
                    reference: format!("docker.io/library/c@{}", Digest::of(b"spec")),
                    digest: Digest::of(b"other"),
                    media_type: crate::oci::OCI_MANIFEST.into(),
                    signatures: vec![],
                },
                LockedImage {
                    reference: "docker.io/library/gone:latest".into(),
                    digest: Digest::of(b"g"),
                    media_type: crate::oci::OCI_MANIFEST.into(),
                    signatures: vec![],
                },
            ],
            vec![LockedModel {
                name: "registry.ollama.ai/library/old:latest".into(),
                digest: Digest::of(b"m"),
            }],
        );
        let d = lock.drift_from(&s);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            matches!(&d[3], Drift::NotInSpec { reference } if reference.ends_with("/old:latest"))
        );
        assert!(
            matches!(&d[0], Drift::NotLocked { reference } if reference == "docker.io/library/a:latest")
        );
        assert!(matches!(&d[1], Drift::SpecDigest { .. }));
        assert!(matches!(&d[2], Drift::NotInSpec { reference } if reference.contains("gone")));
        assert!(d[0].to_string().contains("not in the lock"));
        let with_model = spec("name = \"t\"\n[[model]]\nname = \"llama3\"");
        let d = Lock::new(&with_model, "2026-01-01T00:00:00Z".into(), vec![], vec![])
            .drift_from(&with_model);
        assert!(
            matches!(&d[..], [Drift::NotLocked { reference }] if reference == "registry.ollama.ai/library/llama3:latest"),
            "{d:?}"
        );
    }
}
