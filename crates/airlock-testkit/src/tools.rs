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
    ("ssh-keygen", "openssh-client"),
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
