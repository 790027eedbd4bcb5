//! The failures of the packing side ([`PackError`]) and their exit codes ([`exit`]). Each
//! variant carries what a user needs to act on it – the file, the image or model, the
//! digests – and the underlying error as its `source()`. Its message is complete on its own
//! (it already quotes the source), so the binary prints the chain only down to it
//! ([`report`]), and every message reads exactly as before the variants were structured.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use airlock_bundle::{BundleError, Digest, ErrorClass};

/// Any error a registry client or a parser hands back, kept as the source of a
/// [`PackError::Registry`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// An image a `[[verify]]` rule covers has no signature by the rule's key, or its
    /// signature changed since the lock (the same code as airlock-unpack's provenance
    /// refusals).
    pub const PROVENANCE: u8 = 14;

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

/// Failures of the packing side, each with its exit code (see the README): registry 9,
/// integrity 3, environment 7, usage 2, drift 8, provenance 14.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the lock does not match {what}:\n{details}\nrun `airlock-pack lock --update {spec}` to re-pin, then review the diff")]
    Drift {
        what: String,
        details: String,
        spec: String,
    },

    // --- Provenance (exit 14) ---
    /// A required `[[verify]]` rule covers the image and no signature by its key verifies
    /// the locked digest (boxed: the largest variant otherwise).
    #[error("{0}")]
    Unverified(Box<Unverified>),
    /// The image's signature manifest is not the one the lock recorded as verified.
    #[error("{0}")]
    SignatureDrift(Box<SignatureDrift>),

    // --- Registry (exit 9) ---
    /// A registry could not be reached, failed, or refused. `subject` is the image reference
    /// or model name (empty where the caller names it, see [`PackError::RegistryBlob`]);
    /// `retryable` is false for answers another attempt will not change (404, 401).
    #[error("registry error: {}", registry_detail(subject, what, source.as_deref()))]
    Registry {
        subject: String,
        what: String,
        #[source]
        source: Option<BoxError>,
        retryable: bool,
    },
    /// The download of one blob of an image or model failed at the registry.
    #[error("registry error: {subject}: blob {blob}: {}", source.registry_text())]
    RegistryBlob {
        subject: String,
        blob: Digest,
        #[source]
        source: Box<PackError>,
    },

    // --- Integrity (exit 3; another attempt may get the right bytes) ---
    #[error("digest mismatch for manifest of {reference}: expected {expected}, computed {actual}")]
    ManifestDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    /// A platform's manifest, chosen from an index, is not the digest the index names.
    #[error("digest mismatch for manifest {expected} of {reference}")]
    PlatformManifestDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {blob}: expected {expected} bytes, the registry sent more")]
    BlobTooLong {
        reference: String,
        blob: Digest,
        expected: u64,
    },
    #[error("digest mismatch for blob from registry: expected {expected}, computed {actual}")]
    BlobDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    /// `actual` is `None` when the download stopped before the blob could be hashed.
    #[error("{model}: digest mismatch for blob {blob} from the registry: computed {}", actual.map(|d| d.to_string()).unwrap_or_default())]
    ModelBlobDigest {
        model: String,
        blob: Digest,
        actual: Option<Digest>,
    },
    #[error("{model}: {} has {actual} bytes, the manifest says {expected}: the local store is damaged; pull the model again", path.display())]
    LocalBlobSize {
        model: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A local file (Ollama store blob, `[[files]]` source) hashed differently while the
    /// bundle was written.
    #[error("{source}\n{} does not hold the content the bundle needs (a damaged local Ollama store, or a file that changed while the bundle was written); nothing was written", path.display())]
    LocalBlobChanged {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    /// A blob the writer followed as it downloaded did not match its digest.
    #[error(
        "{source}\nthe registry sent content that does not match its digest; nothing was kept"
    )]
    DownloadCorrupt {
        #[source]
        source: BundleError,
    },
    /// A cached blob no longer matched its digest; it has been removed.
    #[error("{source}\nthe cached copy {} was corrupt and has been removed: run the build again to fetch it anew", path.display())]
    CacheCorrupt {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    /// A bundle that a store record says holds a blob (a warm rebuild's source) gave other
    /// bytes; the record was dropped.
    #[error("{source}\n{} no longer holds what the blob cache recorded (changed since it was written); the record has been dropped: run the build again to fetch the blob anew", bundle.display())]
    StoreCorrupt {
        bundle: PathBuf,
        #[source]
        source: BundleError,
    },

    // --- Environment (exit 7) ---
    /// A file of the packing side (lock, bundle, cache temporary, download) failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob cache: {source}")]
    CacheWrite {
        blob: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("blob cache {}: {source}", path.display())]
    CacheOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blob just fetched into the cache is not there any more.
    #[error("blob cache lost {blob}")]
    CacheLost { blob: Digest },
    /// Bytes `start..end` of a blob being downloaded in parts.
    #[error("writing blob part: {source}")]
    PartWrite {
        start: u64,
        end: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} thread failed: {source}")]
    WorkerFailed {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{what} thread panicked")]
    WorkerPanicked { what: &'static str },
    /// A streamed download found the bundle writer gone (the writer's error says why).
    #[error("the bundle writer stopped before the download ended")]
    WriterStopped,
    /// A planned download names a local file (a planning bug, never a user's).
    #[error("{} is a local file, not a download", path.display())]
    NotADownload { path: PathBuf },
    #[error("cannot set up the HTTP client: {source}")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },

    // --- Usage (exit 2) ---
    /// A sentence about how airlock-pack was called.
    #[error("{0}")]
    Usage(String),
    /// A file the user named (spec `[[files]]`, `--have`, a local model config) cannot be read.
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a UTF-8 file name", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: {name:?} is not a UTF-8 file name", dir.display())]
    NotUtf8Entry { dir: PathBuf, name: OsString },
    #[error("{}: is a symbolic link; airlock carries regular files and directories only (copy the target into place instead)", path.display())]
    Symlink { path: PathBuf },
    #[error("{}: is not a regular file or directory", path.display())]
    NotRegular { path: PathBuf },
    /// A `[[compose]]` file (or its `.env`) cannot be used: a variable without a value, a
    /// service the gap host could not run from an image, a feature airlock does not follow.
    #[error("{}: {}{problem}", file.display(), service.as_deref().map(|s| format!("service {}: ", airlock_bundle::text::escape(s))).unwrap_or_default())]
    Compose {
        file: PathBuf,
        service: Option<String>,
        problem: String,
    },
    /// The path a file would get in the bundle is one the gap host refuses.
    #[error("{}: {why}", path.display())]
    BadBundlePath { path: PathBuf, why: String },
    #[error("{}: not a file name", path.display())]
    NotAFileName { path: PathBuf },
    #[error("{}: the gap host would refuse this bundle: {source}", spec.display())]
    Unbundleable {
        spec: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("{model} is not in the local Ollama store {} ({}: {source}); pull it with `ollama pull {pull}` or set OLLAMA_MODELS / --ollama-models", store.display(), manifest.display())]
    NotInLocalStore {
        model: String,
        /// The name as `ollama pull` takes it.
        pull: String,
        store: PathBuf,
        manifest: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{model}: {} is missing from the local store ({source}); pull the model again", path.display())]
    LocalBlobMissing {
        model: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `have` lists the platforms of the index (attestations left out).
    #[error("{reference}: no manifest for platform {want} (the image has: {})", if have.is_empty() { "none".to_string() } else { have.join(", ") })]
    NoSuchPlatform {
        reference: String,
        want: String,
        have: Vec<String>,
    },
    #[error("{reference}: single-platform image for {platform}, but the spec wants {}", wanted.join(", "))]
    WrongPlatform {
        reference: String,
        platform: String,
        wanted: Vec<String>,
    },

    /// A `[[verify]]` rule's key file is not a public key airlock can verify with.
    #[error("{}: {source}", path.display())]
    VerifyKey {
        path: PathBuf,
        #[source]
        source: airlock_sigstore::KeyError,
    },

    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// What [`PackError::Unverified`] names: the image, its digest, the rule's key file and
/// fingerprint, and what was found instead.
#[derive(Debug, thiserror::Error)]
#[error("{reference} ({digest}) is not signed by the key {} ({fingerprint}) that a [[verify]] rule requires: {found}", key.display())]
pub struct Unverified {
    pub reference: String,
    pub digest: Digest,
    pub key: PathBuf,
    pub fingerprint: String,
    pub found: String,
}

/// What [`PackError::SignatureDrift`] names: the signature manifests the lock recorded for
/// the image at `digest`, and the one upstream now (`None`: it has none).
#[derive(Debug, thiserror::Error)]
#[error("{reference} ({digest}): its signature changed since the lock: locked {}, now {}; run `airlock-pack lock --update {spec}` to verify and pin it again", locked.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "), now.map(|d| d.to_string()).unwrap_or_else(|| "nothing (no signature manifest)".into()))]
pub struct SignatureDrift {
    pub reference: String,
    pub digest: Digest,
    pub locked: Vec<Digest>,
    pub now: Option<Digest>,
    pub spec: String,
}

/// `subject: what: source`, leaving out the parts that are empty.
fn registry_detail(
    subject: &str,
    what: &str,
    source: Option<&(dyn std::error::Error + Send + Sync)>,
) -> String {
    let mut parts = vec![subject.to_string(), what.to_string()];
    parts.extend(source.map(|s| s.to_string()));
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

impl PackError {
    /// A registry failure worth another attempt, with the error it came from; a TLS
    /// certificate problem is named (and not worth another attempt: the same certificate
    /// would come back).
    pub fn registry(
        subject: impl std::fmt::Display,
        what: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> PackError {
        let (subject, mut what, source) = (subject.to_string(), what.into(), source.into());
        let tls = airlock_registry_auth::tls::diagnose(&*source, None);
        if let Some(p) = &tls {
            // References and model names start with the registry's host[:port].
            let host = subject.split('/').next().unwrap_or_default();
            what = [what.as_str(), &p.explain(host)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
        }
        PackError::Registry {
            subject,
            what,
            source: Some(source),
            retryable: tls.is_none(),
        }
    }

    /// A registry failure worth another attempt, said in words (a status, a bad answer).
    pub fn registry_said(subject: impl std::fmt::Display, what: impl Into<String>) -> PackError {
        PackError::Registry {
            subject: subject.to_string(),
            what: what.into(),
            source: None,
            retryable: true,
        }
    }

    /// A registry's answer that another attempt will not change (404, 401, 403).
    pub fn registry_refused(subject: impl std::fmt::Display, what: impl Into<String>) -> PackError {
        PackError::Registry {
            subject: subject.to_string(),
            what: what.into(),
            source: None,
            retryable: false,
        }
    }

    /// The message of a registry failure without its `registry error: ` lead, for a
    /// [`PackError::RegistryBlob`] that names the blob first.
    fn registry_text(&self) -> String {
        match self {
            PackError::Registry {
                subject,
                what,
                source,
                ..
            } => registry_detail(subject, what, source.as_deref()),
            PackError::RegistryBlob {
                subject,
                blob,
                source,
            } => format!("{subject}: blob {blob}: {}", source.registry_text()),
            other => other.to_string(),
        }
    }

    /// Network hiccups and short reads are worth another try; a wrong digest from the
    /// registry is too (a proxy may have mangled one response), usage errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            PackError::Registry { retryable, .. } => *retryable,
            PackError::RegistryBlob { .. } => true,
            other => other.exit_code() == exit::INTEGRITY && !matches!(other, PackError::Bundle(_)),
        }
    }

    pub fn exit_code(&self) -> u8 {
        use PackError as E;
        match self {
            E::Drift { .. } => exit::DRIFT,
            E::Unverified(_) | E::SignatureDrift(_) => exit::PROVENANCE,
            E::Registry { .. } | E::RegistryBlob { .. } => exit::REGISTRY,
            E::ManifestDigest { .. }
            | E::PlatformManifestDigest { .. }
            | E::BlobTooLong { .. }
            | E::BlobDigest { .. }
            | E::ModelBlobDigest { .. }
            | E::LocalBlobSize { .. }
            | E::LocalBlobChanged { .. }
            | E::DownloadCorrupt { .. }
            | E::CacheCorrupt { .. }
            | E::StoreCorrupt { .. } => exit::INTEGRITY,
            E::Io { .. }
            | E::CacheWrite { .. }
            | E::CacheOpen { .. }
            | E::CacheLost { .. }
            | E::PartWrite { .. }
            | E::WorkerFailed { .. }
            | E::WorkerPanicked { .. }
            | E::WriterStopped
            | E::NotADownload { .. }
            | E::HttpClient { .. } => exit::ENVIRONMENT,
            E::Usage(_)
            | E::Input { .. }
            | E::NotUtf8 { .. }
            | E::NotUtf8Entry { .. }
            | E::Symlink { .. }
            | E::NotRegular { .. }
            | E::BadBundlePath { .. }
            | E::Compose { .. }
            | E::NotAFileName { .. }
            | E::Unbundleable { .. }
            | E::NotInLocalStore { .. }
            | E::LocalBlobMissing { .. }
            | E::NoSuchPlatform { .. }
            | E::WrongPlatform { .. }
            | E::VerifyKey { .. } => exit::USAGE,
            E::Bundle(b) => bundle_exit_code(b),
        }
    }

    /// Whether this error's message already quotes its sources (every variant but the
    /// transparent [`PackError::Bundle`]).
    fn quotes_its_source(&self) -> bool {
        !matches!(self, PackError::Bundle(_))
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

/// The text printed after `error: `: the chain joined by `: ` as anyhow's `{:#}` does, but
/// ending at the first [`PackError`] whose message already quotes its source, or at any
/// error (the format's own among them) whose message already ends with its source's, so
/// that no cause is printed twice.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        let said = cause.to_string();
        let _ = write!(out, "{said}");
        let quotes = cause
            .downcast_ref::<PackError>()
            .is_some_and(PackError::quotes_its_source);
        if quotes
            || cause
                .source()
                .is_some_and(|s| said.ends_with(&s.to_string()))
        {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file")
    }

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn model() -> String {
        "registry.ollama.ai/library/llama3:8b".into()
    }

    fn mismatch() -> BundleError {
        BundleError::DigestMismatch {
            entry: format!("blobs/sha256/{}", d("x").hex()),
            expected: d("x"),
            actual: d("y"),
        }
    }

    async fn join_error() -> tokio::task::JoinError {
        let h = tokio::spawn(async { panic!("boom") });
        h.await.unwrap_err()
    }

    /// Every variant: (error, exit code, retryable, whether it keeps a source).
    fn every_variant() -> Vec<(PackError, u8, bool, bool)> {
        let p = || PathBuf::from("/x/y");
        let join = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(join_error());
        let client = reqwest::Client::builder()
            .user_agent("\n")
            .build()
            .unwrap_err();
        use PackError as E;
        vec![
            (
                E::Drift {
                    what: "s".into(),
                    details: "d".into(),
                    spec: "s".into(),
                },
                exit::DRIFT,
                false,
                false,
            ),
            (
                PackError::registry("r", "w", io()),
                exit::REGISTRY,
                true,
                true,
            ),
            (
                PackError::registry_said("r", "w"),
                exit::REGISTRY,
                true,
                false,
            ),
            (
                PackError::registry_refused("r", "w"),
                exit::REGISTRY,
                false,
                false,
            ),
            (
                E::RegistryBlob {
                    subject: "r".into(),
                    blob: d("b"),
                    source: Box::new(PackError::registry_refused("", "GET u: 404")),
                },
                exit::REGISTRY,
                true,
                true,
            ),
            (
                E::ManifestDigest {
                    reference: "r".into(),
                    expected: d("a"),
                    actual: d("b"),
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::PlatformManifestDigest {
                    reference: "r".into(),
                    expected: d("a"),
                    actual: d("b"),
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::BlobTooLong {
                    reference: "r".into(),
                    blob: d("a"),
                    expected: 3,
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::BlobDigest {
                    reference: "r".into(),
                    expected: d("a"),
                    actual: d("b"),
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::ModelBlobDigest {
                    model: model(),
                    blob: d("a"),
                    actual: None,
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::LocalBlobSize {
                    model: model(),
                    path: p(),
                    expected: 3,
                    actual: 2,
                },
                exit::INTEGRITY,
                true,
                false,
            ),
            (
                E::LocalBlobChanged {
                    path: p(),
                    source: mismatch(),
                },
                exit::INTEGRITY,
                true,
                true,
            ),
            (
                E::DownloadCorrupt { source: mismatch() },
                exit::INTEGRITY,
                true,
                true,
            ),
            (
                E::CacheCorrupt {
                    path: p(),
                    source: mismatch(),
                },
                exit::INTEGRITY,
                true,
                true,
            ),
            (
                E::Io {
                    path: p(),
                    source: io(),
                },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (
                E::CacheWrite {
                    blob: d("a"),
                    source: io(),
                },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (
                E::CacheOpen {
                    path: p(),
                    source: io(),
                },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (
                E::CacheLost { blob: d("a") },
                exit::ENVIRONMENT,
                false,
                false,
            ),
            (
                E::PartWrite {
                    start: 0,
                    end: 1,
                    source: io(),
                },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (
                E::WorkerFailed {
                    what: "writer",
                    source: join,
                },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (
                E::WorkerPanicked { what: "hashing" },
                exit::ENVIRONMENT,
                false,
                false,
            ),
            (
                E::StoreCorrupt {
                    bundle: p(),
                    source: mismatch(),
                },
                exit::INTEGRITY,
                true,
                true,
            ),
            (E::WriterStopped, exit::ENVIRONMENT, false, false),
            (
                E::NotADownload { path: p() },
                exit::ENVIRONMENT,
                false,
                false,
            ),
            (
                E::HttpClient { source: client },
                exit::ENVIRONMENT,
                false,
                true,
            ),
            (E::Usage("u".into()), exit::USAGE, false, false),
            (
                E::Input {
                    path: p(),
                    source: io(),
                },
                exit::USAGE,
                false,
                true,
            ),
            (E::NotUtf8 { path: p() }, exit::USAGE, false, false),
            (
                E::NotUtf8Entry {
                    dir: p(),
                    name: "n".into(),
                },
                exit::USAGE,
                false,
                false,
            ),
            (E::Symlink { path: p() }, exit::USAGE, false, false),
            (E::NotRegular { path: p() }, exit::USAGE, false, false),
            (
                E::Compose {
                    file: p(),
                    service: Some("web".into()),
                    problem: "x".into(),
                },
                exit::USAGE,
                false,
                false,
            ),
            (
                E::BadBundlePath {
                    path: p(),
                    why: "w".into(),
                },
                exit::USAGE,
                false,
                false,
            ),
            (E::NotAFileName { path: p() }, exit::USAGE, false, false),
            (
                E::Unbundleable {
                    spec: p(),
                    source: BundleError::Malformed("m".into()),
                },
                exit::USAGE,
                false,
                true,
            ),
            (
                E::NotInLocalStore {
                    model: model(),
                    pull: "llama3:8b".into(),
                    store: p(),
                    manifest: p(),
                    source: io(),
                },
                exit::USAGE,
                false,
                true,
            ),
            (
                E::LocalBlobMissing {
                    model: model(),
                    path: p(),
                    source: io(),
                },
                exit::USAGE,
                false,
                true,
            ),
            (
                E::NoSuchPlatform {
                    reference: "r".into(),
                    want: "linux/arm64".into(),
                    have: vec![],
                },
                exit::USAGE,
                false,
                false,
            ),
            (
                E::WrongPlatform {
                    reference: "r".into(),
                    platform: "linux/arm64".into(),
                    wanted: vec!["linux/amd64".into()],
                },
                exit::USAGE,
                false,
                false,
            ),
            (
                E::Unverified(Box::new(Unverified {
                    reference: "r".into(),
                    digest: d("a"),
                    key: p(),
                    fingerprint: "sha256:f".into(),
                    found: "no signature found".into(),
                })),
                exit::PROVENANCE,
                false,
                false,
            ),
            (
                E::SignatureDrift(Box::new(SignatureDrift {
                    reference: "r".into(),
                    digest: d("a"),
                    locked: vec![d("s")],
                    now: None,
                    spec: "s".into(),
                })),
                exit::PROVENANCE,
                false,
                false,
            ),
            (
                E::VerifyKey {
                    path: p(),
                    source: airlock_sigstore::KeyError::TooLarge,
                },
                exit::USAGE,
                false,
                true,
            ),
            (E::Bundle(mismatch()), exit::INTEGRITY, false, false),
        ]
    }

    #[test]
    fn every_variant_keeps_its_exit_code_retry_class_and_source() {
        for (e, code, retryable, has_source) in every_variant() {
            assert_eq!(e.exit_code(), code, "{e:?}");
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            assert_eq!(e.source().is_some(), has_source, "{e:?}");
            // Wrapped in context, the chain still maps to the variant's code.
            let any = anyhow::Error::new(e).context("while packing");
            assert_eq!(exit::code(&any), code);
        }
    }

    #[test]
    fn messages_read_as_before_and_quote_their_source_once() {
        let r = PackError::RegistryBlob {
            subject: "m".into(),
            blob: d("b"),
            source: Box::new(PackError::registry("m", "GET u", io())),
        };
        assert_eq!(
            r.to_string(),
            format!("registry error: m: blob {}: m: GET u: No such file", d("b"))
        );
        let oci = PackError::RegistryBlob {
            subject: "r".into(),
            blob: d("b"),
            source: Box::new(PackError::registry("", "", io())),
        };
        assert_eq!(
            oci.to_string(),
            format!("registry error: r: blob {}: No such file", d("b"))
        );
        let e = anyhow::Error::new(PackError::Io {
            path: "/x/lock".into(),
            source: io(),
        })
        .context("writing the lock");
        assert_eq!(report(&e), "writing the lock: /x/lock: No such file");
        assert_eq!(
            PackError::NoSuchPlatform {
                reference: "r".into(),
                want: "linux/arm64".into(),
                have: vec![],
            }
            .to_string(),
            "r: no manifest for platform linux/arm64 (the image has: none)"
        );
        // The transparent format error prints its chain as anyhow always did.
        let b = anyhow::Error::new(PackError::Bundle(mismatch()));
        assert_eq!(report(&b), format!("{b:#}"));
    }
}
