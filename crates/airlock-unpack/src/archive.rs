//! The load archive: the bundle's images re-framed, while they stream, into the hybrid
//! docker-archive + OCI image layout that `POST /images/load`, `docker load -i`,
//! `podman load -i`, `ctr images import` and k3s's air-gap images directory all read.
//!
//! Blobs come first, in bundle order; the three documents that make the archive loadable
//! (`oci-layout`, `index.json`, the docker `manifest.json`) are written by [`Archive::finish`]
//! only, which callers run after the last digest of the bundle checked. An archive cut off
//! before that holds blobs and no image, so no loader can make anything of it.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use airlock_bundle::header::{Entry, Header, ImageRecord};
use airlock_bundle::oci::{self, Descriptor};
use airlock_bundle::{tarfmt, Digest, ImageRef};
use serde::Serialize;

/// The archive being written to `out` for a chosen set of images.
#[derive(Debug)]
pub struct Archive<W> {
    out: W,
    images: Vec<ImageRecord>,
    needed: HashSet<Digest>,
    manifests: BTreeMap<Digest, Entry>,
}

impl<W: Write> Archive<W> {
    /// An archive of `images` (records of `header`), nothing written yet.
    pub fn new(out: W, header: &Header, images: Vec<ImageRecord>) -> Self {
        let mut needed = HashSet::new();
        let mut manifests = BTreeMap::new();
        for i in &images {
            needed.insert(i.manifest);
            needed.insert(i.config);
            needed.extend(i.layers.iter().copied());
            if let Some(e) = header.entry(&i.manifest.blob_path()) {
                manifests.insert(i.manifest, e.clone());
            }
        }
        Archive {
            out,
            images,
            needed,
            manifests,
        }
    }

    /// The images this archive carries, in the order the docker `manifest.json` lists them.
    pub fn images(&self) -> &[ImageRecord] {
        &self.images
    }

    /// Whether the blob `digest` belongs in the archive.
    pub fn wants(&self, digest: &Digest) -> bool {
        self.needed.contains(digest)
    }

    /// Starts `entry` (a blob the archive wants); its `entry.size` bytes follow through
    /// [`Archive::out`], then [`Archive::end_entry`].
    pub fn begin_entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.out
            .write_all(&tarfmt::file_header(&entry.path, entry.size)?)
    }

    /// Where an entry's bytes go.
    pub fn out(&mut self) -> &mut W {
        &mut self.out
    }

    /// Pads the entry's data to the tar block size.
    pub fn end_entry(&mut self, entry: &Entry) -> io::Result<()> {
        tarfmt::write_padding(&mut self.out, entry.size)
    }

    /// Writes the documents that make the blobs loadable and the end of the tar. Call it
    /// only once everything verified.
    pub fn finish(&mut self) -> io::Result<()> {
        let (index, manifest_json) = self.documents();
        let out = &mut self.out;
        tarfmt::write_small(out, "oci-layout", oci::OCI_LAYOUT)?;
        tarfmt::write_small(out, "index.json", &index)?;
        tarfmt::write_small(out, "manifest.json", &manifest_json)?;
        tarfmt::write_end(out)
    }

    /// The writer, once the archive is finished (or abandoned).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The hybrid archive's `index.json` and docker `manifest.json` for the images.
    fn documents(&self) -> (Vec<u8>, Vec<u8>) {
        let index = oci::layout_index(self.images.iter().map(|i| {
            let e = &self.manifests[&i.manifest];
            let desc = Descriptor {
                media_type: e
                    .media_type
                    .clone()
                    .unwrap_or_else(|| oci::OCI_MANIFEST.into()),
                digest: i.manifest,
                size: e.size,
                platform: Some(i.platform.to_oci()),
                annotations: None,
            };
            (i.reference.clone(), desc)
        }));
        let docker: Vec<DockerManifestEntry> = self
            .images
            .iter()
            .map(|i| DockerManifestEntry {
                config: i.config.blob_path(),
                repo_tags: repo_tag(&i.reference).into_iter().collect(),
                layers: i.layers.iter().map(Digest::blob_path).collect(),
            })
            .collect();
        (
            index,
            serde_json::to_vec(&docker).expect("manifest serialises"),
        )
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// `registry/repo:tag` for an engine tag, if the reference has a tag.
pub fn repo_tag(reference: &str) -> Option<String> {
    ImageRef::parse(reference).ok().and_then(|r| r.tagged())
}
