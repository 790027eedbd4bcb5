//! Unpacking an image's layers into containerd's snapshotter, one committed snapshot per
//! chain ID, so the kubelet finds the image ready to run.

use airlock_bundle::inventory::chain_ids;
use airlock_bundle::oci;
use airlock_bundle::Digest;

use super::api::{self, path, Client};
use super::plan::Ctd;
use super::{ctd_err, Options};
use crate::UnpackError;

/// Unpacks the layers into the snapshotter, one committed snapshot per chain ID, skipping
/// those it has; returns the top chain ID.
pub(super) async fn unpack(
    c: &Ctd,
    opts: &Options,
    reference: &str,
    layers: &[oci::Descriptor],
    diff_ids: &[Digest],
) -> Result<Option<Digest>, UnpackError> {
    let client = &c.leased;
    let chains = chain_ids(diff_ids);
    let sn = &opts.snapshotter;
    for (k, layer) in layers.iter().enumerate() {
        let chain = chains[k].to_string();
        let stat = client
            .unary::<_, api::Empty>(
                path::SNAPSHOT_STAT,
                api::SnapshotKey {
                    snapshotter: sn.clone(),
                    key: chain.clone(),
                },
            )
            .await;
        match stat {
            Ok(_) => continue,
            Err(s) if api::not_found(&s) => {}
            Err(s) => return Err(ctd_err(&format!("look up snapshot in {sn}"), &chain, &s)),
        }
        let key = format!("{}-extract-{chain}", c.lease);
        let parent = if k == 0 {
            String::new()
        } else {
            chains[k - 1].to_string()
        };
        let mounts: api::MountsResponse = client
            .unary(
                path::SNAPSHOT_PREPARE,
                api::PrepareRequest {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                    parent,
                },
            )
            .await
            .map_err(|s| ctd_err(&format!("prepare a snapshot in {sn} for"), &chain, &s))?;
        let applied = apply_and_commit(client, sn, &key, &chain, layer, &diff_ids[k], mounts).await;
        if let Err(e) = applied {
            let _ = client
                .unary::<_, api::Empty>(
                    path::SNAPSHOT_REMOVE,
                    api::SnapshotKey {
                        snapshotter: sn.clone(),
                        key,
                    },
                )
                .await;
            return Err(UnpackError::Unpacking {
                layer: layer.digest,
                image: reference.to_string(),
                source: Box::new(e),
            });
        }
    }
    Ok(chains.last().copied())
}

async fn apply_and_commit(
    client: &Client,
    sn: &str,
    key: &str,
    chain: &str,
    layer: &oci::Descriptor,
    diff_id: &Digest,
    mounts: api::MountsResponse,
) -> Result<(), UnpackError> {
    let applied: api::ApplyResponse = client
        .unary(
            path::DIFF_APPLY,
            api::ApplyRequest {
                diff: Some(api::Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.to_string(),
                    size: layer.size as i64,
                }),
                mounts: mounts.mounts,
            },
        )
        .await
        .map_err(|s| ctd_err("apply", &layer.digest.to_string(), &s))?;
    let got = applied.applied.map(|d| d.digest).unwrap_or_default();
    if got != diff_id.to_string() {
        return Err(UnpackError::UnpackedDigest {
            got,
            config: *diff_id,
        });
    }
    match client
        .unary::<_, api::Empty>(
            path::SNAPSHOT_COMMIT,
            api::CommitSnapshotRequest {
                snapshotter: sn.to_string(),
                name: chain.to_string(),
                key: key.to_string(),
            },
        )
        .await
    {
        Ok(_) => Ok(()),
        // Another unpack of the same chain won: it is there, which is what counts; our
        // prepared copy goes.
        Err(s) if api::already_exists(&s) => {
            let _ = client
                .unary::<_, api::Empty>(
                    path::SNAPSHOT_REMOVE,
                    api::SnapshotKey {
                        snapshotter: sn.to_string(),
                        key: key.to_string(),
                    },
                )
                .await;
            Ok(())
        }
        Err(s) => Err(ctd_err("commit snapshot", chain, &s)),
    }
}
