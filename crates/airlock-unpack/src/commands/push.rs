//! `airlock-unpack push`: the verified bundle's images and models into a registry inside
//! the gap, once this host's `[[verify]]` rules passed on its signed header; its report
//! written, its outcome printed.

use airlock_progress::{Mode, Progress};
use anyhow::Context as _;

use super::shared::{check_provenance, host_policy, read_with, Depth};
use crate::cli::PushArgs;
use crate::push::{PushOptions, PushReport, Status};
use crate::report::ReportSink;
use crate::UnpackError;

pub(super) fn run(args: PushArgs) -> anyhow::Result<()> {
    let PushArgs {
        common,
        registry,
        insecure,
        prefix,
        token_realm,
        policy,
        json,
        report: report_args,
    } = args;
    let report_sink = ReportSink::new(
        report_args.report,
        json,
        report_args.report_sign_key.as_deref(),
    )?;
    let progress = Progress::new(Mode::detect(common.quiet));
    let access = common.access()?;
    let policy = host_policy(&common, policy.as_deref())?;
    // The [[verify]] rules are checked on the verified header before the registry hears a
    // thing. The push reads the header again; the digests are compared below.
    // The [[verify]] rules are checked on the verified header before the registry hears a
    // thing. The push reads the header again; the two digests are compared below.
    let checked = policy.as_ref().map(|p| {
        read_with(&common, "push", Depth::Header)
            .and_then(|v| {
                let checked = check_provenance(Some(p), &v, &progress)?;
                Ok((v.header_digest, checked))
            })
            .with_context(|| common.bundle.display().to_string())
    });
    let checked = match checked {
        Some(Err(e)) => {
            report_sink.write("push", &common.bundle, &Err(&e))?;
            return Err(e);
        }
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let opts = PushOptions {
        registry,
        insecure,
        prefix: crate::push::naming::normalize_prefix(prefix.as_deref())
            .map_err(UnpackError::Usage)?,
        token_realm,
    };
    let pushed = crate::push::push(&common.bundle, &access, &opts, &progress)
        .and_then(|r| match &checked {
            Some((digest, _)) if *digest != r.header_digest => Err(UnpackError::Host {
                what: "bundle",
                path: common.bundle.clone(),
                problem: format!(
                    "changed while it was pushed: its header was {digest} when the [[verify]] rules were checked and {} when it was pushed; check what the registry now holds",
                    r.header_digest
                ),
            }),
            _ => Ok(r),
        })
        .with_context(|| common.bundle.display().to_string());
    // The report's own fields are the typed `PushReport`, and which key verified each
    // image's upstream signature.
    let body = match &pushed {
        Ok(r) => {
            let mut v = serde_json::to_value(r)?;
            if let (Some(o), Some((_, c))) = (v.as_object_mut(), &checked) {
                o.insert(
                    "provenance".into(),
                    serde_json::to_value(crate::provenance::report(c))?,
                );
            }
            Ok(v)
        }
        Err(e) => Err(e),
    };
    report_sink.write("push", &common.bundle, &body)?;
    let report = pushed?;
    if !json {
        print_text(&report, &progress);
    }
    Ok(())
}

/// The text form: a line per image and model, then the summary on stderr.
fn print_text(report: &PushReport, progress: &Progress) {
    for i in report.images.iter().chain(&report.models) {
        println!(
            "{} {} ({}; blobs: {} uploaded, {} mounted, {} present)",
            match i.status {
                Status::Pushed => "pushed",
                Status::Unchanged => "unchanged",
            },
            i.reference,
            i.manifest,
            i.blobs_uploaded,
            i.blobs_mounted,
            i.blobs_present
        );
    }
    progress.say(format!(
        "verified; {} images and {} models in {} ({} blobs, {} uploaded, {} mounted, {} already there)",
        report.images.len(),
        report.models.len(),
        report.registry,
        report.blobs_uploaded + report.blobs_mounted + report.blobs_present,
        report.blobs_uploaded,
        report.blobs_mounted,
        report.blobs_present
    ));
}
