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
/// Upstream provenance: an image the host's `[[verify]]` rules cover carries no signature
/// that verifies with the rule's key (nothing was loaded or pushed).
pub const PROVENANCE: u8 = 14;

impl UnpackError {
    pub fn exit_code(&self) -> u8 {
        match self {
            UnpackError::Bundle(b) => bundle_exit_code(b),
            UnpackError::Io { .. }
            | UnpackError::Host { .. }
            | UnpackError::StateCorrupt { .. }
            | UnpackError::Serialize { .. }
            | UnpackError::Runtime(_)
            | UnpackError::NeverWritten { .. }
            | UnpackError::NoSpool
            | UnpackError::NeedsDockerEngine
            | UnpackError::EngineCall { .. }
            | UnpackError::EngineIo { .. }
            | UnpackError::EngineSaid { .. }
            | UnpackError::EngineTask { .. }
            | UnpackError::EngineAnswered { .. }
            | UnpackError::Task { .. }
            | UnpackError::NotRecorded(_)
            | UnpackError::ContainerdConnect { .. }
            | UnpackError::ContainerdRefused { .. }
            | UnpackError::Unpacking { .. }
            | UnpackError::UnpackedDigest { .. }
            | UnpackError::ImageContent { .. }
            | UnpackError::ImageContentUnreadable { .. }
            | UnpackError::StoreTooLarge { .. }
            | UnpackError::StoreMismatch { .. } => ENVIRONMENT,
            #[cfg(feature = "push")]
            UnpackError::HttpClient(_) => ENVIRONMENT,
            UnpackError::Usage(_) | UnpackError::BadPath { .. } => USAGE,
            UnpackError::Refused { .. }
            | UnpackError::Replaced { .. }
            | UnpackError::Appeared { .. }
            | UnpackError::NotAFile { .. }
            | UnpackError::VolumeNotABlob { .. }
            | UnpackError::KindDiffers { .. }
            | UnpackError::FilesDiffer(_) => CONFLICT,
            UnpackError::NotPresent(_) | UnpackError::DeltaNotExtractable { .. } => NOT_PRESENT,
            UnpackError::Parts { inner, .. } => inner.exit_code(),
            UnpackError::Registry { .. } => REGISTRY,
            UnpackError::Policy { .. } => POLICY,
            UnpackError::EngineCannot { .. } => ENGINE_CANNOT,
            UnpackError::Provenance { .. } => PROVENANCE,
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

/// A failure as the binary prints it after `error: ` (and a report records it): each error
/// of the chain, joined by `: ` as anyhow's `{:#}` does, but ending at an error whose own
/// message already ends with its source's (ours and the format's `Io`-like variants keep
/// the source for callers and say it for people), which would otherwise be said twice.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        let said = cause.to_string();
        out.push_str(&said);
        if cause
            .source()
            .is_some_and(|s| said.ends_with(&s.to_string()))
        {
            break;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;
    use std::path::PathBuf;

    use airlock_bundle::Digest;

    use super::*;
    use crate::Destined;

    fn os_err() -> io::Error {
        io::Error::from_raw_os_error(2)
    }

    #[test]
    fn a_delta_that_cannot_be_extracted_is_exit_11_and_names_each_blob() {
        let e = UnpackError::DeltaNotExtractable {
            left_out: vec!["sha256:aa (3 bytes, a blob of model m)".into()],
        };
        assert_eq!(e.exit_code(), NOT_PRESENT);
        let text = e.to_string();
        assert!(
            text.starts_with("this is a delta bundle: it leaves out 1 blob that"),
            "{text}"
        );
        assert!(
            text.ends_with("\n  - sha256:aa (3 bytes, a blob of model m)"),
            "{text}"
        );
    }

    /// The source an error returns, as text (`None`: it has none).
    fn source_of(e: &UnpackError) -> Option<String> {
        e.source().map(ToString::to_string)
    }

    fn path() -> PathBuf {
        PathBuf::from("/srv/x")
    }

    #[test]
    fn io_is_environment_with_its_source() {
        let e = UnpackError::Io {
            what: "state",
            path: path(),
            source: os_err(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(os_err().to_string()));
        assert_eq!(e.to_string(), format!("state /srv/x: {}", os_err()));
        let bare = UnpackError::io(path(), os_err());
        assert_eq!(bare.to_string(), format!("/srv/x: {}", os_err()));
    }

    #[test]
    fn host_and_state_corrupt_are_environment() {
        let e = UnpackError::Host {
            what: "report",
            path: path(),
            problem: "exists and is not a regular file".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(
            e.to_string(),
            "report /srv/x: exists and is not a regular file"
        );
        let e = UnpackError::StateCorrupt {
            path: path(),
            problem: "not a regular file".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert!(e
            .to_string()
            .starts_with("state /srv/x: not a regular file; refusing"));
    }

    #[test]
    fn serialize_is_environment_with_its_source() {
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let text = source.to_string();
        let e = UnpackError::Serialize {
            what: "report",
            source,
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("report: {text}"));
    }

    #[test]
    fn runtime_is_environment_with_its_source() {
        let e = UnpackError::Runtime(os_err());
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(os_err().to_string()));
    }

    #[test]
    fn restore_bugs_are_environment() {
        for e in [
            UnpackError::NeverWritten { path: path() },
            UnpackError::NoSpool,
            UnpackError::NeedsDockerEngine,
        ] {
            assert_eq!(e.exit_code(), ENVIRONMENT, "{e}");
            assert!(e.source().is_none(), "{e}");
        }
    }

    #[test]
    fn engine_call_is_environment_with_its_source() {
        let source = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        let text = source.to_string();
        let e = UnpackError::EngineCall {
            what: "creating volume v".into(),
            source,
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("engine: creating volume v: {text}"));
    }

    #[test]
    fn engine_io_and_said_are_environment() {
        let e = UnpackError::EngineIo {
            what: "reading volume v".into(),
            source: os_err(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(os_err().to_string()));
        let e = UnpackError::EngineSaid {
            what: "importing the helper image".into(),
            said: "no space".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(
            e.to_string(),
            "engine: importing the helper image: no space"
        );
    }

    #[tokio::test]
    async fn engine_task_is_environment_with_its_source() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let source = task.await.unwrap_err();
        let text = source.to_string();
        let e = UnpackError::EngineTask {
            what: "checking a volume",
            source,
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("engine: checking a volume: {text}"));
    }

    #[tokio::test]
    async fn task_is_environment_with_its_source() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let source = task.await.unwrap_err();
        let text = source.to_string();
        let e = UnpackError::Task {
            what: "upload task",
            source,
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("upload task: {text}"));
    }

    #[test]
    fn engine_answered_is_environment_and_escaped() {
        let e = UnpackError::EngineAnswered {
            said: "no\nspace".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert!(e.source().is_none());
        assert_eq!(e.to_string(), r"engine: no\nspace");
    }

    #[test]
    fn not_recorded_is_environment_whatever_failed_under_it() {
        let e = UnpackError::NotRecorded(Box::new(UnpackError::Refused {
            path: path(),
            why: "a symbolic link".into(),
        }));
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e).as_deref(), Some("/srv/x: a symbolic link"));
        assert_eq!(
            e.to_string(),
            "everything was loaded, but recording it for anti-rollback failed, so an older bundle of this name would not be refused until a later load is recorded: /srv/x: a symbolic link"
        );
        // Said once, and the exit code is the outer one.
        let any = anyhow::Error::from(e);
        assert_eq!(message(&any), any.to_string());
        assert_eq!(exit_code_of(&any), ENVIRONMENT);
    }

    #[cfg(feature = "push")]
    #[test]
    fn http_client_is_environment_with_its_source() {
        // A builder error, without the network: a proxy URL that cannot be one.
        let Err(source) = reqwest::Proxy::all("http://[") else {
            panic!("the proxy URL parsed");
        };
        let text = source.to_string();
        let e = UnpackError::HttpClient(source);
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("HTTP client: {text}"));
    }

    #[test]
    fn containerd_refusals_are_environment_and_say_the_status_once() {
        let status = tonic::Status::not_found("no\nsuch blob");
        let e = UnpackError::ContainerdRefused {
            op: "apply".into(),
            what: "sha256:ab".into(),
            source: crate::GrpcStatus(status),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e).as_deref(), Some(r"no\nsuch blob (NotFound)"));
        let want = r"containerd refused to apply sha256:ab: no\nsuch blob (NotFound)";
        assert_eq!(e.to_string(), want);
        let code = match e
            .source()
            .and_then(|s| s.downcast_ref::<crate::GrpcStatus>())
        {
            Some(s) => s.0.code(),
            None => panic!("the status is not the source"),
        };
        assert_eq!(code, tonic::Code::NotFound);
        assert_eq!(message(&anyhow::Error::from(e)), want);

        let e = UnpackError::ContainerdConnect {
            socket: "/run/containerd/containerd.sock".into(),
            said: "refused\u{1b}".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert!(e.source().is_none());
        assert_eq!(
            e.to_string(),
            r"cannot connect to containerd at /run/containerd/containerd.sock: refused\u{1b}"
        );
    }

    #[test]
    fn unpacking_is_environment_with_its_source() {
        let layer = Digest::of(b"layer");
        let inner = UnpackError::UnpackedDigest {
            got: "sha256:x\n".into(),
            config: Digest::of(b"diff"),
        };
        let inner_text = format!(
            r"the unpacked layer's digest is sha256:x\n, the config says {}",
            Digest::of(b"diff")
        );
        assert_eq!(inner.exit_code(), ENVIRONMENT);
        assert_eq!(inner.to_string(), inner_text);
        let e = UnpackError::Unpacking {
            layer,
            image: "r/a:1\n".into(),
            source: Box::new(inner),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(inner_text.clone()));
        assert_eq!(
            e.to_string(),
            format!(r"unpacking layer {layer} of r/a:1\n: {inner_text}")
        );
    }

    #[test]
    fn image_content_is_environment() {
        let d = Digest::of(b"m");
        let e = UnpackError::ImageContent {
            image: "r/a:1".into(),
            part: "manifest",
            blob: d,
            problem: "is an index, expected an image manifest".into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert!(e.source().is_none());
        assert_eq!(
            e.to_string(),
            format!("r/a:1: manifest {d} is an index, expected an image manifest")
        );
        let source = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let text = source.to_string();
        let e = UnpackError::ImageContentUnreadable {
            image: "r/a:1".into(),
            part: "config",
            blob: d,
            source: source.into(),
        };
        assert_eq!(e.exit_code(), ENVIRONMENT);
        assert_eq!(source_of(&e), Some(text.clone()));
        assert_eq!(e.to_string(), format!("r/a:1: config {d}: {text}"));
    }

    #[test]
    fn content_store_surprises_are_environment() {
        let d = Digest::of(b"m");
        let got = Digest::of(b"other");
        let cases = [
            (
                UnpackError::StoreTooLarge {
                    blob: d,
                    limit: 10,
                },
                format!("{d} in containerd's content store is larger than 10 bytes; not a manifest or config"),
            ),
            (
                UnpackError::StoreMismatch { blob: d, got },
                format!("containerd's content store returned {got} for {d}"),
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.exit_code(), ENVIRONMENT, "{e}");
            assert!(e.source().is_none(), "{e}");
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn host_conflicts_are_conflicts() {
        let d = Digest::of(b"x");
        let cases = [
            (
                UnpackError::Refused {
                    path: path(),
                    why: "a symbolic link".into(),
                },
                "/srv/x: a symbolic link".to_string(),
            ),
            (
                UnpackError::Replaced {
                    path: path(),
                    why: None,
                },
                "/srv/x: was replaced by someone else while airlock-unpack was writing it".into(),
            ),
            (
                UnpackError::Replaced {
                    path: path(),
                    why: Some("a symbolic link".into()),
                },
                "/srv/x: was replaced by someone else while airlock-unpack was writing it (a symbolic link)".into(),
            ),
            (
                UnpackError::Appeared { path: path() },
                "/srv/x: appeared while the bundle was loading; left as it is".into(),
            ),
            (
                UnpackError::NotAFile {
                    path: path(),
                    meant: Destined::Blob(d),
                },
                format!("/srv/x: is not a regular file, where the blob {d} goes"),
            ),
            (
                UnpackError::VolumeNotABlob {
                    volume: "v".into(),
                    path: "blobs/x".into(),
                    found: "a directory".into(),
                },
                "volume v: blobs/x is a directory, not a blob file".into(),
            ),
            (
                UnpackError::KindDiffers {
                    target: "dir /srv".into(),
                    path: "x".into(),
                    found: "a directory".into(),
                    bundle_dir: false,
                },
                "dir /srv x: is a directory, the bundle has a file".into(),
            ),
            (
                UnpackError::FilesDiffer(Vec::new()),
                "0 existing file(s) differ from the bundle; nothing was changed (use --overwrite to replace them):\n".into(),
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.exit_code(), CONFLICT, "{e}");
            assert_eq!(e.to_string(), text);
            assert!(e.source().is_none(), "{e}");
        }
    }

    #[test]
    fn bad_path_is_usage_with_its_source() {
        let e = UnpackError::BadPath {
            path: path(),
            source: os_err(),
        };
        assert_eq!(e.exit_code(), USAGE);
        assert_eq!(source_of(&e), Some(os_err().to_string()));
    }

    /// The printed chain says a structured variant's source once, as the text variant it
    /// replaced did, and still walks the chain of everything else.
    #[test]
    fn message_says_a_source_once() {
        let e = anyhow::Error::from(UnpackError::Io {
            what: "report",
            path: path(),
            source: os_err(),
        })
        .context("writing the report");
        assert_eq!(
            message(&e),
            format!("writing the report: report /srv/x: {}", os_err())
        );
        assert_eq!(exit_code_of(&e), ENVIRONMENT);
        let plain = anyhow::Error::from(os_err()).context("opening");
        assert_eq!(message(&plain), format!("{plain:#}"));
    }
}
