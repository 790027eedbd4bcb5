//! Cosign public keys: PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an ECDSA P-256 or an
//! Ed25519 key, what `cosign generate-key-pair` and `skopeo generate-sigstore-key` write. A
//! key is named by its fingerprint, `sha256:<hex>` of the DER SubjectPublicKeyInfo (the key
//! ID Rekor and TUF use), so that a header, a report and an operator's key file can be
//! compared without the key material.

use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

/// The largest key file read: a PEM public key is a few hundred bytes.
pub const MAX_KEY_SIZE: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("larger than {MAX_KEY_SIZE} bytes; not a public key")]
    TooLarge,
    #[error("not a PEM public key (expected \"-----BEGIN PUBLIC KEY-----\"): {0}")]
    NotPem(String),
    #[error("a public key of an algorithm cosign verification here does not support ({0}); ECDSA P-256 and Ed25519 are")]
    Algorithm(String),
}

#[derive(Clone)]
enum Verifier {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A cosign verification key.
#[derive(Clone)]
pub struct PublicKey {
    verifier: Verifier,
    fingerprint: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} {})", self.algorithm(), self.fingerprint)
    }
}

impl PublicKey {
    /// Parses a PEM public key (the whole key file's bytes).
    pub fn from_pem(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        if bytes.len() > MAX_KEY_SIZE {
            return Err(KeyError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| KeyError::NotPem(e.to_string()))?;
        let (label, der) = p256::pkcs8::der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| KeyError::NotPem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::NotPem(format!("the PEM label is {label:?}")));
        }
        Self::from_der(&der)
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let fingerprint = format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)));
        let verifier = if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            Verifier::P256(k)
        } else if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            Verifier::Ed25519(k)
        } else {
            let algorithm = p256::pkcs8::SubjectPublicKeyInfoRef::try_from(der)
                .map(|spki| spki.algorithm.oid.to_string())
                .map_err(|e| KeyError::NotPem(e.to_string()))?;
            return Err(KeyError::Algorithm(format!("algorithm {algorithm}")));
        };
        Ok(PublicKey {
            verifier,
            fingerprint,
        })
    }

    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn algorithm(&self) -> &'static str {
        match self.verifier {
            Verifier::P256(_) => "ecdsa-p256",
            Verifier::Ed25519(_) => "ed25519",
        }
    }

    /// Whether `signature` is this key's signature of `payload`: for P-256 an ASN.1 DER
    /// ECDSA signature over SHA-256 of the payload (cosign's), for Ed25519 a plain 64-byte
    /// signature of the payload.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::P256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_der(signature)
                    .is_ok_and(|s| k.verify(payload, &s).is_ok())
            }
            Verifier::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(payload, &s).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey as _;

    fn p256_pair() -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (sk, PublicKey::from_pem(pem.as_bytes()).unwrap())
    }

    #[test]
    fn p256_der_signature_verifies_and_tampering_does_not() {
        use p256::ecdsa::signature::Signer as _;
        let (sk, pk) = p256_pair();
        let sig: p256::ecdsa::Signature = sk.sign(b"payload");
        let der = sig.to_der();
        assert!(pk.verifies(b"payload", der.as_bytes()));
        assert!(!pk.verifies(b"payloaD", der.as_bytes()));
        assert!(
            !pk.verifies(b"payload", &sig.to_bytes()),
            "raw r||s is not cosign's encoding"
        );
        let (_, other) = p256_pair();
        assert!(!other.verifies(b"payload", der.as_bytes()));
        assert_ne!(pk.fingerprint(), other.fingerprint());
        assert_eq!(pk.algorithm(), "ecdsa-p256");
    }

    #[test]
    fn ed25519_keys_verify_plain_signatures() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let pk = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(pk.algorithm(), "ed25519");
        let sig = sk.sign(b"payload").to_bytes();
        assert!(pk.verifies(b"payload", &sig));
        assert!(!pk.verifies(b"other", &sig));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        let (_, pk) = p256_pair();
        let fp = pk.fingerprint();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        assert!(matches!(
            PublicKey::from_pem(b"hello"),
            Err(KeyError::NotPem(_))
        ));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PublicKey::from_pem(private.as_bytes()),
            Err(KeyError::NotPem(m)) if m.contains("PRIVATE KEY")
        ));
        assert_eq!(
            PublicKey::from_pem(&vec![b'A'; MAX_KEY_SIZE + 1]).unwrap_err(),
            KeyError::TooLarge
        );
    }
}
