//! Why a host write was refused or failed ([`FsError`]), kept apart from the writing
//! itself, and its conversion for callers that speak `io::Error`.

use std::io;
use std::path::PathBuf;

/// Why a host write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A symlink, or something else that is not ours to write through, stands in the way.
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FsError {
    pub(super) fn io(path: impl Into<PathBuf>, e: impl Into<io::Error>) -> FsError {
        FsError::Io {
            path: path.into(),
            source: e.into(),
        }
    }

    pub(super) fn refused(path: impl Into<PathBuf>, why: impl Into<String>) -> FsError {
        FsError::Refused {
            path: path.into(),
            why: why.into(),
        }
    }

    /// Whether this is "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// For a caller that speaks `io::Error`: the same text, and the kind of the I/O error
/// underneath (a refusal reads as permission denied).
impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        match e {
            FsError::Io { path, source } => {
                io::Error::new(source.kind(), format!("{}: {source}", path.display()))
            }
            e @ FsError::Refused { .. } => {
                io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
            }
        }
    }
}

/// A host write refused (a symlink or a swapped file in the way: exit 10) or failed (7).
impl From<FsError> for crate::UnpackError {
    fn from(e: FsError) -> crate::UnpackError {
        match e {
            FsError::Refused { path, why } => crate::UnpackError::Refused { path, why },
            FsError::Io { path, source } => crate::UnpackError::io(path, source),
        }
    }
}
