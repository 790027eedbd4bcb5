//! Finding (and on CI installing) the external programs tests and the demo use.

use std::process::{Command, Stdio};

/// Debian packages that provide what tests, demo and bench run, by command name.
pub const REQUIRED: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("age", "age"),
    ("minisign", "minisign"),
    ("busybox", "busybox-static"),
    ("unshare", "util-linux"),
    // `ip link set lo up` inside the push test's network namespace.
    ("ip", "iproute2"),
    // A certificate for the token-auth registry's token service.
    ("openssl", "openssl"),
    ("ssh-keygen", "openssh-client"),
    // Podman as an engine (its Docker-compatible API) and as a builder of fixtures.
    ("podman", "podman"),
    ("buildah", "buildah"),
    // A real containerd for `load --containerd` tests, and the runtime pieces Docker 26
    // (extracted from Debian 13's package, see `docker26`) starts from PATH.
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
];

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The packages whose commands are missing.
pub fn missing_packages() -> Vec<&'static str> {
    REQUIRED
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect()
}

/// Path of the static busybox binary fixtures are built from.
pub fn busybox_path() -> std::path::PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("busybox not found: apt-get install busybox-static (cargo xtask ci installs it)");
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The workspace this testkit belongs to.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/airlock-testkit sits two levels below the workspace")
        .to_path_buf()
}

/// Builds `airlock-pack` and `airlock-unpack` (a no-op when they are fresh) and returns the
/// directory holding them.
pub fn build_binaries(release: bool) -> std::path::PathBuf {
    let root = workspace_root();
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&root).args([
        "build",
        "--quiet",
        "--bin",
        "airlock-pack",
        "--bin",
        "airlock-unpack",
    ]);
    if release {
        c.arg("--release");
    }
    run(&mut c);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    target.join(if release { "release" } else { "debug" })
}
