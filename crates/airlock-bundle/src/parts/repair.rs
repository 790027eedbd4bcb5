//! `repair`: finds the files of a part set that are damaged, truncated, swapped or lost
//! (the outer check: lstat, size, sha256 against the signed sums), rebuilds them from the
//! others with the parity parts, checks every rebuilt file against the signed sums before
//! it replaces anything (temp file, then rename), and keeps the damaged original as
//! `NAME.damaged` unless told to discard it. More damage than parity: nothing is changed.
//! No key is needed: the code works on the ciphertext.

use std::io::BufWriter;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::locate::Found;
use super::parity::{rebuild, FileShards, Hashing, ParityError};
use super::sums::hash_files;
use super::{BundleFiles, PartProblem, SignedSums};
use crate::{BundleError, Digest};

/// Appended to a damaged file's name when repair keeps it.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// What [`repair`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// The files rebuilt, in sums order (empty: nothing was damaged).
    pub rebuilt: Vec<String>,
    /// Where the damaged originals were kept (`NAME.damaged`).
    pub kept: Vec<String>,
    /// How many data and parity files the set has.
    pub files: usize,
}

/// Repairs the part set `files`, whose signed sums `sums` (verified by a trusted key)
/// record a parity scheme this reader implements.
pub fn repair(
    files: &BundleFiles,
    sums: &SignedSums,
    discard_damaged: bool,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Repaired, BundleError> {
    let where_ = sums.path.display();
    if sums.signer.is_none() {
        return Err(BundleError::Usage(format!(
            "{where_}: repair needs sums whose signature verified (it writes the files they name)"
        )));
    }
    let scheme = sums.parity_scheme.ok_or_else(|| {
        BundleError::Usage(format!(
            "{where_}: the signed sums list no parity parts this reader can use (build with --split SIZE --parity N)"
        ))
    })?;
    let layout = sums
        .layout
        .filter(|l| l.parts == scheme.data)
        .ok_or_else(|| {
            BundleError::Malformed(format!(
                "{where_}: the signed layout does not match the parts listed"
            ))
        })?;
    // Data parts, then parity parts: shard i is entry i.
    let entries: Vec<(String, Digest, u64)> = sums
        .parts()
        .enumerate()
        .map(|(i, (n, d))| (n.clone(), *d, layout.size_of(i).unwrap_or_default()))
        .chain(
            sums.parity()
                .map(|(n, d)| (n.clone(), *d, scheme.parity_size())),
        )
        .collect();
    if entries.len() != scheme.data + scheme.parity {
        return Err(BundleError::Malformed(format!(
            "{where_}: {} files listed for {} data and {} parity parts",
            entries.len(),
            scheme.data,
            scheme.parity
        )));
    }
    let lost = find_lost(files, &entries, on_bytes)?;
    let mut done = Repaired {
        files: entries.len(),
        ..Repaired::default()
    };
    if lost.is_empty() {
        return Ok(done);
    }
    let names = |ix: &[usize]| {
        ix.iter()
            .map(|&i| entries[i].0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if lost.len() > scheme.parity {
        return Err(BundleError::Unrepairable(format!(
            "{where_}: {} of {} files damaged or missing ({}); {} parity parts rebuild at most {}: {} more good files would be needed. Nothing was changed.",
            lost.len(),
            entries.len(),
            names(&lost),
            scheme.parity,
            scheme.parity,
            lost.len() - scheme.parity
        )));
    }

    let tmps: Vec<PathBuf> = lost
        .iter()
        .map(|&i| files.dir.join(format!(".{}.repair", entries[i].0)))
        .collect();
    let cleanup = || {
        for t in &tmps {
            let _ = std::fs::remove_file(t);
        }
    };
    let built = (|| {
        let mut out = Vec::with_capacity(lost.len());
        for t in &tmps {
            let f = std::fs::File::create(t).map_err(|e| BundleError::io(t, e))?;
            out.push(Hashing {
                inner: BufWriter::with_capacity(1 << 16, f),
                hasher: Sha256::new(),
                size: 0,
            });
        }
        let mut src = FileShards::new(entries.iter().map(|(n, ..)| files.dir.join(n)).collect());
        rebuild(&scheme, &mut src, &lost, |i| entries[i].2, &mut out).map_err(|e| match e {
            ParityError::Io(e) => BundleError::io(&files.dir, e),
            e => BundleError::Unrepairable(format!("{where_}: {e}")),
        })?;
        // Every rebuilt file is checked against the signed sums before it replaces anything.
        for (h, &i) in out.into_iter().zip(&lost) {
            let (name, expected, size) = &entries[i];
            let actual = Digest::from_bytes(h.hasher.finalize().into());
            if actual != *expected || h.size != *size {
                return Err(BundleError::Unrepairable(format!(
                    "{where_}: rebuilt {name} does not match the signed sums (expected sha256 {}, computed {}, {} bytes): a file changed during repair? Nothing was changed.",
                    expected.hex(),
                    actual.hex(),
                    h.size
                )));
            }
        }
        Ok(())
    })();
    if let Err(e) = built {
        cleanup();
        return Err(e);
    }
    for (t, &i) in tmps.iter().zip(&lost) {
        let name = &entries[i].0;
        let path = files.dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            if discard_damaged {
                std::fs::remove_file(&path).map_err(|e| BundleError::io(&path, e))?;
            } else {
                let kept = format!("{name}{DAMAGED_SUFFIX}");
                let to = files.dir.join(&kept);
                std::fs::rename(&path, &to).map_err(|e| BundleError::io(&to, e))?;
                done.kept.push(kept);
            }
        }
        std::fs::rename(t, &path).map_err(|e| BundleError::io(&path, e))?;
        done.rebuilt.push(name.clone());
    }
    Ok(done)
}

/// The outer check: a file of the wrong size (or a link, or absent) is lost without being
/// hashed; the rest are hashed against the signed sums. Returns the lost entries, in order.
fn find_lost(
    files: &BundleFiles,
    entries: &[(String, Digest, u64)],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<usize>, BundleError> {
    let mut lost = Vec::new();
    let mut to_hash = Vec::new();
    let mut hashed = Vec::new();
    for (i, (name, _, size)) in entries.iter().enumerate() {
        let path = files.dir.join(name);
        match files.look(&path) {
            Found::File(actual) if actual == *size => {
                hashed.push(i);
                to_hash.push((path, actual));
            }
            _ => lost.push(i),
        }
    }
    let digests = hash_files(files, &to_hash, on_bytes)?;
    for (i, d) in hashed.into_iter().zip(digests) {
        if d != entries[i].1 {
            lost.push(i);
        }
    }
    lost.sort_unstable();
    Ok(lost)
}

impl SignedSums {
    /// What `airlock-unpack repair` could do about `problems` (as [`SignedSums::check_all`]
    /// finds them) in a set with parity parts, to print beside the refusal; `None` without
    /// parity or damage to listed files.
    pub fn repair_hint(&self, problems: &[PartProblem]) -> Option<String> {
        let scheme = self.parity_scheme?;
        let mut damaged: Vec<&str> = problems
            .iter()
            .filter_map(|p| match p {
                PartProblem::Missing { part, .. }
                | PartProblem::WrongSize { part, .. }
                | PartProblem::Corrupt { part, .. } => Some(part.as_str()),
                _ => None,
            })
            .filter(|n| self.parts().chain(self.parity()).any(|(m, _)| m == n))
            .collect();
        damaged.sort_unstable();
        damaged.dedup();
        let (k, total) = (damaged.len(), scheme.data + scheme.parity);
        match k {
            0 => None,
            k if k <= scheme.parity => Some(format!(
                "{k} of {total} files damaged; {} parity parts present: run airlock-unpack repair {}",
                scheme.parity,
                crate::text::escape(&self.path.to_string_lossy())
            )),
            k => Some(format!(
                "{k} of {total} files damaged; {} parity parts rebuild at most {}: {} more good files would be needed",
                scheme.parity,
                scheme.parity,
                k - scheme.parity
            )),
        }
    }

    /// The listed parity parts to hash with the parts in [`SignedSums::check_all`] (added
    /// to `to_hash`: name, expected digest, index there), and those that cannot be right:
    /// parity parts are checked as parts are (`sha256sum -c` does): each must be there at
    /// the parity size (when the scheme is known) with its digest; they are never part of
    /// the layout, nor read as bundle bytes.
    pub(super) fn parity_to_hash(
        &self,
        files: &BundleFiles,
        to_hash: &mut Vec<(PathBuf, u64)>,
    ) -> (Vec<(String, Digest, usize)>, Vec<PartProblem>) {
        let parity_size = self.parity_scheme.map(|s| s.parity_size());
        let mut parity: Vec<(String, Digest, usize)> = Vec::new();
        let mut parity_problems = Vec::new();
        for (name, expected) in self.parity() {
            match files.look(&files.dir.join(name)) {
                Found::File(actual) if parity_size.is_some_and(|e| e != actual) => parity_problems
                    .push(PartProblem::WrongSize {
                        part: name.clone(),
                        expected: parity_size.unwrap_or_default(),
                        actual,
                        signed: self.signer.is_some(),
                    }),
                Found::File(size) => {
                    parity.push((name.clone(), *expected, to_hash.len()));
                    to_hash.push((files.dir.join(name), size));
                }
                Found::Link | Found::Absent => parity_problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: None,
                }),
            }
        }
        (parity, parity_problems)
    }
}
