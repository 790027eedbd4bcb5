//! `extract`: the verified OCI layout (plus the signed header) written into a directory,
//! with the bundle's models as an Ollama store under `ollama/models/` (hard links to the
//! layout's blobs) and its files under `files/volume/<NAME>/…` and `files/path/<abs path>/…`.
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
    header: Option<airlock_bundle::Header>,
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
        self.header = Some(v.header.clone());
        Ok(true)
    }

    /// Everything verified: lay out the models and files views.
    fn finish(&mut self) -> Result<(), airlock_bundle::BundleError> {
        let h = self.header.take().expect("header read before finish");
        self.views(&h)
            .map_err(|e| airlock_bundle::BundleError::Output {
                entry: "ollama/ and files/".into(),
                source: e,
            })
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, self.create(&entry.path)?);
        copy_large(data, &mut out)?;
        out.flush()
    }
}

impl ExtractVisitor {
    fn views(&self, h: &airlock_bundle::Header) -> io::Result<()> {
        use airlock_bundle::header::Target;
        use airlock_bundle::ollama::{self, ModelName};
        use std::os::unix::fs::PermissionsExt as _;
        let blob = |d: &airlock_bundle::Digest| self.tmp.join(d.blob_path());
        let store = self.tmp.join("ollama/models");
        for m in &h.models {
            // Validated with the header: every part is a safe path component.
            let name = ModelName::parse(&m.name).map_err(io::Error::other)?;
            fs::create_dir_all(store.join("blobs"))?;
            for d in std::iter::once(&m.config).chain(&m.layers) {
                let to = store.join(ollama::blob_path(d));
                if !to.exists() {
                    fs::hard_link(blob(d), &to).or_else(|_| fs::copy(blob(d), &to).map(drop))?;
                }
            }
            let mpath = store.join(name.manifest_path());
            fs::create_dir_all(mpath.parent().expect("parent"))?;
            fs::copy(blob(&m.manifest), &mpath)?;
        }
        let mut dirs = Vec::new();
        for f in &h.files {
            // Target paths and file paths were validated with the header (absolute and
            // normalised; relative without `..`).
            let base = match &f.target {
                Target::Volume(v) => self.tmp.join("files/volume").join(v),
                Target::Path(p) => self.tmp.join("files/path").join(p.trim_start_matches('/')),
            };
            let path = base.join(&f.path);
            let mode = f.mode_bits().map_err(io::Error::other)?;
            match &f.digest {
                None => {
                    fs::create_dir_all(&path)?;
                    dirs.push((path, mode));
                }
                Some(d) => {
                    fs::create_dir_all(path.parent().expect("parent"))?;
                    fs::copy(blob(d), &path)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                }
            }
        }
        // Directory modes last: a read-only directory must not stop its own files.
        for (path, mode) in dirs.into_iter().rev() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
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
        header: None,
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
