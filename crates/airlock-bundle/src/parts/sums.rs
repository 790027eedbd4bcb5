//! The sums file (`NAME.sums`, what `sha256sum -c` reads), the part layout its signature's
//! trusted comment vouches for, and checking both against the parts on media.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::sign::{KeyId, TrustSet};
use crate::{BundleError, Digest};

use super::locate::{file_name, Found};
use super::parity::Scheme;
use super::*;

/// The part layout a sums signature vouches for, carried in its trusted comment so that
/// a truncated or padded part is named before anything is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub parts: usize,
    pub total: u64,
    /// Every part but the last has this size (absent for a bundle in one file).
    pub part_size: Option<u64>,
}

impl Layout {
    pub fn of(parts: &[Part], part_size: Option<u64>) -> Layout {
        Layout {
            parts: parts.len(),
            total: parts.iter().map(|p| p.size).fold(0, u64::saturating_add),
            part_size: part_size.filter(|_| parts.len() > 1),
        }
    }

    pub(super) fn comment(&self) -> String {
        match self.part_size {
            Some(s) => format!(
                "{SUMS_COMMENT} parts={} part-size={s} total={}",
                self.parts, self.total
            ),
            None => format!("{SUMS_COMMENT} parts={} total={}", self.parts, self.total),
        }
    }

    /// The trusted comment of sums that list `carried` files after the parts: v1 without
    /// any, else v2 with `carried=K` appended.
    pub(super) fn comment_carrying(&self, carried: usize) -> String {
        let v1 = self.comment();
        match carried {
            0 => v1,
            k => format!("{SUMS_COMMENT_V2}{} carried={k}", &v1[SUMS_COMMENT.len()..]),
        }
    }

    /// How many carried files a sums comment (v1 or v2) says the sums list after the parts:
    /// `carried=K` in a v2 comment, 0 in a v1 comment, `None` if it is neither.
    pub fn carried_in_comment(c: &str) -> Option<usize> {
        if c.starts_with(SUMS_COMMENT) {
            return Some(0);
        }
        let rest = c
            .strip_prefix(SUMS_COMMENT_V2)
            .or_else(|| c.strip_prefix(SUMS_COMMENT_V3))?;
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix("carried="))
            .and_then(|v| v.parse().ok())
    }

    /// The layout in a sums signature's trusted comment, if it is one a writer can make:
    /// at least one part, and with several, every part but the last `part-size` bytes and
    /// the last at most that (so that no size below overflows).
    pub fn parse_comment(c: &str) -> Option<Layout> {
        let rest = c
            .strip_prefix(SUMS_COMMENT)
            .or_else(|| c.strip_prefix(SUMS_COMMENT_V2))
            .or_else(|| c.strip_prefix(SUMS_COMMENT_V3))?;
        let (mut parts, mut total, mut part_size) = (None, None, None);
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "parts" => parts = Some(v.parse().ok()?),
                "total" => total = Some(v.parse().ok()?),
                "part-size" => part_size = Some(v.parse().ok()?),
                // v2, v3: the carried files' count ([`Layout::carried_in_comment`]); v3:
                // the parity ([`Layout::parity_in_comment`]).
                _ => {}
            }
        }
        let l = Layout {
            parts: parts?,
            total: total?,
            part_size,
        };
        let whole = l.parts.checked_sub(1)?;
        match l.part_size {
            None if whole == 0 => {}
            Some(s) if whole > 0 => {
                let before_last = s.checked_mul(u64::try_from(whole).ok()?)?;
                let last = l.total.checked_sub(before_last)?;
                if last > s {
                    return None;
                }
            }
            _ => return None,
        }
        Some(l)
    }

    /// The size part `i` (0-based) must have; `None` past the last part (or for a layout
    /// that is not one [`Layout::parse_comment`] accepts).
    pub fn size_of(&self, i: usize) -> Option<u64> {
        if i >= self.parts {
            return None;
        }
        match self.part_size {
            Some(s) if i + 1 < self.parts => Some(s),
            Some(s) => self
                .total
                .checked_sub(s.checked_mul(u64::try_from(self.parts - 1).ok()?)?),
            None => Some(self.total),
        }
    }

    /// The largest size any part must have.
    fn largest(&self) -> Option<u64> {
        let first = self.size_of(0)?;
        Some(first.max(self.size_of(self.parts - 1)?))
    }
}

