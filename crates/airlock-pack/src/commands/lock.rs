//! `airlock-pack lock`: pins the spec's images, models and files in SPEC.lock; prints what
//! changed on stdout.

use airlock_progress::{Mode, Progress};

use super::{cache, model_sources, runtime};
use crate::cli::LockArgs;

pub(crate) fn run(args: LockArgs) -> anyhow::Result<()> {
    let LockArgs {
        spec,
        update,
        common,
        tls,
    } = args;
    let progress = Progress::new(Mode::new(common.progress, common.quiet));
    let cache = cache(&common)?;
    let outcome = runtime()?.block_on(crate::lock::lock(
        &spec,
        update,
        &cache,
        &model_sources(&common),
        &tls_options(tls),
        &progress,
    ))?;
    for c in &outcome.changed {
        println!("{c}");
    }
    let lock_path = airlock_bundle::lock::Lock::path_for(&spec);
    if outcome.written {
        progress.say(format!(
            "wrote {} ({} images, {} models pinned)",
            lock_path.display(),
            outcome.lock.images.len(),
            outcome.lock.models.len()
        ));
    } else {
        progress.say(format!("{} is up to date", lock_path.display()));
    }
    Ok(())
}

/// The TLS flags of `lock` and `build`, for the registry clients.
pub(crate) fn tls_options(a: crate::cli::TlsArgs) -> airlock_registry_auth::tls::TlsOptions {
    airlock_registry_auth::tls::TlsOptions {
        ca_certs: a.ca_certs,
        cert_dir: a.cert_dir,
        client_cert: a.client_cert,
        client_key: a.client_key,
    }
}
