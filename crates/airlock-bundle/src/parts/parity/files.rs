//! The parts of a set as files: [`FileShards`] reads them at offsets for the coder, and
//! [`write_parity`] writes a set's parity parts beside its data parts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{encode, ParityError, Scheme, ShardSource};
use crate::hashing::HashingWriter;
use crate::parts::write::create_temp;
use crate::parts::{parity_name, Part};
use crate::BundleError;

/// Data and parity parts as files, read at offsets. Files are kept open while there are at
/// most [`OPEN_AT_ONCE`] shards, else each read opens its file again (a set of more parts
/// than the process may hold open files codes all the same). Bytes past a file's end read as
/// zeros (the short last part). Files are opened by the opener given (by default by path,
/// never through a symbolic link: [`FileShards::new`]).
pub struct FileShards<'a> {
    paths: Vec<PathBuf>,
    open: Vec<OnceLock<File>>,
    opener: Opener<'a>,
}

/// How [`FileShards`] opens a shard's file by its name (from any of the coding threads).
type Opener<'a> = Box<dyn Fn(&Path) -> io::Result<File> + Sync + 'a>;

/// See [`FileShards`].
pub const OPEN_AT_ONCE: usize = 256;

impl std::fmt::Debug for FileShards<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileShards")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl FileShards<'static> {
    /// Shards `0..paths.len()`, in order (data parts, then parity parts), opened by path
    /// without following a symbolic link.
    pub fn new(paths: Vec<PathBuf>) -> FileShards<'static> {
        FileShards::with_opener(paths, open_plain)
    }
}

impl<'a> FileShards<'a> {
    /// Shards `0..names.len()`, each opened by `opener` (say, relative to a directory held
    /// open, so that no one can swap the directory in between).
    pub fn with_opener(
        names: Vec<PathBuf>,
        opener: impl Fn(&Path) -> io::Result<File> + Sync + 'a,
    ) -> FileShards<'a> {
        let open = names.iter().map(|_| OnceLock::new()).collect();
        FileShards {
            paths: names,
            open,
            opener: Box::new(opener),
        }
    }
}

impl ShardSource for FileShards<'_> {
    fn read_at(&self, shard: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let path = &self.paths[shard];
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let fresh;
        let file = if self.paths.len() <= OPEN_AT_ONCE {
            match self.open[shard].get() {
                Some(f) => f,
                None => {
                    // Two threads may open it at once: one file is kept, the other closed.
                    let f = (self.opener)(path).map_err(with_path)?;
                    self.open[shard].get_or_init(|| f)
                }
            }
        } else {
            fresh = (self.opener)(path).map_err(with_path)?;
            &fresh
        };
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(with_path(e)),
            }
        }
        buf[done..].fill(0);
        Ok(())
    }
}

/// Opens a part for reading without following a symbolic link (files beside a bundle are
/// not opened through links).
fn open_plain(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Computes `n` parity parts of the data `parts` (in `dir`, as [`super::PartWriter`] wrote
/// them, every one but the last `part_size` bytes) and writes them as `base.p01`, …, each
/// through a temp file renamed once all are complete. Returns the scheme and the parity
/// parts (name, sha256, size) for the sums.
pub fn write_parity(
    dir: &Path,
    base: &str,
    parts: &[Part],
    n: usize,
) -> Result<(Scheme, Vec<Part>), BundleError> {
    let part_size = parts.first().map_or(0, |p| p.size);
    if parts.len() + n > crate::parts::MAX_PARTS {
        return Err(BundleError::Usage(format!(
            "{base}: {} data and {n} parity parts are more than the {} files a set may have; give fewer parity parts or a larger --split",
            parts.len(),
            crate::parts::MAX_PARTS
        )));
    }
    let scheme = Scheme::new(parts.len(), n, part_size).ok_or_else(|| {
        BundleError::Usage(format!(
            "{base}: cannot compute {n} parity parts for {} data parts of {part_size} bytes (at most {} shards in all)",
            parts.len(),
            u16::MAX
        ))
    })?;
    let names: Vec<String> = (1..=n).map(|i| parity_name(base, i)).collect();
    let tmps: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.join(format!(".{n}.partial")))
        .collect();
    let cleanup = |tmps: &[PathBuf]| {
        for t in tmps {
            let _ = std::fs::remove_file(t);
        }
    };
    let result = (|| {
        let mut out = Vec::with_capacity(n);
        for t in &tmps {
            let f = create_temp(t).map_err(|e| BundleError::io(t, e))?;
            out.push(HashingWriter::new(io::BufWriter::with_capacity(1 << 16, f)));
        }
        let src = FileShards::new(parts.iter().map(|p| dir.join(&p.name)).collect());
        encode(&scheme, &src, &mut out).map_err(|e| match e {
            ParityError::Io(e) => BundleError::io(dir, e),
            e => BundleError::Usage(format!("{base}: parity: {e}")),
        })?;
        let mut made = Vec::with_capacity(n);
        for (h, name) in out.into_iter().zip(&names) {
            let (digest, size, _) = h.finish();
            made.push(Part {
                name: name.clone(),
                digest,
                size,
            });
        }
        for (t, name) in tmps.iter().zip(&names) {
            let to = dir.join(name);
            std::fs::rename(t, &to).map_err(|e| BundleError::io(&to, e))?;
        }
        Ok(made)
    })();
    match result {
        Ok(made) => Ok((scheme, made)),
        Err(e) => {
            cleanup(&tmps);
            Err(e)
        }
    }
}
