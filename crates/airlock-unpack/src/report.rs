//! The audit record of a `load` or `push`: which bundle (its signed header's digest and the
//! sums of the files it came in), who signed it, what went where with which digests, when,
//! by which airlock, and how it ended. Written as JSON to `--report FILE` (and/or stdout
//! with `--json`), optionally signed with a minisign key (`FILE.minisig`), for success and
//! refusal alike: a refused bundle is worth a record too. An engine's refusal adds
//! `engine_failure`: the pre-flight's problems, or what the engine refused and what the
//! rollback of the load undid.
//!
//! `load` runs as root, and the report may go to a directory others can write. So the
//! report's directory is opened once, before any work, as [`hostfs::Dir::open_trusted`]
//! opens target roots (a symlink on the way only if root or we own it, in a directory no
//! one else can write); each file is written to a new temp file there
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, an unpredictable name, 0600 until complete) and renamed
//! over FILE within that directory. FILE (or FILE.minisig) being a symbolic link is refused
//! with exit code 7 before the load starts: nothing is ever written through a link.
//! A new report is 0644 (it names paths, digests and keys, no secrets, and is meant to be
//! read and carried out); a report replacing a regular file keeps that file's mode.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use airlock_bundle::parts::BundleFiles;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::Digest;
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::docker::Rollback;
use crate::engine::Problem;
use crate::hostfs::{self, Dir, FileId};
use crate::UnpackError;

/// The trusted comment of a report signature.
pub(crate) const REPORT_COMMENT: &str = "airlock-unpack report v1";
/// Mode of a new report (and its signature).
pub(crate) const REPORT_MODE: u32 = 0o644;

/// Where the report goes, decided (and the signing key loaded) before any work starts.
#[derive(Debug)]
pub(crate) struct ReportSink {
    pub(crate) path: Option<PathBuf>,
    pub(crate) stdout: bool,
    pub(crate) key: Option<SigningKey>,
    /// The report's directory, opened before any work.
    dir: Option<Dir>,
    started: String,
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl ReportSink {
    pub(crate) fn new(
        path: Option<PathBuf>,
        stdout: bool,
        sign_key: Option<&Path>,
    ) -> Result<ReportSink, UnpackError> {
        let key = match sign_key {
            Some(k) => Some(SigningKey::load(
                k,
                std::env::var("AIRLOCK_KEY_PASSWORD")
                    .ok()
                    .map(Zeroizing::new),
            )?),
            None => None,
        };
        let dir = match &path {
            Some(p) => {
                let (dir, name) = split(p)?;
                let dir = std::path::absolute(dir)
                    .map_err(|e| env_err(p, e))
                    .and_then(|abs| {
                        Dir::open_trusted(&abs, None).map_err(|e| env_err(p, e.into()))
                    })?;
                // Refused now, not after a long load.
                replaceable(&dir, name, p, "report")?;
                if key.is_some() {
                    replaceable(&dir, &sig_name(name), &sig_path(p), "report")?;
                }
                Some(dir)
            }
            None => None,
        };
        Ok(ReportSink {
            path,
            stdout,
            key,
            dir,
            started: now(),
        })
    }

    /// Writes the report: `operation` (`load`, `push`), the bundle as named, the outcome's
    /// own fields (`body`, an object) or the error that ended it.
    pub(crate) fn write(
        &self,
        operation: &str,
        bundle: &Path,
        outcome: &Result<Value, &anyhow::Error>,
    ) -> Result<(), UnpackError> {
        if self.path.is_none() && !self.stdout {
            return Ok(());
        }
        let (result, body, error, exit_code) = match outcome {
            Ok(body) => ("ok", body.as_object(), None, None),
            Err(e) => (
                "refused",
                None,
                Some(crate::exit::message(e)),
                Some(crate::exit::exit_code_of(e)),
            ),
        };
        let report = ReportJson {
            report: REPORT_COMMENT,
            operation,
            tool: airlock_bundle::tool_version("airlock-unpack"),
            host: crate::hostname(),
            started: &self.started,
            finished: now(),
            bundle: bundle_files(bundle),
            result,
            error,
            exit_code,
            engine_failure: outcome.as_ref().err().and_then(|e| engine_failure(e)),
            body,
        };
        // Through a `Value`, as the report always was: its objects print their keys sorted.
        let mut text = serde_json::to_value(&report)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .map_err(|source| UnpackError::Serialize {
                what: "report",
                source,
            })?;
        text.push('\n');
        if self.stdout {
            print!("{text}");
        }
        if let (Some(p), Some(dir)) = (&self.path, &self.dir) {
            let (_, name) = split(p)?;
            replace_at(dir, name, p, "report", text.as_bytes())?;
            if let Some(k) = &self.key {
                let sig = k.sign_with(text.as_bytes(), REPORT_COMMENT);
                replace_at(dir, &sig_name(name), &sig_path(p), "report", sig.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// A report, as `--report FILE` and `--json` write it.
#[derive(Serialize)]
struct ReportJson<'a> {
    report: &'static str,
    operation: &'a str,
    tool: String,
    host: String,
    started: &'a str,
    finished: String,
    bundle: BundleJson<'a>,
    /// `ok` or `refused`.
    result: &'static str,
    /// A refusal: the error chain and the exit code it ended with.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_failure: Option<EngineFailure<'a>>,
    /// A success: the operation's own fields (its typed report), at the top level, last
    /// (as before, they would win over a field above of the same name).
    #[serde(flatten)]
    body: Option<&'a Map<String, Value>>,
}

/// The bundle a report is about: the name given, and, when they are found, the files it
/// came in and the digest of its sums (which pins every byte of them).
#[derive(Serialize)]
struct BundleJson<'a> {
    path: &'a Path,
    #[serde(flatten)]
    located: Option<LocatedJson>,
}

#[derive(Serialize)]
struct LocatedJson {
    parts: Vec<String>,
    sums_digest: Option<Digest>,
}

/// An engine's refusal in the report: the pre-flight's problems (nothing was sent), or what
/// the engine refused and what the rollback undid.
#[derive(Serialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
enum EngineFailure<'a> {
    Preflight {
        engine: &'a str,
        problems: &'a [Problem],
    },
    Load {
        engine: &'a str,
        image: &'a Option<String>,
        layers: &'a [String],
        engine_said: &'a str,
        rollback: &'a Rollback,
    },
}

fn engine_failure(e: &anyhow::Error) -> Option<EngineFailure<'_>> {
    e.chain()
        .find_map(|c| c.downcast_ref::<UnpackError>())
        .and_then(|u| match u {
            UnpackError::EngineCannot {
                engine, problems, ..
            } => Some(EngineFailure::Preflight { engine, problems }),
            UnpackError::EngineRefused {
                engine,
                image,
                layers,
                said,
                rollback,
                ..
            } => Some(EngineFailure::Load {
                engine,
                image,
                layers,
                engine_said: said,
                rollback,
            }),
            _ => None,
        })
}

/// Writes `data` to `path` as reports are written: a new temp file renamed over it, never
/// through a symbolic link (one at `path` is refused). For other outputs of the gap side,
/// such as `inventory -o`.
pub(crate) fn write_output(
    what: &'static str,
    path: &Path,
    data: &[u8],
) -> Result<(), UnpackError> {
    let (dir, name) = split(path)?;
    let dir = std::path::absolute(dir)
        .map_err(|e| out_err(what, path, e))
        .and_then(|abs| Dir::open_trusted(&abs, None).map_err(|e| out_err(what, path, e.into())))?;
    replace_at(&dir, name, path, what, data)
}

/// The directory (`.` for a bare name) and file name of a report path.
fn split(p: &Path) -> Result<(&Path, &str), UnpackError> {
    let name = p.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        UnpackError::Usage(format!("--report {}: not a UTF-8 file name", p.display()))
    })?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn sig_name(name: &str) -> String {
    format!("{name}.minisig")
}

fn env_err(shown: &Path, e: io::Error) -> UnpackError {
    out_err("report", shown, e)
}

/// An output that could not be written: `what` (`report`, `inventory`) and where.
fn out_err(what: &'static str, shown: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        what,
        path: shown.to_path_buf(),
        source,
    }
}

