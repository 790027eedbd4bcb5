//! `airlock-pack`: pins the images of a bundle spec in a lock file, pulls them from OCI
//! registries into a verified blob cache, and writes one signed (and usually encrypted)
//! bundle. The format itself belongs to `airlock-bundle`.

pub mod auth;
pub mod build;
pub mod cache;
pub mod cli;
pub mod local;
pub mod lock;
pub mod ollama;
pub mod plan;
pub mod registry;

use airlock_bundle::{BundleError, ErrorClass};

/// Failures of the packing side, each with its exit code (see the README).
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the lock does not match {what}:\n{details}\nrun `airlock-pack lock --update {spec}` to re-pin, then review the diff")]
    Drift {
        what: String,
        details: String,
        spec: String,
    },
    #[error("registry error: {0}")]
    Registry(String),
    #[error("{0}")]
    Integrity(String),
    #[error("{0}")]
    Environment(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

impl PackError {
    /// Network hiccups and short reads are worth another try; a wrong digest from the
    /// registry is too (a proxy may have mangled one response), usage errors are not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PackError::Registry(_) | PackError::Integrity(_))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            PackError::Drift { .. } => cli::EXIT_DRIFT,
            PackError::Registry(_) => cli::EXIT_REGISTRY,
            PackError::Integrity(_) => cli::EXIT_INTEGRITY,
            PackError::Environment(_) => cli::EXIT_ENVIRONMENT,
            PackError::Usage(_) => cli::EXIT_USAGE,
            PackError::Bundle(b) => bundle_exit_code(b),
        }
    }
}

/// Exit code of a format-level failure on the packing side.
pub fn bundle_exit_code(b: &BundleError) -> u8 {
    match b.class() {
        ErrorClass::Integrity => cli::EXIT_INTEGRITY,
        ErrorClass::Environment => cli::EXIT_ENVIRONMENT,
        ErrorClass::Usage | ErrorClass::Trust | ErrorClass::Decrypt | ErrorClass::Version => {
            cli::EXIT_USAGE
        }
    }
}
