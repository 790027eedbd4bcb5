//! `airlock-unpack repair`: rebuilds the damaged, missing, truncated or swapped files of a
//! part set from its parity parts (`build --split SIZE --parity N`), each checked against
//! the signed sums before it replaces anything. No key needed: at a transfer station or
//! on the gap host.

use anyhow::Context as _;

use airlock_progress::{Mode, Progress};

use crate::cli::RepairArgs;
use crate::open::BundleOnDisk;
use crate::UnpackError;

pub(super) fn run(args: RepairArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let progress = Progress::new(Mode::new(c.progress, c.quiet));
    let access = c.access()?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)
        .with_context(|| c.bundle.display().to_string())?;
    let sums = on_disk.sums.as_ref().ok_or_else(|| {
        UnpackError::Usage(format!(
            "{}: no signed sums beside the bundle ({}.sums and .sums.minisig): repair rebuilds only what they vouch for",
            c.bundle.display(),
            on_disk.files.base
        ))
    })?;
    let bar = progress.bytes(on_disk.files.total_size(), "repair: check");
    let done =
        airlock_bundle::parts::repair::repair(&on_disk.files, sums, args.discard_damaged, &|n| {
            bar.inc(n)
        });
    progress.remove(&bar);
    let done = done
        .map_err(UnpackError::from)
        .with_context(|| c.bundle.display().to_string())?;
    if done.rebuilt.is_empty() {
        println!(
            "OK {}: all {} files match the signed sums; nothing to repair",
            sums.path.display(),
            done.files
        );
        return Ok(());
    }
    for name in &done.rebuilt {
        match done.kept.iter().find(|k| k.starts_with(name.as_str())) {
            Some(k) => println!("rebuilt {name} (the damaged file kept as {k})"),
            None => println!("rebuilt {name}"),
        }
    }
    println!(
        "OK {}: {} of {} files rebuilt, each checked against the signed sums",
        sums.path.display(),
        done.rebuilt.len(),
        done.files
    );
    Ok(())
}
