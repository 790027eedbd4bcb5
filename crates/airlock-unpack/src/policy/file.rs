//! Finding and reading the policy file: where it is looked for, the refusal of a file its
//! owner does not control alone (like `sshd` with `authorized_keys`), and a bounded read.
//! What the bytes mean is for `rules` and `check` to say.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::UnpackError;

/// Where the policy is looked for when neither `--policy` nor `$AIRLOCK_POLICY` names one.
pub const DEFAULT_POLICY: &str = "/etc/airlock/policy.toml";

/// A policy is a few lines; this bound only keeps a wrong file from being read whole.
pub const MAX_POLICY_SIZE: u64 = 1 << 20;

/// The policy file to use: the one named (which must exist), else the default if it exists.
pub fn locate(named: Option<&Path>) -> Result<Option<PathBuf>, UnpackError> {
    if let Some(p) = named {
        return Ok(Some(p.to_path_buf()));
    }
    let default = Path::new(DEFAULT_POLICY);
    match std::fs::symlink_metadata(default) {
        Ok(_) => Ok(Some(default.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // Cannot tell whether the operator wrote a policy: failing open would ignore it.
        Err(e) => Err(UnpackError::Host {
            what: "",
            path: default.to_path_buf(),
            problem: format!("{e} (cannot tell whether this host has a policy)"),
        }),
    }
}

/// A problem with the policy file itself: a usage error (exit 2) naming the file.
pub(super) fn bad_policy(path: &Path, e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Usage(format!("policy {}: {e}", path.display()))
}

/// The bytes of the policy at `path`: a regular file, controlled by root or this user only,
/// and at most [`MAX_POLICY_SIZE`] bytes.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, UnpackError> {
    read_controlled(path, MAX_POLICY_SIZE, "policy", &|e| bad_policy(path, e))
}

/// The bytes of a file the policy relies on (the policy itself, a `[[verify]]` key): a
/// regular file its owner (root or this user) controls alone, at most `max` bytes. `bad`
/// turns a problem with the file into the error that names it; `what` names it in an I/O
/// error.
pub(super) fn read_controlled(
    path: &Path,
    max: u64,
    what: &'static str,
    bad: &dyn Fn(String) -> UnpackError,
) -> Result<Vec<u8>, UnpackError> {
    let io = |source| UnpackError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file".into()),
        _ => io(e),
    })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    check_owner(&meta).map_err(bad)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("larger than {max} bytes; not a {what}")));
    }
    Ok(bytes)
}

/// A file anyone but its owner can change is no limit: refused, like `sshd` refuses a
/// group-writable `authorized_keys`.
fn check_owner(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "owned by uid {}, neither root nor this user: its owner could rewrite what bundles may do",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "mode {:04o} lets group or others write it, and so decide what bundles may do (chmod go-w)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
