//! The signed bundle header (`airlock/header.json`): format version, every entry's digest and
//! size in tar order, and the images the bundle carries. See `docs/FORMAT.md`.

use serde::{Deserialize, Serialize};

use crate::oci::Platform;
use crate::{BundleError, Digest};

pub const FORMAT_NAME: &str = "airlock-bundle";
pub const FORMAT_VERSION: u32 = 1;

pub const HEADER_PATH: &str = "airlock/header.json";
pub const SIGNATURE_PATH: &str = "airlock/header.json.minisig";
pub const OCI_LAYOUT_PATH: &str = "oci-layout";
pub const INDEX_PATH: &str = "index.json";

/// Upper bounds for the two entries read into memory before anything is verified.
pub const MAX_HEADER_SIZE: u64 = 16 << 20;
pub const MAX_SIGNATURE_SIZE: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub tool: String,
    pub name: String,
    pub created: String,
    pub entries: Vec<Entry>,
    pub images: Vec<ImageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    #[serde(rename = "ref")]
    pub reference: String,
    pub platform: Platform,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

impl Header {
    /// Canonical bytes: pretty-printed JSON, fields in declaration order, a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("header serialises");
        v.push(b'\n');
        v
    }

    /// Parses header bytes whose signature has already been checked. The format name and
    /// version are checked first so that a newer header gets a version error, not a parse
    /// error about fields this reader does not know.
    pub fn parse(bytes: &[u8]) -> Result<Header, BundleError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u64>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        let format = probe.format.unwrap_or_default();
        let version = probe.version.unwrap_or(0);
        if format != FORMAT_NAME || version == 0 || version > u64::from(FORMAT_VERSION) {
            return Err(BundleError::UnsupportedVersion {
                format,
                found: version,
                supported_format: FORMAT_NAME,
                supported: FORMAT_VERSION,
            });
        }
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        header.validate()?;
        Ok(header)
    }

    /// Structural rules a signed header must still obey (a trusted signer can still have
    /// a bug): entry paths are exactly the ones the format allows, blob paths match their
    /// digests, and there are no duplicates.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Malformed(format!("{HEADER_PATH}: {m}")));
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let ok = match e.path.as_str() {
                OCI_LAYOUT_PATH => i == 0,
                INDEX_PATH => i == 1,
                p => p.strip_prefix("blobs/sha256/") == Some(e.digest.hex().as_str()) && i >= 2,
            };
            if !ok {
                return bad(format!("entry {i} has an invalid path {:?}", e.path));
            }
            if !seen.insert(e.path.as_str()) {
                return bad(format!("entry {:?} is listed twice", e.path));
            }
        }
        if self.entries.len() < 2 {
            return bad("entries must start with oci-layout and index.json".into());
        }
        for img in &self.images {
            for d in std::iter::once(&img.manifest)
                .chain(std::iter::once(&img.config))
                .chain(&img.layers)
            {
                if !seen.contains(d.blob_path().as_str()) {
                    return bad(format!(
                        "image {} refers to {d}, which the bundle lacks",
                        img.reference
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Total bytes of all entries after the signature.
    pub fn payload_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}
