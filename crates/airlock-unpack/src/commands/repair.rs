//! `airlock-unpack repair`: rebuilds the damaged, missing, truncated or swapped files of a
//! part set from its parity parts (`build --split SIZE --parity N`), each checked against
//! the signed sums before it replaces anything. No key needed: at a transfer station or
//! on the gap host.

use anyhow::Context as _;

use airlock_bundle::text::escape;
use airlock_bundle::BundleError;
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
    let done = crate::repair::repair(&on_disk.files, sums, args.discard_damaged, &|n| bar.inc(n));
    progress.remove(&bar);
    let done = done.with_context(|| c.bundle.display().to_string())?;
    let sums_path = escape(&sums.path.to_string_lossy());
    if done.rebuilt.is_empty() {
        println!(
            "OK {sums_path}: all {} files match the signed sums; nothing to repair",
            done.files
        );
    } else {
        for (name, kept) in &done.rebuilt {
            match kept {
                Some(k) => println!(
                    "rebuilt {} (the damaged file kept as {})",
                    escape(name),
                    escape(k)
                ),
                None => println!("rebuilt {}", escape(name)),
            }
        }
        println!(
            "OK {sums_path}: {} of {} files rebuilt, each checked against the signed sums",
            done.rebuilt.len(),
            done.files
        );
    }
    if !done.carried_damaged.is_empty() {
        let names: Vec<String> = done.carried_damaged.iter().map(|n| escape(n)).collect();
        return Err(UnpackError::from(BundleError::Unrepairable(format!(
            "{sums_path}: {} (carried beside the bundle) other than its signed sum; parity parts do not cover it: copy it again from where the set was made",
            names.join(", ")
        ))))
        .with_context(|| c.bundle.display().to_string());
    }
    Ok(())
}
