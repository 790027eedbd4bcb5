//! `extract`: the verified OCI layout (plus the signed header) written into a directory,
//! with the bundle's models as an Ollama store under `ollama/models/` (hard links to the
//! layout's blobs) and its files under `files/volume/<NAME>/…` and `files/path/<abs path>/…`.
//! Everything goes into a private temp sibling first (0700, its files 0600, written through
//! descriptors) and gets its final modes and name only after the last digest checked, so a
//! refused bundle leaves nothing behind and a killed extract leaves nothing readable (the
//! next extract into the same parent removes it). A blob that holds a `[[files]]` file
//! keeps that file's mode, so a 0600 secret is not readable in `blobs/` either.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use airlock_bundle::hashing::copy_large;
use airlock_bundle::header::{Entry, Target, HEADER_PATH, SIGNATURE_PATH};
use airlock_bundle::ollama::{self, ModelName};
use airlock_bundle::reader::{BundleReader, ReadOptions, Verified, Visitor};
use airlock_bundle::Digest;

use crate::hostfs::{self, Dir, FsError, Kind};
use crate::UnpackError;

const TEMP_PREFIX: &str = ".airlock-extract-";

/// Writes into the private temp tree (0700 at its root, so what is in it is private
/// whatever its own mode) through descriptors: nothing in it is opened by path.
struct ExtractVisitor {
    tmp: Dir,
    header: airlock_bundle::Header,
    /// Directories made, relative to the temp root, and the mode each gets at the end.
    dirs: BTreeMap<String, u32>,
}

fn io_of(e: FsError) -> io::Error {
    match e {
        FsError::Io { path, source } => {
            io::Error::new(source.kind(), format!("{}: {source}", path.display()))
        }
        e => io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()),
    }
}

/// `a/b/c` as (`a/b`, `c`).
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

impl ExtractVisitor {
    /// The directory `rel` in the temp tree, made (0700 until the end) if missing.
    fn dir(&mut self, rel: &str) -> io::Result<Dir> {
        let mut at = String::new();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(c);
            self.dirs.entry(at.clone()).or_insert(0o755);
        }
        self.tmp
            .create_path(rel, 0o700, &mut Vec::new())
            .map_err(io_of)
    }

    /// Creates a new file (0600) at `rel` in the temp tree.
    fn create(&mut self, rel: &str) -> io::Result<fs::File> {
        // Paths come from a verified header whose entry paths were validated
        // (oci-layout, index.json, blobs/sha256/<hex>): no traversal possible.
        let (parent, leaf) = split(rel);
        self.dir(parent)?.create_new(leaf).map_err(io_of)
    }

    /// Copies the file at `from` in the temp tree to a new file at `to`.
    fn copy(&mut self, from: &str, to: &str) -> io::Result<fs::File> {
        let (fp, fl) = split(from);
        let mut src = self
            .tmp
            .open_path(fp)
            .and_then(|d| d.open_read(fl))
            .map_err(io_of)?;
        let mut out = self.create(to)?;
        io::copy(&mut src, &mut out)?;
        Ok(out)
    }
}

impl ExtractVisitor {
    /// The signed header and its signature, exactly as stored, first in the layout.
    fn header(&mut self, v: &Verified) -> Result<(), airlock_bundle::BundleError> {
        let mut write = |rel: &str, data: &[u8]| {
            self.create(rel)
                .and_then(|mut f| f.write_all(data))
                .map_err(|e| airlock_bundle::BundleError::Output {
                    entry: rel.into(),
                    source: e,
                })
        };
        write(HEADER_PATH, &v.header_bytes)?;
        write(SIGNATURE_PATH, v.signature.as_bytes())
    }
}

