//! [`LoadGuard`]: the one check `load` runs once the signed header verified and before
//! anything is written or sent to the engine, putting together this host's policy (its
//! `[[verify]]` rules too, through [`crate::provenance`]), `--no-files`, and anti-rollback
//! and freshness from [`crate::state`].

use std::time::{Duration, SystemTime};

use airlock_bundle::header::{FileRecord, Target};
use airlock_bundle::reader::Verified;

use super::check::Policy;
use super::file::DEFAULT_POLICY;
use super::trust::TrustNames;
use crate::provenance::ImageProvenance;
use crate::state::{Freshness, RollbackDecision, State};
use crate::UnpackError;

/// What `load` checks once the signed header verified and before anything is written or
/// sent to the engine: the policy (if this host has one), `--no-files`, and anti-rollback
/// and freshness. It holds the state (locked) until the load is recorded.
#[derive(Debug)]
pub struct LoadGuard {
    pub policy: Option<Policy>,
    pub trust_names: TrustNames,
    /// `--no-files`: `[[files]]` are skipped (and not checked against the policy).
    pub no_files: bool,
    /// `--max-age`.
    pub max_age: Option<Duration>,
    pub allow_downgrade: bool,
    pub state: State,
}

/// What the guard let through, for the output and the report.
#[derive(Debug, Clone)]
pub struct Cleared {
    pub rollback: RollbackDecision,
    /// `[[files]]` skipped by `--no-files`.
    pub files_skipped: Vec<FileRecord>,
    /// The policy's `[[verify]]` rules applied to each image (empty without a policy).
    pub provenance: Vec<ImageProvenance>,
}

impl LoadGuard {
    /// Every reason to refuse `v` (the policy's and anti-rollback's together), or what is
    /// let through. `models_to`: `--ollama-models` / `--ollama-volume`.
    /// The upstream signatures come first: an image not signed as the `[[verify]]` rules
    /// require is refused with exit code 14 whatever else is wrong.
    pub fn check(&self, v: &Verified, models_to: Option<&Target>) -> Result<Cleared, UnpackError> {
        let h = &v.header;
        let provenance = match &self.policy {
            Some(p) => {
                let checked = crate::provenance::check(h, &p.verify);
                crate::provenance::refusal(&checked, &p.describe())?;
                checked
            }
            None => Vec::new(),
        };
        let signer = v
            .signer
            .filter(|_| v.signature_checked)
            .map(|k| self.trust_names.of(k))
            .unwrap_or_default();
        let mut problems = match &self.policy {
            Some(p) => p.check(h, &signer, models_to, self.no_files),
            None => Vec::new(),
        };
        // The trust files were read for the policy apart from the verification; a signer
        // missing from them (trust changed in between) could escape its section.
        if let (Some(p), Some(k), true) = (&self.policy, v.signer, v.signature_checked) {
            if signer.is_empty() && !p.signers.is_empty() {
                problems.push(format!(
                    "the bundle is signed by key {k}, which none of the trust files read for the [signer.*] sections of {} holds (did the trust files change during the load?); run the load again",
                    p.path.display()
                ));
            }
        }
        // The stricter of --max-age and the policy's applies: the command line cannot
        // loosen what the operator wrote.
        let max_age = self
            .max_age
            .map(|a| (a, "--max-age".to_string()))
            .into_iter()
            .chain(self.policy.as_ref().and_then(|p| p.max_age(&signer)))
            .min_by_key(|(a, _)| *a);
        let fresh = Freshness {
            max_age,
            allow_downgrade: self.allow_downgrade,
            now: SystemTime::now(),
        };
        let (rollback, mut stale) = self.state.check(h, v.header_digest, &fresh);
        problems.append(&mut stale);
        if !problems.is_empty() {
            return Err(UnpackError::Policy {
                policy: self.policy.as_ref().map(Policy::describe),
                problems,
            });
        }
        Ok(Cleared {
            rollback,
            files_skipped: if self.no_files {
                h.files.clone()
            } else {
                Vec::new()
            },
            provenance,
        })
    }

    /// Records a loaded bundle as the newest of its name (only after it loaded).
    pub fn record(&mut self, v: &Verified) -> Result<(), UnpackError> {
        self.state.record(&v.header, v.header_digest)
    }
}

/// The one line `load` prints when this host has no policy.
pub fn no_policy_notice() -> String {
    format!(
        "notice: no policy file ({DEFAULT_POLICY}, --policy or $AIRLOCK_POLICY): any trusted signer may write any path, volume, image tag and model on this host; see `airlock-unpack load --help` to limit it"
    )
}
