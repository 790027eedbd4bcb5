//! `airlock-pack`: pins the images of a bundle spec in a lock file, pulls them from OCI
//! registries into a verified blob cache, and writes one signed (and usually encrypted)
//! bundle. The format itself belongs to `airlock-bundle`.

pub mod auth;
pub mod build;
pub mod cache;
pub mod cli;
mod commands;
pub mod local;
pub mod lock;
pub mod ollama;
pub mod plan;
pub mod registry;

use airlock_bundle::{BundleError, ErrorClass};

pub use commands::main;

/// Exit codes (documented in the README and `--help`).
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    /// Content failed verification (a registry served a blob that is not its digest).
    pub const INTEGRITY: u8 = 3;
    /// Disk, files, the blob cache.
    pub const ENVIRONMENT: u8 = 7;
    /// The lock is out of date (`lock --update`).
    pub const DRIFT: u8 = 8;
    /// A registry is unreachable or refused (the same code as airlock-unpack's `push`).
    pub const REGISTRY: u8 = 9;

    /// The exit code of a failure: that of the first [`super::PackError`] in its chain, else
    /// of the first format-level error, else [`INTERNAL`].
    pub fn code(e: &anyhow::Error) -> u8 {
        e.chain()
            .find_map(|c| {
                c.downcast_ref::<super::PackError>()
                    .map(super::PackError::exit_code)
            })
            .or_else(|| {
                e.chain().find_map(|c| {
                    c.downcast_ref::<airlock_bundle::BundleError>()
                        .map(super::bundle_exit_code)
                })
            })
            .unwrap_or(INTERNAL)
    }
}

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
            PackError::Drift { .. } => exit::DRIFT,
            PackError::Registry(_) => exit::REGISTRY,
            PackError::Integrity(_) => exit::INTEGRITY,
            PackError::Environment(_) => exit::ENVIRONMENT,
            PackError::Usage(_) => exit::USAGE,
            PackError::Bundle(b) => bundle_exit_code(b),
        }
    }
}

/// Exit code of a format-level failure on the packing side.
pub fn bundle_exit_code(b: &BundleError) -> u8 {
    match b.class() {
        ErrorClass::Integrity => exit::INTEGRITY,
        ErrorClass::Environment => exit::ENVIRONMENT,
        ErrorClass::Usage | ErrorClass::Trust | ErrorClass::Decrypt | ErrorClass::Version => {
            exit::USAGE
        }
    }
}
