//! `airlock-unpack verify`: every digest and the signature (the inner layer), or, without a
//! key, the signed sums of the parts (the outer layer).

use airlock_progress::{human, Mode, Progress};
use anyhow::Context as _;

use super::shared::{read_located, signer_text, Depth, Drain};
use crate::cli::VerifyArgs;
use crate::open::BundleOnDisk;
use crate::UnpackError;

pub(super) fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let VerifyArgs {
        common: c,
        outer_only,
    } = args;
    let progress = Progress::new(Mode::detect(c.quiet));
    let access = c.access()?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)
        .with_context(|| c.bundle.display().to_string())?;
    // No identity for a bundle encrypted to keys, with sums: the outer layer is what
    // can be checked. (A passphrase bundle asks for its passphrase instead.)
    let no_key = c.identity.is_empty() && on_disk.sums.is_some() && on_disk.encrypted_to_keys()?;
    if outer_only || no_key {
        return verify_outer(&on_disk, &progress).with_context(|| c.bundle.display().to_string());
    }
    let v = read_located(
        &on_disk,
        &access,
        &progress,
        "verify",
        Depth::Whole(&mut Drain),
    )
    .with_context(|| c.bundle.display().to_string())?;
    println!(
        "OK {}: {} entries, {} verified, signed by {}{}",
        c.bundle.display(),
        v.header.entries.len(),
        human(v.header.payload_size()),
        signer_text(&v),
        if v.encrypted {
            ", decrypted"
        } else {
            ", not encrypted"
        }
    );
    Ok(())
}

/// `verify` of the outer layer only: the signed sums of every part.
fn verify_outer(on_disk: &BundleOnDisk, progress: &Progress) -> Result<(), UnpackError> {
    let sums = on_disk.check_outer(progress)?;
    let n = on_disk.files.parts.len();
    println!(
        "OK {}: {n} {}, {}, sums signed by {}; contents not decrypted (give --identity to check every entry)",
        sums.path.display(),
        if n == 1 { "file" } else { "parts" },
        human(on_disk.files.total_size()),
        match sums.signer {
            Some(k) => format!("key {k} (verified)"),
            None => "unknown (NOT verified)".into(),
        }
    );
    Ok(())
}