/// Something other than a file we may replace stands where an output goes.
fn out_says(what: &'static str, shown: &Path, problem: &str) -> UnpackError {
    UnpackError::Host {
        what,
        path: shown.to_path_buf(),
        problem: problem.to_string(),
    }
}

/// The mode a report written at `name` gets: a regular file's own, else [`REPORT_MODE`].
/// Anything else at `name` (a symbolic link above all) is refused.
fn replaceable(
    dir: &Dir,
    name: &str,
    shown: &Path,
    what: &'static str,
) -> Result<u32, UnpackError> {
    match rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(REPORT_MODE),
        Err(e) => Err(out_err(what, shown, io::Error::from(e))),
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(st.st_mode & 0o777),
            FileType::Symlink => Err(out_says(
                what,
                shown,
                "is a symbolic link; a report is never written through one \
                 (remove the link, or name the file it points to)",
            )),
            _ => Err(out_says(what, shown, "exists and is not a regular file")),
        },
    }
}

/// Writes `data` to a new temp file in `dir` and renames it over `name`: whatever is at
/// `name` by then, a symbolic link included, is replaced, never written through.
fn replace_at(
    dir: &Dir,
    name: &str,
    shown: &Path,
    what: &'static str,
    data: &[u8],
) -> Result<(), UnpackError> {
    let mode = replaceable(dir, name, shown, what)?;
    let (tmp, mut f) = dir
        .create_temp(".airlock-report-", ".tmp")
        .map_err(|e| out_err(what, shown, e.into()))?;
    let written = (|| {
        let id = FileId::of_file(&f)?;
        hostfs::set_mode(&f, mode)?;
        f.write_all(data)?;
        f.sync_all()?;
        dir.place(&tmp, id, dir, name, true)
            .map_err(io::Error::from)
    })();
    written.map_err(|e| {
        let _ = dir.remove_file(&tmp);
        out_err(what, shown, e)
    })
}

/// `FILE.minisig`.
pub(crate) fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

fn bundle_files(bundle: &Path) -> BundleJson<'_> {
    let located = BundleFiles::locate(bundle).ok().map(|files| LocatedJson {
        parts: files
            .parts
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        sums_digest: files
            .sums
            .as_ref()
            .and_then(|s| std::fs::read(s).ok())
            .map(|b| Digest::of(&b)),
    });
    BundleJson {
        path: bundle,
        located,
    }
}
