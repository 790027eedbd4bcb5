//! `cargo xtask ci` (what `.ci/run` does): dependencies, formatting, lints, the structure
//! limits (`rooms`), the dependency policy (`cargo deny`), the dist artifacts, every test, then a short fuzz run. It owns the CI sequence so that
//! `util` stays a leaf the commands use, not a module that calls back into them.

use std::process::Command;

use crate::util::{cargo, install_deps, sh};

/// The cargo-deny installed when none is: a known version, so that CI does not change under
/// us (and its rules for `deny.toml` with it).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Fetches Debian 13's skopeo 1.18 (the tests' independent cosign signer and verifier)
/// once into the target dir, as `install_deps` does for Docker 26: the tests find it there
/// instead of each racing to fetch it.
fn prefetch_skopeo118() -> anyhow::Result<()> {
    let root = airlock_testkit::skopeo118::fetch().map_err(anyhow::Error::msg)?;
    eprintln!("xtask: skopeo 1.18 for the tests is in {}", root.display());
    Ok(())
}

/// What CI runs: dependencies, formatting, lints, the structure limits, the dependency policy, every test (the
/// format vectors and golden CLI output among them), then every fuzz target for a few
/// seconds and the committed regression inputs.
pub fn ci() -> anyhow::Result<()> {
    install_deps()?;
    prefetch_skopeo118()?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The strictly offline build (no `push`) must stay warning-free too.
    sh(cargo().args([
        "clippy",
        "-p",
        "airlock-unpack",
        "--no-default-features",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The structure limits: no long files or functions, no module cycle.
    crate::rooms::run(&[])?;
    deny()?;
    dist()?;
    sh(cargo().args(["test", "--workspace"]))?;
    crate::fuzz::fuzz(crate::fuzz::CI_SECONDS, &[], false)
}

/// `cargo xtask dist` with a throwaway key, before the tests: the static release builds
/// tests/ship.rs packages again are then cached in their own target dir, and a build or
/// packaging failure shows here rather than inside a test.
fn dist() -> anyhow::Result<()> {
    let dir = crate::util::scratch()?.join("dist-ci");
    let key = dir.join("key/airlock.key");
    if !key.exists() {
        airlock_bundle::sign::generate_keypair(&dir.join("key"), None)?;
    }
    crate::dist::run(&[
        "--out".into(),
        dir.join("out").display().to_string(),
        "--sign-key".into(),
        key.display().to_string(),
    ])
}

/// `cargo deny check bans licenses sources` against `deny.toml`. Advisories are left out on
/// purpose: their database is fetched from the network at check time, which CI here does not
/// have; a connected job runs `cargo deny check advisories`.
fn deny() -> anyhow::Result<()> {
    ensure_cargo_deny()?;
    // Duplicate versions are warnings (deny.toml); their inclusion graphs would fill the log.
    sh(cargo().args([
        "deny",
        "--locked",
        "check",
        "--hide-inclusion-graph",
        "bans",
        "licenses",
        "sources",
    ]))
}

/// Installs the pinned cargo-deny from crates.io when `cargo deny` is missing (a few minutes
/// of building, once per machine).
fn ensure_cargo_deny() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: ci: installing cargo-deny {CARGO_DENY_VERSION}");
    sh(Command::new("cargo").args([
        "install",
        "cargo-deny",
        "--locked",
        "--version",
        CARGO_DENY_VERSION,
    ]))
}
