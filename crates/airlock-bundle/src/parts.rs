//! The bundle as files on media: one file, or parts `NAME.001`, `NAME.002`, … cut at a size,
//! plus `NAME.sums` (lines `sha256sum -c` reads) and `NAME.sums.minisig` (a minisign signature
//! over the sums). This module owns cutting the stream into parts as it is written, finding
//! the parts again from whatever file the user names, reading them as one stream, and
//! naming exactly which part is missing, extra, renamed, reordered or corrupt.
//!
//! The sums are an outer layer for transfer stations: they can be checked with standard tools
//! and without the decryption key. The bundle's own signed header still covers every byte of
//! the content; reading never depends on the sums being right.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::sign::{KeyId, SigningKey, TrustSet};
use crate::{BundleError, Digest};

/// Appended to the bundle name for the sums file.
pub const SUMS_SUFFIX: &str = ".sums";
/// Appended to the sums file's name for its signature (minisign's convention).
pub const SIG_SUFFIX: &str = ".minisig";
/// How every sums signature's trusted comment starts; the rest records the part layout.
pub const SUMS_COMMENT: &str = "airlock-bundle sums v1";

/// `fat32`: the largest file FAT32 can hold.
pub const FAT32: u64 = (4 << 30) - 1;

/// Parses a part size: a number of bytes with an optional unit (`K`, `M`, `G`, `T` and
/// `KiB`… are powers of 1024, as `split -b` reads them; `KB`, `MB`, `GB`, `TB` powers of
/// 1000) or a medium: `fat32` (4 GiB − 1 byte), `dvd` (4.7 GB), `bd25` (25 GB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let preset = match t.to_ascii_lowercase().as_str() {
        "fat32" => Some(FAT32),
        "dvd" => Some(4_700_000_000),
        "bd25" => Some(25_000_000_000),
        _ => None,
    };
    let size = match preset {
        Some(p) => p,
        None => {
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("{s:?}: expected a size like 4G, 700M, 4GiB or fat32"))?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kib" => 1 << 10,
                "m" | "mib" => 1 << 20,
                "g" | "gib" => 1 << 30,
                "t" | "tib" => 1 << 40,
                "kb" => 1_000,
                "mb" => 1_000_000,
                "gb" => 1_000_000_000,
                "tb" => 1_000_000_000_000,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown unit {unit:?} (K, M, G, T, KiB…, KB…)"
                    ))
                }
            };
            n.checked_mul(mult)
                .ok_or_else(|| format!("{s:?}: too large"))?
        }
    };
    // A part must hold at least the age header and the first tar blocks; tiny parts are
    // almost surely a typo (700 instead of 700M).
    if size < 4096 {
        return Err(format!("{s:?}: a part must be at least 4096 bytes"));
    }
    Ok(size)
}

/// The file name of part `index` (1-based) of bundle `base`.
pub fn part_name(base: &str, index: usize) -> String {
    format!("{base}.{index:03}")
}

