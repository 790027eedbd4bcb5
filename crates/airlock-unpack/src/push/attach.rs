//! Publishing one carried artifact manifest into the image's repository, once its blobs are
//! there: under its cosign tag, or by digest (referrers, BuildKit attestations), and for a
//! referrer on a registry without the referrers API, into the tag-schema index.
//!
//! A cosign tag that already holds another manifest (the gap registry's own signatures, or
//! those of another bundle's image with the same digest) is merged, not overwritten: the
//! result keeps the existing layers first and adds the carried ones it lacks, and the config's
//! `rootfs.diff_ids` grow with them. This is what cosign and containers/image do when they add
//! a signature or attestation next to existing ones, so every signature that verified before
//! still does, and the carried ones verify too. Refusing would leave the image unverifiable in
//! the gap; overwriting would drop the registry's own signatures.

use std::collections::HashMap;

use airlock_bundle::oci::OCI_INDEX;
use airlock_bundle::provenance::ArtifactKind;
use airlock_bundle::{BundleError, Digest};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::artifacts::{referrers_tag, Artifact};
use super::client::Client;
use super::{ArtifactStatus, PushedArtifact};
use crate::UnpackError;

/// A config blob of a signature manifest larger than this is not one.
const MAX_CONFIG: usize = 1 << 20;

/// Publishes `a` into `repo` (the blobs it names are there) and says what happened.
pub(crate) async fn publish(
    client: &Client,
    repo: &str,
    a: &Artifact,
    captured: &HashMap<Digest, Bytes>,
) -> Result<PushedArtifact, UnpackError> {
    let carried = captured.get(&a.manifest).cloned().ok_or_else(|| {
        UnpackError::Bundle(BundleError::Malformed(format!(
            "{} manifest {} is not in the bundle",
            a.kind.name(),
            a.manifest
        )))
    })?;
    let mut done = PushedArtifact {
        kind: a.kind,
        subject: a.subject,
        manifest: a.manifest,
        reference: match &a.tag {
            Some(t) => format!("{}/{repo}:{t}", client.registry),
            None => format!("{}/{repo}@{}", client.registry, a.manifest),
        },
        status: ArtifactStatus::Unchanged,
        merged_into: None,
        referrers_tag: None,
    };
    if let Some(tag) = &a.tag {
        return by_tag(client, repo, tag, a, carried, done).await;
    }
    if client
        .manifest_digest(repo, &a.manifest.to_string())
        .await?
        != Some(a.manifest)
    {
        client
            .put_manifest(
                repo,
                &a.manifest.to_string(),
                &a.media_type,
                carried.clone(),
            )
            .await?;
        done.status = ArtifactStatus::Pushed;
    }
    if a.kind == ArtifactKind::Referrer && !client.has_referrers_api(repo, &a.subject).await? {
        let tag = referrers_tag(&a.subject);
        let existing = client.get_manifest(repo, &tag).await?;
        let entry = referrer_entry(a, &carried).map_err(|e| client.err(e))?;
        let index = add_referrer(existing.as_ref().map(|f| &f.bytes[..]), entry)
            .map_err(|e| client.err(format!("{repo}:{tag}: {e}")))?;
        if let Some(bytes) = index {
            client
                .put_manifest(repo, &tag, OCI_INDEX, bytes.into())
                .await?;
            done.status = ArtifactStatus::Pushed;
        }
        done.referrers_tag = Some(format!("{}/{repo}:{tag}", client.registry));
    }
    Ok(done)
}

/// A cosign kind: the carried manifest under its tag, or merged into what the tag holds.
async fn by_tag(
    client: &Client,
    repo: &str,
    tag: &str,
    a: &Artifact,
    carried: Bytes,
    mut done: PushedArtifact,
) -> Result<PushedArtifact, UnpackError> {
    let Some(existing) = client.get_manifest(repo, tag).await? else {
        client
            .put_manifest(repo, tag, &a.media_type, carried)
            .await?;
        done.status = ArtifactStatus::Pushed;
        return Ok(done);
    };
    let now = Digest::of(&existing.bytes);
    if now == a.manifest {
        return Ok(done);
    }
    let what = |e: String| {
        client.err(format!(
            "{repo}:{tag} holds {now}, not the bundle's {} {}: {e}",
            a.kind.name(),
            a.manifest
        ))
    };
    let Some((mut manifest, added)) = merge_layers(&existing.bytes, &carried).map_err(what)? else {
        // Every carried layer is there already (merged by an earlier push).
        done.merged_into = Some(now);
        return Ok(done);
    };
    let config = manifest_config(&manifest).map_err(what)?;
    let old = client.get_small_blob(repo, &config, MAX_CONFIG).await?;
    let new_config = with_diff_ids(&old, &added).map_err(what)?;
    let size = new_config.len();
    let new_digest = client.put_small_blob(repo, new_config.into()).await?;
    manifest["config"]["digest"] = json!(new_digest.to_string());
    manifest["config"]["size"] = json!(size);
    let bytes = Bytes::from(serde_json::to_vec(&manifest).expect("a JSON value serialises"));
    let media_type = existing
        .media_type
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| a.media_type.clone());
    let merged = Digest::of(&bytes);
    client.put_manifest(repo, tag, &media_type, bytes).await?;
    done.status = ArtifactStatus::Merged;
    done.merged_into = Some(merged);
    Ok(done)
}

