//! The bundle as files on media: one file, or parts `NAME.001`, `NAME.002`, … cut at a size,
//! plus `NAME.sums` (lines `sha256sum -c` reads) and `NAME.sums.minisig` (a minisign signature
//! over the sums). This module owns cutting the stream into parts as it is written, finding
//! the parts again from whatever file the user names, reading them as one stream, and
//! naming exactly which part is missing, extra, renamed, reordered or corrupt.
//!
//! The sums are an outer layer for transfer stations: they can be checked with standard tools
//! and without the decryption key. The bundle's own signed header still covers every byte of
//! the content; reading never depends on the sums being right.
//!
//! Everything found on media is looked at before any signature is checked, so the work is
//! bounded ([`MAX_PARTS`], [`MAX_SUMS_SIZE`], nothing hashed that cannot be a part), links
//! beside the named file are not followed, and parts are opened one at a time.

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

/// The most parts a bundle may have: the writer refuses to cut more, and a reader refuses a
/// sums file listing more, before it looks at any of them. (10 000 parts of `fat32` are
/// 40 TiB; of 700M, 6.8 TiB.)
pub const MAX_PARTS: usize = 10_000;
/// A sums file is read only up to this size, before its signature is checked: 10 000 lines
/// of a digest, two spaces and a 255-byte name fit.
pub const MAX_SUMS_SIZE: u64 = 4 << 20;
/// A sums signature is a few hundred bytes.
const MAX_SIG_SIZE: u64 = 4096;
/// The longest file name Linux file systems take.
const MAX_NAME: usize = 255;

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
        if self.done.len() >= MAX_PARTS {
            return Err(io::Error::other(format!(
                "more than {MAX_PARTS} parts: give a larger --split"
            )));
        }
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
            total: parts.iter().map(|p| p.size).fold(0, u64::saturating_add),
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

    /// The layout in a sums signature's trusted comment, if it is one a writer can make:
    /// at least one part, and with several, every part but the last `part-size` bytes and
    /// the last at most that (so that no size below overflows).
    pub fn parse_comment(c: &str) -> Option<Layout> {
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

/// What is at a path on the media, looked at without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A regular file of this size.
    File(u64),
    /// A symbolic link this reader does not follow.
    Link,
    /// Nothing, or nothing a bundle could be in (a directory, a FIFO, a device).
    Absent,
}

/// Where a bundle's files are: its parts in order, and its sums and signature if present.
///
/// Everything here is found on media that anyone may have written, before any signature is
/// checked, so the work is bounded: the sums file is read once, capped, and parsed once;
/// parts are looked at with `lstat` and opened one at a time as the reader reaches them.
/// Files are opened without following a symbolic link, except the one path the user named
/// (a link the user gives is their choice; a link found beside it is not).
#[derive(Debug, Clone)]
pub struct BundleFiles {
    pub dir: PathBuf,
    /// The bundle name the files share (`stack.airlock`).
    pub base: String,
    pub parts: Vec<PathBuf>,
    /// The sums file beside the parts, signed or not.
    pub sums: Option<PathBuf>,
    /// The sums as read and parsed by [`BundleFiles::locate`]: only when their signature is
    /// beside them, and then they name the parts.
    listed: Option<(Vec<u8>, Sums)>,
    /// Each part's size when it was found (`None`: listed in the sums, not there).
    sizes: Vec<Option<u64>>,
    /// The file name the user gave: the one file that is opened through a link.
    named: Option<std::ffi::OsString>,
}