/// The part number in `name` if it is `base.NNN` (three or more digits).
fn part_index(base: &str, name: &str) -> Option<usize> {
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    (digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// One written part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// Writes a stream into `dir/base` (whole) or `dir/base.001`, `.002`, … of at most `limit`
/// bytes each, hashing every part as it is written. Parts are written under temporary
/// names and renamed only by [`PartWriter::finish`]; dropped unfinished, the temporaries
/// are removed.
#[derive(Debug)]
pub struct PartWriter {
    dir: PathBuf,
    base: String,
    limit: Option<u64>,
    current: Option<Open>,
    done: Vec<(Part, PathBuf)>,
}

#[derive(Debug)]
struct Open {
    file: File,
    tmp: PathBuf,
    name: String,
    hasher: Sha256,
    size: u64,
}

impl PartWriter {
    pub fn new(dir: &Path, base: &str, limit: Option<u64>) -> PartWriter {
        PartWriter {
            dir: dir.to_path_buf(),
            base: base.to_string(),
            limit,
            current: None,
            done: Vec::new(),
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        let name = match self.limit {
            Some(_) => part_name(&self.base, self.done.len() + 1),
            None => self.base.clone(),
        };
        let tmp = self.dir.join(format!(".{name}.partial"));
        let file = File::create(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
        self.current = Some(Open {
            file,
            tmp,
            name,
            hasher: Sha256::new(),
            size: 0,
        });
        Ok(())
    }

    fn close_current(&mut self) {
        if let Some(o) = self.current.take() {
            let part = Part {
                name: o.name,
                digest: Digest::from_bytes(o.hasher.finalize().into()),
                size: o.size,
            };
            self.done.push((part, o.tmp));
        }
    }

    /// Closes the last part and renames every part into place. A bundle written whole is
    /// one part, named `base`.
    pub fn finish(mut self) -> io::Result<Vec<Part>> {
        if self.current.is_none() && self.done.is_empty() {
            self.open_next()?;
        }
        self.close_current();
        let done = std::mem::take(&mut self.done);
        let mut parts = Vec::with_capacity(done.len());
        for (part, tmp) in done {
            let to = self.dir.join(&part.name);
            if let Err(e) = std::fs::rename(&tmp, &to) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io::Error::new(e.kind(), format!("{}: {e}", to.display())));
            }
            parts.push(part);
        }
        Ok(parts)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        self.close_current();
        for (_, tmp) in &self.done {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let (Some(limit), Some(o)) = (self.limit, &self.current) {
            if o.size >= limit {
                self.close_current();
            }
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let limit = self.limit;
        let o = self.current.as_mut().expect("a part is open");
        let room = limit.map_or(buf.len() as u64, |l| l - o.size);
        let want = buf.len().min(room as usize);
        let n = o.file.write(&buf[..want])?;
        o.hasher.update(&buf[..n]);
        o.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(o) => o.file.flush(),
            None => Ok(()),
        }
    }
}

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
            total: parts.iter().map(|p| p.size).sum(),
            part_size: part_size.filter(|_| parts.len() > 1),
        }
    }

    fn comment(&self) -> String {
        match self.part_size {
            Some(s) => format!(
                "{SUMS_COMMENT} parts={} part-size={s} total={}",
                self.parts, self.total
            ),
            None => format!("{SUMS_COMMENT} parts={} total={}", self.parts, self.total),
        }
    }

    fn parse_comment(c: &str) -> Option<Layout> {
        let rest = c.strip_prefix(SUMS_COMMENT)?;
        let (mut parts, mut total, mut part_size) = (None, None, None);
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "parts" => parts = Some(v.parse().ok()?),
                "total" => total = Some(v.parse().ok()?),
                "part-size" => part_size = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(Layout {
            parts: parts?,
            total: total?,
            part_size,
        })
    }

    /// The size part `i` (0-based) must have.
    pub fn size_of(&self, i: usize) -> u64 {
        match self.part_size {
            Some(s) if i + 1 < self.parts => s,
            Some(s) => self.total - s * (self.parts as u64 - 1),
            None => self.total,
        }
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

    /// Reads `sha256sum` output (text or `*` binary mode). File names must be plain names in
    /// the sums file's own directory.
    pub fn parse(text: &str, path: &Path) -> Result<Sums, BundleError> {
        let bad = |n: usize, why: &str| {
            BundleError::Malformed(format!("{} line {n}: {why}", path.display()))
        };
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let (hex, name) = line
                .split_once(' ')
                .ok_or_else(|| bad(i + 1, "expected `<sha256>  <file>`"))?;
            let name = name
                .strip_prefix(' ')
                .or_else(|| name.strip_prefix('*'))
                .ok_or_else(|| bad(i + 1, "expected two spaces after the digest"))?;
            let digest = Digest::from_hex(hex).map_err(|e| bad(i + 1, &e.0))?;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(bad(i + 1, "a part must be a file name in this directory"));
            }
            if lines.iter().any(|(n, _)| n == name) {
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

/// Writes `dir/base.sums` and its signature, each through a temp file and a rename (the
/// signature last: a sums file without one is incomplete). Returns both paths.
pub fn write_sums(
    dir: &Path,
    base: &str,
    parts: &[Part],
    part_size: Option<u64>,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), BundleError> {
    let text = Sums::of(parts).to_text();
    let sig = key.sign_with(text.as_bytes(), &Layout::of(parts, part_size).comment());
    let sums = dir.join(format!("{base}{SUMS_SUFFIX}"));
    let sig_path = dir.join(format!("{base}{SUMS_SUFFIX}{SIG_SUFFIX}"));
    for (path, data) in [(&sums, text.as_bytes()), (&sig_path, sig.as_bytes())] {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.partial"));
        std::fs::write(&tmp, data).map_err(|e| BundleError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| BundleError::io(path, e))?;
    }
    Ok((sums, sig_path))
}

/// Removes files a previous build of `base` left that this one did not write: parts beyond
/// the new count, or the whole file when the new bundle is split (and the other way round).
/// Returns their names.
pub fn remove_stale(dir: &Path, base: &str, parts: &[Part]) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == base || part_index(base, &name).is_some();
        if ours && !parts.iter().any(|p| p.name == name) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// Where a bundle's files are: its parts in order, and its sums and signature if present.
#[derive(Debug, Clone)]
pub struct BundleFiles {
    pub dir: PathBuf,
    /// The bundle name the files share (`stack.airlock`).
    pub base: String,
    pub parts: Vec<PathBuf>,
    pub sums: Option<PathBuf>,
}

impl BundleFiles {
    /// Finds the bundle from what the user named: the bundle file, its first (or any) part,
    /// its sums file or signature, or the bundle name when only parts exist. With a sums
    /// file the parts are the ones it lists, in its order; without one they are `base.001`,
    /// `base.002`, … up to the first gap.
    pub fn locate(path: &Path) -> Result<BundleFiles, BundleError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BundleError::Usage(format!("{}: not a file name", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stripped = name
            .strip_suffix(&format!("{SUMS_SUFFIX}{SIG_SUFFIX}"))
            .or_else(|| name.strip_suffix(SUMS_SUFFIX));
        let base = match stripped {
            Some(b) => b.to_string(),
            None => match name.rsplit_once('.') {
                Some((b, _)) if part_index(b, &name).is_some() && !path.is_dir() => b.to_string(),
                _ => name.clone(),
            },
        };
        let sums = dir.join(format!("{base}{SUMS_SUFFIX}"));
        let sums = sums.is_file().then_some(sums);
        let parts = match &sums {
            Some(s) => {
                let text = std::fs::read_to_string(s).map_err(|e| BundleError::io(s, e))?;
                Sums::parse(&text, s)?
                    .lines
                    .into_iter()
                    .map(|(n, _)| dir.join(n))
                    .collect()
            }
            None if dir.join(&base).is_file() => vec![dir.join(&base)],
            None => (1..)
                .map(|i| dir.join(part_name(&base, i)))
                .take_while(|p| p.is_file())
                .collect(),
        };
        if parts.is_empty() {
            return Err(BundleError::Usage(format!(
                "{}: no such bundle (looked for {base}, {}, {base}{SUMS_SUFFIX})",
                path.display(),
                part_name(&base, 1)
            )));
        }
        Ok(BundleFiles {
            dir,
            base,
            parts,
            sums,
        })
    }

    /// The signature file beside the sums.
    pub fn sums_signature(&self) -> Option<PathBuf> {
        self.sums.as_ref().map(|s| {
            let mut p = s.clone().into_os_string();
            p.push(SIG_SUFFIX);
            PathBuf::from(p)
        })
    }

    /// Files in the bundle's directory named like its parts (`base.…`) but not listed: a
    /// part renamed, copied, or left from another build.
    pub fn strays(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with(&format!("{}.", self.base))
                    && !n.starts_with(&format!("{}{SUMS_SUFFIX}", self.base))
                    && !self.parts.iter().any(|q| q == p)
            })
            .collect();
        out.sort();
        out
    }

    /// All parts as one stream, without copying them together.
    pub fn reader(&self) -> Result<PartsReader, BundleError> {
        PartsReader::open(&self.parts)
    }

    pub fn total_size(&self) -> u64 {
        self.parts
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Reads parts one after the other. Every part is opened up front so that a missing or
/// unreadable one is named before any work starts.
#[derive(Debug)]
pub struct PartsReader {
    files: std::vec::IntoIter<File>,
    current: Option<File>,
}

impl PartsReader {
    pub fn open(parts: &[PathBuf]) -> Result<PartsReader, BundleError> {
        let files = parts
            .iter()
            .map(|p| File::open(p).map_err(|e| BundleError::io(p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = files.into_iter();
        let current = files.next();
        Ok(PartsReader { files, current })
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(f) = &mut self.current {
            let n = f.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.current = self.files.next();
        }
        Ok(0)
    }
}

/// What is wrong with one file of a bundle on media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartProblem {
    /// Listed in the sums, not there; `found_as` holds a stray file with its content.
    Missing {
        part: String,
        found_as: Option<String>,
    },
    /// There, but not listed; `copy_of` names the listed part with the same content.
    Extra {
        file: String,
        copy_of: Option<String>,
    },
    /// Not the size the signed layout says (found before hashing anything).
    WrongSize {
        part: String,
        expected: u64,
        actual: u64,
    },
    /// Other content than its signed sum; `holds` names the part whose content it has.
    Corrupt {
        part: String,
        expected: Digest,
        actual: Digest,
        holds: Option<String>,
    },
}

impl fmt::Display for PartProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartProblem::Missing {
                part,
                found_as: None,
            } => write!(f, "{part}: missing"),
            PartProblem::Missing {
                part,
                found_as: Some(s),
            } => write!(f, "{part}: missing; its content is in {s} (renamed?)"),
            PartProblem::Extra { file, copy_of: None } => {
                write!(f, "{file}: not a part of this bundle (not in the signed sums)")
            }
            PartProblem::Extra {
                file,
                copy_of: Some(p),
            } => write!(
                f,
                "{file}: not in the signed sums; it is a copy of {p} (duplicated part)"
            ),
            PartProblem::WrongSize {
                part,
                expected,
                actual,
            } => write!(
                f,
                "{part}: {actual} bytes, the signed sums say {expected} ({})",
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
                "{part}: corrupt: expected sha256 {}, computed {}",
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
                "{part}: holds the content of {h} (parts swapped, reordered or duplicated): expected sha256 {}, computed {}",
                expected.hex(),
                actual.hex()
            ),
        }
    }
}

/// The sums of a bundle on media, with the signature checked.
#[derive(Debug, Clone)]
pub struct SignedSums {
    pub path: PathBuf,
    pub sums: Sums,
    pub layout: Option<Layout>,
    /// The signer; `None` when the signature was not checked (`--insecure-skip-signature`).
    pub signer: Option<KeyId>,
}

impl SignedSums {
    /// Reads and (with `trust`) verifies `files`' sums. A missing signature is a trust error.
    pub fn load(files: &BundleFiles, trust: Option<&TrustSet>) -> Result<SignedSums, BundleError> {
        let path = files.sums.clone().ok_or_else(|| {
            BundleError::Usage(format!(
                "{}: no sums file ({}{SUMS_SUFFIX}); the outer layer cannot be checked",
                files.dir.join(&files.base).display(),
                files.base
            ))
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| BundleError::io(&path, e))?;
        let sums = Sums::parse(&text, &path)?;
        let sig_path = files.sums_signature().expect("sums present");
        let sig = match std::fs::read_to_string(&sig_path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(BundleError::io(&sig_path, e)),
        };
        let (signer, comment) = match (trust, &sig) {
            (Some(t), Some(sig)) => {
                let id = t.verify_file(&path, text.as_bytes(), sig)?;
                (Some(id), crate::sign::trusted_comment(sig))
            }
            (Some(_), None) => {
                return Err(BundleError::BadSignature {
                    key_id: "none".into(),
                    file: sig_path.display().to_string(),
                    detail: "the signature file is missing".into(),
                })
            }
            (None, sig) => (None, sig.as_deref().and_then(crate::sign::trusted_comment)),
        };
        let layout = match comment {
            Some(c) if c.starts_with(SUMS_COMMENT) => Layout::parse_comment(&c),
            // A valid signature by a trusted key over something else (a header signature
            // moved here) is not a sums signature.
            Some(c) if signer.is_some() => {
                return Err(BundleError::BadSignature {
                    key_id: signer.map(|k| k.to_string()).unwrap_or_default(),
                    file: sig_path.display().to_string(),
                    detail: format!("not a sums signature (trusted comment {c:?})"),
                })
            }
            _ => None,
        };
        Ok(SignedSums {
            path,
            sums,
            layout,
            signer,
        })
    }

    /// What can be found without reading content: listed parts that are missing or the
    /// wrong size, and stray files.
    pub fn check_layout(&self, files: &BundleFiles) -> Vec<PartProblem> {
        let mut problems = Vec::new();
        if let Some(l) = self.layout.filter(|l| l.parts == self.sums.lines.len()) {
            for (i, (name, _)) in self.sums.lines.iter().enumerate() {
                if let Ok(m) = std::fs::metadata(files.dir.join(name)) {
                    if m.len() != l.size_of(i) {
                        problems.push(PartProblem::WrongSize {
                            part: name.clone(),
                            expected: l.size_of(i),
                            actual: m.len(),
                        });
                    }
                }
            }
        }
        for (name, _) in &self.sums.lines {
            if !files.dir.join(name).is_file() {
                problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: None,
                });
            }
        }
        for s in files.strays() {
            problems.push(PartProblem::Extra {
                file: s.file_name().unwrap_or_default().to_string_lossy().into(),
                copy_of: None,
            });
        }
        problems
    }

    /// Hashes every listed part and every stray (on all cores, `on_bytes` fed as they go)
    /// and names each problem, with what a misplaced file really holds.
    pub fn check_all(
        &self,
        files: &BundleFiles,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<PartProblem>, BundleError> {
        let listed: Vec<PathBuf> = self
            .sums
            .lines
            .iter()
            .map(|(n, _)| files.dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        let strays = files.strays();
        let all: Vec<PathBuf> = listed.iter().chain(&strays).cloned().collect();
        let digests: std::collections::HashMap<&Path, Digest> = all
            .iter()
            .map(PathBuf::as_path)
            .zip(hash_files(&all, on_bytes)?)
            .collect();
        let digest_of = |p: &Path| digests[p];
        let name_of = |d: &Digest| {
            self.sums
                .lines
                .iter()
                .find(|(_, e)| e == d)
                .map(|(n, _)| n.clone())
        };
        let mut problems = Vec::new();
        let stray_names: Vec<(String, Digest)> = strays
            .iter()
            .map(|p| {
                (
                    p.file_name().unwrap_or_default().to_string_lossy().into(),
                    digest_of(p),
                )
            })
            .collect();
        for (name, expected) in &self.sums.lines {
            let path = files.dir.join(name);
            if !path.is_file() {
                problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: stray_names
                        .iter()
                        .find(|(_, d)| d == expected)
                        .map(|(n, _)| n.clone()),
                });
                continue;
            }
            let actual = digest_of(&path);
            if actual != *expected {
                problems.push(PartProblem::Corrupt {
                    part: name.clone(),
                    expected: *expected,
                    actual,
                    holds: name_of(&actual),
                });
            }
        }
        for (file, d) in stray_names {
            let copy_of = name_of(&d);
            // A stray that stands in for a missing part was already named as its new name.
            let renamed = problems
                .iter()
                .any(|p| matches!(p, PartProblem::Missing { found_as: Some(f), .. } if *f == file));
            if !renamed {
                problems.push(PartProblem::Extra { file, copy_of });
            }
        }
        Ok(problems)
    }
}

/// sha256 of each file, several files at once (one per core): parts are independent, and
/// one sha256 stream is the limit of one core.
pub fn hash_files(
    paths: &[PathBuf],
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
                let Some(p) = paths.get(i) else { break };
                let r = hash_file(p, on_bytes);
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

fn hash_file(path: &Path, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<Digest, BundleError> {
    let mut f = File::open(path).map_err(|e| BundleError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io(path, e)),
        };
        h.update(&buf[..n]);
        on_bytes(n as u64);
    }
    Ok(Digest::from_bytes(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_split_and_media() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("700MB").unwrap(), 700_000_000);
        assert_eq!(parse_size("fat32").unwrap(), 4_294_967_295);
        assert_eq!(parse_size("DVD").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("bd25").unwrap(), 25_000_000_000);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        for bad in ["", "G", "4X", "-1G", "100", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn write_parts(dir: &Path, data: &[u8], limit: Option<u64>, chunk: usize) -> Vec<Part> {
        let mut w = PartWriter::new(dir, "b.airlock", limit);
        for c in data.chunks(chunk) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn parts_cut_at_the_limit_and_read_back_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_000), 3333);
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "b.airlock.001",
                "b.airlock.002",
                "b.airlock.003",
                "b.airlock.004",
                "b.airlock.005"
            ]
        );
        assert!(parts.iter().all(|p| p.size == 10_000));
        assert_eq!(parts[2].digest, Digest::of(&data[20_000..30_000]));
        // No temporaries are left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        for first in [
            "b.airlock.001",
            "b.airlock.003",
            "b.airlock",
            "b.airlock.sums",
        ] {
            if first == "b.airlock.sums" {
                std::fs::write(dir.path().join(first), Sums::of(&parts).to_text()).unwrap();
            }
            let files = BundleFiles::locate(&dir.path().join(first)).unwrap();
            assert_eq!(files.parts.len(), 5, "{first}");
            let mut back = Vec::new();
            files.reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{first}");
        }
    }

    #[test]
    fn an_unsplit_bundle_is_one_part_and_a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let parts = write_parts(dir.path(), b"hello", None, 2);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "b.airlock");
        let mut w = PartWriter::new(dir.path(), "c.airlock", Some(4096));
        w.write_all(&[1u8; 10_000]).unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["b.airlock"]);
    }

    #[test]
    fn sums_round_trip_and_refuse_paths() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a");
        let text = format!("{}  a.001\n{} *a.002\n", d.hex(), d.hex());
        let s = Sums::parse(&text, p).unwrap();
        assert_eq!(s.lines[1].0, "a.002");
        for bad in [
            format!("{}  ../a.001\n", d.hex()),
            format!("{}  /etc/passwd\n", d.hex()),
            format!("{} a.001\n", d.hex()),
            format!("{}  a\n{}  a\n", d.hex(), d.hex()),
            "nothex  a\n".to_string(),
            String::new(),
        ] {
            assert!(Sums::parse(&bad, p).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn layout_comment_round_trips() {
        let l = Layout {
            parts: 5,
            total: 48_000,
            part_size: Some(10_000),
        };
        assert_eq!(Layout::parse_comment(&l.comment()), Some(l));
        assert_eq!(l.size_of(0), 10_000);
        assert_eq!(l.size_of(4), 8_000);
    }

    /// Five signed parts, then each kind of damage is named exactly.
    #[test]
    fn problems_are_named_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (sk, pk, _) = crate::sign::generate_keypair(keys.path(), None).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        let trust = TrustSet::new(vec![crate::sign::TrustedKey::load(&pk).unwrap()]);
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_000), 4096);
        write_sums(dir.path(), "b.airlock", &parts, Some(10_000), &key).unwrap();
        let p = |n: usize| dir.path().join(part_name("b.airlock", n));
        let check = || {
            let files = BundleFiles::locate(&p(1)).unwrap();
            let sums = SignedSums::load(&files, Some(&trust)).unwrap();
            let found = sums.check_all(&files, &|_| {}).unwrap();
            found.iter().map(|x| x.to_string()).collect::<Vec<_>>()
        };
        assert!(check().is_empty(), "{:?}", check());
        // Another bundle beside it is not a stray of this one.
        std::fs::write(dir.path().join("b.airlock-old.001"), b"x").unwrap();
        assert!(check().is_empty(), "{:?}", check());

        // A flipped byte in part 3.
        let orig3 = std::fs::read(p(3)).unwrap();
        let mut bad = orig3.clone();
        bad[77] ^= 1;
        std::fs::write(p(3), &bad).unwrap();
        let found = check();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("b.airlock.003: corrupt: expected sha256 "),
            "{found:?}"
        );
        std::fs::write(p(3), &orig3).unwrap();

        // Renamed.
        std::fs::rename(p(3), dir.path().join("b.airlock.3")).unwrap();
        assert_eq!(
            check(),
            ["b.airlock.003: missing; its content is in b.airlock.3 (renamed?)"]
        );
        std::fs::rename(dir.path().join("b.airlock.3"), p(3)).unwrap();

        // Missing outright.
        std::fs::rename(p(4), keys.path().join("away")).unwrap();
        assert_eq!(check(), ["b.airlock.004: missing"]);
        let files = BundleFiles::locate(&p(1)).unwrap();
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(
            sums.check_layout(&files),
            [PartProblem::Missing {
                part: "b.airlock.004".into(),
                found_as: None
            }]
        );
        std::fs::rename(keys.path().join("away"), p(4)).unwrap();

        // Swapped (reordered).
        let two = std::fs::read(p(2)).unwrap();
        std::fs::write(p(2), &orig3).unwrap();
        std::fs::write(p(3), &two).unwrap();
        let found = check();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("b.airlock.002: holds the content of b.airlock.003"));
        assert!(found[1].starts_with("b.airlock.003: holds the content of b.airlock.002"));
        std::fs::write(p(2), &two).unwrap();
        std::fs::write(p(3), &orig3).unwrap();

        // Duplicated: a copy beside the parts.
        std::fs::copy(p(2), dir.path().join("b.airlock.002.copy")).unwrap();
        assert_eq!(
            check(),
            ["b.airlock.002.copy: not in the signed sums; it is a copy of b.airlock.002 (duplicated part)"]
        );
        std::fs::remove_file(dir.path().join("b.airlock.002.copy")).unwrap();

        // Truncated: named from the signed layout before hashing.
        std::fs::write(p(5), &data[40_000..45_000]).unwrap();
        let files = BundleFiles::locate(&p(1)).unwrap();
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(
            sums.check_layout(&files)
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>(),
            ["b.airlock.005: 5000 bytes, the signed sums say 10000 (truncated)"]
        );
        assert!(check()[0].starts_with("b.airlock.005: corrupt"));
    }

    #[test]
    fn a_sums_file_without_signature_or_with_a_moved_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (sk, pk, _) = crate::sign::generate_keypair(keys.path(), None).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        let trust = TrustSet::new(vec![crate::sign::TrustedKey::load(&pk).unwrap()]);
        let parts = write_parts(dir.path(), &[5u8; 9000], Some(4096), 1000);
        let (sums, sig) = write_sums(dir.path(), "b.airlock", &parts, Some(4096), &key).unwrap();
        let files = BundleFiles::locate(&sums).unwrap();
        assert_eq!(files.parts.len(), 3);
        let ok = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(ok.signer, Some(key.key_id()));
        assert_eq!(ok.layout.unwrap().parts, 3);
        // A header signature over the same bytes is not a sums signature.
        std::fs::write(&sig, key.sign(&std::fs::read(&sums).unwrap())).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert!(e.to_string().contains("not a sums signature"), "{e}");
        std::fs::remove_file(&sig).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Trust);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
