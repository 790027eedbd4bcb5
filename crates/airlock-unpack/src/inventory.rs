//! `airlock-unpack inventory`: what this host already has, for a delta bundle built against
//! it (`airlock-pack build --have`), and the same facts read again by `load` to check that a
//! delta bundle's left-out blobs really are here.
//!
//! The engine knows a layer by its chain ID, and loads an image whose layer it has under that
//! chain ID without reading the layer (moby's `docker load`), so per image the inventory
//! records the diff IDs the chain IDs follow from. Ollama stores are listed from their
//! blobs directory (host) or their manifests (volume, read through the Engine API).
//!
//! On Docker's containerd image store (tested with Docker 26) the same calls give the same
//! diff IDs (`RootFS.Layers` of the config); image IDs are manifest digests there, and the
//! list holds only images whose blobs are all in containerd's content store. That store
//! keeps snapshots by chain ID but lists an image only when its layers are there under the
//! digests its manifest names, which the Engine API does not expose: see README, "Engines".

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use airlock_bundle::header::Target;
use airlock_bundle::inventory::{EngineImage, Inventory, OllamaStore, StoredBlob};
use airlock_bundle::Digest;
use bollard::query_parameters::ListImagesOptions;
use bollard::Docker;

use crate::volume::{volume_exists, Existing, Helper};
use crate::UnpackError;

/// Where to look.
#[derive(Debug, Default)]
pub struct Sources {
    /// List the Docker engine's images.
    pub engine: bool,
    pub models_dirs: Vec<PathBuf>,
    pub volumes: Vec<String>,
}

/// Every image in the engine with its layers' diff IDs.
pub async fn engine_images(docker: &Docker) -> Result<Vec<EngineImage>, UnpackError> {
    let list = docker
        .list_images(Some(ListImagesOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(|source| UnpackError::EngineCall {
            what: "listing images".into(),
            source,
        })?;
    let mut out = Vec::new();
    for summary in list {
        let inspect = match docker.inspect_image(&summary.id).await {
            Ok(i) => i,
            // Removed between list and inspect.
            Err(_) => continue,
        };
        let diff_ids = inspect
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.parse::<Digest>().ok())
            .collect();
        let mut tags = summary.repo_tags;
        tags.retain(|t| t != "<none>:<none>");
        out.push(EngineImage {
            id: summary.id,
            tags,
            diff_ids,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The blobs of a models directory (`blobs/sha256-<hex>`, with their sizes). Not hashed:
/// the inventory is a hint, and `load` hashes what a delta bundle relies on.
pub fn dir_blobs(dir: &Path) -> Result<Vec<StoredBlob>, UnpackError> {
    let blobs = dir.join("blobs");
    let rd = match std::fs::read_dir(&blobs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(UnpackError::io(blobs, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(digest) = name
            .strip_prefix("sha256-")
            .and_then(|h| Digest::from_hex(h).ok())
        else {
            continue;
        };
        match e.metadata() {
            Ok(m) if m.is_file() => out.push(StoredBlob {
                digest,
                size: m.len(),
            }),
            _ => {}
        }
    }
    out.sort();
    Ok(out)
}

/// The blobs the models in a volume's store refer to and that are there with their size.
async fn volume_blobs(helper: &Helper, volume: &str) -> Result<Vec<StoredBlob>, UnpackError> {
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: Digest,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        config: Desc,
        #[serde(default)]
        layers: Vec<Desc>,
    }
    let manifests = helper
        .read_small_tree(volume, "models/manifests", 64 << 20)
        .await?;
    let mut wanted = HashSet::new();
    for (_, bytes) in manifests {
        if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
            wanted.insert((m.config.digest, m.config.size));
            wanted.extend(m.layers.iter().map(|l| (l.digest, l.size)));
        }
    }
    let mut out = Vec::new();
    for (digest, size) in wanted {
        let rel = format!(
            "models/{}",
            airlock_bundle::ollama::blob_path(&digest).display()
        );
        if helper.file(volume, &rel).stat().await? == Existing::Sized(size) {
            out.push(StoredBlob { digest, size });
        }
    }
    out.sort();
    Ok(out)
}

/// Takes the inventory of this host.
pub async fn take(sources: &Sources) -> Result<Inventory, UnpackError> {
    let mut inv = Inventory::new(
        airlock_bundle::tool_version("airlock-unpack"),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        crate::hostname(),
    );
    for dir in &sources.models_dirs {
        let abs = std::path::absolute(dir)
            .map_err(|e| UnpackError::Usage(format!("{}: {e}", dir.display())))?;
        inv.ollama.push(OllamaStore {
            target: Target::Path(abs.to_string_lossy().trim_end_matches('/').to_string()),
            blobs: dir_blobs(&abs)?,
        });
    }
    if sources.engine || !sources.volumes.is_empty() {
        let docker = crate::engine::connect().await?;
        if sources.engine {
            inv.images = engine_images(&docker).await?;
        }
        let mut existing = Vec::new();
        for v in &sources.volumes {
            if volume_exists(&docker, v).await? {
                existing.push(v.clone());
            }
        }
        if !existing.is_empty() {
            let mut helper = Helper::start(&docker, &existing, false).await?;
            let mut result = Ok(());
            for v in &existing {
                match volume_blobs(&helper, v).await {
                    Ok(blobs) => inv.ollama.push(OllamaStore {
                        target: Target::Volume(v.clone()),
                        blobs,
                    }),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            helper.remove().await;
            result?;
        }
    }
    Ok(inv)
}