impl Visitor for ExtractVisitor {
    /// Everything verified: lay out the models and files views, and give every file and
    /// directory its final mode.
    fn finish(&mut self) -> Result<(), airlock_bundle::BundleError> {
        let h = self.header.clone();
        self.views(&h).and_then(|()| self.modes(&h)).map_err(|e| {
            airlock_bundle::BundleError::Output {
                entry: "ollama/ and files/".into(),
                source: e,
            }
        })
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, self.create(&entry.path)?);
        copy_large(data, &mut out)?;
        out.flush()
    }
}

impl ExtractVisitor {
    fn views(&mut self, h: &airlock_bundle::Header) -> io::Result<()> {
        for m in &h.models {
            // Validated with the header: every part is a safe path component.
            let name = ModelName::parse(&m.name).map_err(io::Error::other)?;
            let store_blobs = self.dir("ollama/models/blobs")?;
            let layout_blobs = self.dir("blobs/sha256")?;
            for d in std::iter::once(&m.config).chain(&m.layers) {
                let to = ollama::blob_path(d)
                    .file_name()
                    .expect("blobs/sha256-HEX")
                    .to_string_lossy()
                    .into_owned();
                if store_blobs.kind(&to).map_err(io_of)? == Kind::Missing
                    && store_blobs.link_from(&layout_blobs, &d.hex(), &to).is_err()
                {
                    hostfs::set_mode(
                        &self.copy(&d.blob_path(), &format!("ollama/models/blobs/{to}"))?,
                        0o644,
                    )?;
                }
            }
            let mpath = format!("ollama/models/{}", name.manifest_path().display());
            hostfs::set_mode(&self.copy(&m.manifest.blob_path(), &mpath)?, 0o644)?;
        }
        for f in &h.files {
            // Target paths and file paths were validated with the header (absolute and
            // normalised; relative without `..`).
            let base = match &f.target {
                Target::Volume(v) => format!("files/volume/{v}"),
                Target::Path(p) => format!("files/path/{}", p.trim_start_matches('/')),
            };
            let path = format!("{base}/{}", f.path);
            let mode = f.mode_bits().map_err(io::Error::other)?;
            match &f.digest {
                None => {
                    self.dir(&path)?;
                    self.dirs.insert(path, mode);
                }
                Some(d) => {
                    hostfs::set_mode(&self.copy(&d.blob_path(), &path)?, mode)?;
                }
            }
        }
        Ok(())
    }

