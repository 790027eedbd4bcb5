//! Docker named volumes, through the Engine API only (never `/var/lib/docker` directly, which
//! breaks on rootless engines, Docker Desktop, userns-remap and a remote `DOCKER_HOST`).
//!
//! A volume is reached through a helper container that is created and **never started**:
//! the engine mounts its volumes for the `archive` calls (`GET` to read a file, `PUT` to
//! extract a tar). The helper's image is an empty root filesystem imported from an empty tar
//! (`POST /images/create?fromSrc=-`), so filling a volume needs no image from the bundle
//! and nothing from a network; helper and image are removed afterwards.

use std::collections::BTreeMap;

use airlock_bundle::Digest;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    RemoveContainerOptions, RemoveImageOptions, UploadToContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt as _;
use sha2::Digest as _;

use crate::UnpackError;

/// Label on the helper image and container, so a crashed run's leftovers can be found.
pub const HELPER_LABEL: &str = "io.airlock.helper";

/// A failed Engine API request for `what`.
fn engine(what: &str, source: bollard::errors::Error) -> UnpackError {
    UnpackError::EngineCall {
        what: what.to_string(),
        source,
    }
}

/// What the engine sent back for `what` could not be read.
fn engine_io(what: &str, source: std::io::Error) -> UnpackError {
    UnpackError::EngineIo {
        what: what.to_string(),
        source,
    }
}

/// The engine answered `what` with an error of its own, or with more than we take.
fn engine_said(what: &str, said: impl Into<String>) -> UnpackError {
    UnpackError::EngineSaid {
        what: what.to_string(),
        said: said.into(),
    }
}

/// What a path inside a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Missing,
    File {
        digest: Digest,
        size: u64,
    },
    /// A file, from [`VolumeFile::stat`]: its size only.
    Sized(u64),
    Dir,
    Other,
}

/// A never-started container with volumes mounted at `/v/0`, `/v/1`, …
#[derive(Debug)]
pub struct Helper {
    docker: Docker,
    image: String,
    container: Option<String>,
    mounts: BTreeMap<String, String>,
}

pub async fn volume_exists(docker: &Docker, name: &str) -> Result<bool, UnpackError> {
    match docker.inspect_volume(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(engine(&format!("inspecting volume {name}"), e)),
    }
}

