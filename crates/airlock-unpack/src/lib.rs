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

pub(crate) mod archive;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod containerd;
pub(crate) mod docker;
pub(crate) mod engine;
pub mod exit;
pub(crate) mod extract;
pub(crate) mod extract_archive;
pub(crate) mod hostfs;
pub(crate) mod inventory;
pub(crate) mod load;
pub(crate) mod open;
pub(crate) mod policy;
pub(crate) mod provenance;
#[cfg(feature = "push")]
pub(crate) mod push;
pub(crate) mod repair;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod state;
pub(crate) mod volume;

use std::io;
use std::path::{Path, PathBuf};

use airlock_bundle::ollama::ModelName;
use airlock_bundle::text::escape;
use airlock_bundle::{BundleError, Digest};

/// Failures of the unpacking side beyond the bundle format's own: one variant per kind of
/// failure, holding the path, image, model or digest it concerns and, where there is one,
/// the error underneath as its `source()`. Each message reads as it always did, and a
/// variant that has a source says it at the end of its own message, so the binary prints
/// the chain through [`exit::message`], which stops there.
/// The exit code of each variant is in [`exit`].
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A usage message: a human sentence about the command line is the whole content.
    #[error("{0}")]
    Usage(String),

    // Environment (exit 7): this host, not the bundle.
    /// A host file or directory could not be read or written. `what` names it (`state`,
    /// `report`, `inventory`), empty for the files a load or extract writes itself.
    #[error("{}: {source}", labelled(.what, .path))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A host file or directory is not what it must be (no I/O error underneath).
    #[error("{}: {problem}", labelled(.what, .path))]
    Host {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// The state file ([`state`]) cannot be read as one: never reset behind the operator's
    /// back.
    #[error("state {}: {problem}; refusing to guess what this host loaded (it is not reset: move it away only if you mean to forget every record)", .path.display())]
    StateCorrupt { path: PathBuf, problem: String },
    /// `what` (the report) could not be rendered as JSON.
    #[error("{what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The async runtime could not be started.
    #[error("async runtime: {0}")]
    Runtime(#[source] io::Error),
    /// A file to rename into place was never written to its temp (a bug, not the host).
    #[error("{}: the staged file was never written", .path.display())]
    NeverWritten { path: PathBuf },
    /// A blob bound for a volume or files found no spool made for it (a bug, not the host).
    #[error("a blob to spool, and no spool was made for it")]
    NoSpool,
    /// Models or files bound for Docker volumes, and the engine is not Docker.
    #[error("restoring into Docker volumes needs the Docker engine")]
    NeedsDockerEngine,
    /// An Engine API request failed; `what` says which (`creating volume v`).
    #[error("engine: {what}: {source}")]
    EngineCall {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// What the engine sent back for `what` could not be read.
    #[error("engine: {what}: {source}")]
    EngineIo {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The engine answered `what` with an error of its own, or with more than we take.
    #[error("engine: {what}: {said}")]
    EngineSaid { what: String, said: String },
    /// A task waiting on the engine for `what` failed.
    #[error("engine: {what}: {source}")]
    EngineTask {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },

    /// The engine answered a load with an error of its own, before the load knew which
    /// engine it was talking to (so nothing to name it by or roll back).
    #[error("engine: {}", escape(.said))]
    EngineAnswered { said: String },
    /// A task of ours (not the engine's) failed; `what` says which (`upload task`).
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// `push`: the HTTP client could not be built (its TLS roots, most likely).
    #[cfg(feature = "push")]
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// Everything was loaded, and the record anti-rollback keeps ([`policy`]) could not
    /// be written.
    #[error("everything was loaded, but recording it for anti-rollback failed, so an older bundle of this name would not be refused until a later load is recorded: {0}")]
    NotRecorded(#[source] Box<UnpackError>),
    /// containerd's socket could not be opened; `said` is what the connection said.
    #[error("cannot connect to containerd at {socket}: {}", escape(.said))]
    ContainerdConnect { socket: String, said: String },
    /// containerd refused a request: the operation (`apply`), what it concerned (a blob's
    /// digest, a snapshot's chain ID, the socket) and its gRPC status.
    #[error("containerd refused to {op} {what}: {source}")]
    ContainerdRefused {
        op: String,
        what: String,
        #[source]
        source: GrpcStatus,
    },
    /// A layer of `image` could not be unpacked into containerd's snapshotter.
    #[error("unpacking layer {layer} of {}: {source}", escape(.image))]
    Unpacking {
        layer: Digest,
        image: String,
        #[source]
        source: Box<UnpackError>,
    },
    /// containerd unpacked a layer to another diff ID than the image's config names.
    #[error("the unpacked layer's digest is {}, the config says {config}", escape(.got))]
    UnpackedDigest { got: String, config: Digest },
    /// A manifest or config (`part`) read back from containerd's content store is not
    /// what `image` needs.
    #[error("{}: {part} {blob} {problem}", escape(.image))]
    ImageContent {
        image: String,
        part: &'static str,
        blob: Digest,
        problem: String,
    },
    /// A manifest or config (`part`) read back from containerd's content store does not
    /// parse.
    #[error("{}: {part} {blob}: {source}", escape(.image))]
    ImageContentUnreadable {
        image: String,
        part: &'static str,
        blob: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// containerd's content store holds more under `blob` than a manifest or config can be.
    #[error("{blob} in containerd's content store is larger than {limit} bytes; not a manifest or config")]
    StoreTooLarge { blob: Digest, limit: usize },
    /// containerd's content store returned other bytes than those of `blob`.
    #[error("containerd's content store returned {got} for {blob}")]
    StoreMismatch { blob: Digest, got: Digest },

    // Conflict (exit 10): what is on the host is left alone.
    /// A symlink, or something else that is not ours to write through, stands in the way.
    #[error("{}: {why}", .path.display())]
    Refused { path: PathBuf, why: String },
    /// A file airlock-unpack created was swapped for another while it was written.
    #[error(
        "{}: was replaced by someone else while airlock-unpack was writing it{}",
        .path.display(),
        .why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()
    )]
    Replaced { path: PathBuf, why: Option<String> },
    /// A file that was absent when the load was planned appeared before it was placed.
    #[error("{}: appeared while the bundle was loading; left as it is", .path.display())]
    Appeared { path: PathBuf },
    /// Not a regular file where a blob or a model's manifest goes.
    #[error("{}: is not a regular file, where {meant} goes", .path.display())]
    NotAFile { path: PathBuf, meant: Destined },
    /// In a volume, something other than a blob file where a blob goes.
    #[error("volume {volume}: {path} is {found}, not a blob file")]
    VolumeNotABlob {
        volume: String,
        path: String,
        found: String,
    },
    /// A directory where the bundle has a file, a file where it has a directory, or a
    /// symlink: never replaced, not even with `--overwrite`. `target` is where the bundle's
    /// files go (a directory or a volume).
    #[error("{target} {path}: is {found}, the bundle has a {}", if *.bundle_dir { "directory" } else { "file" })]
    KindDiffers {
        target: String,
        path: String,
        found: String,
        bundle_dir: bool,
    },
    /// Existing files differ from the bundle's, and `--overwrite` was not given.
    #[error(
        "{} existing file(s) differ from the bundle; nothing was changed (use --overwrite to replace them):\n{}",
        .0.len(),
        .0.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
    )]
    FilesDiffer(Vec<restore::Conflict>),

    // Usage (exit 2).
    /// A path on the command line that cannot be made absolute.
    #[error("{}: {source}", .path.display())]
    BadPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("this is a delta bundle, and this host lacks {} of the blobs it left out (built against another host's inventory, or they were removed since); nothing was loaded:\n  {}", .0.len(), .0.join("\n  "))]
    NotPresent(Vec<String>),
    /// `extract` of a delta bundle: what it left out is on the host it was built for, not
    /// in the bundle, so no directory could hold its content whole. Each entry names the
    /// blob and what needs it.
    #[error("this is a delta bundle: it leaves out {} blob{} that the host it was built for already has, so extract cannot write its content whole; nothing was written (load it on that host, where `load` checks they are there, or build a full bundle, without --have, to extract):\n  - {}", .left_out.len(), if .left_out.len() == 1 { "" } else { "s" }, .left_out.join("\n  - "))]
    DeltaNotExtractable { left_out: Vec<String> },
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
    /// Refused by the `[[verify]]` rules of this host's policy: images whose carried
    /// upstream signatures do not verify under the key a required rule names, each with
    /// what was found instead. Checked on the signed header, before anything is read
    /// further, loaded or sent (exit code 14).
    #[error(
        "upstream provenance refused by this host's policy ({policy}), nothing was loaded or pushed; {} image{} not signed as required:\n  - {}",
        .failures.len(),
        if .failures.len() == 1 { "" } else { "s" },
        .failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - ")
    )]
    Provenance {
        policy: String,
        failures: Vec<provenance::ProvenanceFailure>,
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

impl UnpackError {
    /// A failed read or write of a restore's own file at `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> UnpackError {
        UnpackError::Io {
            what: "",
            path: path.into(),
            source,
        }
    }
}

/// A gRPC status from containerd, said as the messages always said it (its message,
/// escaped, then its code), where [`tonic::Status`]'s own text lists every field.
#[derive(Debug)]
pub struct GrpcStatus(pub tonic::Status);

impl std::fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", escape(self.0.message()), self.0.code())
    }
}

impl std::error::Error for GrpcStatus {}

/// What goes where a [`UnpackError::NotAFile`] stands.
#[derive(Debug, Clone)]
pub enum Destined {
    Blob(Digest),
    Manifest(ModelName),
}

impl std::fmt::Display for Destined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destined::Blob(d) => write!(f, "the blob {d}"),
            Destined::Manifest(name) => write!(f, "the manifest of {name}"),
        }
    }
}

/// `state /var/lib/...`, or the bare path when `what` is empty.
fn labelled(what: &str, path: &Path) -> String {
    if what.is_empty() {
        path.display().to_string()
    } else {
        format!("{what} {}", path.display())
    }
}

/// This host's name, for inventories and reports (empty if unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
