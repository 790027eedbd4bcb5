//! The audit record of a `load` or `push`: which bundle (its signed header's digest and the
//! sums of the files it came in), who signed it, what went where with which digests, when,
//! by which airlock, and how it ended. Written as JSON to `--report FILE` (and/or stdout
//! with `--json`), optionally signed with a minisign key (`FILE.minisig`), for success and
//! refusal alike: a refused bundle is worth a record too.

use std::path::{Path, PathBuf};

use airlock_bundle::parts::BundleFiles;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::Digest;
use serde_json::{json, Value};

use crate::UnpackError;

/// The trusted comment of a report signature.
pub const REPORT_COMMENT: &str = "airlock-unpack report v1";

/// Where the report goes, decided (and the signing key loaded) before any work starts.
#[derive(Debug)]
pub struct ReportSink {
    pub path: Option<PathBuf>,
    pub stdout: bool,
    pub key: Option<SigningKey>,
    started: String,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl ReportSink {
    pub fn new(
        path: Option<PathBuf>,
        stdout: bool,
        sign_key: Option<&Path>,
    ) -> Result<ReportSink, UnpackError> {
        let key = match sign_key {
            Some(k) => Some(SigningKey::load(
                k,
                std::env::var("AIRLOCK_KEY_PASSWORD").ok(),
            )?),
            None => None,
        };
        Ok(ReportSink {
            path,
            stdout,
            key,
            started: now(),
        })
    }

    /// Writes the report: `operation` (`load`, `push`), the bundle as named, the outcome's
    /// own fields (`body`, an object) or the error that ended it.
    pub fn write(
        &self,
        operation: &str,
        bundle: &Path,
        outcome: &Result<Value, &anyhow::Error>,
    ) -> Result<(), UnpackError> {
        if self.path.is_none() && !self.stdout {
            return Ok(());
        }
        let mut report = json!({
            "report": REPORT_COMMENT,
            "operation": operation,
            "tool": airlock_bundle::tool_version("airlock-unpack"),
            "host": crate::hostname(),
            "started": self.started,
            "finished": now(),
            "bundle": bundle_files(bundle),
        });
        let obj = report.as_object_mut().expect("object");
        match outcome {
            Ok(body) => {
                obj.insert("result".into(), "ok".into());
                if let Some(b) = body.as_object() {
                    for (k, v) in b {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
            Err(e) => {
                obj.insert("result".into(), "refused".into());
                obj.insert("error".into(), format!("{e:#}").into());
                obj.insert("exit_code".into(), crate::cli::exit_code_of(e).into());
            }
        }
        let mut text = serde_json::to_string_pretty(&report).expect("report serialises");
        text.push('\n');
        if self.stdout {
            print!("{text}");
        }
        if let Some(p) = &self.path {
            let env = |p: &Path, e: std::io::Error| {
                UnpackError::Environment(format!("report {}: {e}", p.display()))
            };
            std::fs::write(p, &text).map_err(|e| env(p, e))?;
            if let Some(k) = &self.key {
                let sig = sig_path(p);
                std::fs::write(&sig, k.sign_with(text.as_bytes(), REPORT_COMMENT))
                    .map_err(|e| env(&sig, e))?;
            }
        }
        Ok(())
    }
}

/// `FILE.minisig`.
pub fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

/// The files the bundle came in and the digest of its sums (which pins every byte of them).
fn bundle_files(bundle: &Path) -> Value {
    let Ok(files) = BundleFiles::locate(bundle) else {
        return json!({ "path": bundle });
    };
    let sums = files
        .sums
        .as_ref()
        .and_then(|s| std::fs::read(s).ok())
        .map(|b| Digest::of(&b));
    json!({
        "path": bundle,
        "parts": files.parts.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "sums_digest": sums,
    })
}
