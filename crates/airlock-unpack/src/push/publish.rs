//! The last step of a push, once every digest of the bundle checked and every blob
//! arrived: PUTting the manifests, which makes the tags visible.

use std::collections::HashMap;

use airlock_bundle::header::Header;
use airlock_bundle::{oci, BundleError, Digest};
use bytes::Bytes;

use super::client::Client;
use super::plan::{manifest_media_type, Item};
use crate::UnpackError;

/// PUTs an item's manifests: platform manifests by digest, then what the tag points to.
async fn publish(
    client: &Client,
    h: &Header,
    it: &Item,
    captured: &HashMap<Digest, Bytes>,
) -> Result<(), UnpackError> {
    let repo = &it.dest.repository;
    let carried = |d: &Digest| {
        captured.get(d).cloned().ok_or_else(|| {
            UnpackError::Bundle(BundleError::Malformed(format!(
                "manifest {d} of {} is not in the bundle",
                it.source
            )))
        })
    };
    let top_ref = it.dest.tag.clone().unwrap_or_else(|| it.top.to_string());
    match &it.index {
        Some((bytes, media_type)) => {
            for d in &it.manifests {
                let b = carried(d)?;
                let mt = manifest_media_type(h, d, Some(&b));
                client.put_manifest(repo, &d.to_string(), &mt, b).await?;
            }
            client
                .put_manifest(repo, &top_ref, media_type, bytes.clone())
                .await
        }
        None => {
            let b = carried(&it.top)?;
            let mt = if it.model {
                oci::AnyManifest::parse(&b)
                    .map(|m| m.media_type().to_string())
                    .unwrap_or_else(|_| oci::DOCKER_MANIFEST.into())
            } else {
                manifest_media_type(h, &it.top, Some(&b))
            };
            client.put_manifest(repo, &top_ref, &mt, b).await
        }
    }
}

/// Publishes every item whose tag does not already point at its manifest, in plan order.
pub(crate) async fn publish_all(
    client: &Client,
    h: &Header,
    items: &[Item],
    captured: &HashMap<Digest, Bytes>,
) -> Result<(), UnpackError> {
    for it in items.iter().filter(|it| !it.unchanged) {
        publish(client, h, it, captured).await?;
    }
    Ok(())
}
