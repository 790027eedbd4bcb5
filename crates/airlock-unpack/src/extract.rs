//! `extract`: the verified OCI layout (plus the signed header) written into a directory.
//! Everything goes into a temp sibling first and is renamed into place only after the last
//! digest checked, so a refused bundle leaves nothing behind.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use airlock_bundle::hashing::copy_large;
use airlock_bundle::header::{Entry, HEADER_PATH, SIGNATURE_PATH};
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};

use crate::UnpackError;

struct ExtractVisitor {
    tmp: PathBuf,
}

impl ExtractVisitor {
    fn create(&self, rel: &str) -> io::Result<fs::File> {
        // Paths come from a verified header whose entry paths were validated
        // (oci-layout, index.json, blobs/sha256/<hex>): no traversal possible.
        let p = self.tmp.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::File::create(p)
    }
}

impl Visitor for ExtractVisitor {
    fn header(&mut self, v: &Verified) -> Result<bool, airlock_bundle::BundleError> {
        let write = |rel: &str, data: &[u8]| {
            self.create(rel)
                .and_then(|mut f| f.write_all(data))
                .map_err(|e| airlock_bundle::BundleError::Output {
                    entry: rel.into(),
                    source: e,
                })
        };
        write(HEADER_PATH, &v.header_bytes)?;
        write(SIGNATURE_PATH, v.signature.as_bytes())?;
        Ok(true)
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, self.create(&entry.path)?);
        copy_large(data, &mut out)?;
        out.flush()
    }
}

/// Extracts into `dest`, which must not exist or be an empty directory.
pub fn extract(
    input: impl Read + Send + 'static,
    opts: &ReadOptions<'_>,
    dest: &Path,
) -> Result<Verified, UnpackError> {
    let env = |e: io::Error, p: &Path| UnpackError::Environment(format!("{}: {e}", p.display()));
    if dest.exists() {
        let empty = fs::read_dir(dest)
            .map_err(|e| env(e, dest))?
            .next()
            .is_none();
        if !empty {
            return Err(UnpackError::Usage(format!(
                "{} exists and is not empty",
                dest.display()
            )));
        }
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| env(e, parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".airlock-extract-")
        .tempdir_in(parent)
        .map_err(|e| env(e, parent))?;
    let mut visitor = ExtractVisitor {
        tmp: tmp.path().to_path_buf(),
    };
    let verified = read_bundle(input, opts, &mut visitor)?;
    if dest.exists() {
        fs::remove_dir(dest).map_err(|e| env(e, dest))?;
    }
    let kept = tmp.keep();
    fs::rename(&kept, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        env(e, dest)
    })?;
    Ok(verified)
}
