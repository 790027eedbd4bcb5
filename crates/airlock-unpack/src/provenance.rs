//! The gap host's provenance check: do the upstream cosign signatures a bundle carries in
//! its signed header verify its images under the keys this host's `[[verify]]` rules name?
//!
//! For every image reference of the header and every rule whose `match` covers its
//! repository, the carried signature records (kind `signature`, attached to the image's top
//! digest: its index if it came from one, else its manifest) are judged with
//! [`airlock_sigstore::judge`] under the rule's key, offline, from the header alone, before
//! any blob is read or anything is loaded or sent. A required rule that no signature
//! satisfies refuses the bundle ([`UnpackError::Provenance`], exit code 14), listing every
//! such image with what was found instead. `verify`, `load`, `push` and `inspect` all ask
//! here.

use std::path::PathBuf;

use airlock_bundle::provenance::{ArtifactKind, Provenance};
use airlock_bundle::text::escape;
use airlock_bundle::{Digest, Header, ImageRef};
use airlock_sigstore::{judge, Judgment, SignatureInput};
use serde::Serialize;

use crate::policy::VerifyRule;
use crate::UnpackError;

/// One image reference of a header, as the check sees it.
#[derive(Debug, Clone)]
pub struct ImageProvenance {
    pub reference: String,
    /// What its signatures must name: the index it came from, else its manifest.
    pub digest: Digest,
    /// Each rule covering it, and what its key found.
    pub rules: Vec<RuleOutcome>,
}

/// One `[[verify]]` rule applied to one image.
#[derive(Debug, Clone)]
pub struct RuleOutcome {
    pub rule: VerifyRule,
    pub judgment: Judgment,
}

impl RuleOutcome {
    pub fn verified(&self) -> bool {
        self.judgment.verified()
    }
}

/// A required rule that an image does not satisfy: one line of a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceFailure {
    pub reference: String,
    pub digest: Digest,
    /// The rule as written (`[[verify]] match = "…"`).
    pub rule: String,
    pub key_file: PathBuf,
    pub fingerprint: String,
    /// What was found instead (each signature's finding, or that there was none).
    pub found: String,
}

impl std::fmt::Display for ProvenanceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image {} ({}): no upstream signature verifies with key {} ({}), which {} requires; found: {}",
            escape(&self.reference),
            self.digest,
            self.key_file.display(),
            self.fingerprint,
            self.rule,
            self.found
        )
    }
}

/// The image's top digest: what a signature attached to it names.
pub fn top_digest(h: &Header, reference: &str) -> Option<Digest> {
    h.images
        .iter()
        .find(|i| i.reference == reference)
        .map(|i| i.index.unwrap_or(i.manifest))
}

/// The image references of `h`, each once, in header order.
pub fn references(h: &Header) -> Vec<&str> {
    let mut seen = std::collections::BTreeSet::new();
    h.images
        .iter()
        .map(|i| i.reference.as_str())
        .filter(|r| seen.insert(*r))
        .collect()
}

/// The provenance records of `reference`, of `kind`.
pub fn records<'h>(
    h: &'h Header,
    reference: &'h str,
    kind: ArtifactKind,
) -> impl Iterator<Item = &'h Provenance> + 'h {
    h.provenance
        .iter()
        .filter(move |p| p.reference == reference && p.kind == kind)
}

/// Judges the carried signatures of every image of `h` under every rule covering it.
pub fn check(h: &Header, rules: &[VerifyRule]) -> Vec<ImageProvenance> {
    references(h)
        .into_iter()
        .filter_map(|reference| {
            let digest = top_digest(h, reference)?;
            // A reference that no longer parses is judged under its text: no rule's key
            // can then find a signature naming it, so a required rule refuses it.
            let repository = ImageRef::parse(reference)
                .map(|r| r.name())
                .unwrap_or_else(|_| reference.to_string());
            let mut payloads = Vec::new();
            for p in records(h, reference, ArtifactKind::Signature).filter(|p| p.subject == digest)
            {
                for s in &p.signatures {
                    payloads.push((
                        format!("{} payload {}", p.manifest, s.payload_digest),
                        s.payload_bytes(),
                        s.signature_bytes(),
                    ));
                }
            }
            let inputs: Vec<SignatureInput<'_>> = payloads
                .iter()
                .map(|(label, payload, signature)| match payload {
                    Ok(bytes) => SignatureInput {
                        label: label.clone(),
                        payload: bytes,
                        signature: signature.clone(),
                    },
                    Err(e) => SignatureInput {
                        label: label.clone(),
                        payload: &[],
                        signature: Err(e.clone()),
                    },
                })
                .collect();
            let rules = rules
                .iter()
                .filter(|r| r.pattern.matches(&repository))
                .map(|r| RuleOutcome {
                    rule: r.clone(),
                    judgment: judge(&r.key, &digest, &repository, &inputs),
                })
                .collect();
            Some(ImageProvenance {
                reference: reference.to_string(),
                digest,
                rules,
            })
        })
        .collect()
}

