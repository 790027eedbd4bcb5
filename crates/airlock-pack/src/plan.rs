//! From a lock to a bundle plan: which platform manifests, configs and layers each pinned
//! image needs, which blobs each pinned model needs, and which local files the spec carries;
//! small documents fetched, large blobs listed for download, all in a fixed order.

use std::collections::{HashMap, HashSet};

use airlock_bundle::header::Present;
use airlock_bundle::header::{
    Entry, FileRecord, ImageRecord, ModelRecord, Target, INDEX_PATH, OCI_LAYOUT_PATH,
};
use airlock_bundle::inventory::{chain_ids, Inventory, StoredBlob};
use airlock_bundle::lock::{Drift, Lock};
use airlock_bundle::oci::{
    self, AnyManifest, Descriptor, ImageConfig, ImageIndex, ImageManifest, OciPlatform, Platform,
};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::spec::Spec;
use airlock_bundle::{Digest, ImageRef};
use std::path::{Path, PathBuf};

use crate::cache::BlobCache;
use crate::lock::ModelSources;
use crate::ollama::OllamaRegistry;
use crate::registry::Registry;
use crate::PackError;
use airlock_bundle::progress::Progress;

/// Where a blob comes from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// An OCI registry, through the blob cache.
    Image(ImageRef),
    /// An Ollama registry, through the blob cache.
    Model(ModelName),
    /// A file on this machine (a local Ollama store, a `[[files]]` source), read as it is
    /// and hashed while the bundle is written.
    File(PathBuf),
}

/// A blob the bundle carries and where to fetch it from.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub from: BlobSource,
}