fn object(bytes: &[u8], what: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("{what} is not JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!("{what} is not a JSON object"));
    }
    Ok(v)
}

fn layers<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    match v.get("layers") {
        None => Err(format!("{what} has no layers: not a signature manifest")),
        Some(l) => l
            .as_array()
            .ok_or_else(|| format!("{what}: layers is not an array")),
    }
}

/// Whether two layer descriptors are the same attachment: media type, digest and
/// annotations (containers/image's test before it adds a signature).
fn same_layer(a: &Value, b: &Value) -> bool {
    a.get("mediaType") == b.get("mediaType")
        && a.get("digest") == b.get("digest")
        && a.get("annotations").unwrap_or(&Value::Null)
            == b.get("annotations").unwrap_or(&Value::Null)
}

/// The existing manifest with the carried layers it lacks appended, and those layers'
/// digests; `None` when it has them all.
fn merge_layers(existing: &[u8], carried: &[u8]) -> Result<Option<(Value, Vec<Value>)>, String> {
    let mut manifest = object(existing, "the manifest there")?;
    let have = layers(&manifest, "the manifest there")?.clone();
    let theirs = object(carried, "the carried manifest")?;
    let add: Vec<Value> = layers(&theirs, "the carried manifest")?
        .iter()
        .filter(|l| !have.iter().any(|h| same_layer(h, l)))
        .cloned()
        .collect();
    if add.is_empty() {
        return Ok(None);
    }
    let mut all = have;
    all.extend(add.iter().cloned());
    manifest["layers"] = Value::Array(all);
    Ok(Some((manifest, add)))
}

/// The config digest a manifest names.
fn manifest_config(manifest: &Value) -> Result<Digest, String> {
    manifest
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "the manifest there names no config digest".to_string())
}

/// The config with the added layers' digests appended to `rootfs.diff_ids` (signature
/// payloads are not compressed: a layer's digest is its diff ID).
fn with_diff_ids(config: &[u8], added: &[Value]) -> Result<Vec<u8>, String> {
    let mut c = object(config, "its config")?;
    let obj = c.as_object_mut().expect("checked an object");
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let Some(rootfs) = rootfs.as_object_mut() else {
        return Err("its config's rootfs is not an object".into());
    };
    let ids = rootfs.entry("diff_ids").or_insert_with(|| json!([]));
    let Some(ids) = ids.as_array_mut() else {
        return Err("its config's rootfs.diff_ids is not an array".into());
    };
    for l in added {
        ids.push(l.get("digest").cloned().unwrap_or(Value::Null));
    }
    Ok(serde_json::to_vec(&c).expect("a JSON value serialises"))
}

/// The descriptor of a referrer in its subject's referrers index, as the OCI distribution
/// spec has the registry write it: the manifest's `artifactType` (else its config's media
/// type) and its annotations.
fn referrer_entry(a: &Artifact, carried: &[u8]) -> Result<Value, String> {
    let m = object(carried, &format!("referrer {}", a.manifest))?;
    let artifact_type = m
        .get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| m.get("config")?.get("mediaType")?.as_str())
        .map(str::to_string);
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(a.media_type));
    d.insert("digest".into(), json!(a.manifest.to_string()));
    d.insert("size".into(), json!(carried.len()));
    if let Some(t) = artifact_type {
        d.insert("artifactType".into(), json!(t));
    }
    if let Some(ann) = m.get("annotations").filter(|v| v.is_object()) {
        d.insert("annotations".into(), ann.clone());
    }
    Ok(Value::Object(d))
}

