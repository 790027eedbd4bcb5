//! Provenance records (format version 4): the upstream signatures, attestations and SBOMs an
//! image carries across the gap, one record per artifact manifest. The artifact manifests
//! and their blobs are ordinary blob entries; the records say what each one is, what it is
//! attached to, and for a signature the signed payload and signature themselves, so that a
//! gap host checks its own `[[verify]]` rules on the signed header before any blob is read.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The largest signed payload a record may carry (decoded): a simple-signing document is a
/// few hundred bytes.
pub const MAX_PAYLOAD_SIZE: usize = 64 << 10;
/// The largest signature a record may carry, as base64 text (an ECDSA P-256 DER signature is
/// about 96 characters).
pub const MAX_SIGNATURE_TEXT: usize = 4 << 10;

/// What an artifact is, by the convention that attached it to its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// Cosign signatures: the manifest under tag `sha256-<subject hex>.sig`.
    Signature,
    /// Cosign attestations (DSSE envelopes of in-toto statements): tag `….att`.
    Attestation,
    /// Cosign SBOM attachments: tag `….sbom`.
    Sbom,
    /// An OCI 1.1 referrer: a manifest whose `subject` is the image (referrers API, or the
    /// `sha256-<subject hex>` tag schema where a registry has no such API).
    Referrer,
    /// A BuildKit attestation manifest from the image's index (platform `unknown/unknown`,
    /// annotation `vnd.docker.reference.type: attestation-manifest`).
    BuildkitAttestation,
}

impl ArtifactKind {
    /// The cosign tag suffix, for the kinds attached by tag.
    pub fn tag_suffix(self) -> Option<&'static str> {
        match self {
            ArtifactKind::Signature => Some("sig"),
            ArtifactKind::Attestation => Some("att"),
            ArtifactKind::Sbom => Some("sbom"),
            ArtifactKind::Referrer | ArtifactKind::BuildkitAttestation => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Signature => "signature",
            ArtifactKind::Attestation => "attestation",
            ArtifactKind::Sbom => "sbom",
            ArtifactKind::Referrer => "referrer",
            ArtifactKind::BuildkitAttestation => "buildkit-attestation",
        }
    }
}

/// One artifact manifest carried for an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The image record's reference.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The digest the artifact is attached to: the image's index or one of its manifests.
    pub subject: Digest,
    pub kind: ArtifactKind,
    /// The artifact's manifest (a blob entry).
    pub manifest: Digest,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest's config and layers, in manifest order (blob entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<Digest>,
    /// In-toto predicate types its layers declare (attestations), or the SBOM media types
    /// (SBOM attachments): informational, for `inspect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicate_types: Vec<String>,
    /// For a signature manifest: each signature layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<CarriedSignature>,
}

/// One cosign signature: the layer's payload and the annotation's signature, copied into the
/// header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarriedSignature {
    /// The simple-signing payload (the layer blob's bytes), base64.
    pub payload: String,
    /// The layer's digest: sha256 of the decoded payload.
    pub payload_digest: Digest,
    /// The `dev.cosignproject.cosign/signature` annotation, as written (base64).
    pub signature: String,
    /// The fingerprint of the key `airlock-pack` verified this signature with, if a
    /// `[[verify]]` rule of the spec covered the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_with: Option<String>,
}

impl CarriedSignature {
    /// The payload bytes; a validated header's decode.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        if self.payload.len() > MAX_PAYLOAD_SIZE / 3 * 4 + 4 {
            return Err(format!("payload longer than {MAX_PAYLOAD_SIZE} bytes"));
        }
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|e| format!("payload is not base64: {e}"))
    }

    /// The signature bytes (cosign writes standard base64).
    pub fn signature_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        if self.signature.len() > MAX_SIGNATURE_TEXT {
            return Err(format!(
                "signature longer than {MAX_SIGNATURE_TEXT} characters"
            ));
        }
        base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|e| format!("signature is not base64: {e}"))
    }
}

