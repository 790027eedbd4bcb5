//! How cosign, containers/image, BuildKit and OCI 1.1 attach things to an image in a
//! registry: the tags (`sha256-<hex>.sig`, `.att`, `.sbom`, and the referrers tag schema
//! `sha256-<hex>`), media types and annotations, and reading an artifact manifest (a
//! signature manifest's signatures, an attestation's predicate types). Names only; no I/O.

use std::collections::BTreeMap;

use airlock_bundle::oci::Descriptor;
use airlock_bundle::provenance::ArtifactKind;
use airlock_bundle::Digest;
use serde::Deserialize;

/// The layer annotation holding a cosign signature (base64) of the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Cosign attestation layers: a DSSE envelope of an in-toto statement.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// An in-toto statement, as BuildKit stores it in attestation manifests.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation naming a cosign attestation's predicate type.
pub const COSIGN_PREDICATE_ANNOTATION: &str = "predicateType";
/// The layer annotation naming a BuildKit attestation's predicate type.
pub const IN_TOTO_PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// BuildKit marks an index entry as an attestation manifest with this annotation …
pub const BUILDKIT_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// … set to this value …
pub const BUILDKIT_ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// … and names the platform manifest it describes with this one.
pub const BUILDKIT_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The cosign tag of `kind` for `subject` (`sha256-<hex>.sig`, `.att`, `.sbom`), for kinds
/// attached by tag.
pub fn tag(subject: &Digest, kind: ArtifactKind) -> Option<String> {
    kind.tag_suffix()
        .map(|s| format!("sha256-{}.{s}", subject.hex()))
}

/// The OCI 1.1 referrers tag schema's tag for `subject` (an index of its referrers, on
/// registries without the referrers API).
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The parts of an artifact manifest (image manifest with `artifactType`/`subject`, or a
/// cosign manifest) that say what it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub subject: Option<Descriptor>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ArtifactManifest {
    pub fn parse(bytes: &[u8]) -> Result<ArtifactManifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an artifact manifest: {e}"))
    }

    /// Config, then layers: the blobs the manifest names, in order.
    pub fn blobs(&self) -> Vec<Digest> {
        std::iter::once(self.config.digest)
            .chain(self.layers.iter().map(|l| l.digest))
            .collect()
    }

    /// The signature layers: (payload descriptor, base64 signature).
    pub fn signatures(&self) -> Vec<(&Descriptor, &str)> {
        self.layers
            .iter()
            .filter_map(|l| {
                let sig = l.annotations.as_ref()?.get(SIGNATURE_ANNOTATION)?;
                Some((l, sig.as_str()))
            })
            .collect()
    }

    /// The predicate types its layers declare (cosign or BuildKit annotation), else the
    /// layers' media types for SBOM attachments; each once, in layer order.
    pub fn predicate_types(&self, kind: ArtifactKind) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in &self.layers {
            let ann = l.annotations.as_ref();
            let found = ann
                .and_then(|a| {
                    a.get(COSIGN_PREDICATE_ANNOTATION)
                        .or_else(|| a.get(IN_TOTO_PREDICATE_ANNOTATION))
                })
                .cloned()
                .or_else(|| (kind == ArtifactKind::Sbom).then(|| l.media_type.clone()));
            if let Some(t) = found {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Whether an index entry is a BuildKit attestation manifest, and for which manifest.
pub fn buildkit_attestation_for(d: &Descriptor) -> Option<Digest> {
    let ann = d.annotations.as_ref()?;
    if ann.get(BUILDKIT_REFERENCE_TYPE).map(String::as_str) != Some(BUILDKIT_ATTESTATION_MANIFEST) {
        return None;
    }
    ann.get(BUILDKIT_REFERENCE_DIGEST)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_cosign() {
        let d = Digest::of(b"x");
        assert_eq!(
            tag(&d, ArtifactKind::Signature).unwrap(),
            format!("sha256-{}.sig", d.hex())
        );
        assert_eq!(tag(&d, ArtifactKind::Referrer), None);
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
    }

    #[test]
    fn reads_a_signature_manifest() {
        let payload = Digest::of(b"p");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":2}},
            "layers":[{{"mediaType":"{SIMPLE_SIGNING}","digest":"{payload}","size":1,
              "annotations":{{"{SIGNATURE_ANNOTATION}":"MEUC"}}}},
              {{"mediaType":"{DSSE_ENVELOPE}","digest":"{payload}","size":1,
              "annotations":{{"predicateType":"https://spdx.dev/Document"}}}}]}}"#,
            c = Digest::of(b"{}")
        );
        let a = ArtifactManifest::parse(m.as_bytes()).unwrap();
        let sigs = a.signatures();
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].1, "MEUC");
        assert_eq!(a.blobs().len(), 3);
        assert_eq!(
            a.predicate_types(ArtifactKind::Attestation),
            vec!["https://spdx.dev/Document".to_string()]
        );
    }
}