/// The sums file's content: one `<sha256>  <file>` line per part, in part order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    pub lines: Vec<(String, Digest)>,
}

impl Sums {
    pub fn of(parts: &[Part]) -> Sums {
        Sums {
            lines: parts.iter().map(|p| (p.name.clone(), p.digest)).collect(),
        }
    }

    pub fn to_text(&self) -> String {
        self.lines
            .iter()
            .map(|(n, d)| format!("{}  {n}\n", d.hex()))
            .collect()
    }

    /// Reads `sha256sum` output (text or `*` binary mode), as found on media and before its
    /// signature is checked: at most [`MAX_SUMS_SIZE`] bytes and [`MAX_PARTS`] lines, UTF-8,
    /// each name a plain file name in the sums file's own directory (no `/`, not `.` or
    /// `..`, at most 255 bytes, no control or formatting characters), listed once. `path`
    /// names the file in errors. Linear in the input.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Sums, BundleError> {
        let bad = |n: usize, why: &str| {
            BundleError::Malformed(format!("{} line {n}: {why}", path.display()))
        };
        if bytes.len() as u64 > MAX_SUMS_SIZE {
            return Err(BundleError::Malformed(format!(
                "{} is more than {MAX_SUMS_SIZE} bytes, the most a sums file of {MAX_PARTS} parts may have",
                path.display()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad(line + 1, "not UTF-8 text (is this a sums file?)")
        })?;
        let mut lines = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            if lines.len() == MAX_PARTS {
                return Err(bad(
                    i + 1,
                    &format!("more than {MAX_PARTS} parts listed, the most a bundle may have"),
                ));
            }
            let (hex, name) = line
                .split_once(' ')
                .ok_or_else(|| bad(i + 1, "expected `<sha256>  <file>`"))?;
            let name = name
                .strip_prefix(' ')
                .or_else(|| name.strip_prefix('*'))
                .ok_or_else(|| bad(i + 1, "expected two spaces after the digest"))?;
            let digest = Digest::from_hex(hex)
                .map_err(|_| bad(i + 1, "expected `<sha256>  <file>` (64 hex digits first)"))?;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(bad(i + 1, "a part must be a file name in this directory"));
            }
            if name.len() > MAX_NAME || crate::text::has_controls(name) {
                return Err(bad(
                    i + 1,
                    &format!(
                        "\"{}\" is not a part name (longer than {MAX_NAME} bytes, or control characters)",
                        crate::text::Escaped(name)
                    ),
                ));
            }
            if !seen.insert(name) {
                return Err(bad(i + 1, &format!("{name} is listed twice")));
            }
            lines.push((name.to_string(), digest));
        }
        if lines.is_empty() {
            return Err(bad(0, "no parts listed"));
        }
        Ok(Sums { lines })
    }
}

/// The sums of a bundle on media, with the signature checked.
#[derive(Debug, Clone)]
pub struct SignedSums {
    pub path: PathBuf,
    /// The bundle name the sums are for (their file name without [`SUMS_SUFFIX`]).
    pub base: String,
    /// The parity scheme of signed v3 sums, when this reader implements its code.
    pub parity_scheme: Option<Scheme>,
    pub sums: Sums,
    pub layout: Option<Layout>,
    /// The signer; `None` when the signature was not checked (`--insecure-skip-signature`).
    pub signer: Option<KeyId>,
}