impl PlannedBlob {
    /// Fetched into the cache before it can be written.
    pub fn is_remote(&self) -> bool {
        !matches!(self.from, BlobSource::File(_))
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub images: Vec<ImageRecord>,
    pub models: Vec<ModelRecord>,
    pub files: Vec<FileRecord>,
    /// Every blob, in bundle order, once.
    pub blobs: Vec<PlannedBlob>,
    /// index.json of the bundle's OCI layout.
    pub index_json: Vec<u8>,
    pub oci_layout: Vec<u8>,
    /// Each image config's diff IDs (what a delta build needs to compute chain IDs).
    pub diff_ids: HashMap<Digest, Vec<Digest>>,
}

impl Plan {
    /// Header entries in tar order.
    /// Leaves out every blob the host of `have` already has: an image layer whose chain ID
    /// (the layer on exactly the layers below it) the engine has, for every image that uses
    /// it, and a model blob that is in one of its Ollama stores. Manifests, configs and
    /// files are always carried. Returns what was left out, for the header.
    pub fn leave_out(&mut self, have: &Inventory) -> Vec<Present> {
        let chains = have.chain_ids();
        let stored = have.model_blobs();
        let size: HashMap<Digest, u64> = self.blobs.iter().map(|b| (b.digest, b.size)).collect();
        let mut needed: HashSet<Digest> = HashSet::new();
        let mut present: Vec<Present> = Vec::new();
        for img in &self.images {
            needed.insert(img.manifest);
            needed.insert(img.config);
            let ids = self.diff_ids.get(&img.config).map(|d| chain_ids(d));
            for (i, layer) in img.layers.iter().enumerate() {
                match ids.as_ref().filter(|c| c.len() == img.layers.len()) {
                    Some(c) if chains.contains(&c[i]) => present.push(Present {
                        digest: *layer,
                        size: size[layer],
                        chain_id: Some(c[i]),
                    }),
                    _ => {
                        needed.insert(*layer);
                    }
                }
            }
        }
        for m in &self.models {
            needed.insert(m.manifest);
            for d in std::iter::once(&m.config).chain(&m.layers) {
                let blob = StoredBlob {
                    digest: *d,
                    size: size[d],
                };
                if stored.contains(&blob) {
                    present.push(Present {
                        digest: *d,
                        size: size[d],
                        chain_id: None,
                    });
                } else {
                    needed.insert(*d);
                }
            }
        }
        needed.extend(self.files.iter().filter_map(|f| f.digest));
        present.retain(|p| !needed.contains(&p.digest));
        let mut seen = HashSet::new();
        present.retain(|p| seen.insert((p.digest, p.chain_id)));
        let gone: HashSet<Digest> = present.iter().map(|p| p.digest).collect();
        self.blobs.retain(|b| !gone.contains(&b.digest));
        present
    }

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

/// What `plan` talks to.
#[derive(Debug)]
pub struct Sources<'a> {
    pub registry: &'a Registry,
    pub ollama: &'a OllamaRegistry,
    pub models: &'a ModelSources,
    pub cache: &'a BlobCache,
}

/// Checks the lock against the spec and the registries, then resolves every image and
/// model to the blobs it needs and every `[[files]]` entry to its files. Fetches manifests
/// and configs (small), not layers.
pub async fn plan(
    spec: &Spec,
    spec_path: &std::path::Path,
    lock: &Lock,
    src: &Sources<'_>,
    progress: &Progress,
) -> Result<Plan, PackError> {
    let (registry, cache) = (src.registry, src.cache);
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
    // Models: the tag (or the local store's manifest) must still give the locked digest.
    let mut model_manifests = Vec::new();
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
            model_manifests.push((want, bytes, local));
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
    let mut diff_ids = HashMap::new();
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
                    from: BlobSource::Image(from.clone()),
                });
            }
        }
    }

    let index_json = oci::layout_index(
        images
            .iter()
            .map(|(img, mdesc)| (img.reference.clone(), mdesc.clone())),
    );
    let mut add = |b: PlannedBlob| {
        if seen.insert(b.digest) {
            blobs.push(b);
        }
    };

    model_manifests.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut models = Vec::new();
    for (want, bytes, local) in model_manifests {
        let name = &want.name;
        let m: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| PackError::Registry(format!("{name}: unreadable model manifest: {e}")))?;
        let mdigest = Digest::of(&bytes);
        let source = |d: &Digest, size: u64| -> Result<BlobSource, PackError> {
            Ok(if local {
                BlobSource::File(src.models.store.check_blob(name, d, size)?)
            } else {
                BlobSource::Model(name.clone())
            })
        };
        cache
            .put_bytes(&mdigest, &bytes)
            .map_err(|e| PackError::Environment(format!("blob cache: {e}")))?;
        add(PlannedBlob {
            digest: mdigest,
            size: bytes.len() as u64,
            media_type: oci::DOCKER_MANIFEST.into(),
            from: if local {
                BlobSource::File(src.models.store.manifest_path(name))
            } else {
                BlobSource::Model(name.clone())
            },
        });
        for d in std::iter::once(&m.config).chain(&m.layers) {
            add(PlannedBlob {
                digest: d.digest,
                size: d.size,
                media_type: d.media_type.clone(),
                from: source(&d.digest, d.size)?,
            });
        }
        let cfg = if local {
            let p = src
                .models
                .store
                .check_blob(name, &m.config.digest, m.config.size)?;
            std::fs::read(&p).map_err(|e| PackError::Usage(format!("{}: {e}", p.display())))?
        } else {
            if !cache.has(&m.config.digest, m.config.size) {
                src.ollama
                    .fetch_blob(
                        name,
                        m.config.digest,
                        m.config.size,
                        cache,
                        1,
                        &|_| {},
                        None,
                    )
                    .await?;
            }
            cache.get_bytes(&m.config.digest).ok_or_else(|| {
                PackError::Environment(format!("blob cache lost {}", m.config.digest))
            })?
        };
        // Informational only: a config that is not Ollama's JSON still packs.
        let info = serde_json::from_slice(&cfg).ok();
        models.push(ModelRecord {
            name: name.to_string(),
            manifest: mdigest,
            config: m.config.digest,
            layers: m.layers.iter().map(|d| d.digest).collect(),
            target: want.target.clone(),
            info,
        });
    }

    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for want in spec.files_wants(spec_dir) {
        progress.say(format!("reading {}", want.source.display()));
        for (rec, path, size) in walk_files(&want.source, &want.target, &want.dest)? {
            if let Some(d) = rec.digest {
                add(PlannedBlob {
                    digest: d,
                    size,
                    media_type: FILE_MEDIA_TYPE.into(),
                    from: BlobSource::File(path),
                });
            }
            files.push(rec);
        }
    }
    let now = airlock_bundle::lock::files_digest(&files);
    if now != lock.files {
        return Err(PackError::Drift {
            what: "the [[files]] sources".into(),
            details: format!(
                "  - {}",
                Drift::Files {
                    locked: lock.files,
                    now
                }
            ),
            spec: spec_path.display().to_string(),
        });
    }
    Ok(Plan {
        images: images.into_iter().map(|(i, _)| i).collect(),
        models,
        files,
        blobs,
        index_json,
        oci_layout: oci::OCI_LAYOUT.to_vec(),
        diff_ids,
    })
}