impl BundleFiles {
    /// Finds the bundle from what the user named: the bundle file, its first (or any) part,
    /// its sums file or signature, or the bundle name when only parts exist. With a signed
    /// sums file (its `.minisig` beside it) the parts are the ones it lists, in its order;
    /// otherwise they are `base`, or `base.001`, `base.002`, … up to the first gap: a sums
    /// file without its signature does not choose what is read.
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
        let mut files = BundleFiles {
            dir,
            base,
            parts: Vec::new(),
            sums: None,
            listed: None,
            sizes: Vec::new(),
            named: path.file_name().map(|n| n.to_os_string()),
        };
        let sums = files.dir.join(format!("{}{SUMS_SUFFIX}", files.base));
        if files.present(&sums)?.is_some() {
            files.sums = Some(sums.clone());
            let sig = files.sums_signature().expect("sums present");
            if files.present(&sig)?.is_some() {
                let bytes = files.read_capped(&sums, MAX_SUMS_SIZE)?;
                let listed = Sums::parse(&bytes, &sums)?;
                for (n, _) in &listed.lines {
                    let p = files.dir.join(n);
                    files.sizes.push(files.present(&p)?);
                    files.parts.push(p);
                }
                files.listed = Some((bytes, listed));
            }
        }
        if files.listed.is_none() {
            let whole = files.dir.join(&files.base);
            if let Some(size) = files.present(&whole)? {
                files.parts.push(whole);
                files.sizes.push(Some(size));
            } else {
                for i in 1.. {
                    let p = files.dir.join(part_name(&files.base, i));
                    let Some(size) = files.present(&p)? else {
                        break;
                    };
                    if i > MAX_PARTS {
                        return Err(BundleError::Malformed(format!(
                            "{}: more than {MAX_PARTS} parts, the most a bundle may have",
                            p.display()
                        )));
                    }
                    files.parts.push(p);
                    files.sizes.push(Some(size));
                }
            }
        }
        if files.parts.is_empty() {
            let base = &files.base;
            let unsigned = match &files.sums {
                Some(_) => format!(
                    "; {base}{SUMS_SUFFIX} is there, but without its signature it does not choose the files"
                ),
                None => String::new(),
            };
            return Err(BundleError::Usage(format!(
                "{}: no such bundle (looked for {base}, {}, {base}{SUMS_SUFFIX}){unsigned}",
                path.display(),
                part_name(base, 1)
            )));
        }
        Ok(files)
    }

    /// Whether `p` is the file the user named (and so may be read through a link).
    fn follows(&self, p: &Path) -> bool {
        self.named.is_some() && p.file_name() == self.named.as_deref()
    }

    fn look(&self, p: &Path) -> Found {
        let m = if self.follows(p) {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        };
        match m {
            Ok(m) if m.is_file() => Found::File(m.len()),
            Ok(m) if m.file_type().is_symlink() => Found::Link,
            _ => Found::Absent,
        }
    }

    /// The size of the regular file at `p`, `None` if there is none; a link found beside
    /// the named file is refused.
    fn present(&self, p: &Path) -> Result<Option<u64>, BundleError> {
        match self.look(p) {
            Found::File(size) => Ok(Some(size)),
            Found::Link => Err(link_refused(p)),
            Found::Absent => Ok(None),
        }
    }

    /// Opens one of the bundle's files for reading (see [`open_regular`]).
    fn open(&self, p: &Path) -> Result<File, BundleError> {
        open_regular(p, self.follows(p)).map_err(|e| match e.kind() {
            io::ErrorKind::Other => BundleError::Malformed(e.to_string()),
            _ => BundleError::io(p, e),
        })
    }

    /// At most `cap` bytes of `p`; more is a malformed bundle.
    fn read_capped(&self, p: &Path, cap: u64) -> Result<Vec<u8>, BundleError> {
        let mut bytes = Vec::new();
        self.open(p)?
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::io(p, e))?;
        if bytes.len() as u64 > cap {
            return Err(BundleError::Malformed(format!(
                "{} is more than {cap} bytes, the most it may have",
                p.display()
            )));
        }
        Ok(bytes)
    }

    /// Part `i` (0-based) opened for reading.
    pub fn open_part(&self, i: usize) -> Result<File, BundleError> {
        let p = self.parts.get(i).ok_or_else(|| {
            BundleError::Usage(format!("{}: the bundle has no part {}", self.base, i + 1))
        })?;
        self.open(p)
    }

    /// Whether the parts are the ones a signed sums file lists (its signature beside it).
    pub fn listed_by_sums(&self) -> bool {
        self.listed.is_some()
    }

    /// sha256 of the sums file as read (when it lists the parts): it pins every part.
    pub fn sums_digest(&self) -> Option<Digest> {
        self.listed.as_ref().map(|(b, _)| Digest::of(b))
    }

    /// The parts by name, for messages: `stack.airlock`, or `stack.airlock.001 …
    /// stack.airlock.060 (60 parts)`.
    pub fn describe_parts(&self) -> String {
        let name =
            |p: &PathBuf| crate::text::escape(&p.file_name().unwrap_or_default().to_string_lossy());
        match self.parts.as_slice() {
            [] => "nothing".into(),
            [one] => name(one),
            [first, .., last] => format!(
                "{} … {} ({} parts)",
                name(first),
                name(last),
                self.parts.len()
            ),
        }
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
    /// part renamed, copied, or left from another build. Regular files only (links and
    /// other kinds are not followed).
    pub fn strays(&self) -> Vec<PathBuf> {
        self.strays_sized().into_iter().map(|(p, _)| p).collect()
    }

    fn strays_sized(&self) -> Vec<(PathBuf, u64)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let prefix = format!("{}.", self.base);
        let sums = format!("{}{SUMS_SUFFIX}", self.base);
        let mut out: Vec<(PathBuf, u64)> = rd
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && !n.starts_with(&sums)
            })
            .filter_map(|e| {
                let m = std::fs::symlink_metadata(e.path()).ok()?;
                m.is_file().then(|| (e.path(), m.len()))
            })
            .filter(|(p, _)| !self.parts.iter().any(|q| q == p))
            .collect();
        out.sort();
        out
    }

    /// All parts as one stream, without copying them together. Each part is opened when
    /// the stream reaches it and closed at its end, so a bundle of more parts than the
    /// process may hold open files reads all the same.
    pub fn reader(&self) -> Result<PartsReader, BundleError> {
        if let Some(i) = self.sizes.iter().position(Option::is_none) {
            return Err(BundleError::Parts {
                sums: self.sums.clone().unwrap_or_default(),
                problems: vec![PartProblem::Missing {
                    part: file_name(&self.parts[i]),
                    found_as: None,
                }],
            });
        }
        Ok(PartsReader {
            parts: self
                .parts
                .iter()
                .map(|p| (p.clone(), self.follows(p)))
                .collect(),
            next: 0,
            current: None,
        })
    }

    /// The parts' bytes, as found (a missing part counts 0; at most `u64::MAX`).
    pub fn total_size(&self) -> u64 {
        self.sizes
            .iter()
            .flatten()
            .fold(0, |a, &b| a.saturating_add(b))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn link_refused(p: &Path) -> BundleError {
    BundleError::Malformed(link_message(p))
}

fn link_message(p: &Path) -> String {
    format!(
        "{} is a symbolic link: links found beside the file named on the command line are not followed",
        crate::text::escape(&p.to_string_lossy())
    )
}

/// Opens `path` for reading if it is a regular file: without blocking (a FIFO or device
/// put in a part's place is refused, not waited on) and, unless `follow`, without following
/// a symbolic link in its last component. A link or a file of another kind is an error of
/// kind `Other` whose message names it.
fn open_regular(path: &Path, follow: bool) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP && !follow {
            io::Error::other(link_message(path))
        } else {
            io::Error::from(e)
        }
    })?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{}: not a regular file",
            crate::text::escape(&path.to_string_lossy())
        )));
    }
    Ok(file)
}

