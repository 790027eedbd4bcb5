//! What can be wrong with one file of a bundle on media (the crate's error type holds these).

use std::fmt;

use crate::Digest;

/// What is wrong with one file of a bundle on media. Names are shown escaped: a stray's
/// name is whatever the media holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartProblem {
    /// Listed in the sums, not there; `found_as` holds a stray file with its content.
    Missing {
        part: String,
        found_as: Option<String>,
    },
    /// Listed in the sums, and a symbolic link found beside the named file: never followed
    /// (a lost part, to `repair`).
    Link { part: String },
    /// There, but not listed; `copy_of` names the listed part with the same content.
    Extra {
        file: String,
        copy_of: Option<String>,
    },
    /// There, not listed, and larger than any part: reported by its size, never hashed.
    ExtraTooLarge { file: String, size: u64 },
    /// Not the size the layout in the sums' trusted comment says (found before hashing
    /// anything); `signed` when that comment's signature was verified.
    WrongSize {
        part: String,
        expected: u64,
        actual: u64,
        signed: bool,
    },
    /// Other content than its signed sum; `holds` names the part whose content it has.
    Corrupt {
        part: String,
        expected: Digest,
        actual: Digest,
        holds: Option<String>,
    },
}

impl PartProblem {
    /// A stray file beside the parts: a warning when the listed parts are all right.
    pub fn is_stray(&self) -> bool {
        matches!(
            self,
            PartProblem::Extra { .. } | PartProblem::ExtraTooLarge { .. }
        )
    }
}

impl fmt::Display for PartProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::Escaped as E;
        match self {
            PartProblem::Missing {
                part,
                found_as: None,
            } => write!(f, "{}: missing", E(part)),
            PartProblem::Missing {
                part,
                found_as: Some(s),
            } => write!(f, "{}: missing; its content is in {} (renamed?)", E(part), E(s)),
            PartProblem::Link { part } => f.write_str(&super::locate::link_message(
                std::path::Path::new(part),
            )),
            PartProblem::Extra { file, copy_of: None } => write!(
                f,
                "{}: not a part of this bundle (not in the signed sums)",
                E(file)
            ),
            PartProblem::Extra {
                file,
                copy_of: Some(p),
            } => write!(
                f,
                "{}: not in the signed sums; it is a copy of {} (duplicated part)",
                E(file),
                E(p)
            ),
            PartProblem::ExtraTooLarge { file, size } => write!(
                f,
                "{}: not a part of this bundle (not in the signed sums); {size} bytes, larger than any part, so not hashed",
                E(file)
            ),
            PartProblem::WrongSize {
                part,
                expected,
                actual,
                signed,
            } => write!(
                f,
                "{}: {actual} bytes, {} {expected} ({})",
                E(part),
                if *signed {
                    "the signed sums say"
                } else {
                    "the sums' unverified trusted comment says"
                },
                if actual < expected {
                    "truncated"
                } else {
                    "too long"
                }
            ),
            PartProblem::Corrupt {
                part,
                expected,
                actual,
                holds: None,
            } => write!(
                f,
                "{}: corrupt: expected sha256 {}, computed {}",
                E(part),
                expected.hex(),
                actual.hex()
            ),
            PartProblem::Corrupt {
                part,
                expected,
                actual,
                holds: Some(h),
            } => write!(
                f,
                "{}: holds the content of {} (parts swapped, reordered or duplicated): expected sha256 {}, computed {}",
                E(part),
                E(h),
                expected.hex(),
                actual.hex()
            ),
        }
    }
}