/// Checks the provenance records of a header whose blob entries are `carried` (paths): each
/// names an image the header has and a subject of it, carries its manifest and blobs, and a
/// signature record's payload is bounded, decodes, and is the blob it says. Returns the
/// problem as text for the caller's malformed-header error.
pub(crate) fn validate(
    records: &[Provenance],
    images: &[crate::ImageRecord],
    carried: &std::collections::HashSet<&str>,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for p in records {
        let what = format!(
            "provenance {} {} of {}",
            p.kind.name(),
            p.manifest,
            p.reference
        );
        let subjects: Vec<&Digest> = images
            .iter()
            .filter(|i| i.reference == p.reference)
            .flat_map(|i| std::iter::once(&i.manifest).chain(i.index.as_ref()))
            .collect();
        if subjects.is_empty() {
            return Err(format!("{what}: the bundle has no such image"));
        }
        if !subjects.contains(&&p.subject) {
            return Err(format!(
                "{what}: its subject {} is neither the image's index nor one of its manifests",
                p.subject
            ));
        }
        if !seen.insert((&p.reference, p.manifest)) {
            return Err(format!("{what}: listed twice"));
        }
        for d in std::iter::once(&p.manifest).chain(&p.blobs) {
            if !carried.contains(d.blob_path().as_str()) {
                return Err(format!("{what}: refers to {d}, which the bundle lacks"));
            }
        }
        match (p.kind, p.signatures.is_empty()) {
            (ArtifactKind::Signature, true) => {
                return Err(format!("{what}: a signature record without signatures"))
            }
            (ArtifactKind::Signature, false) | (_, true) => {}
            (_, false) => return Err(format!("{what}: only signature records carry signatures")),
        }
        for s in &p.signatures {
            let payload = s.payload_bytes().map_err(|e| format!("{what}: {e}"))?;
            if payload.len() > MAX_PAYLOAD_SIZE {
                return Err(format!(
                    "{what}: payload longer than {MAX_PAYLOAD_SIZE} bytes"
                ));
            }
            if Digest::of(&payload) != s.payload_digest {
                return Err(format!(
                    "{what}: payload digest {} is not its content's {}",
                    s.payload_digest,
                    Digest::of(&payload)
                ));
            }
            if !p.blobs.contains(&s.payload_digest) {
                return Err(format!(
                    "{what}: payload {} is not one of the manifest's blobs",
                    s.payload_digest
                ));
            }
            s.signature_bytes().map_err(|e| format!("{what}: {e}"))?;
            if let Some(fp) = &s.verified_with {
                let ok = fp.strip_prefix("sha256:").is_some_and(|h| {
                    h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
                if !ok {
                    return Err(format!(
                        "{what}: verified_with {fp:?} is not a key fingerprint (sha256:<hex>)"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Platform;
    use base64::Engine as _;

    fn image(manifest: Digest) -> crate::ImageRecord {
        crate::ImageRecord {
            reference: "127.0.0.1:5000/a/b:v1".into(),
            platform: "linux/amd64".parse::<Platform>().unwrap(),
            manifest,
            config: Digest::of(b"c"),
            layers: vec![],
            index: None,
        }
    }

    fn record(subject: Digest, payload: &[u8]) -> Provenance {
        Provenance {
            reference: "127.0.0.1:5000/a/b:v1".into(),
            subject,
            kind: ArtifactKind::Signature,
            manifest: Digest::of(b"sig manifest"),
            media_type: crate::oci::OCI_MANIFEST.into(),
            artifact_type: None,
            blobs: vec![Digest::of(b"{}"), Digest::of(payload)],
            predicate_types: vec![],
            signatures: vec![CarriedSignature {
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                payload_digest: Digest::of(payload),
                signature: "MEUCIQ==".into(),
                verified_with: Some(format!("sha256:{}", "a".repeat(64))),
            }],
        }
    }

    fn check(records: &[Provenance], images: &[crate::ImageRecord]) -> Result<(), String> {
        let paths: Vec<String> = records
            .iter()
            .flat_map(|p| std::iter::once(p.manifest).chain(p.blobs.iter().copied()))
            .map(|d| d.blob_path())
            .collect();
        let carried = paths.iter().map(String::as_str).collect();
        validate(records, images, &carried)
    }

    #[test]
    fn a_signature_record_checks_out() {
        let m = Digest::of(b"m");
        check(&[record(m, b"payload")], &[image(m)]).unwrap();
    }

    #[test]
    fn records_that_do_not_add_up_are_refused() {
        let m = Digest::of(b"m");
        let imgs = [image(m)];
        let e = check(&[record(Digest::of(b"x"), b"p")], &imgs).unwrap_err();
        assert!(e.contains("neither the image's index"), "{e}");
        let mut r = record(m, b"p");
        r.signatures[0].payload_digest = Digest::of(b"q");
        assert!(check(&[r], &imgs)
            .unwrap_err()
            .contains("is not its content's"));
        let mut r = record(m, b"p");
        r.kind = ArtifactKind::Sbom;
        assert!(check(&[r], &imgs)
            .unwrap_err()
            .contains("only signature records"));
        let mut r = record(m, b"p");
        r.reference = "127.0.0.1:5000/a/other:v1".into();
        assert!(check(&[r], &imgs).unwrap_err().contains("no such image"));
        let mut r = record(m, b"p");
        r.signatures[0].verified_with = Some("md5:x".into());
        assert!(check(&[r], &imgs)
            .unwrap_err()
            .contains("not a key fingerprint"));
        let r = record(m, b"p");
        assert!(validate(&[r], &imgs, &Default::default())
            .unwrap_err()
            .contains("which the bundle lacks"));
    }
}
