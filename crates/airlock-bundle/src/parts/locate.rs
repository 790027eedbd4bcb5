//! Finding a bundle's files on media from whatever file the user names, bounded and without
//! following links found beside it, and reading the parts as one stream.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::{BundleError, Digest};

use super::*;

/// What is at a path on the media, looked at without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
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
    /// Files the signed sums list beside the parts that are not parts ([`CARRIED`]: the
    /// unpacker of `build --with-unpacker`); never read as bundle bytes.
    pub carried: Vec<PathBuf>,
    /// Parity parts the signed sums list (`base.p01`, …, [`parity_index`]): read only to
    /// repair, never as bundle bytes.
    pub parity: Vec<PathBuf>,
    /// The sums file beside the parts, signed or not.
    pub sums: Option<PathBuf>,
    /// The sums as read and parsed by [`BundleFiles::locate`]: only when their signature is
    /// beside them, and then they name the parts.
    pub(super) listed: Option<(Vec<u8>, Sums)>,
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
                Some((b, _))
                    if (part_index(b, &name).is_some() || parity_index(b, &name).is_some())
                        && !path.is_dir() =>
                {
                    b.to_string()
                }
                _ => name.clone(),
            },
        };
        let mut files = BundleFiles {
            dir,
            base,
            parts: Vec::new(),
            carried: Vec::new(),
            parity: Vec::new(),
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
                    if is_carried(n) {
                        files.carried.push(p);
                        continue;
                    }
                    if parity_index(&files.base, n).is_some() {
                        files.parity.push(p);
                        continue;
                    }
                    // A listed part that is a link is not followed: the reader refuses it
                    // when it gets there, the checks name it, and repair replaces it.
                    files.sizes.push(match files.look(&p) {
                        Found::File(size) => Some(size),
                        Found::Link | Found::Absent => None,
                    });
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
                Some(_) if files.listed.is_some() => {
                    format!("; {base}{SUMS_SUFFIX} lists no part, only carried files")
                }
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

    pub(super) fn look(&self, p: &Path) -> Found {
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
    pub(super) fn present(&self, p: &Path) -> Result<Option<u64>, BundleError> {
        match self.look(p) {
            Found::File(size) => Ok(Some(size)),
            Found::Link => Err(link_refused(p)),
            Found::Absent => Ok(None),
        }
    }

    /// Opens one of the bundle's files for reading (see [`open_regular`]).
    pub(super) fn open(&self, p: &Path) -> Result<File, BundleError> {
        open_regular(p, self.follows(p)).map_err(|e| match e.kind() {
            io::ErrorKind::Other => BundleError::Malformed(e.to_string()),
            _ => BundleError::io(p, e),
        })
    }

    /// At most `cap` bytes of `p`; more is a malformed bundle.
    pub(super) fn read_capped(&self, p: &Path, cap: u64) -> Result<Vec<u8>, BundleError> {
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

    pub(super) fn strays_sized(&self) -> Vec<(PathBuf, u64)> {
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
            .filter(|(p, _)| !self.parts.iter().chain(&self.parity).any(|q| q == p))
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
                problems: vec![match self.look(&self.parts[i]) {
                    Found::Link => PartProblem::Link {
                        part: file_name(&self.parts[i]),
                    },
                    _ => PartProblem::Missing {
                        part: file_name(&self.parts[i]),
                        found_as: None,
                    },
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

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

pub(super) fn link_refused(p: &Path) -> BundleError {
    BundleError::Malformed(link_message(p))
}

pub(super) fn link_message(p: &Path) -> String {
    format!(
        "{} is a symbolic link: links found beside the file named on the command line are not followed",
        crate::text::escape(&p.to_string_lossy())
    )
}

/// Opens `path` for reading if it is a regular file: without blocking (a FIFO or device
/// put in a part's place is refused, not waited on) and, unless `follow`, without following
/// a symbolic link in its last component. A link or a file of another kind is an error of
/// kind `Other` whose message names it.
pub(super) fn open_regular(path: &Path, follow: bool) -> io::Result<File> {
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