impl Helper {
    /// Creates the volumes that do not exist yet (when `create`), imports the empty helper
    /// image and creates the helper container with every volume mounted without copying
    /// image content into it.
    pub async fn start(
        docker: &Docker,
        volumes: &[String],
        create: bool,
    ) -> Result<Helper, UnpackError> {
        if create {
            for v in volumes {
                let mut labels = std::collections::HashMap::new();
                labels.insert(
                    "io.airlock.created-by".to_string(),
                    "airlock-unpack".to_string(),
                );
                docker
                    .create_volume(bollard::models::VolumeCreateRequest {
                        name: Some(v.clone()),
                        driver: Some("local".into()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| engine(&format!("creating volume {v}"), e))?;
            }
        }
        let image = import_empty_image(docker).await?;
        let mut helper = Helper {
            docker: docker.clone(),
            image,
            container: None,
            mounts: BTreeMap::new(),
        };
        let mut mounts = Vec::new();
        for (i, v) in volumes.iter().enumerate() {
            let at = format!("/v/{i}");
            mounts.push(Mount {
                target: Some(at.clone()),
                source: Some(v.clone()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            });
            helper.mounts.insert(v.clone(), at);
        }
        let mut labels = std::collections::HashMap::new();
        labels.insert(HELPER_LABEL.to_string(), "1".to_string());
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!(
                        "airlock-helper-{}-{}",
                        std::process::id(),
                        rand_suffix()
                    )),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(helper.image.clone()),
                    // Never run: the image has no files at all.
                    cmd: Some(vec!["/airlock-helper-is-never-started".into()]),
                    labels: Some(labels),
                    network_disabled: Some(true),
                    host_config: Some(HostConfig {
                        mounts: Some(mounts),
                        network_mode: Some("none".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(c) => helper.container = Some(c.id),
            Err(e) => {
                helper.remove().await;
                return Err(engine("creating the helper container", e));
            }
        }
        Ok(helper)
    }

    /// Whether `volume` is mounted in this helper.
    pub fn has(&self, volume: &str) -> bool {
        self.mounts.contains_key(volume)
    }

    fn container(&self) -> &str {
        self.container.as_deref().expect("helper container exists")
    }

    fn mount(&self, volume: &str) -> &str {
        &self.mounts[volume]
    }

    /// Reads `rel` (relative to the volume root) and hashes it, without trusting anything
    /// that is already there.
    pub async fn existing(&self, volume: &str, rel: &str) -> Result<Existing, UnpackError> {
        self.file(volume, rel).existing().await
    }

    /// A file in a mounted volume, readable without borrowing the helper (for background
    /// checks; the helper must outlive them).
    pub fn file(&self, volume: &str, rel: &str) -> VolumeFile {
        VolumeFile {
            docker: self.docker.clone(),
            container: self.container().to_string(),
            path: format!("{}/{rel}", self.mount(volume)),
            what: format!("{volume}:{rel}"),
        }
    }

    /// The regular files under `rel` in `volume`, read whole: for small trees only (Ollama's
    /// manifests). More than `limit` bytes of archive is refused.
    pub async fn read_small_tree(
        &self,
        volume: &str,
        rel: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
        let what = format!("reading {volume}:{rel}");
        let mut stream = self.docker.download_from_container(
            self.container(),
            Some(DownloadFromContainerOptions {
                path: format!("{}/{rel}", self.mount(volume)),
            }),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => archive.extend_from_slice(&b),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(Vec::new()),
                Err(e) => return Err(engine(&what, e)),
            }
            if archive.len() > limit {
                return Err(engine_said(&what, format!("more than {limit} bytes")));
            }
        }
        let mut out = Vec::new();
        let mut ar = tar::Archive::new(archive.as_slice());
        for e in ar.entries().map_err(|e| engine_io(&what, e))? {
            let mut e = e.map_err(|e| engine_io(&what, e))?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let path = e
                .path()
                .map_err(|e| engine_io(&what, e))?
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).map_err(|e| engine_io(&what, e))?;
            out.push((path, data));
        }
        Ok(out)
    }

    /// Extracts a tar (paths relative to the volume root) into the volume.
    pub async fn put(
        &self,
        volume: &str,
        body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), UnpackError> {
        self.docker
            .upload_to_container(
                self.container(),
                Some(UploadToContainerOptions {
                    path: self.mount(volume).to_string(),
                    no_overwrite_dir_non_dir: Some("true".into()),
                    ..Default::default()
                }),
                bollard::body_try_stream(body),
            )
            .await
            .map_err(|e| engine(&format!("writing into volume {volume}"), e))
    }

    /// Removes the helper container and image. Best effort: a leftover is labelled.
    pub async fn remove(&mut self) {
        if let Some(c) = self.container.take() {
            let _ = self
                .docker
                .remove_container(
                    &c,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: false,
                        ..Default::default()
                    }),
                )
                .await;
        }
        let _ = self
            .docker
            .remove_image(
                &self.image,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await;
    }
}

/// One path inside a helper's volume.
#[derive(Debug, Clone)]
pub struct VolumeFile {
    docker: Docker,
    container: String,
    path: String,
    what: String,
}

impl VolumeFile {
    /// What is there, hashed if it is a file.
    pub async fn existing(self) -> Result<Existing, UnpackError> {
        self.read(false).await
    }

    /// What is there, with a file's size but no digest (only the archive's first header is
    /// read).
    pub async fn stat(self) -> Result<Existing, UnpackError> {
        self.read(true).await
    }

    async fn read(self, header_only: bool) -> Result<Existing, UnpackError> {
        let mut stream = self.docker.download_from_container(
            &self.container,
            Some(DownloadFromContainerOptions {
                path: self.path.clone(),
            }),
        );
        let mut parser = TarHasher {
            header_only,
            ..TarHasher::default()
        };
        let what = format!("reading {}", self.what);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if parser.feed(&b).map_err(|e| engine_said(&what, e))? {
                        break;
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(Existing::Missing),
                Err(e) => return Err(engine(&what, e)),
            }
        }
        parser.result().map_err(|e| engine_said(&what, e))
    }
}