    /// Final modes, on descriptors: layout files 0644, except that a blob holding a
    /// `[[files]]` file keeps that file's mode (a 0600 secret stays 0600 in `blobs/` too);
    /// directories 0755 or their record's mode, deepest first.
    fn modes(&mut self, h: &airlock_bundle::Header) -> io::Result<()> {
        let mut file_modes: BTreeMap<Digest, u32> = BTreeMap::new();
        for f in &h.files {
            if let Some(d) = f.digest {
                let mode = f.mode_bits().map_err(io::Error::other)?;
                *file_modes.entry(d).or_insert(0o7777) &= mode;
            }
        }
        let blobs = self.dir("blobs/sha256")?;
        for e in &h.entries {
            if e.path.starts_with("blobs/") {
                let mode = file_modes.get(&e.digest).copied().unwrap_or(0o644);
                let f = blobs.open_read(&e.digest.hex()).map_err(io_of)?;
                hostfs::set_mode(&f, mode)?;
            }
        }
        for rel in ["oci-layout", "index.json", HEADER_PATH, SIGNATURE_PATH] {
            let (parent, leaf) = split(rel);
            if let Ok(f) = self.tmp.open_path(parent).and_then(|d| d.open_read(leaf)) {
                hostfs::set_mode(&f, 0o644)?;
            }
        }
        // Deepest first: a read-only directory must not stop its own entries.
        for (rel, mode) in self.dirs.iter().rev() {
            self.tmp
                .open_path(rel)
                .and_then(|d| d.chmod(*mode))
                .map_err(io_of)?;
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
    // A refusal too is this host's failure (exit 7), as it always was for extract: the
    // destination is a new or empty directory, not existing data left alone (exit 10).
    let fs_err = |e: FsError| match e {
        FsError::Io { path, source } => UnpackError::io(path, source),
        FsError::Refused { path, why } => UnpackError::Host {
            what: "",
            path,
            problem: why,
        },
    };
    let abs = std::path::absolute(dest)
        .map_err(|e| UnpackError::Usage(format!("{}: {e}", dest.display())))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name().and_then(|n| n.to_str()))
    else {
        return Err(UnpackError::Usage(format!(
            "{}: give a directory to create (a plain UTF-8 name)",
            dest.display()
        )));
    };
    let parent = Dir::open_trusted(parent, Some(&mut Vec::new())).map_err(fs_err)?;
    match parent.kind(name).map_err(fs_err)? {
        Kind::Missing => {}
        Kind::Dir => {
            let empty = parent
                .open_dir(name)
                .and_then(|d| d.entries())
                .map_err(fs_err)?;
            if !empty.is_empty() {
                return Err(UnpackError::Usage(format!(
                    "{} exists and is not empty",
                    dest.display()
                )));
            }
        }
        Kind::Symlink => {
            return Err(UnpackError::Usage(format!(
                "{} is a symlink; give the directory itself",
                dest.display()
            )))
        }
        _ => {
            return Err(UnpackError::Usage(format!(
                "{} exists and is not a directory",
                dest.display()
            )))
        }
    }
    // Leftovers of killed extracts: private, but they can be large.
    hostfs::sweep_dead(&parent, TEMP_PREFIX);
    let (tmp_name, tmp) = parent
        .create_private_dir(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .map_err(fs_err)?;
    let placed = BundleReader::open(input, opts)
        .map_err(UnpackError::from)
        .and_then(|(verified, body)| {
            refuse_delta(&verified.header)?;
            Ok((verified, body))
        })
        .and_then(|(verified, body)| {
            let mut visitor = ExtractVisitor {
                tmp,
                header: verified.header.clone(),
                dirs: BTreeMap::new(),
            };
            visitor.header(&verified)?;
            body.read(&mut visitor)?;
            Ok((verified, visitor.tmp))
        })
        .and_then(|(verified, tmp)| {
            // Private until this point; now the tree gets its final mode and name.
            tmp.chmod(0o755).map_err(fs_err)?;
            if parent.kind(name).map_err(fs_err)? == Kind::Dir {
                parent.remove_dir(name).map_err(fs_err)?;
            }
            parent
                .rename(&tmp_name, &parent, name, false)
                .map_err(fs_err)?;
            Ok(verified)
        });
    if placed.is_err() {
        let _ = parent.remove_tree(&tmp_name);
    }
    placed
}

/// A delta bundle cannot be extracted: the blobs it left out are on the host it was built
/// for, and a layout or Ollama store without them is not the bundle's content. Refused
/// from the verified header, before any entry is read.
fn refuse_delta(h: &airlock_bundle::Header) -> Result<(), UnpackError> {
    if h.expected_present.is_empty() {
        return Ok(());
    }
    let mut seen = std::collections::BTreeSet::new();
    let left_out = h
        .expected_present
        .iter()
        .filter(|p| seen.insert(p.digest))
        .map(|p| {
            let needed_by = match &p.chain_id {
                Some(_) => "an image layer".to_string(),
                None => {
                    let models: Vec<&str> = h
                        .models
                        .iter()
                        .filter(|m| m.config == p.digest || m.layers.contains(&p.digest))
                        .map(|m| m.name.as_str())
                        .collect();
                    match models.as_slice() {
                        [] => "a model blob".to_string(),
                        names => format!("a blob of model {}", names.join(", ")),
                    }
                }
            };
            format!(
                "{} ({} bytes, {})",
                p.digest,
                p.size,
                airlock_bundle::text::Escaped(&needed_by)
            )
        })
        .collect();
    Err(UnpackError::DeltaNotExtractable { left_out })
}