/// What the lock pins for the spec's `[[files]]` now (see [`airlock_bundle::lock::files_digest`]).
pub fn files_now(
    spec: &Spec,
    spec_path: &Path,
    progress: &Progress,
) -> Result<Option<Digest>, PackError> {
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for want in spec.files_wants(spec_dir) {
        progress.say(format!("reading {}", want.source.display()));
        for (rec, _, _) in walk_files(&want.source, &want.target, &want.dest)? {
            files.push(rec);
        }
    }
    Ok(airlock_bundle::lock::files_digest(&files))
}

/// Media type of a `[[files]]` blob in the header's entries.
pub const FILE_MEDIA_TYPE: &str = "application/octet-stream";

/// The files and directories of one `[[files]]` source, in a fixed (sorted) order: a single
/// file lands in the target under its own name, a directory's contents land in the target.
/// Symlinks and special files are refused, not followed: a link could point anywhere on
/// the gap host, and following it here would carry content the spec does not name.
fn walk_files(
    source: &Path,
    target: &Target,
    dest: &str,
) -> Result<Vec<(FileRecord, PathBuf, u64)>, PackError> {
    use std::os::unix::fs::PermissionsExt as _;
    let env = |p: &Path, e: std::io::Error| PackError::Usage(format!("{}: {e}", p.display()));
    let join = |rel: &str| -> String {
        match (dest.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => dest.to_string(),
            (false, false) => format!("{dest}/{rel}"),
        }
    };
    let mut out = Vec::new();
    let mut stack = vec![(source.to_path_buf(), String::new())];
    let top = std::fs::symlink_metadata(source).map_err(|e| env(source, e))?;
    if top.is_file() {
        let name = source.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            PackError::Usage(format!("{}: not a UTF-8 file name", source.display()))
        })?;
        stack = vec![(source.to_path_buf(), name.to_string())];
    } else if !dest.is_empty() && top.is_dir() {
        out.push((
            FileRecord {
                target: target.clone(),
                path: dest.to_string(),
                mode: format!("{:04o}", top.permissions().mode() & 0o777),
                digest: None,
            },
            source.to_path_buf(),
            0,
        ));
    }
    while let Some((path, rel)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| env(&path, e))?;
        let mode = format!("{:04o}", meta.permissions().mode() & 0o777);
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(PackError::Usage(format!(
                "{}: is a symbolic link; airlock carries regular files and directories only (copy the target into place instead)",
                path.display()
            )));
        }
        if ft.is_file() {
            let (d, size) = airlock_bundle::hashing::digest_reader(
                std::fs::File::open(&path).map_err(|e| env(&path, e))?,
            )
            .map_err(|e| env(&path, e))?;
            let rec_path = join(&rel);
            airlock_bundle::header::check_relative(&rec_path)
                .map_err(|e| PackError::Usage(format!("{}: {e}", path.display())))?;
            out.push((
                FileRecord {
                    target: target.clone(),
                    path: rec_path,
                    mode,
                    digest: Some(d),
                },
                path,
                size,
            ));
        } else if ft.is_dir() {
            if !rel.is_empty() {
                out.push((
                    FileRecord {
                        target: target.clone(),
                        path: join(&rel),
                        mode,
                        digest: None,
                    },
                    path.clone(),
                    0,
                ));
            }
            let mut children = Vec::new();
            for e in std::fs::read_dir(&path).map_err(|e| env(&path, e))? {
                let e = e.map_err(|e| env(&path, e))?;
                let name = e.file_name().into_string().map_err(|n| {
                    PackError::Usage(format!(
                        "{}: {n:?} is not a UTF-8 file name",
                        path.display()
                    ))
                })?;
                children.push(name);
            }
            // Reverse-sorted onto the stack: popped in sorted order.
            children.sort();
            for c in children.into_iter().rev() {
                let child_rel = if rel.is_empty() {
                    c.clone()
                } else {
                    format!("{rel}/{c}")
                };
                stack.push((path.join(&c), child_rel));
            }
        } else {
            return Err(PackError::Usage(format!(
                "{}: is not a regular file or directory",
                path.display()
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A layer is left out only where the host has it on the same layers below (its chain
    /// ID), for every image that uses it; a model blob where a store has it, size and all.
    #[test]
    fn a_delta_leaves_out_layers_by_chain_and_model_blobs_by_digest() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let blob = |name: &str| PlannedBlob {
            digest: d(name),
            size: name.len() as u64,
            media_type: "x".into(),
            from: BlobSource::File(PathBuf::from(name)),
        };
        let image = |r: &str, config: &str, layers: &[&str]| ImageRecord {
            reference: r.into(),
            platform: "linux/amd64".parse().unwrap(),
            manifest: d(&format!("m-{r}")),
            config: d(config),
            layers: layers.iter().map(|l| d(l)).collect(),
            index: None,
        };
        let mut plan = Plan {
            images: vec![
                image("a", "cfg-a", &["base", "app"]),
                // `app` again, but on another base: another chain.
                image("b", "cfg-b", &["other", "app"]),
            ],
            models: vec![ModelRecord {
                name: "registry.ollama.ai/library/m:latest".into(),
                manifest: d("mm"),
                config: d("mc"),
                layers: vec![d("weights"), d("license")],
                target: Target::Volume("ollama-data".into()),
                info: None,
            }],
            blobs: [
                "m-a", "cfg-a", "base", "app", "m-b", "cfg-b", "other", "mm", "mc", "weights",
                "license",
            ]
            .iter()
            .map(|n| blob(n))
            .collect(),
            ..Plan::default()
        };
        let diff = |l: &str| d(&format!("diff-{l}"));
        plan.diff_ids
            .insert(d("cfg-a"), vec![diff("base"), diff("app")]);
        plan.diff_ids
            .insert(d("cfg-b"), vec![diff("other"), diff("app")]);
        let mut have = Inventory::new("t".into(), "now".into(), "gap".into());
        have.images.push(airlock_bundle::inventory::EngineImage {
            id: "x".into(),
            tags: vec![],
            diff_ids: vec![diff("base"), diff("app")],
        });
        have.ollama.push(airlock_bundle::inventory::OllamaStore {
            target: Target::Volume("ollama-data".into()),
            blobs: vec![
                StoredBlob {
                    digest: d("weights"),
                    size: 7,
                },
                // Same digest, other size: not the same blob.
                StoredBlob {
                    digest: d("license"),
                    size: 1,
                },
                // A manifest is always carried.
                StoredBlob {
                    digest: d("mm"),
                    size: 2,
                },
            ],
        });
        let present = plan.leave_out(&have);
        let left: Vec<Digest> = present.iter().map(|p| p.digest).collect();
        // `base` (same chain), `weights`; not `app` (image b needs it on `other`), not the
        // license (size differs), not the manifest.
        assert_eq!(left, vec![d("base"), d("weights")]);
        assert_eq!(present[0].chain_id, Some(diff("base")));
        assert_eq!(present[1].chain_id, None);
        assert_eq!(plan.blobs.len(), 9);
        assert!(!plan.blobs.iter().any(|b| b.digest == d("base")));
    }

    #[test]
    fn the_shipped_llm_stack_spec_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/llm-stack.toml");
        let spec = Spec::load(&path).unwrap();
        assert_eq!(spec.image_refs().len(), 6);
        let models: Vec<String> = spec.model_wants().iter().map(|m| m.name.short()).collect();
        assert_eq!(
            models,
            ["llama3:latest", "codellama:latest", "mistral:latest"]
        );
        let mut carried = Vec::new();
        for f in spec.files_wants(path.parent().unwrap()) {
            for (rec, _, _) in walk_files(&f.source, &f.target, &f.dest).unwrap() {
                carried.push(format!("{} {} {}", rec.target, rec.path, rec.mode));
            }
        }
        assert_eq!(
            carried,
            [
                "/opt/llm-stack docker-compose.yml 0644",
                "volume prometheus-config prometheus.yml 0644"
            ]
        );
    }

    #[test]
    fn files_keep_modes_in_sorted_order_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("b/deeper")).unwrap();
        std::fs::write(src.join("a.yml"), "a").unwrap();
        std::fs::write(src.join("b/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("b/run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(src.join("b"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(src.join("b/deeper/z"), "z").unwrap();
        let t = Target::Volume("vol".into());
        let got: Vec<(String, String, bool)> = walk_files(&src, &t, "etc/app")
            .unwrap()
            .into_iter()
            .map(|(r, _, _)| (r.path.clone(), r.mode.clone(), r.is_dir()))
            .collect();
        let want = [
            ("etc/app", "0755", true),
            ("etc/app/a.yml", "0644", false),
            ("etc/app/b", "0750", true),
            ("etc/app/b/deeper", "0755", true),
            ("etc/app/b/deeper/z", "0644", false),
            ("etc/app/b/run.sh", "0755", false),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(p, m, d)| (p.to_string(), m.to_string(), *d))
                .collect::<Vec<_>>()
        );
        // A single file lands under its own name.
        let one = walk_files(&src.join("a.yml"), &t, "").unwrap();
        assert_eq!(one[0].0.path, "a.yml");
        assert_eq!(one[0].0.digest, Some(Digest::of(b"a")));
        std::os::unix::fs::symlink("/etc/passwd", src.join("b/link")).unwrap();
        let err = walk_files(&src, &t, "").unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains("b/link"),
            "{err}"
        );
    }
}