/// The required rules not satisfied, one per image and rule.
pub fn failures(checked: &[ImageProvenance]) -> Vec<ProvenanceFailure> {
    checked
        .iter()
        .flat_map(|i| {
            i.rules
                .iter()
                .filter(|o| o.rule.require && !o.verified())
                .map(|o| ProvenanceFailure {
                    reference: i.reference.clone(),
                    digest: i.digest,
                    rule: o.rule.describe(),
                    key_file: o.rule.key_file.clone(),
                    fingerprint: o.rule.key.fingerprint().to_string(),
                    found: o.judgment.to_string(),
                })
        })
        .collect()
}

/// The check as a refusal, if a required rule is not satisfied. `policy` names the policy
/// file (its path and digest).
pub fn refusal(checked: &[ImageProvenance], policy: &str) -> Result<(), UnpackError> {
    let failures = failures(checked);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(UnpackError::Provenance {
            policy: policy.to_string(),
            failures,
        })
    }
}

/// What the operator is told on stderr: each image whose upstream signature verified, with
/// which key.
pub fn verified_lines(checked: &[ImageProvenance]) -> Vec<String> {
    checked
        .iter()
        .flat_map(|i| {
            i.rules.iter().filter(|o| o.verified()).map(|o| {
                format!(
                    "upstream signature of {} verified with {} ({})",
                    escape(&i.reference),
                    o.rule.key_file.display(),
                    o.rule.key.fingerprint()
                )
            })
        })
        .collect()
}

