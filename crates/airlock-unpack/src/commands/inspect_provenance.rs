//! `inspect --provenance`: per image, what the bundle carries from upstream (signatures,
//! cosign attestations and SBOM attachments, OCI referrers, BuildKit attestation
//! manifests), from the signed header alone, and each signature judged against this host's
//! `[[verify]]` rules, if it has a policy. `inspect` without it says per image only whether
//! it was verified upstream at pack time ([`upstream_status`]).

use airlock_bundle::provenance::{ArtifactKind, Provenance};
use airlock_bundle::text::escape;
use airlock_bundle::{Digest, Header, ImageRef};
use airlock_sigstore::{judge, Finding, SignatureInput};
use serde::Serialize;

use crate::policy::{Policy, VerifyRule};
use crate::provenance::{records, top_digest};

/// What `inspect` says of an image's upstream signatures as the pack side found them.
pub(super) fn upstream_status(h: &Header, reference: &str) -> (String, Vec<String>) {
    let Some(top) = top_digest(h, reference) else {
        return ("unverified upstream".into(), Vec::new());
    };
    let sigs: Vec<_> = records(h, reference, ArtifactKind::Signature)
        .filter(|p| p.subject == top)
        .flat_map(|p| &p.signatures)
        .collect();
    let mut keys: Vec<String> = sigs
        .iter()
        .filter_map(|s| s.verified_with.clone())
        .collect();
    keys.sort();
    keys.dedup();
    let text = match (sigs.len(), keys.is_empty()) {
        (0, _) => "unverified upstream".to_string(),
        (_, false) => format!("signed, verified at pack time ({})", keys.join(", ")),
        (n, true) => format!(
            "signed ({n} signature{}), not verified at pack time",
            if n == 1 { "" } else { "s" }
        ),
    };
    (text, keys)
}

/// `inspect --provenance --json`.
#[derive(Serialize)]
pub(super) struct ProvenanceJson {
    /// The policy the signatures were judged by (`None`: this host has none).
    policy: Option<String>,
    images: Vec<ImageJson>,
}

#[derive(Serialize)]
struct ImageJson {
    #[serde(rename = "ref")]
    reference: String,
    digest: Digest,
    upstream: String,
    signatures: Vec<SignatureManifestJson>,
    attestations: Vec<ArtifactJson>,
    sboms: Vec<ArtifactJson>,
    referrers: Vec<ArtifactJson>,
    buildkit_attestations: Vec<ArtifactJson>,
    /// This host's `[[verify]]` rules covering the image, and whether each is satisfied.
    rules: Vec<RuleJson>,
}

#[derive(Serialize)]
struct SignatureManifestJson {
    subject: Digest,
    manifest: Digest,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize)]
struct SignatureJson {
    payload_digest: Digest,
    verified_at_pack_time_with: Option<String>,
    /// `verified`, `not-verified` or `no-rule`.
    here: &'static str,
    /// Per rule covering the image: its key and what the signature is under it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    findings: Vec<FindingJson>,
}

#[derive(Serialize)]
struct FindingJson {
    key_file: String,
    fingerprint: String,
    verified: bool,
    finding: String,
}

#[derive(Serialize)]
struct ArtifactJson {
    subject: Digest,
    manifest: Digest,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    /// Predicate types (attestations), or the SBOM media types (SBOM attachments).
    predicate_types: Vec<String>,
}

#[derive(Serialize)]
struct RuleJson {
    #[serde(rename = "match")]
    pattern: String,
    key_file: String,
    fingerprint: String,
    require: bool,
    verified: bool,
    found: String,
}

