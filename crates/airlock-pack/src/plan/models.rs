//! Models: each pinned Ollama model's manifest, config and layers, from its registry
//! (through the blob cache) or the local store (read as it is).

use airlock_bundle::header::ModelRecord;
use airlock_bundle::oci::{self, ImageManifest};
use airlock_bundle::spec::ModelWant;
use airlock_bundle::Digest;

use super::{BlobSource, Blobs, PlannedBlob, Sources};
use crate::PackError;

pub(super) async fn plan(
    mut model_manifests: Vec<(ModelWant, Vec<u8>, bool)>,
    src: &Sources<'_>,
    blobs: &mut Blobs,
) -> Result<Vec<ModelRecord>, PackError> {
    let cache = src.cache;
    model_manifests.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut models = Vec::new();
    for (want, bytes, local) in model_manifests {
        let name = &want.name;
        let m: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| PackError::registry(name, "unreadable model manifest", e))?;
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
            .map_err(|source| PackError::CacheWrite {
                blob: mdigest,
                source,
            })?;
        blobs.add(PlannedBlob {
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
            blobs.add(PlannedBlob {
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
            std::fs::read(&p).map_err(|source| PackError::Input { path: p, source })?
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
            cache
                .get_bytes(&m.config.digest)
                .ok_or(PackError::CacheLost {
                    blob: m.config.digest,
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

    Ok(models)
}