/// Reads parts one after the other, each opened when the previous one ends.
#[derive(Debug)]
pub struct PartsReader {
    /// Each part, and whether it may be opened through a link.
    parts: Vec<(PathBuf, bool)>,
    next: usize,
    current: Option<File>,
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some((p, follow)) = self.parts.get(self.next) else {
                    return Ok(0);
                };
                let f = open_regular(p, *follow).map_err(|e| match e.kind() {
                    io::ErrorKind::Other => e,
                    k => io::Error::new(
                        k,
                        format!("{}: {e}", crate::text::escape(&p.to_string_lossy())),
                    ),
                })?;
                self.current = Some(f);
                self.next += 1;
            }
            let n = self.current.as_mut().expect("a part is open").read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // Closed before the next is opened: one descriptor at a time.
            self.current = None;
        }
    }
}

/// What is wrong with one file of a bundle on media. Names are shown escaped: a stray's
/// name is whatever the media holds.
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
        let layout = match comment {
            Some(c) if c.starts_with(SUMS_COMMENT) => match Layout::parse_comment(&c) {
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
            sums,
            layout,
            signer,
        })
    }

    /// The layout, if it describes as many parts as the sums list.
    fn layout(&self) -> Option<Layout> {
        self.layout.filter(|l| l.parts == self.sums.lines.len())
    }

    /// What can be found without reading content: listed parts that are missing or the
    /// wrong size, and stray files.
    pub fn check_layout(&self, files: &BundleFiles) -> Vec<PartProblem> {
        let mut problems = Vec::new();
        let layout = self.layout();
        for (i, (name, _)) in self.sums.lines.iter().enumerate() {
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
                Found::Link | Found::Absent => problems.push(PartProblem::Missing {
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
            Absent,
        }
        let layout = self.layout();
        // Each listed part's fate is decided here, once.
        let mut to_hash: Vec<(PathBuf, u64)> = Vec::new();
        let fates: Vec<Fate> = self
            .sums
            .lines
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let path = files.dir.join(name);
                let Found::File(actual) = files.look(&path) else {
                    return Fate::Absent;
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
        for ((name, expected), fate) in self.sums.lines.iter().zip(fates) {
            match fate {
                Fate::Absent => problems.push(PartProblem::Missing {
                    part: name.clone(),
                    found_as: stray_digests
                        .iter()
                        .find(|(_, d)| d == expected)
                        .map(|(n, _)| n.clone()),
                }),
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
        Ok(problems)
    }
}

/// sha256 of each file, several files at once (one per core): parts are independent, and
/// one sha256 stream is the limit of one core. Each file is read up to the size it had when
/// it was looked at (one byte more is an error: it grew), so the work stays bounded.
fn hash_files(
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

fn hash_file(
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

    /// A reader refuses more than MAX_PARTS parts, so the writer never cuts them.
    #[test]
    fn the_writer_cuts_no_more_parts_than_a_reader_takes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::new(dir.path(), "b.airlock", Some(4096));
        let chunk = vec![7u8; 4096 * 100];
        for _ in 0..MAX_PARTS / 100 {
            w.write_all(&chunk).unwrap();
        }
        let e = w.write_all(b"one byte more").unwrap_err();
        assert!(e.to_string().contains("more than 10000 parts"), "{e}");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn sums_round_trip_and_refuse_paths() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a");
        let text = format!("{}  a.001\n{} *a.002\n", d.hex(), d.hex());
        let s = Sums::parse(text.as_bytes(), p).unwrap();
        assert_eq!(s.lines[1].0, "a.002");
        for bad in [
            format!("{}  ../a.001\n", d.hex()),
            format!("{}  /etc/passwd\n", d.hex()),
            format!("{} a.001\n", d.hex()),
            format!("{}  a\n{}  a\n", d.hex(), d.hex()),
            "nothex  a\n".to_string(),
            String::new(),
        ] {
            assert!(Sums::parse(bad.as_bytes(), p).is_err(), "{bad:?} accepted");
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
        assert_eq!(l.size_of(0), Some(10_000));
        assert_eq!(l.size_of(4), Some(8_000));
        assert_eq!(l.size_of(5), None);
        let one = Layout::of(&[], None);
        assert_eq!(one.size_of(0), None);
    }

    /// Numbers in a trusted comment are the signer's (or, unverified, anyone's): no layout
    /// makes the arithmetic wrap (or panic in a debug build).
    #[test]
    fn layouts_that_overflow_are_not_layouts() {
        let max = u64::MAX;
        for c in [
            format!("{SUMS_COMMENT} parts=4 part-size={max} total=4"),
            format!("{SUMS_COMMENT} parts=3 part-size=10 total=5"),
            format!("{SUMS_COMMENT} parts=3 part-size=10 total=31"),
            format!("{SUMS_COMMENT} parts=0 total=0"),
            format!("{SUMS_COMMENT} parts=2 total=10"),
            format!("{SUMS_COMMENT} parts=1 part-size=5 total=5"),
            format!("{SUMS_COMMENT} parts={max} part-size=2 total={max}"),
            format!("{SUMS_COMMENT} parts=18446744073709551616 total=1"),
        ] {
            assert_eq!(Layout::parse_comment(&c), None, "{c}");
        }
        let l = Layout::parse_comment(&format!(
            "{SUMS_COMMENT} parts=2 part-size={max} total={max}"
        ))
        .unwrap();
        assert_eq!((l.size_of(0), l.size_of(1)), (Some(max), Some(0)));
        // Built by hand, past what parse_comment accepts: None, not a wrapped number.
        let l = Layout {
            parts: 4,
            total: 4,
            part_size: Some(max),
        };
        assert_eq!(l.size_of(3), None);
        assert_eq!(l.size_of(1), Some(max));
        let sizes = Layout::of(
            &[
                Part {
                    name: "a".into(),
                    digest: Digest::of(b""),
                    size: max,
                },
                Part {
                    name: "b".into(),
                    digest: Digest::of(b""),
                    size: 1,
                },
            ],
            Some(max),
        );
        assert_eq!(sizes.total, max);
    }

    #[test]
    fn sums_are_bounded_and_parsed_in_linear_time() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a").hex();
        // The most parts a bundle may have, a name repeated only on the last line: found
        // (a quadratic check took seconds for this many).
        let mut text: String = (0..MAX_PARTS - 1)
            .map(|i| format!("{d}  b.airlock.{i:05}\n"))
            .collect();
        text.push_str(&format!("{d}  b.airlock.00000\n"));
        let started = std::time::Instant::now();
        let e = Sums::parse(text.as_bytes(), p).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "line {MAX_PARTS}: b.airlock.00000 is listed twice"
            )),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // One line more than that many parts.
        let text: String = (0..=MAX_PARTS)
            .map(|i| format!("{d}  b.airlock.{i:05}\n"))
            .collect();
        let e = Sums::parse(text.as_bytes(), p).unwrap_err();
        assert!(e.to_string().contains("more than 10000 parts"), "{e}");
        // More bytes than a sums file may have.
        let big = vec![b'\n'; MAX_SUMS_SIZE as usize + 1];
        let e = Sums::parse(&big, p).unwrap_err();
        assert!(e.to_string().contains("more than 4194304 bytes"), "{e}");
    }

    #[test]
    fn sums_that_are_not_text_or_name_controls_are_malformed() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a").hex();
        let mut bytes = format!("{d}  a\n{d}  b").into_bytes();
        bytes.push(0xff);
        let e = Sums::parse(&bytes, p).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity, "{e}");
        assert!(e.to_string().contains("x.sums line 2: not UTF-8"), "{e}");
        for name in ["x\u{1b}]0;PWNED\u{7}", "a\u{202e}b", &"n".repeat(256)] {
            let e = Sums::parse(format!("{d}  {name}\n").as_bytes(), p).unwrap_err();
            let shown = e.to_string();
            assert!(!crate::text::has_controls(&shown), "{shown:?}");
            assert!(shown.contains("is not a part name"), "{shown}");
        }
        // The digest is not echoed either.
        let e = Sums::parse("\u{1b}[2J  a\n".as_bytes(), p).unwrap_err();
        assert!(!crate::text::has_controls(&e.to_string()), "{e}");
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
        // … and not hashed: its size already says it is not the part.
        assert_eq!(
            check(),
            ["b.airlock.005: 5000 bytes, the signed sums say 10000 (truncated)"]
        );
        std::fs::write(p(5), &data[40_000..]).unwrap();

        // A stray larger than any part is named by its size, never read: 200 GiB, sparse.
        let huge = dir.path().join("b.airlock.999");
        File::create(&huge).unwrap().set_len(200 << 30).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            check(),
            ["b.airlock.999: not a part of this bundle (not in the signed sums); 214748364800 bytes, larger than any part, so not hashed"]
        );
        // Also while saying where a missing part went.
        std::fs::rename(p(2), dir.path().join("b.airlock.two")).unwrap();
        assert_eq!(
            check(),
            [
                "b.airlock.002: missing; its content is in b.airlock.two (renamed?)",
                "b.airlock.999: not a part of this bundle (not in the signed sums); 214748364800 bytes, larger than any part, so not hashed"
            ]
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        std::fs::rename(dir.path().join("b.airlock.two"), p(2)).unwrap();
        std::fs::remove_file(&huge).unwrap();
        assert!(check().is_empty(), "{:?}", check());
    }

    #[test]
    fn links_beside_the_named_file_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(8192), 4096);
        assert_eq!(parts.len(), 3);
        let part = |n: usize| dir.path().join(part_name("b.airlock", n));
        // Part 2 moved away and linked back: same bytes, still refused, named.
        std::fs::rename(part(2), other.path().join("two")).unwrap();
        std::os::unix::fs::symlink(other.path().join("two"), part(2)).unwrap();
        let e = BundleFiles::locate(&part(1)).unwrap_err();
        assert!(matches!(e, BundleError::Malformed(_)), "{e}");
        assert!(
            e.to_string().contains("b.airlock.002 is a symbolic link"),
            "{e}"
        );
        // Named by the user, a link is read (their choice); the links beside it are not.
        assert_eq!(BundleFiles::locate(&part(2)).unwrap().parts.len(), 3);
        std::fs::rename(part(3), other.path().join("three")).unwrap();
        std::os::unix::fs::symlink(other.path().join("three"), part(3)).unwrap();
        let e = BundleFiles::locate(&part(2)).unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003 is a symbolic link"),
            "{e}"
        );
        std::fs::remove_file(part(3)).unwrap();
        std::fs::rename(other.path().join("three"), part(3)).unwrap();
        std::fs::remove_file(part(2)).unwrap();
        std::fs::rename(other.path().join("two"), part(2)).unwrap();
        let whole = other.path().join("whole.airlock");
        std::fs::write(&whole, &data).unwrap();
        let link = dir.path().join("w.airlock");
        std::os::unix::fs::symlink(&whole, &link).unwrap();
        let files = BundleFiles::locate(&link).unwrap();
        let mut back = Vec::new();
        files.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // A part replaced by a link after it was found is refused when it is reached.
        let files = BundleFiles::locate(&part(1)).unwrap();
        std::fs::rename(part(3), other.path().join("three")).unwrap();
        std::os::unix::fs::symlink(other.path().join("three"), part(3)).unwrap();
        let e = files
            .reader()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003 is a symbolic link"),
            "{e}"
        );
        // A FIFO put in a part's place after it was found is refused, not waited on.
        std::fs::remove_file(part(3)).unwrap();
        std::fs::rename(other.path().join("three"), part(3)).unwrap();
        let files = BundleFiles::locate(&part(1)).unwrap();
        std::fs::remove_file(part(3)).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(part(3))
            .status()
            .unwrap();
        assert!(fifo.success());
        let e = files
            .reader()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003: not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_sums_file_without_its_signature_does_not_choose_the_parts() {
        let dir = tempfile::tempdir().unwrap();
        write_parts(dir.path(), b"the real bundle", None, 100);
        std::fs::write(dir.path().join("old-release.bin"), b"something else").unwrap();
        let sums = dir.path().join("b.airlock.sums");
        std::fs::write(
            &sums,
            format!("{}  old-release.bin\n", Digest::of(b"something else").hex()),
        )
        .unwrap();
        for named in ["b.airlock", "b.airlock.sums"] {
            let files = BundleFiles::locate(&dir.path().join(named)).unwrap();
            assert_eq!(files.parts, [dir.path().join("b.airlock")], "{named}");
            assert!(!files.listed_by_sums());
            assert_eq!(files.describe_parts(), "b.airlock");
        }
        // With a signature beside it (valid or not: that is checked next), the sums list
        // the parts.
        std::fs::write(dir.path().join("b.airlock.sums.minisig"), b"x").unwrap();
        let files = BundleFiles::locate(&dir.path().join("b.airlock")).unwrap();
        assert_eq!(files.parts, [dir.path().join("old-release.bin")]);
        assert!(files.listed_by_sums());
        assert_eq!(
            files.sums_digest(),
            Some(Digest::of(&std::fs::read(&sums).unwrap()))
        );
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
