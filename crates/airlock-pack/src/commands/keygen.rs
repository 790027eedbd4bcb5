//! `airlock-pack keygen`: a minisign key pair for signing bundles.

use airlock_bundle::sign::generate_keypair;

use super::secret_from_env_or_prompt;
use crate::cli::KeygenArgs;

pub(crate) fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let KeygenArgs { output, password } = args;
    let pw = if password {
        Some(secret_from_env_or_prompt(
            "AIRLOCK_KEY_PASSWORD",
            "new key password",
            true,
        )?)
    } else {
        None
    };
    let (sk, pk, id) = generate_keypair(&output, pw)?;
    eprintln!(
        "wrote secret key {} (keep it on this machine)",
        sk.display()
    );
    eprintln!(
        "wrote public key {} (copy it to the gap host's trust directory)",
        pk.display()
    );
    println!("{id}");
    Ok(())
}