/// Per image in a report: which keys verified it, and which rules found nothing.
#[derive(Debug, Clone, Serialize)]
pub struct ImageProvenanceJson {
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: Digest,
    pub verified_with: Vec<KeyJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_verified: Vec<NotVerifiedJson>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyJson {
    pub key_file: PathBuf,
    pub fingerprint: String,
    /// The signatures that verified (signature manifest and payload digests).
    pub signatures: Vec<String>,
}

/// A rule with `require = false` that found no valid signature.
#[derive(Debug, Clone, Serialize)]
pub struct NotVerifiedJson {
    pub key_file: PathBuf,
    pub fingerprint: String,
    pub required: bool,
    pub found: String,
}

/// The report's `provenance`: every image, with what verified it.
pub fn report(checked: &[ImageProvenance]) -> Vec<ImageProvenanceJson> {
    checked
        .iter()
        .map(|i| ImageProvenanceJson {
            reference: i.reference.clone(),
            digest: i.digest,
            verified_with: i
                .rules
                .iter()
                .filter(|o| o.verified())
                .map(|o| KeyJson {
                    key_file: o.rule.key_file.clone(),
                    fingerprint: o.rule.key.fingerprint().to_string(),
                    signatures: o.judgment.verified_labels().map(str::to_string).collect(),
                })
                .collect(),
            not_verified: i
                .rules
                .iter()
                .filter(|o| !o.verified())
                .map(|o| NotVerifiedJson {
                    key_file: o.rule.key_file.clone(),
                    fingerprint: o.rule.key.fingerprint().to_string(),
                    required: o.rule.require,
                    found: o.judgment.to_string(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_bundle::header::ImageRecord;
    use airlock_bundle::provenance::CarriedSignature;
    use airlock_sigstore::{PublicKey, RepoPattern};
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    const REF: &str = "127.0.0.1:5000/vendor/app:v1";

    fn key(seed: u8) -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (sk, PublicKey::from_pem(pem.as_bytes()).unwrap())
    }

    fn rule(pattern: &str, pk: &PublicKey, require: bool) -> VerifyRule {
        VerifyRule {
            pattern: RepoPattern::parse(pattern).unwrap(),
            written: pattern.into(),
            key_file: PathBuf::from("/etc/airlock/keys/vendor.pub"),
            key: pk.clone(),
            require,
        }
    }

    fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    /// A signature record for `subject`, signed by `sk` over a payload naming `names`.
    fn signature(sk: &p256::ecdsa::SigningKey, subject: Digest, names: Digest) -> Provenance {
        let p = payload(REF, &names);
        let sig: p256::ecdsa::Signature = sk.sign(&p);
        let b64 = base64::engine::general_purpose::STANDARD;
        Provenance {
            reference: REF.into(),
            subject,
            kind: ArtifactKind::Signature,
            manifest: Digest::of(&[&p[..], b" manifest"].concat()),
            media_type: airlock_bundle::oci::OCI_MANIFEST.into(),
            artifact_type: None,
            blobs: vec![Digest::of(b"{}"), Digest::of(&p)],
            predicate_types: vec![],
            signatures: vec![CarriedSignature {
                payload: b64.encode(&p),
                payload_digest: Digest::of(&p),
                signature: b64.encode(sig.to_der().as_bytes()),
                verified_with: None,
            }],
        }
    }

    fn header(index: Option<Digest>, provenance: Vec<Provenance>) -> Header {
        let m = Digest::of(b"manifest");
        Header {
            format: "airlock-bundle".into(),
            version: 4,
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: vec![],
            images: ["linux/amd64", "linux/arm64"]
                .iter()
                .map(|p| ImageRecord {
                    reference: REF.into(),
                    platform: p.parse().unwrap(),
                    manifest: m,
                    config: m,
                    layers: vec![],
                    index,
                })
                .collect(),
            provenance,
            models: vec![],
            files: vec![],
            expected_present: vec![],
            compose: Vec::new(),
        }
    }

    #[test]
    fn a_signature_on_the_index_verifies_every_platform_once() {
        let (sk, pk) = key(1);
        let index = Digest::of(b"index");
        let h = header(Some(index), vec![signature(&sk, index, index)]);
        let checked = check(&h, &[rule("127.0.0.1:5000/vendor/*", &pk, true)]);
        assert_eq!(checked.len(), 1, "one entry per reference");
        assert_eq!(checked[0].digest, index);
        assert!(checked[0].rules[0].verified());
        refusal(&checked, "policy p").unwrap();
        let lines = verified_lines(&checked);
        assert_eq!(
            lines,
            [format!(
                "upstream signature of {REF} verified with /etc/airlock/keys/vendor.pub ({})",
                pk.fingerprint()
            )]
        );
        let json = report(&checked);
        assert_eq!(json[0].verified_with[0].fingerprint, pk.fingerprint());
        assert!(json[0].not_verified.is_empty());
    }

    #[test]
    fn another_key_is_refused_with_what_was_found() {
        let (sk, _) = key(1);
        let (_, other) = key(2);
        let m = Digest::of(b"manifest");
        let h = header(None, vec![signature(&sk, m, m)]);
        let checked = check(&h, &[rule("*", &other, true)]);
        let e = refusal(&checked, "policy /p.toml, sha256:00").unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::PROVENANCE);
        let text = e.to_string();
        assert!(
            text.starts_with("upstream provenance refused by this host's policy (policy /p.toml, sha256:00), nothing was loaded or pushed; 1 image not signed as required:\n  - "),
            "{text}"
        );
        assert!(text.contains(&format!("image {REF} ({m}): no upstream signature verifies with key /etc/airlock/keys/vendor.pub ({})", other.fingerprint())), "{text}");
        assert!(text.contains("[[verify]] match = \"*\" requires"), "{text}");
        assert!(text.contains("not signed by this key"), "{text}");
        // Not required: reported, not refused.
        let checked = check(&h, &[rule("*", &other, false)]);
        refusal(&checked, "p").unwrap();
        assert!(!report(&checked)[0].not_verified[0].required);
    }

    #[test]
    fn no_signature_another_digest_or_subject_refuse() {
        let (sk, pk) = key(1);
        let m = Digest::of(b"manifest");
        let rules = [rule("127.0.0.1:5000/vendor/app", &pk, true)];
        let unsigned = check(&header(None, vec![]), &rules);
        assert!(failures(&unsigned)[0].found.contains("no signature found"));
        let other = Digest::of(b"other");
        let wrong = check(&header(None, vec![signature(&sk, m, other)]), &rules);
        let f = failures(&wrong);
        assert!(
            f[0].found.contains(&format!("but for {other}")),
            "{}",
            f[0].found
        );
        // A signature attached to another subject (a platform manifest of an index) does
        // not sign the image's top digest, whatever it says.
        let index = Digest::of(b"index");
        let h = header(Some(index), vec![signature(&sk, m, index)]);
        let f = failures(&check(&h, &rules));
        assert!(f[0].found.contains("no signature found"), "{}", f[0].found);
        // A rule that covers nothing asks for nothing.
        let elsewhere = [rule("docker.io/grafana/*", &pk, true)];
        let c = check(&header(None, vec![]), &elsewhere);
        assert!(c[0].rules.is_empty());
        refusal(&c, "p").unwrap();
    }
}
