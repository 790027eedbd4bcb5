//! Sending a load to the Docker engine: the bundle's blobs, re-framed on the reader's thread
//! into the hybrid archive `POST /images/load` takes, streamed to the engine with no temp
//! copy on our side; afterwards every tag checked to name the expected image.

use std::io::{self, Write};

use airlock_bundle::header::{Entry, Header, ImageRecord};
use airlock_bundle::{BundleError, Digest};
use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::is_image;
use super::refusal::Refused;
use crate::archive::{repo_tag, Archive};
use crate::load::{EngineStream, LoadedImage};

const CHUNK: usize = 1 << 20;

/// The upload's body, as the bundle reader produces it.
pub(super) type Chunks = mpsc::Receiver<Result<Bytes, io::Error>>;

/// A new upload: the archive of `images` (records of `header`) its writer produces, and the
/// body [`upload`] sends.
pub(super) fn channel(header: &Header, images: Vec<ImageRecord>) -> (ArchiveStream, Chunks) {
    let (tx, rx) = mpsc::channel(8);
    let out = ChanWriter {
        tx: Some(tx),
        buf: BytesMut::with_capacity(CHUNK),
    };
    (
        ArchiveStream {
            archive: Archive::new(out, header, images),
        },
        rx,
    )
}

/// The archive the bundle reader writes: only the blobs of the images being sent; its
/// documents only after the last digest checked, so a failed read leaves the engine
/// nothing it could load.
pub(super) struct ArchiveStream {
    archive: Archive<ChanWriter>,
}

impl EngineStream for ArchiveStream {
    fn next_entry(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn wants(&self, digest: &Digest) -> bool {
        self.archive.wants(digest)
    }

    fn begin(&mut self, entry: &Entry) -> io::Result<()> {
        self.archive.begin_entry(entry)
    }

    fn out(&mut self) -> &mut dyn Write {
        self.archive.out()
    }

    fn end(&mut self, entry: &Entry, copied: io::Result<()>) -> io::Result<()> {
        copied?;
        self.archive.end_entry(entry)
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        if self.archive.images().is_empty() {
            return Ok(());
        }
        let err = |e: io::Error| BundleError::Output {
            entry: "manifest.json".into(),
            source: e,
        };
        self.archive.finish().map_err(err)?;
        self.archive.out().close().map_err(err)
    }

    fn abort(&mut self, why: &BundleError) {
        self.archive.out().abort(why.to_string());
    }
}

/// Sends the archive to the upload in 1 MiB chunks.
struct ChanWriter {
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    buf: BytesMut,
}

impl ChanWriter {
    fn send(&mut self, item: Result<Bytes, io::Error>) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        tx.blocking_send(item).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker engine closed the upload",
            )
        })
    }

    fn push(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Ok(chunk))?;
        }
        Ok(())
    }

    /// Ends the body cleanly (only after everything verified).
    fn close(&mut self) -> io::Result<()> {
        self.push()?;
        self.tx = None;
        Ok(())
    }

    /// Ends the body with an error: the HTTP request is aborted mid-body.
    fn abort(&mut self, why: String) {
        self.buf.clear();
        let _ = self.send(Err(io::Error::other(why)));
        self.tx = None;
    }
}

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.push()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams the archive body to `POST /images/load` and collects the engine's messages.
pub(super) async fn upload(docker: &Docker, rx: Chunks) -> Result<Vec<String>, Refused> {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut responses = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut messages = Vec::new();
    while let Some(r) = responses.next().await {
        let info = match r {
            Ok(info) => info,
            Err(e) => {
                let said = match e {
                    bollard::errors::Error::DockerStreamError { error } => error,
                    e => e.to_string(),
                };
                return Err(Refused {
                    messages,
                    said,
                    image: None,
                });
            }
        };
        if let Some(s) = info.stream {
            let line = s.trim().to_string();
            if line.starts_with("Error") {
                return Err(Refused {
                    messages,
                    said: line,
                    image: None,
                });
            }
            if !line.is_empty() {
                messages.push(line);
            }
        }
    }
    Ok(messages)
}

/// Every image of the bundle for the engine's platform is in the engine under its tag, with
/// the expected ID (loaded now, or already there).
pub(super) async fn check_tags(
    docker: &Docker,
    selected: &[ImageRecord],
    loaded_now: &[ImageRecord],
) -> Result<Vec<LoadedImage>, Refused> {
    let mut images = Vec::new();
    for i in selected {
        let name = repo_tag(&i.reference).unwrap_or_else(|| i.config.to_string());
        let refused = |said: String| Refused {
            messages: Vec::new(),
            said,
            image: Some(name.clone()),
        };
        let inspect = docker
            .inspect_image(&name)
            .await
            .map_err(|e| refused(format!("{name} is not in the engine after loading: {e}")))?;
        let id = inspect.id.unwrap_or_default();
        if !is_image(&id, i) {
            return Err(refused(format!(
                "{name}: the engine reports image ID {id}, expected {} (config) or {} (manifest)",
                i.config, i.manifest
            )));
        }
        images.push(LoadedImage {
            reference: i.reference.clone(),
            platform: i.platform.to_string(),
            id,
            config: i.config,
            manifest: i.manifest,
            already_present: !loaded_now.iter().any(|l| l.reference == i.reference),
        });
    }
    Ok(images)
}
