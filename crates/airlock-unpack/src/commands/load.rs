//! `airlock-unpack load`: the host's guard (policy, `--no-files`, anti-rollback) read
//! first, then the bundle verified and loaded into the engine (Docker or Podman through
//! [`crate::docker`], or containerd), its report written, its outcome printed, ending with
//! the command that starts each compose stack it placed.

use std::path::{Path, PathBuf};

use airlock_bundle::header::Target;
use airlock_bundle::Digest;
use airlock_progress::{Mode, Progress};
use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{Common, GuardArgs, LoadArgs};
use crate::docker::{LoadReport, LoadedImage};
use crate::policy::LoadGuard;
use crate::report::ReportSink;
use crate::restore::{Action, RestoreOptions, RestoredFile, RestoredModel};
use crate::state::RollbackDecision;
use crate::UnpackError;

pub(super) fn run(args: LoadArgs) -> anyhow::Result<()> {
    let LoadArgs {
        common,
        platform,
        no_preflight,
        ollama_models,
        ollama_volume,
        overwrite,
        work_dir,
        guard,
        containerd,
        json,
        report,
    } = args;
    let report_sink = ReportSink::new(report.report, json, report.report_sign_key.as_deref())?;
    let progress = Progress::new(Mode::new(common.progress, common.quiet));
    let access = common.access()?;
    let mut guard = load_guard(&common, *guard)?;
    let restore = RestoreOptions {
        models_to: models_to(ollama_models, ollama_volume)?,
        overwrite,
        work_dir: work_dir.unwrap_or_else(default_work_dir),
    };
    let namespace = containerd.options().map(|o| o.namespace);
    let loaded = match containerd.options() {
        Some(o) => crate::containerd::load(
            &common.bundle,
            &access,
            &o,
            platform,
            &restore,
            &mut guard,
            &progress,
        ),
        None => crate::docker::load(
            &common.bundle,
            &access,
            platform,
            crate::docker::EngineOptions {
                preflight: !no_preflight,
            },
            &restore,
            &mut guard,
            &progress,
        ),
    }
    .with_context(|| common.bundle.display().to_string());
    let body = match &loaded {
        Ok(r) => Ok(serde_json::to_value(LoadJson::new(
            r,
            &guard,
            compose_commands(r, namespace.as_deref()),
        ))?),
        Err(e) => Err(e),
    };
    report_sink.write("load", &common.bundle, &body)?;
    let report = loaded?;
    if !json {
        print_text(&report, &progress);
        for c in compose_commands(&report, namespace.as_deref()) {
            progress.say(c);
        }
    }
    Ok(())
}

/// `--ollama-models [DIR]` or `--ollama-volume NAME`: where every model goes instead of its
/// bundle's target.
fn models_to(
    ollama_models: Option<Option<PathBuf>>,
    ollama_volume: Option<String>,
) -> Result<Option<Target>, UnpackError> {
    let models_to = match (ollama_models, ollama_volume) {
        (Some(None), _) => Some(Target::Path(absolute(
            &airlock_bundle::ollama::default_models_dir(),
        )?)),
        (Some(Some(dir)), _) => Some(Target::Path(absolute(&dir)?)),
        (None, Some(v)) => Some(Target::Volume(v)),
        (None, None) => None,
    };
    if let Some(t) = &models_to {
        t.validate().map_err(UnpackError::Usage)?;
    }
    Ok(models_to)
}

/// `--work-dir`'s default: $TMPDIR, else /var/tmp.
fn default_work_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// An absolute path for a target given on the command line.
fn absolute(p: &Path) -> Result<String, UnpackError> {
    let abs = std::path::absolute(p).map_err(|source| UnpackError::BadPath {
        path: p.to_path_buf(),
        source,
    })?;
    abs.to_str()
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| UnpackError::Usage(format!("{}: not a UTF-8 path", p.display())))
}

/// The policy, `--no-files` and anti-rollback state for a load, all read before the bundle
/// is: a broken policy or state file is refused before any work.
fn load_guard(common: &Common, args: GuardArgs) -> Result<LoadGuard, UnpackError> {
    let GuardArgs {
        policy,
        no_files,
        allow_downgrade,
        max_age,
        state_dir,
    } = args;
    let policy = match crate::policy::locate(policy.as_deref())? {
        Some(path) => {
            // Section names are checked against the keys this load trusts; with the
            // signature skipped there is no signer, and the top level alone applies.
            let names = if common.insecure_skip_signature {
                None
            } else {
                Some(crate::policy::TrustNames::read(&common.trust)?)
            };
            let p = crate::policy::Policy::load(&path, names.as_ref())?;
            Some((p, names.unwrap_or_default()))
        }
        None => {
            // Shown even with --quiet: it is not progress, and scripted loads are the ones
            // nobody watches.
            airlock_progress::notice(crate::policy::no_policy_notice());
            None
        }
    };
    let (policy, trust_names) = match policy {
        Some((p, n)) => (Some(p), n),
        None => (None, Default::default()),
    };
    let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_STATE_DIR));
    Ok(LoadGuard {
        policy,
        trust_names,
        no_files,
        max_age,
        allow_downgrade,
        state: crate::state::State::open(&state_dir)?,
    })
}