impl SignedSums {
    /// Verifies (with `trust`) the sums `files` were located with, without reading them
    /// again. A missing signature is a trust error; a signed layout in the trusted comment
    /// that no writer makes is a malformed bundle.
    pub fn load(files: &BundleFiles, trust: Option<&TrustSet>) -> Result<SignedSums, BundleError> {
        let path = files.sums.clone().ok_or_else(|| {
            BundleError::Usage(format!(
                "{}: no sums file ({}{SUMS_SUFFIX}); the outer layer cannot be checked",
                files.dir.join(&files.base).display(),
                files.base
            ))
        })?;
        let sig_path = files.sums_signature().expect("sums present");
        let sig = match files.present(&sig_path)? {
            Some(_) => {
                let bytes = files.read_capped(&sig_path, MAX_SIG_SIZE)?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    BundleError::Malformed(format!("{}: not text", sig_path.display()))
                })?)
            }
            None => None,
        };
        let missing = || BundleError::BadSignature {
            key_id: "none".into(),
            file: sig_path.display().to_string(),
            detail: "the signature file is missing".into(),
        };
        let (bytes, sums) = match &files.listed {
            Some((b, s)) => (b.clone(), s.clone()),
            // Located without a signature beside the sums: they were not read.
            None if trust.is_some() => return Err(missing()),
            None => {
                let b = files.read_capped(&path, MAX_SUMS_SIZE)?;
                let s = Sums::parse(&b, &path)?;
                (b, s)
            }
        };
        let (signer, comment) = match (trust, &sig) {
            (Some(t), Some(sig)) => {
                let id = t.verify_file(&path, &bytes, sig)?;
                (Some(id), crate::sign::trusted_comment(sig))
            }
            (Some(_), None) => return Err(missing()),
            (None, sig) => (None, sig.as_deref().and_then(crate::sign::trusted_comment)),
        };
        let carried_lines = sums.lines.iter().filter(|(n, _)| is_carried(n)).count();
        let parity_lines = sums
            .lines
            .iter()
            .filter(|(n, _)| parity_index(&files.base, n).is_some())
            .count();
        // Signed sums say how many parity parts they list (0 before v3): a v1 or v2 reader
        // would read such lines as parts, so they must agree, as carried files must.
        let parity_scheme = match comment.as_deref().and_then(Layout::parity_in_comment) {
            Some((n, _)) if signer.is_some() && n != parity_lines => {
                return Err(BundleError::Malformed(format!(
                    "{}: the signed trusted comment \"{}\" does not count the {parity_lines} parity part(s) the sums list",
                    sig_path.display(),
                    crate::text::Escaped(comment.as_deref().unwrap_or_default())
                )))
            }
            Some((_, scheme)) if signer.is_some() => scheme,
            _ => None,
        };
        let layout = match comment {
            Some(c) if Layout::carried_in_comment(&c).is_some() => match Layout::parse_comment(&c) {
                // Signed sums say how many carried files they list: the same lines read as
                // parts by a v1 reader would be refused there, so they must agree here.
                Some(_) if signer.is_some() && Layout::carried_in_comment(&c) != Some(carried_lines) => {
                    return Err(BundleError::Malformed(format!(
                        "{}: the signed trusted comment \"{}\" does not count the {carried_lines} carried file(s) the sums list",
                        sig_path.display(),
                        crate::text::Escaped(&c)
                    )))
                }
                Some(l) => Some(l),
                None if signer.is_some() => {
                    return Err(BundleError::Malformed(format!(
                    "{}: the signed trusted comment \"{}\" is not a part layout any writer makes",
                    sig_path.display(),
                    crate::text::Escaped(&c)
                )))
                }
                // Unverified: only a hint, and this one is no use.
                None => None,
            },
            // A valid signature by a trusted key over something else (a header signature
            // moved here) is not a sums signature.
            Some(c) if signer.is_some() => {
                return Err(BundleError::BadSignature {
                    key_id: signer.map(|k| k.to_string()).unwrap_or_default(),
                    file: sig_path.display().to_string(),
                    detail: format!(
                        "not a sums signature (trusted comment \"{}\")",
                        crate::text::Escaped(&c)
                    ),
                })
            }
            _ => None,
        };
        Ok(SignedSums {
            path,
            base: files.base.clone(),
            parity_scheme,
            sums,
            layout,
            signer,
        })
    }

    /// The layout, if it describes as many parts as the sums list.
    fn layout(&self) -> Option<Layout> {
        let parts = self.parts().count();
        self.layout.filter(|l| l.parts == parts)
    }

    /// The listed parts, in order (every line but the parity parts and carried files).
    pub fn parts(&self) -> impl Iterator<Item = &(String, Digest)> {
        self.sums
            .lines
            .iter()
            .filter(|(n, _)| !is_carried(n) && parity_index(&self.base, n).is_none())
    }

    /// The listed parity parts (`base.p01`, …), in order: never bundle bytes.
    pub fn parity(&self) -> impl Iterator<Item = &(String, Digest)> {
        self.sums
            .lines
            .iter()
            .filter(|(n, _)| parity_index(&self.base, n).is_some())
    }

    /// The listed carried files ([`CARRIED`]): files beside the bundle, not part of it.
    pub fn carried(&self) -> impl Iterator<Item = &(String, Digest)> {
        self.sums.lines.iter().filter(|(n, _)| is_carried(n))
    }

    /// What can be found without reading content: listed parts that are missing or the
    /// wrong size, and stray files.
    pub fn check_layout(&self, files: &BundleFiles) -> Vec<PartProblem> {
        let mut problems = Vec::new();
        let layout = self.layout();
        for (i, (name, _)) in self.parts().enumerate() {
            match files.look(&files.dir.join(name)) {
                Found::File(actual) => {
                    if let Some(expected) = layout.and_then(|l| l.size_of(i)) {
                        if actual != expected {
                            problems.push(PartProblem::WrongSize {
                                part: name.clone(),
                                expected,
                                actual,
                                signed: self.signer.is_some(),
                            });
                        }
                    }
                }
                Found::Link => problems.push(PartProblem::Link { part: name.clone() }),
                Found::Absent => problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: None,
                }),
            }
        }
        for (s, _) in files.strays_sized() {
            problems.push(PartProblem::Extra {
                file: file_name(&s),
                copy_of: None,
            });
        }
        problems
    }

    /// Hashes every listed part and every stray (on all cores, `on_bytes` fed as they go)
    /// and names each problem, with what a misplaced file really holds. What cannot be the
    /// right part is not hashed: a listed part of the wrong size (by the layout), and a
    /// stray larger than any part (by the layout, else by the largest listed part found).
    pub fn check_all(
        &self,
        files: &BundleFiles,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<PartProblem>, BundleError> {
        /// What became of a listed part.
        enum Fate {
            Hashed(usize),
            WrongSize { expected: u64, actual: u64 },
            Link,
            Absent,
        }
        let layout = self.layout();
        // Each listed part's fate is decided here, once.
        let mut to_hash: Vec<(PathBuf, u64)> = Vec::new();
        let fates: Vec<Fate> = self
            .parts()
            .enumerate()
            .map(|(i, (name, _))| {
                let path = files.dir.join(name);
                let actual = match files.look(&path) {
                    Found::File(actual) => actual,
                    Found::Link => return Fate::Link,
                    Found::Absent => return Fate::Absent,
                };
                match layout.and_then(|l| l.size_of(i)) {
                    Some(expected) if expected != actual => Fate::WrongSize { expected, actual },
                    _ => {
                        to_hash.push((path, actual));
                        Fate::Hashed(to_hash.len() - 1)
                    }
                }
            })
            .collect();
        let largest = match layout.and_then(|l| l.largest()) {
            Some(l) => l,
            None => to_hash.iter().map(|(_, s)| *s).max().unwrap_or(0),
        };
        let mut too_large = Vec::new();
        let mut strays: Vec<(String, usize)> = Vec::new();
        for (path, size) in files.strays_sized() {
            if size > largest {
                too_large.push(PartProblem::ExtraTooLarge {
                    file: file_name(&path),
                    size,
                });
            } else {
                strays.push((file_name(&path), to_hash.len()));
                to_hash.push((path, size));
            }
        }
        // A carried file is checked when it is there as a regular file; one moved away (the
        // unpacker installed after the first trip) is no problem of the bundle's.
        let mut carried: Vec<(String, Digest, usize)> = Vec::new();
        for (name, expected) in self.carried() {
            if let Found::File(size) = files.look(&files.dir.join(name)) {
                carried.push((name.clone(), *expected, to_hash.len()));
                to_hash.push((files.dir.join(name), size));
            }
        }
        let (parity, parity_problems) = self.parity_to_hash(files, &mut to_hash);
        let digests = hash_files(files, &to_hash, on_bytes)?;
        let stray_digests: Vec<(String, Digest)> =
            strays.into_iter().map(|(n, i)| (n, digests[i])).collect();
        let name_of = |d: &Digest| {
            self.sums
                .lines
                .iter()
                .find(|(_, e)| e == d)
                .map(|(n, _)| n.clone())
        };
        let mut problems = Vec::new();
        for ((name, expected), fate) in self.parts().zip(fates) {
            match fate {
                Fate::Absent => problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: stray_digests
                        .iter()
                        .find(|(_, d)| d == expected)
                        .map(|(n, _)| n.clone()),
                }),
                Fate::Link => problems.push(PartProblem::Link { part: name.clone() }),
                Fate::WrongSize { expected, actual } => problems.push(PartProblem::WrongSize {
                    part: name.clone(),
                    expected,
                    actual,
                    signed: self.signer.is_some(),
                }),
                Fate::Hashed(i) if digests[i] != *expected => problems.push(PartProblem::Corrupt {
                    part: name.clone(),
                    expected: *expected,
                    actual: digests[i],
                    holds: name_of(&digests[i]),
                }),
                Fate::Hashed(_) => {}
            }
        }
        for (file, d) in stray_digests {
            let copy_of = name_of(&d);
            // A stray that stands in for a missing part was already named as its new name.
            let renamed = problems
                .iter()
                .any(|p| matches!(p, PartProblem::Missing { found_as: Some(f), .. } if *f == file));
            if !renamed {
                problems.push(PartProblem::Extra { file, copy_of });
            }
        }
        problems.extend(too_large);
        problems.extend(parity_problems);
        for (name, expected, i) in parity.into_iter().chain(carried) {
            if digests[i] != expected {
                problems.push(PartProblem::Corrupt {
                    part: name,
                    expected,
                    actual: digests[i],
                    holds: None,
                });
            }
        }
        Ok(problems)
    }
}

/// sha256 of each file, several files at once (one per core): parts are independent, and
/// one sha256 stream is the limit of one core. Each file is read up to the size it had when
/// it was looked at (one byte more is an error: it grew), so the work stays bounded.
pub(super) fn hash_files(
    files: &BundleFiles,
    paths: &[(PathBuf, u64)],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Digest>, BundleError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(paths.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Digest, BundleError>>>> =
        paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((p, size)) = paths.get(i) else { break };
                let r = hash_file(files, p, *size, on_bytes);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every file was hashed")
        })
        .collect()
}

pub(super) fn hash_file(
    files: &BundleFiles,
    path: &Path,
    size: u64,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Digest, BundleError> {
    let mut f = files.open(path)?.take(size.saturating_add(1));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io(path, e)),
        };
        h.update(&buf[..n]);
        read += n as u64;
        on_bytes(n as u64);
    }
    if read > size {
        return Err(BundleError::Malformed(format!(
            "{} grew while it was being hashed (was {size} bytes)",
            crate::text::escape(&path.to_string_lossy())
        )));
    }
    Ok(Digest::from_bytes(h.finalize().into()))
}
