//! `airlock-unpack push`: the verified bundle's images and models into a registry inside
//! the gap, once this host's `[[verify]]` rules passed on its signed header; its report
//! written, its outcome printed.

use airlock_progress::{Mode, Progress};
use anyhow::Context as _;

use airlock_bundle::reader::Verified;

use super::shared::{check_provenance, host_policy};
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
        tls,
        policy,
        json,
        report: report_args,
    } = args;
    let report_sink = ReportSink::new(
        report_args.report,
        json,
        report_args.report_sign_key.as_deref(),
    )?;
    let progress = Progress::new(Mode::new(common.progress, common.quiet));
    let access = common.access()?;
    let policy = host_policy(&common, policy.as_deref())?;
    let opts = PushOptions {
        registry,
        insecure,
        prefix: crate::push::naming::normalize_prefix(prefix.as_deref())
            .map_err(UnpackError::Usage)?,
        token_realm,
        tls: airlock_registry_auth::tls::TlsOptions {
            ca_certs: tls.ca_certs,
            cert_dir: tls.cert_dir,
            client_cert: tls.client_cert,
            client_key: tls.client_key,
        },
    };
    // The [[verify]] rules are judged on the header the push verified, before the
    // registry hears a thing.
    let mut checked = None;
    let mut admit = |v: &Verified| -> Result<(), UnpackError> {
        if policy.is_some() {
            checked = Some(check_provenance(policy.as_ref(), v, &progress)?);
        }
        Ok(())
    };
    let pushed = crate::push::push(&common.bundle, &access, &opts, &progress, &mut admit)
        .with_context(|| common.bundle.display().to_string());
    // The report's own fields are the typed `PushReport`, and which key verified each
    // image's upstream signature.
    let body = match &pushed {
        Ok(r) => {
            let mut v = serde_json::to_value(r)?;
            if let (Some(o), Some(c)) = (v.as_object_mut(), &checked) {
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
