//! Shared helpers: the workspace root, building the binaries, running commands, installing
//! Debian packages. It imports no other xtask module: the commands use it, never the reverse.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Scratch space for the bench, on the disk the builds use: `$CARGO_TARGET_DIR` (a relative
/// one from the root, as cargo reads it), else `target/` at the root; created if missing.
pub fn scratch() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root().join(t) })
        .unwrap_or_else(|| root().join("target"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command with inherited output; fails on a non-zero exit.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds airlock-pack and airlock-unpack; returns the directory holding them.
pub fn build_bins(release: bool) -> anyhow::Result<PathBuf> {
    Ok(airlock_testkit::tools::build_binaries(release))
}

/// apt-get installs the Debian packages whose commands are missing, and fetches the
/// Docker 26 the tests run beside the system engine (once, into the target dir).
pub fn install_deps() -> anyhow::Result<()> {
    let missing = airlock_testkit::tools::missing_packages();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let docker26 = airlock_testkit::docker26::fetch().map_err(anyhow::Error::msg)?;
    eprintln!(
        "xtask: Docker 26 for the tests is in {}",
        docker26.display()
    );
    Ok(())
}
