//! Provenance in the plan: the artifact manifests the bundle carries for an image (its
//! header's `provenance` records), where each goes in the image's destination repository
//! (a cosign tag, or by digest), the index entries BuildKit gives attestation manifests,
//! and which of them the registry already has, so that only the blobs of missing ones are
//! uploaded (`plan::mark_present` asks the registry). `attach` publishes them.
//!
//! The names follow cosign, BuildKit and the OCI 1.1 referrers tag schema, as
//! `airlock_sigstore::cosign` spells them for both sides.

use std::collections::BTreeMap;

use airlock_bundle::header::Header;
use airlock_bundle::oci::{Descriptor, OciPlatform};
use airlock_bundle::provenance::ArtifactKind;
use airlock_bundle::Digest;

pub(crate) use airlock_sigstore::cosign::{
    referrers_tag, tag as cosign_tag, BUILDKIT_ATTESTATION_MANIFEST, BUILDKIT_REFERENCE_DIGEST,
    BUILDKIT_REFERENCE_TYPE,
};

/// One artifact manifest carried for an image, and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Artifact {
    pub(crate) kind: ArtifactKind,
    pub(crate) subject: Digest,
    pub(crate) manifest: Digest,
    pub(crate) media_type: String,
    /// The manifest's size in the bundle.
    pub(crate) size: u64,
    /// Its config and layers.
    pub(crate) blobs: Vec<Digest>,
    /// The cosign tag it goes under; `None`: by digest.
    pub(crate) tag: Option<String>,
    /// The registry had it in place when planning (the tag at this manifest, or the
    /// manifest by digest): its blobs are not needed.
    pub(crate) present: bool,
}

/// The artifacts the header carries for the image `reference`, in header order.
pub(crate) fn artifacts_of(h: &Header, reference: &str) -> Vec<Artifact> {
    h.provenance
        .iter()
        .filter(|p| p.reference == reference)
        .map(|p| Artifact {
            kind: p.kind,
            subject: p.subject,
            manifest: p.manifest,
            media_type: p.media_type.clone(),
            size: h.entry(&p.manifest.blob_path()).map_or(0, |e| e.size),
            blobs: p.blobs.clone(),
            tag: cosign_tag(&p.subject, p.kind),
            present: false,
        })
        .collect()
}

/// The index entries for the BuildKit attestation manifests that describe one of
/// `platform_manifests`, as BuildKit writes them: platform `unknown/unknown` and the two
/// annotations. They follow the platform manifests in the index push builds, so that
/// `docker buildx imagetools inspect` and the SBOM tooling find them there.
pub(crate) fn attestation_entries(
    artifacts: &[Artifact],
    platform_manifests: &[Digest],
) -> Vec<Descriptor> {
    artifacts
        .iter()
        .filter(|a| {
            a.kind == ArtifactKind::BuildkitAttestation && platform_manifests.contains(&a.subject)
        })
        .map(|a| Descriptor {
            media_type: a.media_type.clone(),
            digest: a.manifest,
            size: a.size,
            platform: Some(OciPlatform {
                architecture: "unknown".into(),
                os: "unknown".into(),
                variant: None,
            }),
            annotations: Some(BTreeMap::from([
                (BUILDKIT_REFERENCE_DIGEST.to_string(), a.subject.to_string()),
                (
                    BUILDKIT_REFERENCE_TYPE.to_string(),
                    BUILDKIT_ATTESTATION_MANIFEST.to_string(),
                ),
            ])),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_cosign_and_the_referrers_tag_schema() {
        let d = Digest::of(b"subject");
        let hex = d.hex();
        assert_eq!(
            cosign_tag(&d, ArtifactKind::Signature),
            Some(format!("sha256-{hex}.sig"))
        );
        assert_eq!(
            cosign_tag(&d, ArtifactKind::Attestation),
            Some(format!("sha256-{hex}.att"))
        );
        assert_eq!(
            cosign_tag(&d, ArtifactKind::Sbom),
            Some(format!("sha256-{hex}.sbom"))
        );
        assert_eq!(cosign_tag(&d, ArtifactKind::Referrer), None);
        assert_eq!(cosign_tag(&d, ArtifactKind::BuildkitAttestation), None);
        assert_eq!(referrers_tag(&d), format!("sha256-{hex}"));
    }

    #[test]
    fn attestation_entries_are_buildkits_for_the_platforms_pushed() {
        let amd64 = Digest::of(b"amd64");
        let other = Digest::of(b"not pushed");
        let att = |subject: Digest, kind: ArtifactKind| Artifact {
            kind,
            subject,
            manifest: Digest::of(subject.to_string().as_bytes()),
            media_type: airlock_bundle::oci::OCI_MANIFEST.into(),
            size: 500,
            blobs: vec![],
            tag: None,
            present: false,
        };
        let arts = [
            att(amd64, ArtifactKind::BuildkitAttestation),
            att(other, ArtifactKind::BuildkitAttestation),
            att(amd64, ArtifactKind::Referrer),
        ];
        let e = attestation_entries(&arts, &[amd64]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].digest, arts[0].manifest);
        assert_eq!(e[0].size, 500);
        let p = e[0].platform.as_ref().unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str()),
            ("unknown", "unknown")
        );
        let ann = e[0].annotations.as_ref().unwrap();
        assert_eq!(ann[BUILDKIT_REFERENCE_TYPE], "attestation-manifest");
        assert_eq!(ann[BUILDKIT_REFERENCE_DIGEST], amd64.to_string());
    }
}
