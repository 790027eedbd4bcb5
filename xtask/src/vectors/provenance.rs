//! The version 4 vector's provenance: a cosign-format signature of the vector image (a
//! simple-signing payload signed with a fixed test-only ECDSA P-256 key, RFC 6979 nonces, so
//! the bytes are the same on every run) and an SPDX SBOM attachment, as `airlock-pack`
//! carries them. `keys/cosign.pub` is the public key a gap host's `[[verify]]` rule names.

use std::fs;
use std::path::Path;

use airlock_bundle::header::{Entry, Header};
use airlock_bundle::oci;
use airlock_bundle::provenance::{ArtifactKind, CarriedSignature, Provenance};
use airlock_bundle::Digest;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::json;

use super::Blobs;

const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SPDX: &str = "text/spdx+json";

/// The fixed test-only signing key, and its public key written to `keys/cosign.pub`.
fn key(keys: &Path) -> anyhow::Result<(p256::ecdsa::SigningKey, String)> {
    let seed = Digest::of(b"airlock format vectors: test-only cosign key");
    let bytes: [u8; 32] = hex_bytes(&seed);
    let sk = p256::ecdsa::SigningKey::from_bytes(&bytes.into())?;
    let pem = sk
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)?;
    fs::write(keys.join("cosign.pub"), pem.as_bytes())?;
    let der = sk.verifying_key().to_public_key_der()?;
    let fingerprint = format!("sha256:{}", Digest::of(der.as_bytes()).hex());
    Ok((sk, fingerprint))
}

fn hex_bytes(d: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&d.hex()[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// An artifact manifest over `layers` (with the shared `{}` config), its digest.
fn manifest(blobs: &mut Blobs, layers: Vec<serde_json::Value>) -> anyhow::Result<Digest> {
    let config = blobs.put(b"{}".to_vec());
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": oci::OCI_CONFIG, "digest": config.to_string(), "size": 2},
        "layers": layers,
    }))?;
    Ok(blobs.put(bytes))
}

/// Version 4: the vector image with a signature (verified at pack time by the vectors'
/// cosign key) and an SPDX SBOM attachment. Adds their blobs to `blobs`.
pub(super) fn v4_provenance(blobs: &mut Blobs, keys: &Path) -> anyhow::Result<Header> {
    let (sk, fingerprint) = key(keys)?;
    let (mut entries, image) = blobs.image_entries();
    let subject = image.manifest;
    let payload = serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": image.reference},
            "image": {"docker-manifest-digest": subject.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))?;
    let signature: p256::ecdsa::Signature = sk.sign(&payload);
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64.encode(signature.to_der().as_bytes());
    let payload_size = payload.len();
    let payload_digest = blobs.put(payload.clone());
    let sig_manifest = manifest(
        blobs,
        vec![
            json!({"mediaType": SIMPLE_SIGNING, "digest": payload_digest.to_string(),
            "size": payload_size, "annotations": {SIGNATURE_ANNOTATION: signature}}),
        ],
    )?;
    let spdx = serde_json::to_vec(&json!({
        "spdxVersion": "SPDX-2.3",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "vectors.invalid/airlock/hello",
        "packages": [
            {"name": "hello", "SPDXID": "SPDXRef-hello", "versionInfo": "1.0",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                               "referenceLocator": "pkg:generic/hello@1.0"}]},
            {"name": "busybox", "SPDXID": "SPDXRef-busybox", "versionInfo": "1.36.1",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                               "referenceLocator": "pkg:generic/busybox@1.36.1"}]},
        ],
    }))?;
    let spdx_size = spdx.len();
    let spdx_digest = blobs.put(spdx);
    let sbom_manifest = manifest(
        blobs,
        vec![json!({"mediaType": SPDX, "digest": spdx_digest.to_string(), "size": spdx_size})],
    )?;
    let config = Digest::of(b"{}");
    let media = |d: &Digest, mt: &str| -> Entry { blobs.entry(d, Some(mt)) };
    entries.extend([
        media(&sig_manifest, oci::OCI_MANIFEST),
        media(&config, oci::OCI_CONFIG),
        media(&payload_digest, SIMPLE_SIGNING),
        media(&sbom_manifest, oci::OCI_MANIFEST),
        media(&spdx_digest, SPDX),
    ]);
    let record = |kind, manifest, blobs: Vec<Digest>| Provenance {
        reference: image.reference.clone(),
        subject,
        kind,
        manifest,
        media_type: oci::OCI_MANIFEST.into(),
        artifact_type: None,
        blobs,
        predicate_types: Vec::new(),
        signatures: Vec::new(),
    };
    let mut sig = record(
        ArtifactKind::Signature,
        sig_manifest,
        vec![config, payload_digest],
    );
    sig.signatures = vec![CarriedSignature {
        payload: b64.encode(&payload),
        payload_digest,
        signature,
        verified_with: Some(fingerprint),
    }];
    let mut sbom = record(ArtifactKind::Sbom, sbom_manifest, vec![config, spdx_digest]);
    sbom.predicate_types = vec![SPDX.into()];
    let mut h = super::header(4, "v4-provenance", entries, vec![image]);
    h.provenance = vec![sig, sbom];
    Ok(h)
}
