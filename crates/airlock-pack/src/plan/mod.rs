//! From a lock to a bundle plan: which platform manifests, configs and layers each pinned
//! image needs, which blobs each pinned model needs, and which local files the spec carries;
//! small documents fetched, large blobs listed for download, all in a fixed order.
//!
//! [`plan`] runs the steps in order, each in its own module: [`drift`] (the lock still
//! matches the spec and the registries), [`images`], [`models`], [`files`].

mod drift;
mod files;
mod images;
mod models;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use airlock_bundle::header::Present;
use airlock_bundle::header::{
    Entry, FileRecord, ImageRecord, ModelRecord, INDEX_PATH, OCI_LAYOUT_PATH,
};
use airlock_bundle::inventory::{chain_ids, Inventory, StoredBlob};
use airlock_bundle::lock::Lock;
use airlock_bundle::oci;
use airlock_bundle::ollama::ModelName;
use airlock_bundle::spec::Spec;
use airlock_bundle::{Digest, ImageRef};
use airlock_progress::Progress;

use crate::cache::BlobCache;
use crate::local::ModelSources;
use crate::ollama::OllamaRegistry;
use crate::registry::Registry;
use crate::PackError;

pub use files::files_now;

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
    /// The compose stacks, their files among `files`.
    pub compose: Vec<airlock_bundle::header::ComposeRecord>,
    /// Every blob, in bundle order, once.
    pub blobs: Vec<PlannedBlob>,
    /// index.json of the bundle's OCI layout.
    pub index_json: Vec<u8>,
    pub oci_layout: Vec<u8>,
    /// Each image config's diff IDs (what a delta build needs to compute chain IDs).
    pub diff_ids: HashMap<Digest, Vec<Digest>>,
    /// The signatures, attestations, SBOMs and referrers carried with the images.
    pub provenance: Vec<airlock_bundle::provenance::Provenance>,
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
        for p in &self.provenance {
            needed.insert(p.manifest);
            needed.extend(p.blobs.iter().copied());
        }
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

/// What `plan` talks to.
#[derive(Debug)]
pub struct Sources<'a> {
    pub registry: &'a Registry,
    pub ollama: &'a OllamaRegistry,
    pub models: &'a ModelSources,
    pub cache: &'a BlobCache,
    /// The spec's `[[verify]]` rules.
    pub rules: &'a crate::provenance::Rules,
    /// Whether upstream provenance is carried (`build --no-provenance` says no).
    pub carry: bool,
}

/// Every blob of the bundle once, in the order they are added.
#[derive(Debug, Default)]
struct Blobs {
    list: Vec<PlannedBlob>,
    seen: HashSet<Digest>,
}

impl Blobs {
    fn add(&mut self, b: PlannedBlob) {
        if self.seen.insert(b.digest) {
            self.list.push(b);
        }
    }
}

/// Checks the lock against the spec and the registries (and the images' signatures against
/// the lock and the `[[verify]]` rules), then resolves every image and model to the blobs it
/// needs and every `[[files]]` entry to its files, and looks up the provenance carried with
/// the images. Fetches manifests and configs (small), not layers.
pub async fn plan(
    spec: &Spec,
    spec_path: &std::path::Path,
    lock: &Lock,
    src: &Sources<'_>,
    progress: &Progress,
) -> Result<Plan, PackError> {
    let checked = drift::check(spec, spec_path, lock, src).await?;
    let mut verdicts = Vec::new();
    for (r, l) in &checked.images {
        let v =
            crate::provenance::recheck(src.registry, src.cache, src.rules, l, r, spec_path).await?;
        for n in v.iter().flat_map(|v| &v.notes) {
            progress.say(format!("warning: {n}"));
        }
        verdicts.push(v);
    }
    let mut blobs = Blobs::default();
    let images = images::plan(spec, &checked.images, src, progress, &mut blobs).await?;
    let mut provenance = Vec::new();
    if src.carry {
        let subjects: Vec<crate::provenance::Subject<'_>> = checked
            .images
            .iter()
            .zip(&verdicts)
            .map(|((r, l), v)| crate::provenance::Subject {
                r,
                locked: l,
                platforms: images
                    .records
                    .iter()
                    .filter(|i| i.reference == l.reference)
                    .map(|i| i.manifest)
                    .collect(),
                verdict: v.as_ref(),
            })
            .collect();
        let carried =
            crate::provenance::collect(src.registry, src.cache, &subjects, progress).await?;
        for b in carried.blobs {
            blobs.add(b);
        }
        provenance = carried.records;
    }
    let models = models::plan(checked.models, src, &mut blobs).await?;
    let (files, compose) = files::plan(spec, spec_path, lock, src.cache, progress, &mut blobs)?;
    Ok(Plan {
        images: images.records,
        models,
        files,
        compose,
        blobs: blobs.list,
        index_json: images.index_json,
        oci_layout: oci::OCI_LAYOUT.to_vec(),
        diff_ids: images.diff_ids,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use airlock_bundle::header::Target;

    use super::files::walk_files;
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
        let (spec, stacks) = crate::compose::load_spec(&path).unwrap();
        // The images are the compose file's services'.
        assert_eq!(spec.image_refs().len(), 6);
        assert!(spec.images.iter().all(|i| i
            .from
            .as_deref()
            .is_some_and(|f| f.contains("docker-compose.yml, service "))));
        assert_eq!(stacks[0].services[0].name, "ollama");
        assert_eq!(stacks[0].services[0].image, "docker.io/ollama/ollama:0.5.7");
        assert!(stacks[0].env.is_none());
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
        let progress = Progress::new(airlock_progress::Mode::Quiet);
        for (rec, _) in files::compose_files(&spec, path.parent().unwrap(), &progress)
            .unwrap()
            .files
        {
            carried.push(format!("{} {} {}", rec.target, rec.path, rec.mode));
        }
        assert_eq!(
            carried,
            [
                "volume prometheus-config prometheus.yml 0644",
                "/opt/llm-stack docker-compose.yml 0644",
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
