//! What `repair` needs from the format: which files of a part set are damaged, truncated,
//! swapped or lost (the outer check: lstat, size, sha256 against the signed sums), and
//! rebuilding them from the others with the parity parts, each checked against the signed
//! sums before the caller may place it. More damage than parity is refused here, before
//! anything is rebuilt. No key is needed: the code works on the ciphertext.
//!
//! One pass where it can be: when files are missing or of the wrong size (a disc that never
//! arrived), the others are hashed while the rebuild reads them, not in a pass of their
//! own; only if one of them then turns out damaged too is there a second pass, which knows
//! everything. When every file is there at its size, they are all hashed first (on every
//! core), since until then nothing is known lost.
//!
//! Writing the rebuilt files into the media's directory is the caller's (on a gap host that
//! directory may belong to someone else: `airlock-unpack` does it from a held directory).

use std::io::Write;
use std::path::PathBuf;

use crate::hashing::HashingWriter;

use super::locate::Found;
use super::parity::{rebuild, ParityError, Scheme, ShardSource};
use super::sums::hash_files;
use super::{BundleFiles, PartProblem, SignedSums};
use crate::{BundleError, Digest};

/// Appended to a damaged file's name when repair keeps it.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// The largest carried file repair hashes (the static unpacker is about 11 MiB).
const MAX_CARRIED_SIZE: u64 = 1 << 30;

/// One file the parity covers: name, signed sha256, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// What repair found in a part set: the files the parity covers (shard `i` is entry `i`:
/// data parts, then parity parts), which of them are lost, and the carried files that do
/// not match the signed sums (parity does not cover them).
#[derive(Debug)]
pub struct RepairPlan {
    /// The signed sums file, for messages.
    pub sums: String,
    /// The set's directory, for messages.
    pub dir: PathBuf,
    pub scheme: Scheme,
    pub covered: Vec<Covered>,
    /// Indexes into `covered`, ascending.
    pub lost: Vec<usize>,
    /// Indexes into `covered` of the files there at their size whose sha256 is not checked
    /// yet (ascending; empty unless some were lost by their size alone):
    /// [`RepairPlan::rebuild`] hashes them as it reads them.
    pub unverified: Vec<usize>,
    /// Carried files (the unpacker) beside the set as regular files other than their
    /// signed sum.
    pub carried_damaged: Vec<String>,
}

