//! Errors of the bundle format: each carries the entry or file it concerns and, where it is a
//! mismatch, what was expected and what was found, so that a refusal can be acted upon.

use std::path::PathBuf;

use crate::Digest;

/// How a failure should be reported to a user (and mapped to an exit code by the binaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The bundle's bytes are wrong: corrupt, truncated, tampered, malformed.
    Integrity,
    /// The signature is missing, invalid or from a key not trusted.
    Trust,
    /// The bundle cannot be decrypted with the identities given.
    Decrypt,
    /// The bundle uses a format version this reader does not implement.
    Version,
    /// Something outside the bundle failed: a file could not be written, a disk is full.
    Environment,
    /// The caller asked for something impossible (bad key file, bad argument).
    Usage,
}

/// Everything that can go wrong while writing or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("digest mismatch for {entry}: expected {expected}, computed {actual}")]
    DigestMismatch {
        entry: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {entry}: expected {expected} bytes, found {actual}")]
    SizeMismatch {
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("bundle is truncated: {entry} is incomplete ({detail})")]
    Truncated { entry: String, detail: String },
    /// `found` is the name in the archive, unsigned: shown escaped.
    #[error("unexpected entry in bundle: expected {expected}, found {}", crate::text::Escaped(.found))]
    UnexpectedEntry { expected: String, found: String },
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("corrupt bundle: the encrypted stream failed authentication (modified or truncated) while reading {entry} ({detail})")]
    CorruptCiphertext { entry: String, detail: String },
    #[error(
        "the bundle is not signed by a trusted key: signed by key id {key_id}; trusted: {trusted}"
    )]
    UntrustedSigner { key_id: String, trusted: String },
    #[error("invalid signature on {file} (key id {key_id}): {detail}")]
    BadSignature {
        key_id: String,
        file: String,
        detail: String,
    },
    #[error("{}: the bundle's parts do not match their signed sums:\n  {}", sums.display(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Parts {
        sums: PathBuf,
        problems: Vec<crate::parts::PartProblem>,
    },
    #[error("no trusted keys: pass --trust PUB or put *.pub files into the trust directory")]
    NoTrustedKeys,
    #[error("unsupported bundle format {format} version {found}: this reader implements {supported_format} version {supported}")]
    UnsupportedVersion {
        format: String,
        found: u64,
        supported_format: &'static str,
        supported: u32,
    },
    #[error("cannot decrypt the bundle: {0}")]
    Decrypt(String),
    /// `path` may hold a name found on the media: shown escaped.
    #[error("{}: {source}", crate::text::escape(&.path.to_string_lossy()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {entry}: {source}")]
    Read {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {entry}: {source}")]
    Output {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("{0}")]
    Usage(String),
    /// More of a part set is damaged or lost than its parity parts can rebuild.
    #[error("cannot repair {0}")]
    Unrepairable(String),
}

impl BundleError {
    /// Which kind of failure this is, for exit codes and advice.
    pub fn class(&self) -> ErrorClass {
        use BundleError::*;
        match self {
            DigestMismatch { .. }
            | SizeMismatch { .. }
            | Truncated { .. }
            | UnexpectedEntry { .. }
            | Malformed(_)
            | CorruptCiphertext { .. }
            | Parts { .. }
            | Unrepairable(_)
            | Read { .. } => ErrorClass::Integrity,
            UntrustedSigner { .. } | BadSignature { .. } | NoTrustedKeys => ErrorClass::Trust,
            UnsupportedVersion { .. } => ErrorClass::Version,
            Decrypt(_) => ErrorClass::Decrypt,
            Io { .. } | Output { .. } => ErrorClass::Environment,
            Key { .. } | Usage(_) => ErrorClass::Usage,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BundleError::Io {
            path: path.into(),
            source,
        }
    }
}
