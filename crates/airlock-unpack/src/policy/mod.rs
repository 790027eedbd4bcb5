//! The gap host's operator policy: what a bundle signed by a trusted key may do on this host.
//!
//! A trusted signature says who made a bundle, not what it may touch; the signing key lives
//! on the connected side. The policy file (`--policy FILE`, else `$AIRLOCK_POLICY`, else
//! `/etc/airlock/policy.toml` if it exists) bounds it: host path prefixes for `[[files]]`,
//! volume names, image repositories, model names, models directories, a maximum file mode
//! and a maximum age, and `[signer.NAME]` sections that narrow what one trusted key (the
//! trust file `NAME.pub`) may do. Once a policy file exists everything is denied by default:
//! a category it does not list allows nothing.
//!
//! This module owns finding and parsing that file (bounded, unknown keys refused, patterns
//! validated, signer names checked against the trust sources), mapping the key that
//! verified a bundle to its trust file names, and [`LoadGuard`]: the one check `load` runs
//! once the signed header verified and before anything is written or sent to the engine
//! (this policy, `--no-files`, and anti-rollback and freshness from [`crate::state`]).
//! Every problem is listed, not only the first; the refusal is exit code 12.
//!
//! The file's `[[verify]]` rules (`verify`) say which images must carry an upstream
//! signature by which key; [`crate::provenance`] checks them (exit code 14).
//!
//! Its files: `file` (finding and reading the policy, its ownership check), `rules` (the
//! TOML and its patterns), `check` ([`Policy`] and checking a header against it), `trust`
//! (trust file names), `guard` ([`LoadGuard`]), `verify` (the `[[verify]]` rules and their
//! keys).

mod check;
mod file;
mod guard;
mod rules;
mod trust;
mod verify;

pub use check::Policy;
pub use file::locate;
pub use guard::{no_policy_notice, Cleared, LoadGuard};
pub use trust::TrustNames;
pub use verify::VerifyRule;
