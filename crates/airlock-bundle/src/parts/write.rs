//! Cutting the bundle stream into parts as it is written, and the sums beside them.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::sign::SigningKey;
use crate::{BundleError, Digest};

use super::*;

/// Creates the temp file `path` for a file of the set, new: whatever is at that name (a
/// previous run's leftover, or a link someone planted) is removed, never followed or
/// truncated, and `O_CREAT|O_EXCL` refuses a name that reappears in between. The name is
/// fixed (a killed whole-bundle build is resumed from it, see `airlock-pack`'s cache), so
/// this is what keeps a writable output directory from turning the build into a write
/// through someone else's link.
pub(crate) fn create_temp(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    File::options().write(true).create_new(true).open(path)
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
        let file = create_temp(&tmp)
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

/// Writes `dir/base.sums` and its signature, each through a temp file and a rename (the
/// signature last: a sums file without one is incomplete). Returns both paths.
pub fn write_sums(
    dir: &Path,
    base: &str,
    parts: &[Part],
    part_size: Option<u64>,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), BundleError> {
    write_sums_carrying(dir, base, parts, part_size, &[], key)
}

/// [`write_sums`], listing after the parts the files `carried` beside them in `dir` (names
/// from [`CARRIED`]): `sha256sum -c` and `minisign -V` check them with the parts, and the
/// trusted comment becomes [`SUMS_COMMENT_V2`] with their count. Without carried files the
/// sums are v1, as every earlier writer made them.
pub fn write_sums_carrying(
    dir: &Path,
    base: &str,
    parts: &[Part],
    part_size: Option<u64>,
    carried: &[Part],
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), BundleError> {
    write_sums_with(dir, base, parts, part_size, None, carried, key)
}

/// Refuses a set of `data` parts, `parity` parity parts and `carried` files that a sums
/// file could not list: a reader takes at most [`MAX_PARTS`] lines.
pub fn set_fits(base: &str, data: usize, parity: usize, carried: usize) -> Result<(), BundleError> {
    if data + parity + carried <= MAX_PARTS {
        return Ok(());
    }
    Err(BundleError::Usage(format!(
        "{}: {data} data parts, {parity} parity parts and {carried} carried files are more than the {MAX_PARTS} files a signed sums file may list; give a larger --split or fewer parity parts",
        crate::text::escape(base)
    )))
}

/// [`write_sums_carrying`], listing the parity parts of [`parity::write_parity`] after the
/// data parts and before the carried files: then the sums are v3 ([`SUMS_COMMENT_V3`]),
/// their trusted comment recording the parity scheme. Without parity, as
/// [`write_sums_carrying`] (v1 or v2, byte for byte).
pub fn write_sums_with(
    dir: &Path,
    base: &str,
    parts: &[Part],
    part_size: Option<u64>,
    parity: Option<(&parity::Scheme, &[Part])>,
    carried: &[Part],
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), BundleError> {
    if let Some(c) = carried.iter().find(|c| !is_carried(&c.name)) {
        return Err(BundleError::Usage(format!(
            "{}: not a file the sums may carry (only {})",
            crate::text::escape(&c.name),
            CARRIED.join(", ")
        )));
    }
    set_fits(
        base,
        parts.len(),
        parity.map_or(0, |(_, pp)| pp.len()),
        carried.len(),
    )?;
    let mut sums = Sums::of(parts);
    let layout = Layout::of(parts, part_size);
    let comment = match parity {
        Some((scheme, pp)) => {
            let named = pp
                .iter()
                .enumerate()
                .all(|(i, p)| p.name == parity_name(base, i + 1));
            if pp.len() != scheme.parity || scheme.data != parts.len() || !named {
                return Err(BundleError::Usage(format!(
                    "{base}: {} parity parts do not match the scheme ({} data, {} parity)",
                    pp.len(),
                    scheme.data,
                    scheme.parity
                )));
            }
            sums.lines
                .extend(pp.iter().map(|p| (p.name.clone(), p.digest)));
            layout.comment_with_parity(carried.len(), scheme)
        }
        None => layout.comment_carrying(carried.len()),
    };
    sums.lines
        .extend(carried.iter().map(|c| (c.name.clone(), c.digest)));
    let text = sums.to_text();
    let sig = key.sign_with(text.as_bytes(), &comment);
    let sums = dir.join(format!("{base}{SUMS_SUFFIX}"));
    let sig_path = dir.join(format!("{base}{SUMS_SUFFIX}{SIG_SUFFIX}"));
    for (path, data) in [(&sums, text.as_bytes()), (&sig_path, sig.as_bytes())] {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.partial"));
        create_temp(&tmp)
            .and_then(|mut f| f.write_all(data))
            .map_err(|e| BundleError::io(&tmp, e))?;
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
        let ours = name == base
            || part_index(base, &name).is_some()
            || parity_index(base, &name).is_some();
        if ours && !parts.iter().any(|p| p.name == name) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}
