//! The last step of a push, once every digest of the bundle checked and every blob
//! arrived: PUTting the manifests, which makes the tags visible. Per item: the platform
//! manifests by digest, then the provenance (`attach`), then the tag, so that whoever sees
//! the tag finds its signatures.

use std::collections::HashMap;

use airlock_bundle::header::Header;
use airlock_bundle::{oci, BundleError, Digest};
use bytes::Bytes;

use super::attach;
use super::client::Client;
use super::plan::{manifest_media_type, Item};
use super::PushedArtifact;
use crate::UnpackError;

/// PUTs an item's manifests and artifacts; returns what happened to the artifacts.
async fn publish(
    client: &Client,
    h: &Header,
    it: &Item,
    captured: &HashMap<Digest, Bytes>,
) -> Result<Vec<PushedArtifact>, UnpackError> {
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
    // What the tag will point to, with its media type.
    let mut top = None;
    if !it.unchanged {
        match &it.index {
            Some((bytes, media_type)) => {
                for d in &it.manifests {
                    let b = carried(d)?;
                    let mt = manifest_media_type(h, d, Some(&b));
                    client.put_manifest(repo, &d.to_string(), &mt, b).await?;
                }
                top = Some((bytes.clone(), media_type.to_string()));
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
                if !it.artifacts.is_empty() && it.dest.tag.is_some() {
                    // By digest first: the artifacts' subject exists before they do.
                    client
                        .put_manifest(repo, &it.top.to_string(), &mt, b.clone())
                        .await?;
                }
                top = Some((b, mt));
            }
        }
    }
    let mut done = Vec::with_capacity(it.artifacts.len());
    for a in &it.artifacts {
        done.push(attach::publish(client, repo, a, captured).await?);
    }
    if let Some((bytes, media_type)) = top {
        client
            .put_manifest(repo, &top_ref, &media_type, bytes)
            .await?;
    }
    Ok(done)
}

/// Publishes every item in plan order: the manifests of those whose tag does not already
/// point at them, and every item's artifacts. Returns the artifacts' outcomes per item.
pub(crate) async fn publish_all(
    client: &Client,
    h: &Header,
    items: &[Item],
    captured: &HashMap<Digest, Bytes>,
) -> Result<Vec<Vec<PushedArtifact>>, UnpackError> {
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        out.push(publish(client, h, it, captured).await?);
    }
    Ok(out)
}
