//! The one judgment both sides make: do these cosign signatures verify this image (its
//! digest, under its repository) with this key? A signature verifies when the key verifies
//! it over its payload, the payload is a simple-signing document for exactly the digest,
//! and it names the image's repository (cosign's and `skopeo`'s `matchRepository`: the tag
//! is not part of the claim). Every signature gets a [`Finding`], so a refusal can say what
//! was found instead.

use std::fmt;

use airlock_bundle::text::Escaped;
use airlock_bundle::{Digest, ImageRef};

use crate::payload::SimpleSigning;
use crate::PublicKey;

/// One signature to judge.
#[derive(Debug, Clone)]
pub struct SignatureInput<'a> {
    /// What names it in messages: the signature manifest and payload digests.
    pub label: String,
    pub payload: &'a [u8],
    /// The signature bytes (decoded from the annotation's base64), or why they could not be.
    pub signature: Result<Vec<u8>, String>,
}

/// What one signature turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Verified {
        label: String,
    },
    /// Not a signature by this key (made by another key, or damaged).
    OtherKey {
        label: String,
    },
    /// By this key, for another manifest.
    OtherDigest {
        label: String,
        signed: String,
    },
    /// By this key, for this digest, claiming another repository.
    OtherRepository {
        label: String,
        signed: String,
    },
    Unreadable {
        label: String,
        problem: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Verified { label } => write!(f, "{label}: verified"),
            Finding::OtherKey { label } => {
                write!(
                    f,
                    "{label}: not signed by this key (another key, or altered)"
                )
            }
            Finding::OtherDigest { label, signed } => {
                write!(f, "{label}: by this key, but for {}", Escaped(signed))
            }
            Finding::OtherRepository { label, signed } => write!(
                f,
                "{label}: by this key for this digest, but naming {}",
                Escaped(signed)
            ),
            Finding::Unreadable { label, problem } => write!(f, "{label}: {problem}"),
        }
    }
}

/// The findings for one image under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgment {
    pub findings: Vec<Finding>,
}

impl Judgment {
    pub fn verified(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f, Finding::Verified { .. }))
    }

    /// Labels of the signatures that verified.
    pub fn verified_labels(&self) -> impl Iterator<Item = &str> {
        self.findings.iter().filter_map(|f| match f {
            Finding::Verified { label } => Some(label.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Judgment {
    /// What was found: "no signature", or each signature's finding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return f.write_str("no signature found");
        }
        for (i, x) in self.findings.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

/// Judges `signatures` of the image `repository` (normalised, `registry/repository`) at
/// `digest` under `key`.
pub fn judge(
    key: &PublicKey,
    digest: &Digest,
    repository: &str,
    signatures: &[SignatureInput<'_>],
) -> Judgment {
    let findings = signatures
        .iter()
        .map(|s| one(key, digest, repository, s))
        .collect();
    Judgment { findings }
}

fn one(key: &PublicKey, digest: &Digest, repository: &str, s: &SignatureInput<'_>) -> Finding {
    let label = s.label.clone();
    let sig = match &s.signature {
        Ok(b) => b,
        Err(problem) => {
            return Finding::Unreadable {
                label,
                problem: problem.clone(),
            }
        }
    };
    if !key.verifies(s.payload, sig) {
        return Finding::OtherKey { label };
    }
    let claim = match SimpleSigning::parse(s.payload) {
        Ok(c) => c,
        Err(problem) => return Finding::Unreadable { label, problem },
    };
    if claim.docker_manifest_digest != digest.to_string() {
        return Finding::OtherDigest {
            label,
            signed: claim.docker_manifest_digest,
        };
    }
    let named = ImageRef::parse(&claim.docker_reference).map(|r| r.name());
    if named.as_deref() != Ok(repository) {
        return Finding::OtherRepository {
            label,
            signed: claim.docker_reference,
        };
    }
    Finding::Verified { label }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    fn key() -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (sk, PublicKey::from_pem(pem.as_bytes()).unwrap())
    }

    fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn sign(sk: &p256::ecdsa::SigningKey, p: &[u8]) -> Vec<u8> {
        let s: p256::ecdsa::Signature = sk.sign(p);
        s.to_der().as_bytes().to_vec()
    }

    #[test]
    fn each_way_of_failing_is_named() {
        let (sk, pk) = key();
        let (other_sk, _) = key();
        let d = Digest::of(b"manifest");
        let repo = "127.0.0.1:5000/a/b";
        let good = payload("127.0.0.1:5000/a/b:v1", &d);
        let wrong_digest = payload("127.0.0.1:5000/a/b:v1", &Digest::of(b"other"));
        let wrong_repo = payload("127.0.0.1:5000/a/c:v1", &d);
        let input = |label: &str, p: &'static [u8], s: Vec<u8>| SignatureInput {
            label: label.into(),
            payload: p,
            signature: Ok(s),
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let (good, wrong_digest, wrong_repo) = (leak(good), leak(wrong_digest), leak(wrong_repo));
        let j = judge(
            &pk,
            &d,
            repo,
            &[
                input("other-key", good, sign(&other_sk, good)),
                input("other-digest", wrong_digest, sign(&sk, wrong_digest)),
                input("other-repo", wrong_repo, sign(&sk, wrong_repo)),
            ],
        );
        assert!(!j.verified());
        let text = j.to_string();
        assert!(text.contains("other-key: not signed by this key"), "{text}");
        assert!(
            text.contains(&format!("but for {}", Digest::of(b"other"))),
            "{text}"
        );
        assert!(text.contains("naming 127.0.0.1:5000/a/c:v1"), "{text}");
        let j = judge(&pk, &d, repo, &[input("good", good, sign(&sk, good))]);
        assert!(j.verified());
        assert_eq!(j.verified_labels().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(judge(&pk, &d, repo, &[]).to_string(), "no signature found");
    }
}
