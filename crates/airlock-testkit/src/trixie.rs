//! Packages from Debian 13 (trixie) for tests, fetched without installing anything: the
//! Docker 26 engine ([`crate::docker26`]) and skopeo 1.18 ([`crate::skopeo118`]) are newer
//! than what this Debian 12 machine packages.
//!
//! `apt-get download` runs through a private apt configuration (its own sources file naming
//! only the `trixie` suite, its own lists and cache; the host's apt state is left as it
//! was), every `.deb` is unpacked with `dpkg-deb -x` into one dir under the cargo target
//! dir, checked, and renamed into place, so a fresh clone fetches once and every later test
//! run and CI step reuses it. Parallel callers (test processes, xtask) fetch once: the first
//! holds a file lock, the others wait and find it done.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian suite the packages come from.
pub const SUITE: &str = "trixie";

/// Where packages fetched for tests are kept, by name: under the cargo target dir, which
/// survives between test runs and CI steps and goes away with `cargo clean`.
pub fn cache_dir(name: &str) -> PathBuf {
    let root = crate::tools::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    target.join("engines").join(name)
}

/// `cache_dir(name)/root`, holding `packages` unpacked, fetching them first when `done`
/// says the root is not there yet. `check` runs on the unpacked tree before it is renamed
/// into place (a version check: a changed suite must not swap the program the tests claim
/// to cover); its error fails the fetch.
pub fn fetch(
    name: &str,
    packages: &[&str],
    done: impl Fn(&Path) -> bool,
    check: impl Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = cache_dir(name);
    let root = dir.join("root");
    if done(&root) {
        return Ok(root);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    if done(&root) {
        return Ok(root);
    }
    let work = dir.join("download");
    let _ = std::fs::remove_dir_all(&work);
    let debs = download(&work, packages)?;
    // Unpacked beside the final place and renamed into it: a half-unpacked tree is never
    // mistaken for a fetched one.
    let partial = dir.join("root.partial");
    let _ = std::fs::remove_dir_all(&partial);
    for deb in &debs {
        checked(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    }
    check(&partial)?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).map_err(|e| format!("{}: {e}", root.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(root)
}

/// `apt-get update` and `apt-get download PACKAGE/trixie…` into `work`; the `.deb` files,
/// one per package, in the order asked.
fn download(work: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let sources = work.join("sources.list.d");
    for d in [
        sources.clone(),
        work.join("lists/partial"),
        work.join("cache/archives/partial"),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(
        sources.join(format!("{SUITE}.sources")),
        format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {SUITE}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", sources.display()))?;
    // Only the private sources, lists and cache: the host's apt.conf.d (proxies, mirrors)
    // still applies.
    let apt = |args: &[String]| {
        let mut c = Command::new("apt-get");
        c.current_dir(work)
            .arg("-q")
            .arg("-o")
            .arg("Dir::Etc::sourcelist=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::sourceparts={}", sources.display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                work.join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", work.join("cache").display()))
            // The download lands in a root-owned dir that apt's `_apt` user cannot write.
            .arg("-o")
            .arg("APT::Sandbox::User=root")
            .args(args);
        c
    };
    checked(&mut apt(&["update".into()]))?;
    let mut args = vec!["download".to_string()];
    args.extend(packages.iter().map(|p| format!("{p}/{SUITE}")));
    checked(&mut apt(&args))?;
    let files: Vec<PathBuf> = std::fs::read_dir(work)
        .map_err(|e| format!("{}: {e}", work.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    packages
        .iter()
        .map(|p| {
            // apt names the file PACKAGE_VERSION_ARCH.deb (an epoch's `:` escaped).
            let prefix = format!("{p}_");
            files
                .iter()
                .find(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
                .cloned()
                .ok_or_else(|| format!("apt-get download left no {p} .deb in {}", work.display()))
        })
        .collect()
}

/// Runs a command; its stdout, or an error with its output.
pub(crate) fn checked(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
