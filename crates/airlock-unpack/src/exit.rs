//! Exit codes (documented in the README and `--help`) and the mapping from a failure to its
//! code. It lives in the library, not the command line, so that the report of a refused
//! load or push ([`crate::report`]) can record the code the binary is about to exit with.

use airlock_bundle::{BundleError, ErrorClass};

use crate::UnpackError;

pub const OK: u8 = 0;
pub const INTERNAL: u8 = 1;
pub const USAGE: u8 = 2;
pub const INTEGRITY: u8 = 3;
pub const TRUST: u8 = 4;
pub const DECRYPT: u8 = 5;
pub const VERSION: u8 = 6;
pub const ENVIRONMENT: u8 = 7;
/// `push`: the registry is unreachable or refused (the same code as airlock-pack's).
pub const REGISTRY: u8 = 9;
/// Existing data differs from the bundle's and was left alone (see `--overwrite`).
pub const CONFLICT: u8 = 10;
/// A delta bundle relies on blobs this host lacks (nothing was loaded).
pub const NOT_PRESENT: u8 = 11;
/// Refused by this host's policy: the operator's policy file, or anti-rollback and
/// freshness (nothing was loaded).
pub const POLICY: u8 = 12;
/// The engine pre-flight: this engine cannot load the bundle's content (a layer type it
/// does not read, no image for its platform); nothing was sent.
pub const ENGINE_CANNOT: u8 = 13;

impl UnpackError {
    pub fn exit_code(&self) -> u8 {
        match self {
            UnpackError::Bundle(b) => bundle_exit_code(b),
            UnpackError::Engine(_) | UnpackError::Environment(_) => ENVIRONMENT,
            UnpackError::Usage(_) => USAGE,
            UnpackError::Conflict(_) => CONFLICT,
            UnpackError::NotPresent(_) => NOT_PRESENT,
            UnpackError::Parts { inner, .. } => inner.exit_code(),
            UnpackError::Registry { .. } => REGISTRY,
            UnpackError::Policy { .. } => POLICY,
            UnpackError::EngineCannot { .. } => ENGINE_CANNOT,
            UnpackError::EngineRefused { .. } => ENVIRONMENT,
        }
    }
}

pub(crate) fn bundle_exit_code(b: &BundleError) -> u8 {
    match b.class() {
        ErrorClass::Integrity => INTEGRITY,
        ErrorClass::Trust => TRUST,
        ErrorClass::Decrypt => DECRYPT,
        ErrorClass::Version => VERSION,
        ErrorClass::Environment => ENVIRONMENT,
        ErrorClass::Usage => USAGE,
    }
}

/// The documented exit code for a failure: that of the first error in its chain this crate
/// or the format knows, else [`INTERNAL`].
pub(crate) fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<UnpackError>()
                .map(UnpackError::exit_code)
                .or_else(|| c.downcast_ref::<BundleError>().map(bundle_exit_code))
        })
        .unwrap_or(INTERNAL)
}
