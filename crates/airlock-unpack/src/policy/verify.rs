//! The policy's `[[verify]]` rules: which image repositories must carry an upstream cosign
//! signature, and by which key (the operator's own copy of the vendor's public key). A
//! rule is independent of the deny-by-default categories: it allows nothing, it only adds a
//! requirement. Its key file is read like the policy itself (bounded, and refused if anyone
//! but its owner, root or this user, could swap it), relative to the policy file's
//! directory unless absolute.

use std::path::{Path, PathBuf};

use airlock_sigstore::{PublicKey, RepoPattern};
use serde::Deserialize;

use super::file::{bad_policy, read_controlled};
use crate::UnpackError;

/// The largest key file read: a PEM public key is a few hundred bytes.
const MAX_KEY_FILE: u64 = 64 << 10;

/// One `[[verify]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyToml {
    #[serde(rename = "match")]
    pub(super) pattern: String,
    pub(super) key: String,
    #[serde(default = "yes")]
    pub(super) require: bool,
}

fn yes() -> bool {
    true
}

/// One `[[verify]]` rule, its key read.
#[derive(Debug, Clone)]
pub struct VerifyRule {
    pub pattern: RepoPattern,
    /// `match` as written, for messages.
    pub written: String,
    /// The key file, as resolved (the policy's directory joined with `key`).
    pub key_file: PathBuf,
    pub key: PublicKey,
    /// `require = false`: shown by `inspect`, never refused.
    pub require: bool,
}

impl VerifyRule {
    /// `[[verify]] match = "…"` for messages.
    pub fn describe(&self) -> String {
        format!(
            "[[verify]] match = {:?}{}",
            self.written,
            if self.require {
                ""
            } else {
                ", require = false"
            }
        )
    }
}

/// Resolves the `[[verify]]` tables of the policy at `policy`: patterns parsed, key files
/// read and parsed. A problem with either is the policy's (exit 2), naming the rule.
pub(super) fn resolve(
    policy: &Path,
    rules: Vec<VerifyToml>,
) -> Result<Vec<VerifyRule>, UnpackError> {
    let dir = policy.parent().unwrap_or(Path::new(""));
    rules
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("[[verify]] #{} (match = {:?})", i + 1, t.pattern);
            let pattern = RepoPattern::parse(&t.pattern)
                .map_err(|e| bad_policy(policy, format!("{at}: {e}")))?;
            let key_file = dir.join(&t.key);
            let bytes = read_controlled(&key_file, MAX_KEY_FILE, "key", &|e| {
                bad_policy(policy, format!("{at}: key {}: {e}", key_file.display()))
            })?;
            let key = PublicKey::from_pem(&bytes).map_err(|e| {
                bad_policy(policy, format!("{at}: key {}: {e}", key_file.display()))
            })?;
            Ok(VerifyRule {
                pattern,
                written: t.pattern,
                key_file,
                key,
                require: t.require,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use p256::pkcs8::EncodePublicKey as _;

    use super::super::Policy;

    fn write(path: &std::path::Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn pem() -> String {
        p256::ecdsa::SigningKey::from_bytes(&[3u8; 32].into())
            .unwrap()
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn rules_read_their_keys_beside_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        write(&dir.path().join("keys/vendor.pub"), &pem(), 0o644);
        let p = dir.path().join("policy.toml");
        write(
            &p,
            "images = [\"*\"]\n[[verify]]\nmatch = \"docker.io/grafana/*\"\nkey = \"keys/vendor.pub\"\n\
             [[verify]]\nmatch = \"busybox\"\nkey = \"keys/vendor.pub\"\nrequire = false\n",
            0o644,
        );
        let policy = Policy::load(&p, None).unwrap();
        assert_eq!(policy.verify.len(), 2);
        let r = &policy.verify[0];
        assert_eq!(r.key_file, dir.path().join("keys/vendor.pub"));
        assert!(r.require && r.pattern.matches("docker.io/grafana/grafana"));
        assert!(!policy.verify[1].require);
        assert!(policy.verify[1]
            .pattern
            .matches("docker.io/library/busybox"));
        assert_eq!(
            policy.verify[1].describe(),
            "[[verify]] match = \"busybox\", require = false"
        );
    }

    #[test]
    fn bad_rules_and_loose_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("vendor.pub");
        write(&key, &pem(), 0o644);
        let p = dir.path().join("policy.toml");
        let refused = |text: &str| {
            write(&p, text, 0o644);
            let e = Policy::load(&p, None).expect_err("must be refused");
            assert_eq!(e.exit_code(), crate::exit::USAGE, "{e}");
            e.to_string()
        };
        let e = refused("[[verify]]\nmatch = \"a*b\"\nkey = \"vendor.pub\"\n");
        assert!(
            e.contains("[[verify]] #1") && e.contains("'*' may only end"),
            "{e}"
        );
        let e = refused("[[verify]]\nmatch = \"*\"\nkey = \"missing.pub\"\n");
        assert!(e.contains("missing.pub: no such file"), "{e}");
        let e = refused("[[verify]]\nmatch = \"*\"\nkey = \"vendor.pub\"\nkeys = 1\n");
        assert!(e.contains("unknown field"), "{e}");
        write(
            &dir.path().join("private.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            0o600,
        );
        let e = refused("[[verify]]\nmatch = \"*\"\nkey = \"private.pem\"\n");
        assert!(e.contains("not a PEM public key"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = refused("[[verify]]\nmatch = \"*\"\nkey = \"vendor.pub\"\n");
        assert!(
            e.contains("vendor.pub: mode 0664 lets group or others write it"),
            "{e}"
        );
    }
}