impl RepairPlan {
    /// Finds what is lost in the part set `files`, whose signed sums `sums` (verified by a
    /// trusted key) record a parity scheme this reader implements. More lost than the parity
    /// rebuilds is refused ([`BundleError::Unrepairable`]), naming the files.
    pub fn find(
        files: &BundleFiles,
        sums: &SignedSums,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<RepairPlan, BundleError> {
        let where_ = crate::text::escape(&sums.path.to_string_lossy());
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
        let entry = |(name, digest): &(String, Digest), size: u64| Covered {
            name: name.clone(),
            digest: *digest,
            size,
        };
        let covered: Vec<Covered> = sums
            .parts()
            .enumerate()
            .map(|(i, e)| entry(e, layout.size_of(i).unwrap_or_default()))
            .chain(sums.parity().map(|e| entry(e, scheme.parity_size())))
            .collect();
        if covered.len() != scheme.data + scheme.parity {
            return Err(BundleError::Malformed(format!(
                "{where_}: {} files listed for {} data and {} parity parts",
                covered.len(),
                scheme.data,
                scheme.parity
            )));
        }
        let found = find_lost(files, sums, &covered, on_bytes)?;
        RepairPlan {
            sums: where_,
            dir: files.dir.clone(),
            scheme,
            covered,
            lost: found.lost,
            unverified: found.unverified,
            carried_damaged: found.carried_damaged,
        }
        .within_parity()
    }

    /// `self`, unless more is lost than the parity rebuilds: then the refusal naming them.
    fn within_parity(self) -> Result<RepairPlan, BundleError> {
        let n = self.scheme.parity;
        if self.lost.len() <= n {
            return Ok(self);
        }
        Err(BundleError::Unrepairable(format!(
            "{}: {} of {} files damaged or missing ({}); {n} parity parts rebuild at most {n}: {} more good files would be needed. Nothing was changed.",
            self.sums,
            self.lost.len(),
            self.covered.len(),
            self.lost_names().join(", "),
            self.lost.len() - n
        )))
    }

    /// The lost files' names, in order (escaped for messages).
    pub fn lost_names(&self) -> Vec<String> {
        self.lost
            .iter()
            .map(|&i| crate::text::escape(&self.covered[i].name))
            .collect()
    }

    /// Rebuilds the lost files from `src` (which reads the set's files: shard `i` is
    /// `covered[i]`), writing lost file `lost[j]` to `out[j]` from its first byte, and
    /// hashes the [`unverified`](RepairPlan::unverified) files as it reads them.
    ///
    /// Returns `None` when every file read matched the signed sums and each rebuilt file
    /// does too. Returns a new plan (with nothing unverified) when an unverified file turned
    /// out damaged as well: what was written to `out` is then worthless, and the caller
    /// rebuilds again by that plan. More damage in all than the parity rebuilds is refused,
    /// naming the files. A rebuilt file that does not match the signed sums although its
    /// sources did (a file changed while repair read it) is an error, and the caller must
    /// not place any.
    pub fn rebuild<W: Write + Send>(
        &self,
        src: &impl ShardSource,
        out: &mut [W],
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<RepairPlan>, BundleError> {
        let mut hashing: Vec<HashingWriter<&mut W>> =
            out.iter_mut().map(HashingWriter::new).collect();
        let seen = rebuild(
            &self.scheme,
            src,
            &self.lost,
            |i| self.covered[i].size,
            &mut hashing,
            &self.unverified,
            on_bytes,
        )
        .map_err(|e| match e {
            // A source that cannot be read (its path is in the message) or a full disk.
            ParityError::Io(e) => BundleError::io(&self.dir, e),
            e => BundleError::Unrepairable(format!("{}: {e}", self.sums)),
        })?;
        let damaged: Vec<usize> = self
            .unverified
            .iter()
            .zip(&seen)
            .filter(|(&i, (digest, size))| {
                let c = &self.covered[i];
                *digest != c.digest || *size != c.size
            })
            .map(|(&i, _)| i)
            .collect();
        if !damaged.is_empty() {
            let mut lost = self.lost.clone();
            lost.extend(damaged);
            lost.sort_unstable();
            return RepairPlan {
                sums: self.sums.clone(),
                dir: self.dir.clone(),
                scheme: self.scheme,
                covered: self.covered.clone(),
                lost,
                unverified: Vec::new(),
                carried_damaged: self.carried_damaged.clone(),
            }
            .within_parity()
            .map(Some);
        }
        for (h, &i) in hashing.into_iter().zip(&self.lost) {
            let c = &self.covered[i];
            let (actual, size, _) = h.finish();
            if actual != c.digest || size != c.size {
                return Err(BundleError::Unrepairable(format!(
                    "{}: rebuilt {} does not match the signed sums (expected sha256 {} and {} bytes, computed {} and {} bytes): did a file change during repair? Nothing was changed.",
                    self.sums,
                    crate::text::escape(&c.name),
                    c.digest.hex(),
                    c.size,
                    actual.hex(),
                    size
                )));
            }
        }
        Ok(None)
    }
}

/// What the outer check found (see the fields of [`RepairPlan`]).
struct OuterCheck {
    lost: Vec<usize>,
    unverified: Vec<usize>,
    carried_damaged: Vec<String>,
}

/// The outer check: a file of the wrong size (or a link, or absent) is lost without being
/// hashed. If any is, the rest are left for the rebuild to hash as it reads them
/// (`unverified`); if none is, they are all hashed now against the signed sums. Carried
/// files are hashed now either way.
fn find_lost(
    files: &BundleFiles,
    sums: &SignedSums,
    covered: &[Covered],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<OuterCheck, BundleError> {
    let mut lost = Vec::new();
    let mut there = Vec::new();
    for (i, c) in covered.iter().enumerate() {
        let path = files.dir.join(&c.name);
        match files.look(&path) {
            Found::File(actual) if actual == c.size => there.push((i, path)),
            _ => lost.push(i),
        }
    }
    // (index into `covered`, or None for a carried file; expected digest)
    let mut hashed: Vec<(Option<usize>, Digest)> = Vec::new();
    let mut to_hash = Vec::new();
    let mut unverified = Vec::new();
    for (i, path) in there {
        if lost.is_empty() {
            hashed.push((Some(i), covered[i].digest));
            to_hash.push((path, covered[i].size));
        } else {
            unverified.push(i);
        }
    }
    let mut carried_damaged = Vec::new();
    for (name, digest) in sums.carried() {
        let path = files.dir.join(name);
        match files.look(&path) {
            // No layout bounds a carried file: one larger than any unpacker is not hashed.
            Found::File(size) if size <= MAX_CARRIED_SIZE => {
                hashed.push((None, *digest));
                to_hash.push((path, size));
            }
            Found::File(_) => carried_damaged.push(name.clone()),
            // As in `verify --outer-only`: a carried file moved away (the unpacker installed
            // on the host) is no problem of the set's, and a link there is not read.
            Found::Link | Found::Absent => {}
        }
    }
    let digests = hash_files(files, &to_hash, on_bytes)?;
    for ((i, expected), (d, (path, _))) in hashed.into_iter().zip(digests.into_iter().zip(&to_hash))
    {
        match i {
            _ if d == expected => {}
            Some(i) => lost.push(i),
            None => carried_damaged.push(super::locate::file_name(path)),
        }
    }
    lost.sort_unstable();
    Ok(OuterCheck {
        lost,
        unverified,
        carried_damaged,
    })
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
                | PartProblem::Link { part }
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
                Found::Link => parity_problems.push(PartProblem::Link { part: name.clone() }),
                Found::Absent => parity_problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: None,
                }),
            }
        }
        (parity, parity_problems)
    }
}
