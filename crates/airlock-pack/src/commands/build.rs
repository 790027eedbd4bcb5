//! `airlock-pack build`: the locked content into one signed (and encrypted) bundle; prints
//! the bundle's summary and how to check its sums on stdout.

use std::io::IsTerminal as _;

use airlock_bundle::crypt::{parse_recipient, read_recipients_file, Encryption};
use airlock_bundle::sign::SigningKey;
use airlock_progress::{human, Mode, Progress};
use zeroize::Zeroizing;

use super::{cache, model_sources, runtime, secret_from_env_or_prompt};
use crate::build::{build, BuildOptions};
use crate::cli::BuildArgs;
use crate::PackError;

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let progress = Progress::new(Mode::new(args.common.progress, args.common.quiet));
    let encryption = if args.passphrase {
        let mut p = secret_from_env_or_prompt("AIRLOCK_PASSPHRASE", "bundle passphrase", true)?;
        // Moved, not copied, into the SecretString (which wipes it in turn).
        Encryption::Passphrase(std::mem::take(&mut *p).into())
    } else {
        let mut rs = Vec::new();
        for r in &args.recipients {
            rs.push(parse_recipient(r)?);
        }
        for f in &args.recipients_files {
            rs.extend(read_recipients_file(f)?);
        }
        if rs.is_empty() {
            progress.say("warning: no recipients: the bundle is signed but NOT encrypted");
            Encryption::None
        } else {
            Encryption::Recipients(rs)
        }
    };
    // Checked before the long build: a wrong --with-unpacker PATH is refused at once.
    let unpacker = match &args.with_unpacker {
        Some(given) => Some(crate::unpacker::find(given.as_deref())?),
        None => None,
    };
    let sign_key = load_sign_key(&args.sign_key)?;
    // Parity and the unpacker are added after the build, which signs the sums again.
    let extras_key = (unpacker.is_some() || args.parity.is_some()).then(|| sign_key.clone());
    let opts = BuildOptions {
        spec_path: args.spec.clone(),
        output: args.output.clone(),
        sign_key,
        encryption,
        cache: cache(&args.common)?,
        models: model_sources(&args.common),
        jobs: args.jobs,
        provenance: !args.no_provenance,
        tls: super::lock::tls_options(args.tls.clone()),
        split: args.split,
        have: match &args.have {
            Some(p) => Some(airlock_bundle::inventory::Inventory::parse(
                &std::fs::read(p).map_err(|source| PackError::Input {
                    path: p.clone(),
                    source,
                })?,
                &p.display().to_string(),
            )?),
            None => None,
        },
    };
    let s = runtime()?.block_on(build(opts, &progress))?;
    if let Some(key) = &extras_key {
        write_extras(unpacker.as_ref(), args.parity, key, &s, args.split)?;
    }
    if !s.removed.is_empty() {
        progress.say(format!(
            "removed {} left by an earlier build of this bundle",
            s.removed.join(", ")
        ));
    }
    println!(
        "{}{}: {} images, {} models, {} files, {} blobs, {} ({} downloaded), {}, signed by {}",
        s.output.display(),
        if s.parts.len() > 1 {
            format!(" in {} parts", s.parts.len())
        } else {
            String::new()
        },
        s.images,
        s.models,
        s.files,
        s.blobs,
        human(s.file_bytes),
        human(s.downloaded_bytes),
        if s.encrypted {
            "encrypted"
        } else {
            "not encrypted"
        },
        s.key_id
    );
    println!(
        "{} (check: minisign -Vm {} -p airlock.pub && sha256sum -c {})",
        s.sums.display(),
        s.sums.display(),
        s.sums.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok(())
}

/// Writes the parity parts (read back from the parts just written) and copies the unpacker
/// beside the bundle, then signs the sums again listing them after the parts (the build
/// itself writes the bundle's sums; what travels beside it is added here).
fn write_extras(
    u: Option<&crate::unpacker::Unpacker>,
    parity: Option<crate::cli::ParityCount>,
    key: &SigningKey,
    s: &crate::build::BuildSummary,
    split: Option<u64>,
) -> anyhow::Result<()> {
    let dir = s.sums.parent().unwrap_or(std::path::Path::new("."));
    let base = s
        .sums
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(airlock_bundle::parts::SUMS_SUFFIX))
        .ok_or_else(|| PackError::Usage(format!("{}: not a sums name", s.sums.display())))?;
    // Before computing any parity: the sums must be able to list the whole set.
    airlock_bundle::parts::set_fits(
        base,
        s.parts.len(),
        parity.map_or(0, |p| p.of(s.parts.len())),
        usize::from(u.is_some()),
    )?;
    let parity = match parity {
        Some(p) => {
            let n = p.of(s.parts.len());
            let (scheme, pp) = airlock_bundle::parts::parity::write_parity(dir, base, &s.parts, n)?;
            println!(
                "{} parity parts ({}, {} each) beside the bundle: any {n} lost or damaged files of the set can be rebuilt",
                n,
                pp.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                human(scheme.parity_size())
            );
            Some((scheme, pp))
        }
        None => None,
    };
    let carried = match u {
        Some(u) => vec![crate::unpacker::carry(u, dir)?],
        None => Vec::new(),
    };
    airlock_bundle::parts::write_sums_with(
        dir,
        base,
        &s.parts,
        split,
        parity.as_ref().map(|(scheme, pp)| (scheme, pp.as_slice())),
        &carried,
        key,
    )?;
    let Some(u) = u else { return Ok(()) };
    println!(
        "{} ({}, static x86_64) beside the bundle, listed in its signed sums",
        dir.join(crate::unpacker::NAME).display(),
        u.version
    );
    Ok(())
}

fn load_sign_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    match SigningKey::load(
        path,
        std::env::var("AIRLOCK_KEY_PASSWORD")
            .ok()
            .map(Zeroizing::new),
    ) {
        Ok(k) => Ok(k),
        Err(airlock_bundle::BundleError::Key { detail, .. })
            if detail.contains("password-protected") && std::io::stdin().is_terminal() =>
        {
            let pw = Zeroizing::new(rpassword::prompt_password(format!(
                "password for {}: ",
                path.display()
            ))?);
            Ok(SigningKey::load(path, Some(pw))?)
        }
        Err(e) => Err(e.into()),
    }
}
