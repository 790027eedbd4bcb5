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
            if self.require { "" } else { ", require = false" }
        )
    }
}

/// Resolves the `[[verify]]` tables of the policy at `policy`: patterns parsed, key files
/// read and parsed. A problem with either is the policy's (exit 2), naming the rule.
pub(super) fn resolve(policy: &Path, rules: Vec<VerifyToml>) -> Result<Vec<VerifyRule>, UnpackError> {
    let dir = policy.parent().unwrap_or(Path::new(""));
    rules
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("[[verify]] #{} (match = {:?})", i + 1, t.pattern);
            let pattern =
                RepoPattern::parse(&t.pattern).map_err(|e| bad_policy(policy, format!("{at}: {e}")))?;
            let key_file = dir.join(&t.key);
            let bytes = read_controlled(
                &key_file,
                MAX_KEY_FILE,
                "key",
                &|e| bad_policy(policy, format!("{at}: key {}: {e}", key_file.display())),
            )?;
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
