//! skopeo 1.18 (Debian 13's), the independent cosign signer and verifier for the tests.
//!
//! Debian 12's skopeo 1.9 refuses both to sign and to verify sigstore signatures
//! ("Debian-local change: sigstore disabled"); Debian 13's does both. It is not installed:
//! `skopeo` and the libraries it needs that are newer than Debian 12's (`libc6`,
//! `libgpgme11t64`, `libassuan9`, `libgpg-error0`) are fetched once through
//! [`crate::trixie`] into `$CARGO_TARGET_DIR/engines/skopeo-1.18`, and the binary runs
//! through Debian 13's own dynamic loader with the unpacked libraries first on the library
//! path, so the host's glibc is never mixed in. Nothing of the host's skopeo configuration
//! is read either: every command gets an explicit `--policy` (accept anything unless the
//! caller gives one) and, for signing and verifying, a `registries.d` of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const NAME: &str = "skopeo-1.18";
const PACKAGES: &[&str] = &[
    "skopeo",
    "libc6",
    "libgpgme11t64",
    "libassuan9",
    "libgpg-error0",
];
/// What `skopeo --version` must say.
const VERSION_PREFIX: &str = "skopeo version 1.18.";
/// The unpacked libraries, Debian 13's multiarch dir; its dynamic loader sits there too.
const LIBS: &str = "usr/lib/x86_64-linux-gnu";
const LOADER: &str = "ld-linux-x86-64.so.2";
/// The policy for commands that only move images: without `--policy` skopeo would look for
/// `/etc/containers/policy.json`, which this machine need not have.
const ACCEPT_ANYTHING: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// The unpacked skopeo 1.18.
#[derive(Debug)]
pub struct Skopeo118 {
    root: PathBuf,
    accept_anything: PathBuf,
}

/// The unpacked packages (their `usr/bin/skopeo`), fetching them first when missing.
pub fn fetch() -> Result<PathBuf, String> {
    crate::trixie::fetch(
        NAME,
        PACKAGES,
        |root| skopeo(root).is_file() && root.join(LIBS).join(LOADER).is_file(),
        |root| {
            let version = crate::trixie::checked(base_command(root).arg("--version"))?;
            if version.starts_with(VERSION_PREFIX) {
                Ok(())
            } else {
                Err(format!(
                    "skopeo/{} says {:?}, expected {VERSION_PREFIX}…",
                    crate::trixie::SUITE,
                    version.trim()
                ))
            }
        },
    )
}

fn skopeo(root: &Path) -> PathBuf {
    root.join("usr/bin/skopeo")
}

/// `LIBS/ld-linux-x86-64.so.2 --library-path LIBS:/usr/lib/x86_64-linux-gnu skopeo`: the
/// host's multiarch dir comes last only for what Debian 13's packages do not bring.
fn base_command(root: &Path) -> Command {
    let libs = root.join(LIBS);
    let mut c = Command::new(libs.join(LOADER));
    c.arg("--library-path")
        .arg(format!("{}:/usr/lib/x86_64-linux-gnu", libs.display()))
        .arg(skopeo(root));
    c
}

impl Skopeo118 {
    /// The one skopeo 1.18 of this process, fetched on first use; panics with the reason
    /// when it cannot be fetched or does not run (a test that needs it must fail, not skip).
    pub fn get() -> &'static Skopeo118 {
        static ONE: OnceLock<Skopeo118> = OnceLock::new();
        ONE.get_or_init(|| Skopeo118::load().unwrap_or_else(|e| panic!("skopeo 1.18: {e}")))
    }

    fn load() -> Result<Skopeo118, String> {
        let root = fetch()?;
        let dir = crate::trixie::cache_dir(NAME);
        let accept_anything = dir.join("accept-anything.json");
        if std::fs::read_to_string(&accept_anything).ok().as_deref() != Some(ACCEPT_ANYTHING) {
            // Written aside and renamed: parallel test processes may do this at once.
            let tmp = dir.join(format!("accept-anything.{}.tmp", std::process::id()));
            std::fs::write(&tmp, ACCEPT_ANYTHING)
                .and_then(|()| std::fs::rename(&tmp, &accept_anything))
                .map_err(|e| format!("{}: {e}", accept_anything.display()))?;
        }
        Ok(Skopeo118 {
            root,
            accept_anything,
        })
    }

    /// `skopeo` with no options: the caller adds the global ones (`--policy`,
    /// `--registries.d`) and the subcommand. Without `--policy`, `copy` fails here unless
    /// the machine has `/etc/containers/policy.json`; [`Skopeo118::command`] adds one.
    pub fn bare_command(&self) -> Command {
        base_command(&self.root)
    }

    /// `skopeo --policy ACCEPT-ANYTHING`: for moving and inspecting images; add
    /// `--registries.d` and the subcommand.
    pub fn command(&self) -> Command {
        let mut c = self.bare_command();
        c.arg("--policy").arg(&self.accept_anything);
        c
    }

    /// `skopeo --policy ACCEPT-ANYTHING ARGS…`, which must succeed; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        crate::tools::run(self.command().args(args))
    }

    /// Where the package is unpacked (for messages).
    pub fn root(&self) -> &Path {
        &self.root
    }
}