/// The referrers index with `entry` added (existing entries kept, in order); `None` when it
/// lists that digest already.
fn add_referrer(existing: Option<&[u8]>, entry: Value) -> Result<Option<Vec<u8>>, String> {
    let mut index = match existing {
        None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        Some(b) => object(b, "the referrers index there")?,
    };
    let Some(list) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
        return Err("the referrers index there has no manifests list: not an index".into());
    };
    if list.iter().any(|d| d.get("digest") == entry.get("digest")) {
        return Ok(None);
    }
    list.push(entry);
    Ok(Some(
        serde_json::to_vec(&index).expect("a JSON value serialises"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(payload: &str, sig: &str) -> Value {
        json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": Digest::of(payload.as_bytes()).to_string(),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": sig},
        })
    }

    fn sig_manifest(layers: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": airlock_bundle::oci::OCI_MANIFEST,
            "config": {"mediaType": airlock_bundle::oci::OCI_CONFIG, "digest": Digest::of(b"c").to_string(), "size": 1},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn a_merge_keeps_the_existing_signatures_first_and_adds_the_missing() {
        let gap = layer("gap payload", "R0FQ");
        let ours = layer("our payload", "T1VS");
        let existing = sig_manifest(std::slice::from_ref(&gap));
        let carried = sig_manifest(std::slice::from_ref(&ours));
        let (m, added) = merge_layers(&existing, &carried).unwrap().unwrap();
        assert_eq!(m["layers"], json!([gap, ours]));
        assert_eq!(added, vec![ours.clone()]);
        // Merged again: nothing to add.
        let merged = serde_json::to_vec(&m).unwrap();
        assert!(merge_layers(&merged, &carried).unwrap().is_none());
        // Same payload, another signature: another layer.
        let resigned = layer("our payload", "T1RIRVI=");
        let (m, _) = merge_layers(&merged, &sig_manifest(std::slice::from_ref(&resigned)))
            .unwrap()
            .unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 3);
        // What is not a manifest with layers is refused, not overwritten.
        for bad in [&b"[]"[..], b"{\"manifests\":[]}", b"not json"] {
            assert!(merge_layers(bad, &carried).is_err());
        }
    }

    #[test]
    fn the_config_gains_the_added_diff_ids() {
        let ours = layer("our payload", "T1VS");
        let config = br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"config":{}}"#;
        let out: Value =
            serde_json::from_slice(&with_diff_ids(config, std::slice::from_ref(&ours)).unwrap())
                .unwrap();
        assert_eq!(
            out["rootfs"]["diff_ids"],
            json!(["sha256:aa", ours["digest"]])
        );
        assert_eq!(out["config"], json!({}));
        let out: Value =
            serde_json::from_slice(&with_diff_ids(b"{}", std::slice::from_ref(&ours)).unwrap())
                .unwrap();
        assert_eq!(out["rootfs"]["diff_ids"], json!([ours["digest"]]));
        assert!(with_diff_ids(br#"{"rootfs":[]}"#, &[ours]).is_err());
    }

    #[test]
    fn the_referrers_index_keeps_its_entries_and_lists_each_referrer_once() {
        let subject = Digest::of(b"image");
        let carried = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": airlock_bundle::oci::OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": airlock_bundle::oci::OCI_MANIFEST, "digest": subject.to_string(), "size": 9},
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        }))
        .unwrap();
        let a = Artifact {
            kind: ArtifactKind::Referrer,
            subject,
            manifest: Digest::of(&carried),
            media_type: airlock_bundle::oci::OCI_MANIFEST.into(),
            size: carried.len() as u64,
            blobs: vec![],
            tag: None,
            present: false,
        };
        let entry = referrer_entry(&a, &carried).unwrap();
        assert_eq!(entry["artifactType"], "application/spdx+json");
        assert_eq!(entry["size"], carried.len());
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.created"],
            "2026-01-01T00:00:00Z"
        );
        let fresh = add_referrer(None, entry.clone()).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&fresh).unwrap();
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["manifests"], json!([entry.clone()]));
        assert!(add_referrer(Some(&fresh), entry.clone()).unwrap().is_none());
        let other =
            json!({"mediaType": OCI_INDEX, "digest": Digest::of(b"o").to_string(), "size": 3});
        let existing =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [other.clone()]})).unwrap();
        let v: Value = serde_json::from_slice(
            &add_referrer(Some(&existing), entry.clone())
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["manifests"], json!([other, entry.clone()]));
        assert!(add_referrer(Some(b"{\"layers\":[]}"), entry).is_err());
    }
}