/// Imports an image whose root filesystem is empty: the helper's image.
async fn import_empty_image(docker: &Docker) -> Result<String, UnpackError> {
    let tag = format!("helper-{}-{}", std::process::id(), rand_suffix());
    let repo = "airlock-helper";
    // An empty tar archive: two zero blocks.
    let empty = Bytes::from(vec![0u8; 1024]);
    let mut s = docker.create_image(
        Some(CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.clone()),
            changes: vec![format!("LABEL {HELPER_LABEL}=1")],
            ..Default::default()
        }),
        Some(bollard::body_full(empty)),
        None,
    );
    // Both engines answer with the new image's ID (`status: sha256:…`); the helper is used
    // and removed by that ID, because Podman ignores `tag` (it names the import
    // `airlock-helper:latest`, shared by concurrent loads).
    let mut id = None;
    while let Some(r) = s.next().await {
        let info = r.map_err(|e| engine("importing the helper image", e))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(engine_said("importing the helper image", err));
        }
        if let Some(s) = info.status.filter(|s| s.starts_with("sha256:")) {
            id = Some(s);
        }
    }
    match id {
        Some(id) => Ok(id),
        // An engine that does not say: by the name it was asked for, as before.
        None => Ok(format!("{repo}:{tag}")),
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Hashes the first entry of a tar stream (what `GET /containers/{id}/archive` returns for
/// one path), fed chunk by chunk.
#[derive(Default)]
struct TarHasher {
    head: Vec<u8>,
    kind: Option<Existing>,
    remaining: u64,
    size: u64,
    hasher: sha2::Sha256,
    done: bool,
    /// Bytes of an extension entry (long name, PAX) still to be skipped.
    skip: u64,
    /// Stop after the first header: kind and size, no digest.
    header_only: bool,
}

impl TarHasher {
    /// Returns true once the first entry is complete.
    fn feed(&mut self, mut b: &[u8]) -> Result<bool, String> {
        while !b.is_empty() && !self.done {
            if self.skip > 0 {
                let take = (self.skip as usize).min(b.len());
                b = &b[take..];
                self.skip -= take as u64;
                continue;
            }
            if self.kind.is_none() {
                let need = 512 - self.head.len();
                let take = need.min(b.len());
                self.head.extend_from_slice(&b[..take]);
                b = &b[take..];
                if self.head.len() < 512 {
                    return Ok(false);
                }
                let h = tar::Header::from_byte_slice(&self.head);
                let et = h.entry_type();
                if et.is_gnu_longname()
                    || et.is_pax_local_extensions()
                    || et.is_pax_global_extensions()
                {
                    // Skip extension entries: their data, then the real header.
                    let size = h.entry_size().map_err(|e| e.to_string())?;
                    self.skip = size.div_ceil(512) * 512;
                    self.head.clear();
                    continue;
                }
                let size = h.entry_size().map_err(|e| e.to_string())?;
                self.kind = Some(if et.is_file() {
                    Existing::File {
                        digest: Digest::of(b""),
                        size,
                    }
                } else if et.is_dir() {
                    self.done = true;
                    Existing::Dir
                } else {
                    self.done = true;
                    Existing::Other
                });
                self.remaining = size;
                self.size = size;
                if size == 0 || self.header_only {
                    self.done = true;
                }
                continue;
            }
            let take = (self.remaining as usize).min(b.len());
            self.hasher.update(&b[..take]);
            self.remaining -= take as u64;
            b = &b[take..];
            if self.remaining == 0 {
                self.done = true;
            }
        }
        Ok(self.done)
    }

    fn result(self) -> Result<Existing, String> {
        match self.kind {
            None => Ok(Existing::Missing),
            Some(Existing::File { .. }) => {
                if !self.done {
                    return Err("the engine's archive ended early".into());
                }
                if self.header_only {
                    return Ok(Existing::Sized(self.size));
                }
                Ok(Existing::File {
                    digest: Digest::from_bytes(self.hasher.finalize().into()),
                    size: self.size,
                })
            }
            Some(k) => Ok(k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_first_entry_of_a_split_stream() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut tar = Vec::new();
        tar.extend_from_slice(
            &airlock_bundle::tarfmt::file_header("x", data.len() as u64).unwrap(),
        );
        tar.extend_from_slice(&data);
        tar.extend_from_slice(&[0u8; 1024]);
        for chunk in [1usize, 7, 511, 512, 4096] {
            let mut p = TarHasher::default();
            for c in tar.chunks(chunk) {
                if p.feed(c).unwrap() {
                    break;
                }
            }
            assert_eq!(
                p.result().unwrap(),
                Existing::File {
                    digest: Digest::of(&data),
                    size: 5000
                },
                "chunk {chunk}"
            );
        }
        assert_eq!(TarHasher::default().result().unwrap(), Existing::Missing);
    }
}
