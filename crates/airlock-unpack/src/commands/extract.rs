//! `airlock-unpack extract`: the verified bundle as an OCI layout with its models and files
//! in a directory (`--to DIR`), or its images as one load archive (`--archive FILE`).

use std::path::Path;

use airlock_bundle::oci::Platform;
use airlock_bundle::reader::ReadOptions;
use airlock_progress::{Mode, Progress};
use anyhow::Context as _;

use super::shared::signer_text;
use crate::cli::{Common, ExtractArgs};
use crate::open::open_bundle;
use crate::UnpackError;

pub(super) fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let ExtractArgs {
        common,
        to,
        archive,
        platform,
    } = args;
    match archive {
        Some(file) => to_archive(&common, &file, platform),
        None => {
            let to =
                to.ok_or_else(|| UnpackError::Usage("give --to DIR or --archive FILE".into()))?;
            to_dir(&common, &to)
        }
    }
}

/// `--archive FILE`: one image archive for docker, podman and ctr.
fn to_archive(common: &Common, file: &Path, platform: Option<Platform>) -> anyhow::Result<()> {
    let progress = Progress::new(Mode::new(common.progress, common.quiet));
    let access = common.access()?;
    let (input, bar, on_disk) = open_bundle(&common.bundle, &access, &progress, "extract")?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let platform = platform.unwrap_or_else(crate::extract_archive::host_platform);
    let r = crate::extract_archive::extract_archive(input, &opts, file, platform)
        .map_err(|e| on_disk.explain(e, &progress));
    progress.remove(&bar);
    let w = r.with_context(|| common.bundle.display().to_string())?;
    let h = &w.verified.header;
    if !h.models.is_empty() || !h.files.is_empty() {
        progress.say(format!(
            "note: {} models and {} files of the bundle are not in the archive (load, or extract --to DIR)",
            h.models.len(),
            h.files.iter().filter(|f| !f.is_dir()).count()
        ));
    }
    // stdout may be the archive itself: the summary goes to stderr.
    airlock_progress::notice(format!(
        "wrote {} images ({}) to {} (signed by {})",
        w.images.len(),
        w.images
            .iter()
            .map(|i| format!(
                "{} {}",
                airlock_bundle::text::escape(&i.reference),
                i.platform
            ))
            .collect::<Vec<_>>()
            .join(", "),
        file.display(),
        signer_text(&w.verified)
    ));
    Ok(())
}

/// `--to DIR`: an OCI layout, an Ollama store and the files.
fn to_dir(common: &Common, to: &Path) -> anyhow::Result<()> {
    let progress = Progress::new(Mode::new(common.progress, common.quiet));
    let access = common.access()?;
    let (input, bar, on_disk) = open_bundle(&common.bundle, &access, &progress, "extract")?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let r = crate::extract::extract(input, &opts, to).map_err(|e| on_disk.explain(e, &progress));
    progress.remove(&bar);
    let v = r.with_context(|| common.bundle.display().to_string())?;
    if !v.header.expected_present.is_empty() {
        progress.say(format!(
            "warning: a delta bundle: {} blobs it leaves out (the target host has them) are not in {}",
            v.header.expected_present.len(),
            to.display()
        ));
    }
    println!(
        "extracted {} images, {} models and {} files into {} (signed by {})",
        v.header.images.len(),
        v.header.models.len(),
        v.header.files.iter().filter(|f| !f.is_dir()).count(),
        to.display(),
        signer_text(&v)
    );
    Ok(())
}
