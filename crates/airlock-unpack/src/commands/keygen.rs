//! `airlock-unpack keygen`: this host's age identity and recipient.

use airlock_bundle::crypt::{generate_identity, identity_file_text};
use airlock_bundle::sign::KeyDir;

use crate::cli::KeygenArgs;

pub(super) fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let dir = KeyDir::create(&args.output)?;
    dir.check_free(&["host.key", "host.pub"])?;
    let (secret, recipient) = generate_identity();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (key, public) = dir.write_pair(
        (
            "host.key",
            identity_file_text(&secret, &recipient, &created).as_bytes(),
        ),
        ("host.pub", format!("{recipient}\n").as_bytes()),
    )?;
    eprintln!("wrote identity {} (never leaves this host)", key.display());
    eprintln!(
        "wrote recipient {} (give it to the packing side: --recipients-file)",
        public.display()
    );
    println!("{recipient}");
    Ok(())
}