/// What a successful load adds to its report (`--report`, `--json`).
#[derive(Serialize)]
struct LoadJson<'a> {
    header_digest: Digest,
    bundle_name: &'a str,
    signer: Option<String>,
    signature_verified: bool,
    encrypted: bool,
    engine: &'a str,
    images: &'a [LoadedImage],
    models: &'a [RestoredModel],
    files: &'a [RestoredFile],
    files_skipped: Vec<SkippedJson>,
    policy: Option<PolicyJson<'a>>,
    rollback: &'a RollbackDecision,
    expected_present: &'a [airlock_bundle::header::Present],
    /// Per image, which `[[verify]]` key verified its upstream signature (if any).
    provenance: Vec<crate::provenance::ImageProvenanceJson>,
    /// The command that starts each compose stack this load placed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    compose: Vec<String>,
}

/// A `[[files]]` record left out by `--no-files`.
#[derive(Serialize)]
struct SkippedJson {
    target: String,
    path: String,
    reason: &'static str,
}

/// The policy file a load was checked against.
#[derive(Serialize)]
struct PolicyJson<'a> {
    path: &'a Path,
    sha256: Digest,
}

impl<'a> LoadJson<'a> {
    fn new(r: &'a LoadReport, guard: &'a LoadGuard, compose: Vec<String>) -> LoadJson<'a> {
        LoadJson {
            header_digest: r.verified.header_digest,
            bundle_name: &r.verified.header.name,
            signer: r.verified.signer.map(|k| k.to_string()),
            signature_verified: r.verified.signature_checked,
            encrypted: r.verified.encrypted,
            engine: &r.engine,
            images: &r.images,
            models: &r.models,
            files: &r.files,
            files_skipped: r
                .cleared
                .files_skipped
                .iter()
                .map(|f| SkippedJson {
                    target: f.target.to_string(),
                    path: f.path.clone(),
                    reason: "--no-files",
                })
                .collect(),
            policy: guard.policy.as_ref().map(|p| PolicyJson {
                path: &p.path,
                sha256: p.sha256,
            }),
            rollback: &r.cleared.rollback,
            expected_present: &r.verified.header.expected_present,
            provenance: crate::provenance::report(&r.cleared.provenance),
            compose,
        }
    }
}

/// The text form: a line per image, model and file, then the summary on stderr.
fn print_text(report: &LoadReport, progress: &Progress) {
    for i in &report.images {
        let how = if i.already_present {
            "already present"
        } else {
            "loaded"
        };
        println!("{how} {} ({}) as {}", i.reference, i.platform, i.id);
    }
    for m in &report.models {
        println!(
            "restored model {} into {} ({} blobs written, {} already present{})",
            m.name,
            m.target,
            m.blobs_written,
            m.blobs_present,
            m.replaced
                .map(|d| format!(", replaced {d}"))
                .unwrap_or_default()
        );
    }
    for f in report
        .files
        .iter()
        .filter(|f| f.action != Action::Directory)
    {
        match f.previous {
            Some(p) => println!("{} {} {} (was {p})", f.action, f.target, f.path),
            None => println!("{} {} {}", f.action, f.target, f.path),
        }
    }
    for f in report.cleared.files_skipped.iter().filter(|f| !f.is_dir()) {
        println!(
            "skipped (--no-files) {} {}",
            airlock_bundle::text::escape(&f.target.to_string()),
            airlock_bundle::text::escape(&f.path)
        );
    }
    progress.say(report.cleared.rollback.describe());
    progress.say(format!(
        "verified; {} images, {} models, {} files in place{}",
        report.images.len(),
        report.models.len(),
        report
            .files
            .iter()
            .filter(|f| f.action != Action::Directory)
            .count(),
        if report.engine.is_empty() {
            String::new()
        } else {
            format!(" (engine: {})", report.engine)
        }
    ));
}

/// For each compose stack whose compose file this load placed (not with `--no-files`), the
/// command that starts it with the compose of the engine that took the images: `docker
/// compose`, `podman compose`, or `nerdctl compose` for containerd (with the namespace when
/// it is not nerdctl's default).
fn compose_commands(report: &LoadReport, containerd_namespace: Option<&str>) -> Vec<String> {
    let tool = match containerd_namespace {
        Some("default") => "nerdctl compose".to_string(),
        Some(ns) => format!("nerdctl --namespace {} compose", shell_word(ns)),
        None if report.engine.starts_with("Podman") => "podman compose".into(),
        None => "docker compose".into(),
    };
    report
        .verified
        .header
        .compose
        .iter()
        .filter(|c| {
            report
                .files
                .iter()
                .any(|f| f.path == c.path && f.target == c.target.to_string())
        })
        .map(|c| format!("{tool} -f {} up -d", shell_word(&c.host_path())))
        .collect()
}

/// `s` as one word for a POSIX shell: as it is when that is safe, else single-quoted.
/// (Header strings hold no control characters: [`airlock_bundle::Header::validate`].)
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-+:@%=,".contains(&c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("/opt/llm-stack/docker-compose.yml"),
            "/opt/llm-stack/docker-compose.yml"
        );
        assert_eq!(shell_word("/opt/my stack/c.yml"), "'/opt/my stack/c.yml'");
        assert_eq!(shell_word("/opt/it's/c.yml"), r"'/opt/it'\''s/c.yml'");
        assert_eq!(shell_word("/x/$(reboot)"), "'/x/$(reboot)'");
    }
}
