//! What `repair` needs from the format: which files of a part set are damaged, truncated,
//! swapped or lost (the outer check: lstat, size, sha256 against the signed sums), and
//! rebuilding them from the others with the parity parts, each checked against the signed
//! sums before the caller may place it. More damage than parity is refused here, before
//! anything is read for the rebuild. No key is needed: the code works on the ciphertext.
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
    /// Carried files (the unpacker) missing or other than their signed sum.
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
        let (lost, carried_damaged) = find_lost(files, sums, &covered, on_bytes)?;
        let plan = RepairPlan {
            sums: where_,
            dir: files.dir.clone(),
            scheme,
            covered,
            lost,
            carried_damaged,
        };
        if plan.lost.len() > scheme.parity {
            return Err(BundleError::Unrepairable(format!(
                "{}: {} of {} files damaged or missing ({}); {} parity parts rebuild at most {}: {} more good files would be needed. Nothing was changed.",
                plan.sums,
                plan.lost.len(),
                plan.covered.len(),
                plan.lost_names().join(", "),
                scheme.parity,
                scheme.parity,
                plan.lost.len() - scheme.parity
            )));
        }
        Ok(plan)
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
    /// checks each against the signed sums: a rebuilt file that does not match (a file
    /// changed while repair read it) is an error, and the caller must not place any.
    pub fn rebuild<W: Write>(
        &self,
        src: &mut impl ShardSource,
        out: &mut [W],
    ) -> Result<(), BundleError> {
        let mut hashing: Vec<HashingWriter<&mut W>> =
            out.iter_mut().map(HashingWriter::new).collect();
        rebuild(
            &self.scheme,
            src,
            &self.lost,
            |i| self.covered[i].size,
            &mut hashing,
        )
        .map_err(|e| match e {
            // A source that cannot be read (its path is in the message) or a full disk.
            ParityError::Io(e) => BundleError::io(&self.dir, e),
            e => BundleError::Unrepairable(format!("{}: {e}", self.sums)),
        })?;
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
        Ok(())
    }
}

/// The outer check: a file of the wrong size (or a link, or absent) is lost without being
/// hashed; the rest are hashed against the signed sums. Returns the lost entries, in order,
/// and the carried files that are not right.
fn find_lost(
    files: &BundleFiles,
    sums: &SignedSums,
    covered: &[Covered],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<usize>, Vec<String>), BundleError> {
    let mut lost = Vec::new();
    let mut to_hash = Vec::new();
    let mut hashed = Vec::new();
    for (i, c) in covered.iter().enumerate() {
        let path = files.dir.join(&c.name);
        match files.look(&path) {
            Found::File(actual) if actual == c.size => {
                hashed.push((i, c.digest));
                to_hash.push((path, actual));
            }
            _ => lost.push(i),
        }
    }
    let mut carried_damaged = Vec::new();
    let carried: Vec<&(String, Digest)> = sums.carried().collect();
    for (name, digest) in &carried {
        let path = files.dir.join(name);
        match files.look(&path) {
            // No layout bounds a carried file: one larger than any unpacker is not hashed.
            Found::File(size) if size <= MAX_CARRIED_SIZE => {
                hashed.push((usize::MAX, *digest));
                to_hash.push((path, size));
            }
            _ => carried_damaged.push(name.clone()),
        }
    }
    let digests = hash_files(files, &to_hash, on_bytes)?;
    for ((i, expected), (d, (path, _))) in hashed.into_iter().zip(digests.into_iter().zip(&to_hash))
    {
        if d == expected {
            continue;
        }
        if i == usize::MAX {
            carried_damaged.push(super::locate::file_name(path));
        } else {
            lost.push(i);
        }
    }
    lost.sort_unstable();
    Ok((lost, carried_damaged))
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