/// Everything `inspect --provenance` shows, judged against `policy`.
pub(super) fn collect(h: &Header, policy: Option<&Policy>) -> ProvenanceJson {
    let rules: &[VerifyRule] = policy.map(|p| p.verify.as_slice()).unwrap_or(&[]);
    let checked = crate::provenance::check(h, rules);
    let images = checked
        .iter()
        .map(|c| {
            let r = c.reference.as_str();
            let repo = ImageRef::parse(r)
                .map(|x| x.name())
                .unwrap_or_else(|_| r.to_string());
            let covering: Vec<&VerifyRule> =
                rules.iter().filter(|x| x.pattern.matches(&repo)).collect();
            let artifacts = |kind| records(h, r, kind).map(artifact).collect();
            ImageJson {
                reference: r.to_string(),
                digest: c.digest,
                upstream: upstream_status(h, r).0,
                signatures: records(h, r, ArtifactKind::Signature)
                    .map(|p| signature_manifest(p, c.digest, &repo, &covering))
                    .collect(),
                attestations: artifacts(ArtifactKind::Attestation),
                sboms: artifacts(ArtifactKind::Sbom),
                referrers: artifacts(ArtifactKind::Referrer),
                buildkit_attestations: artifacts(ArtifactKind::BuildkitAttestation),
                rules: c
                    .rules
                    .iter()
                    .map(|o| RuleJson {
                        pattern: o.rule.written.clone(),
                        key_file: o.rule.key_file.display().to_string(),
                        fingerprint: o.rule.key.fingerprint().to_string(),
                        require: o.rule.require,
                        verified: o.verified(),
                        found: o.judgment.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    ProvenanceJson {
        policy: policy.map(Policy::describe),
        images,
    }
}

fn artifact(p: &Provenance) -> ArtifactJson {
    ArtifactJson {
        subject: p.subject,
        manifest: p.manifest,
        media_type: p.media_type.clone(),
        artifact_type: p.artifact_type.clone(),
        predicate_types: p.predicate_types.clone(),
    }
}

/// One signature manifest, each signature judged under each covering rule's key against the
/// image's top digest (what the load check asks of it).
fn signature_manifest(
    p: &Provenance,
    top: Digest,
    repo: &str,
    covering: &[&VerifyRule],
) -> SignatureManifestJson {
    let signatures = p
        .signatures
        .iter()
        .map(|s| {
            let label = format!("{} payload {}", p.manifest, s.payload_digest);
            let payload = s.payload_bytes();
            let input = SignatureInput {
                label: label.clone(),
                payload: payload.as_deref().unwrap_or(&[]),
                signature: payload.clone().and_then(|_| s.signature_bytes()),
            };
            let findings: Vec<FindingJson> = covering
                .iter()
                .map(|rule| {
                    let j = judge(&rule.key, &top, repo, std::slice::from_ref(&input));
                    let f = j.findings.into_iter().next();
                    FindingJson {
                        key_file: rule.key_file.display().to_string(),
                        fingerprint: rule.key.fingerprint().to_string(),
                        verified: matches!(f, Some(Finding::Verified { .. })),
                        finding: f.map(|f| f.to_string()).unwrap_or_default(),
                    }
                })
                .collect();
            SignatureJson {
                payload_digest: s.payload_digest,
                verified_at_pack_time_with: s.verified_with.clone(),
                here: if findings.is_empty() {
                    "no-rule"
                } else if findings.iter().any(|f| f.verified) {
                    "verified"
                } else {
                    "not-verified"
                },
                findings,
            }
        })
        .collect();
    SignatureManifestJson {
        subject: p.subject,
        manifest: p.manifest,
        signatures,
    }
}

/// The text form.
pub(super) fn print(out: &ProvenanceJson) {
    println!();
    match &out.policy {
        Some(p) => println!("judged by {p}"),
        None => println!("no policy on this host: signatures are not judged here"),
    }
    for i in &out.images {
        println!();
        println!("IMAGE {} ({})", escape(&i.reference), i.digest);
        println!("  upstream: {}", i.upstream);
        for m in &i.signatures {
            println!("  signature {} on {}", m.manifest, m.subject);
            for s in &m.signatures {
                println!("    payload {}", s.payload_digest);
                match &s.verified_at_pack_time_with {
                    Some(fp) => println!("      verified at pack time with {fp}"),
                    None => println!("      not verified at pack time"),
                }
                if s.findings.is_empty() {
                    println!("      no rule here");
                }
                for f in &s.findings {
                    if f.verified {
                        println!(
                            "      verified here with {} ({})",
                            f.key_file, f.fingerprint
                        );
                    } else {
                        println!(
                            "      NOT verified here with {} ({}): {}",
                            f.key_file, f.fingerprint, f.finding
                        );
                    }
                }
            }
        }
        for (label, list, what) in [
            ("attestation", &i.attestations, "predicate types"),
            ("sbom", &i.sboms, "media types"),
            (
                "buildkit-attestation",
                &i.buildkit_attestations,
                "predicate types",
            ),
        ] {
            for a in list {
                println!(
                    "  {label} {} on {}: {what} {}",
                    a.manifest,
                    a.subject,
                    shown_list(&a.predicate_types)
                );
            }
        }
        for a in &i.referrers {
            println!(
                "  referrer {} on {}: artifact type {}",
                a.manifest,
                a.subject,
                a.artifact_type
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "(none)".into())
            );
        }
        for r in &i.rules {
            if !r.verified {
                println!(
                    "  rule [[verify]] match = {:?} ({}, {}): {}{}",
                    r.pattern,
                    r.key_file,
                    r.fingerprint,
                    if r.require {
                        "REQUIRED, "
                    } else {
                        "not required, "
                    },
                    r.found
                );
            }
        }
    }
}

fn shown_list(v: &[String]) -> String {
    if v.is_empty() {
        return "(none declared)".into();
    }
    v.iter().map(|s| escape(s)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_without_records_is_unverified_upstream() {
        let h = Header {
            format: "airlock-bundle".into(),
            version: 4,
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: vec![],
            images: vec![airlock_bundle::ImageRecord {
                reference: "docker.io/library/busybox:1.36".into(),
                platform: "linux/amd64".parse().unwrap(),
                manifest: Digest::of(b"m"),
                config: Digest::of(b"c"),
                layers: vec![],
                index: None,
            }],
            provenance: vec![],
            models: vec![],
            files: vec![],
            expected_present: vec![],
            compose: Vec::new(),
        };
        let (text, keys) = upstream_status(&h, "docker.io/library/busybox:1.36");
        assert_eq!(text, "unverified upstream");
        assert!(keys.is_empty());
        let out = collect(&h, None);
        assert_eq!(out.images.len(), 1);
        assert!(out.images[0].signatures.is_empty() && out.images[0].rules.is_empty());
    }
}
