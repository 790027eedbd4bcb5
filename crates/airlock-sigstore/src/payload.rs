//! The simple-signing payload a cosign signature signs: which manifest digest, under which
//! repository. Only the `critical` section is read; `optional` is the signer's to fill.

use serde::Deserialize;

/// The largest payload read: a simple-signing document is a few hundred bytes; the bound
/// holds before anything is parsed, also for a payload carried in a bundle header.
pub const MAX_PAYLOAD_SIZE: usize = 64 << 10;

/// What a simple-signing payload claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleSigning {
    /// `critical.identity.docker-reference`: the repository (maybe with a tag) the signer
    /// named.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub docker_manifest_digest: String,
    /// `critical.type` (cosign and containers/image write `cosign container image
    /// signature`).
    pub kind: String,
}

#[derive(Deserialize)]
struct Doc {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The `critical.type` every simple-signing payload carries.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

impl SimpleSigning {
    /// Parses payload bytes, refusing anything larger than [`MAX_PAYLOAD_SIZE`] or of
    /// another type.
    pub fn parse(bytes: &[u8]) -> Result<SimpleSigning, String> {
        if bytes.len() > MAX_PAYLOAD_SIZE {
            return Err(format!(
                "payload of {} bytes is larger than {MAX_PAYLOAD_SIZE}",
                bytes.len()
            ));
        }
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a simple-signing payload: {e}"))?;
        let c = doc.critical;
        if !c.kind.eq_ignore_ascii_case(SIGNATURE_TYPE) {
            return Err(format!(
                "payload type {:?} is not {SIGNATURE_TYPE:?}",
                airlock_bundle::text::Escaped(&c.kind).to_string()
            ));
        }
        Ok(SimpleSigning {
            docker_reference: c.identity.docker_reference,
            docker_manifest_digest: c.image.docker_manifest_digest,
            kind: c.kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_skopeo_and_cosign_write() {
        let p = br#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/a/b:v1"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":{"creator":"containers/image"}}"#;
        let s = SimpleSigning::parse(p).unwrap();
        assert_eq!(s.docker_reference, "127.0.0.1:5000/a/b:v1");
        assert_eq!(s.docker_manifest_digest, "sha256:ab");
    }

    #[test]
    fn refuses_other_documents() {
        let atomic = br#"{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"atomic container signature"}}"#;
        assert!(SimpleSigning::parse(atomic).unwrap_err().contains("atomic"));
        assert!(SimpleSigning::parse(b"{}").is_err());
        assert!(SimpleSigning::parse(&vec![b' '; MAX_PAYLOAD_SIZE + 1])
            .unwrap_err()
            .contains("larger"));
    }
}
