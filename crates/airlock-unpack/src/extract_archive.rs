//! `extract --archive FILE`: the verified load archive (the [`Archive`] framing `load`
//! streams to the engine: hybrid docker-archive + OCI layout) written to a file, for
//! `docker load -i`, `podman load -i`, `ctr images import` and k3s's air-gap images
//! directory. One image per reference, for one platform.
//!
//! The archive is written into a private temp file beside FILE (created through a held
//! descriptor of its directory, 0600, unpredictable name) and renamed to FILE only after
//! the last digest of the bundle checked; a refused bundle leaves neither. To stdout (`-`)
//! nothing can be taken back, so there the archive's documents (`index.json`,
//! `manifest.json`) are the last bytes written, after verification: a cut-off or refused
//! stream holds blobs and no image, so no loader makes anything of it.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use airlock_bundle::header::{Entry, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_bundle::reader::{BundleReader, ReadOptions, Verified, Visitor};
use airlock_bundle::BundleError;

use crate::archive::Archive;
use crate::hostfs::{self, Dir, FileId, FsError, Kind};
use crate::UnpackError;

const TEMP_PREFIX: &str = ".airlock-archive-";

/// What was written: the verified bundle and the images in the archive.
#[derive(Debug)]
pub struct Written {
    pub verified: Verified,
    pub images: Vec<ImageRecord>,
}

/// Streams the chosen images' blobs into the archive as the bundle verifies them.
struct ArchiveVisitor<W: Write> {
    archive: Archive<W>,
}

impl<W: Write> Visitor for ArchiveVisitor<W> {
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let archive = &mut self.archive;
        if !entry.path.starts_with("blobs/") || !archive.wants(&entry.digest) {
            return Ok(());
        }
        archive.begin_entry(entry)?;
        airlock_bundle::hashing::copy_large(data, archive.out())?;
        archive.end_entry(entry)
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        let err = |e: io::Error| BundleError::Output {
            entry: "manifest.json".into(),
            source: e,
        };
        let archive = &mut self.archive;
        archive.finish().map_err(err)?;
        archive.out().flush().map_err(err)
    }
}

/// The images of `h` for `platform`, one per reference; refused when there is none, or when
/// a delta bundle left out a blob one of them needs (an archive must carry every blob).
fn choose(
    h: &airlock_bundle::Header,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, UnpackError> {
    let images = crate::engine::select_images(&h.images, platform);
    if images.is_empty() {
        let have: Vec<String> = h.images.iter().map(|i| i.platform.to_string()).collect();
        return Err(UnpackError::Usage(if have.is_empty() {
            "the bundle carries no image, so there is no archive to write (models and files: extract --to DIR, or load)".into()
        } else {
            format!(
                "the bundle has no image for {platform} (it has: {}); see --platform",
                have.join(", ")
            )
        }));
    }
    let missing: Vec<String> = images
        .iter()
        .flat_map(|i| {
            std::iter::once(&i.manifest)
                .chain(std::iter::once(&i.config))
                .chain(&i.layers)
                .filter(|d| h.entry(&d.blob_path()).is_none())
                .map(move |d| {
                    format!(
                        "blob {d} of {}: left out of this delta bundle, and an archive must carry every blob (use load, which finds it in the engine, or a full bundle)",
                        airlock_bundle::text::escape(&i.reference)
                    )
                })
        })
        .collect();
    if !missing.is_empty() {
        return Err(UnpackError::NotPresent(missing));
    }
    Ok(images)
}

/// Verifies the bundle from `input` and writes the load archive of its images for
/// `platform` to `dest` (`-`: stdout). `dest` must not exist.
pub fn extract_archive(
    input: impl Read + Send + 'static,
    opts: &ReadOptions<'_>,
    dest: &Path,
    platform: Platform,
) -> Result<Written, UnpackError> {
    if dest == Path::new("-") {
        let out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        return stream(input, opts, out, platform).map(|(w, _)| w);
    }
    // The archive's path first, then what failed under it (the temp file, its directory).
    let fs_err = |e: FsError| archive_io(dest, e.into());
    let abs = std::path::absolute(dest)
        .map_err(|e| UnpackError::Usage(format!("{}: {e}", dest.display())))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name().and_then(|n| n.to_str()))
    else {
        return Err(UnpackError::Usage(format!(
            "{}: give a file to create (a plain UTF-8 name)",
            dest.display()
        )));
    };
    let parent = Dir::open_trusted(parent, None).map_err(fs_err)?;
    // Refused now, not after reading the whole bundle (and checked again, atomically, when
    // the file is placed: nothing is clobbered).
    if parent.kind(name).map_err(fs_err)? != Kind::Missing {
        return Err(UnpackError::Usage(format!(
            "{} exists; give a new file name (an archive is never written over a file or through a link)",
            dest.display()
        )));
    }
    // Leftovers of killed runs: private, but as large as the images.
    hostfs::sweep_dead(&parent, TEMP_PREFIX);
    let (tmp, file) = parent
        .create_temp(&format!("{TEMP_PREFIX}{}-", std::process::id()), ".tmp")
        .map_err(fs_err)?;
    let placed = FileId::of_file(&file)
        .map_err(|e| archive_io(dest, e))
        .and_then(|id| {
            let out = BufWriter::with_capacity(1 << 20, file);
            let (written, out) = stream(input, opts, out, platform)?;
            let file = out
                .into_inner()
                .map_err(|e| archive_io(dest, e.into_error()))?;
            // Durable before it is visible; readable by the loaders (root or not) after.
            file.sync_all()
                .and_then(|()| hostfs::set_mode(&file, 0o644))
                .map_err(|e| archive_io(dest, e))?;
            parent
                .place(&tmp, id, &parent, name, false)
                .map_err(fs_err)?;
            Ok(written)
        });
    if placed.is_err() {
        let _ = parent.remove_file(&tmp);
    }
    placed
}

/// Writing the archive at `dest` failed: this host, not the bundle (exit 7).
fn archive_io(dest: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        what: "archive",
        path: dest.to_path_buf(),
        source,
    }
}

/// Reads the whole bundle into the archive on `out`; the archive's documents only after
/// the last digest checked.
fn stream<W: Write>(
    input: impl Read + Send + 'static,
    opts: &ReadOptions<'_>,
    out: W,
    platform: Platform,
) -> Result<(Written, W), UnpackError> {
    let (verified, body) = BundleReader::open(input, opts)?;
    // Refused from the header, before a byte of the body is read.
    let images = choose(&verified.header, &platform)?;
    let mut v = ArchiveVisitor {
        archive: Archive::new(out, &verified.header, images),
    };
    body.read(&mut v)?;
    let images = v.archive.images().to_vec();
    Ok((Written { verified, images }, v.archive.into_inner()))
}

/// This machine's platform (the default for `--platform`).
pub fn host_platform() -> Platform {
    Platform::from_engine(std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_platform_is_an_oci_one() {
        let p = host_platform();
        assert_eq!(p.os, "linux");
        assert!(!p.arch.is_empty() && p.arch != "x86_64" && p.arch != "aarch64");
    }
}
