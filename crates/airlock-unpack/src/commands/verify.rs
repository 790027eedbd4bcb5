//! `airlock-unpack verify`: every digest and the signature (the inner layer), and the
//! upstream signatures this host's `[[verify]]` rules require (from the signed header,
//! before the body is read); or, without a key, the signed sums of the parts (the outer
//! layer).

use airlock_progress::{human, Mode, Progress};
use anyhow::Context as _;

use airlock_bundle::reader::Verified;

use super::shared::{check_provenance, host_policy, read_located, signer_text, Depth, Drain};
use crate::cli::VerifyArgs;
use crate::open::BundleOnDisk;
use crate::UnpackError;

pub(super) fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let VerifyArgs {
        common: c,
        outer_only,
        policy,
    } = args;
    let progress = Progress::new(Mode::new(c.progress, c.quiet));
    let access = c.access()?;
    let policy = host_policy(&c, policy.as_deref())?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)
        .with_context(|| c.bundle.display().to_string())?;
    // No identity for a bundle encrypted to keys, with sums: the outer layer is what
    // can be checked. (A passphrase bundle asks for its passphrase instead.)
    let no_key = c.identity.is_empty() && on_disk.sums.is_some() && on_disk.encrypted_to_keys()?;
    if outer_only || no_key {
        if policy.as_ref().is_some_and(|p| !p.verify.is_empty()) {
            // Not progress: the operator asked for a check that did not happen.
            airlock_progress::notice("note: the outer layer alone does not show the signed header: the upstream signatures the policy's [[verify]] rules require are checked by verify with --identity, load and push");
        }
        return verify_outer(&on_disk, &progress).with_context(|| c.bundle.display().to_string());
    }
    let check = |v: &Verified| check_provenance(policy.as_ref(), v, &progress).map(|_| ());
    let v = read_located(
        &on_disk,
        &access,
        &progress,
        "verify",
        Depth::Checked(&check, &mut Drain),
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
