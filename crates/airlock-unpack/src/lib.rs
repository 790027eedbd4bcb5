//! `airlock-unpack`: verifies an airlock bundle on the air-gapped host and makes its content
//! usable: an OCI layout or one load archive on disk (`extract`), or images in the local
//! engine (Docker, Podman, or containerd itself) plus Ollama models and files in host
//! directories or volumes (`load`).
//! It performs no network I/O; the only sockets it opens are local unix sockets: the engine's
//! (Docker Engine API) or containerd's (gRPC, `load --containerd`). The one exception is
//! `push` (the `push` feature, on by default): it talks to the single OCI registry named on
//! its command line (and a token service only at that registry's own origin, or named with
//! `--token-realm`), and nothing else. Without the feature the binary has no HTTP client for
//! the network and no TLS at all.

pub mod archive;
pub(crate) mod cli;
pub mod commands;
pub mod containerd;
pub mod docker;
pub mod engine;
pub mod exit;
pub mod extract;
pub mod extract_archive;
pub mod hostfs;
pub mod inventory;
pub mod load;
pub mod open;
pub mod policy;
#[cfg(feature = "push")]
pub mod push;
pub mod report;
pub mod restore;
pub mod state;
pub mod volume;

use airlock_bundle::BundleError;

/// Failures of the unpacking side beyond the bundle format's own.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The engine (Docker or Podman) is unreachable or failed a request.
    #[error("engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Environment(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this is a delta bundle, and this host lacks {} of the blobs it left out (built against another host's inventory, or they were removed since); nothing was loaded:\n  {}", .0.len(), .0.join("\n  "))]
    NotPresent(Vec<String>),
    /// A failed read, with which of the bundle's parts is at fault.
    #[error("{inner}\n{parts}")]
    Parts {
        inner: Box<UnpackError>,
        parts: BundleError,
    },
    /// `push`: the target registry could not be reached or refused a request.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// Refused by this host's policy file ([`policy`]) or by anti-rollback and freshness
    /// ([`state`]): every problem found, each naming the rule and the record. `policy` names
    /// the policy file and its digest, when there is one.
    #[error(
        "refused by this host's policy{}, nothing was loaded; {} problem{}:\n  - {}",
        .policy.as_ref().map(|p| format!(" ({p})")).unwrap_or_default(),
        .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.join("\n  - ")
    )]
    Policy {
        policy: Option<String>,
        problems: Vec<String>,
    },
    /// The engine pre-flight: images this engine cannot load, each naming the layer and
    /// media type at fault, and what would work instead.
    #[error(
        "this engine cannot load the bundle's content, nothing was loaded; engine: {engine}; {} problem{}:\n  - {}\nWhat would work:\n  - {}",
        .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "),
        .remedies.join("\n  - ")
    )]
    EngineCannot {
        engine: String,
        problems: Vec<engine::Problem>,
        remedies: Vec<String>,
    },
    /// The engine refused what it was sent, after the bundle verified; what the load had
    /// changed in the engine was rolled back (exit code 7, an environment failure: the
    /// bundle is fine, this engine is not able to take it).
    #[error(
        "the engine ({engine}), not the bundle, refused {}{}; the bundle verified. The engine said: {said}{}\n{}",
        .image.as_ref().map(|i| format!("image {i}")).unwrap_or_else(|| "the load".into()),
        if .layers.is_empty() { String::new() } else { format!(" ({})", .layers.join("; ")) },
        if *.unreadable_layer { " (it could not read a layer: most likely a layer type it does not support; `airlock-unpack inspect --engine` shows the pre-flight verdict)" } else { "" },
        .rollback.describe()
    )]
    EngineRefused {
        engine: String,
        image: Option<String>,
        layers: Vec<String>,
        said: String,
        unreadable_layer: bool,
        rollback: Box<docker::Rollback>,
    },
}

/// This host's name, for inventories and reports (empty if unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
