//! The streaming side of a push: while the bundle's body is read, each blob the plan says
//! to upload is handed in 1 MiB chunks through bounded channels to PUTs running on the
//! async runtime (never held in memory), and the manifests are kept for the final PUTs.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use airlock_bundle::header::Entry;
use airlock_bundle::reader::Visitor;
use airlock_bundle::Digest;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};

use super::client::Client;
use super::plan::{BlobPlan, Streaming};
use crate::UnpackError;

/// Bytes per chunk handed from the reader to an upload.
const CHUNK: usize = 1 << 20;
/// Chunks buffered per upload: bounds memory while the HTTP side catches up.
const CHANNEL: usize = 4;
/// Uploads in flight at once (the reader streams one blob at a time; the others are
/// finishing their PUT, the registry's own hashing and moving, or mounts).
const IN_FLIGHT: usize = 4;
/// A manifest larger than this is not a manifest (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;

/// What happened to one streamed blob.
#[derive(Debug)]
pub(crate) struct BlobDone {
    pub(crate) digest: Digest,
    pub(crate) uploaded: Vec<String>,
    pub(crate) mounted: Vec<String>,
}

pub(crate) type Upload = tokio::task::JoinHandle<Result<BlobDone, UnpackError>>;

/// Receives the bundle's entries: starts an upload for each planned blob and feeds it, and
/// keeps the manifests to publish.
pub(crate) struct PushVisitor {
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    slots: Arc<Semaphore>,
    plan: Streaming,
    /// The uploads started, in bundle order.
    pub(crate) uploads: Vec<Upload>,
    /// The manifests kept, by digest.
    pub(crate) captured: HashMap<Digest, Bytes>,
}

impl PushVisitor {
    /// Uploads run on `handle`'s runtime; the visitor itself runs on the reading thread,
    /// which must not be one of that runtime's.
    pub(crate) fn new(
        handle: tokio::runtime::Handle,
        client: Arc<Client>,
        plan: Streaming,
    ) -> PushVisitor {
        PushVisitor {
            handle,
            client,
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            plan,
            uploads: Vec::new(),
            captured: HashMap::new(),
        }
    }
}

impl Visitor for PushVisitor {
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if self.plan.capture.contains(&entry.digest) {
            if entry.size > MAX_MANIFEST {
                return Err(io::Error::other(format!(
                    "manifest {} is {} bytes, more than {MAX_MANIFEST}",
                    entry.digest, entry.size
                )));
            }
            let mut buf = Vec::with_capacity(entry.size as usize);
            data.read_to_end(&mut buf)?;
            // Kept, not used: the reader checks the digest after this returns, and the PUTs
            // happen only once the whole bundle verified.
            self.captured.insert(entry.digest, buf.into());
            return Ok(());
        }
        let Some(plan) = self.plan.blobs.get(&entry.digest).cloned() else {
            return Ok(());
        };
        let permit = self
            .handle
            .block_on(self.slots.clone().acquire_owned())
            .map_err(io::Error::other)?;
        let mut senders = Vec::new();
        let mut bodies = Vec::new();
        for _ in &plan.upload_to {
            let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL);
            senders.push(tx);
            bodies.push(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )));
        }
        let client = self.client.clone();
        let (digest, size) = (entry.digest, entry.size);
        self.uploads.push(self.handle.spawn(async move {
            let _permit = permit;
            upload_blob(&client, digest, size, plan, bodies).await
        }));
        let sent = stream_into(data, entry.size, &senders);
        if let Err(e) = &sent {
            // Abort the PUT mid-body: the registry discards the session.
            for tx in &senders {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
        sent
    }
}

/// Reads an entry in 1 MiB chunks and hands each to every upload.
fn stream_into(
    data: &mut dyn Read,
    size: u64,
    senders: &[mpsc::Sender<Result<Bytes, io::Error>>],
) -> io::Result<()> {
    let mut left = size;
    let mut buf = BytesMut::new();
    while left > 0 {
        let want = CHUNK.min(left as usize);
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match data.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            // The reader reports the truncation itself.
            return Ok(());
        }
        buf.truncate(filled);
        let chunk = buf.split().freeze();
        left -= filled as u64;
        for tx in senders {
            tx.blocking_send(Ok(chunk.clone())).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the registry upload stopped")
            })?;
        }
    }
    Ok(())
}

/// Uploads one blob into every repository of `plan.upload_to` at once, then mounts it
/// into the rest from the first.
async fn upload_blob(
    client: &Client,
    digest: Digest,
    size: u64,
    plan: BlobPlan,
    bodies: Vec<reqwest::Body>,
) -> Result<BlobDone, UnpackError> {
    let uploads = plan
        .upload_to
        .iter()
        .zip(bodies)
        .map(|(repo, body)| client.upload(repo, &digest, size, body));
    for r in futures::future::join_all(uploads).await {
        r?;
    }
    let mut done = BlobDone {
        digest,
        uploaded: plan.upload_to.clone(),
        mounted: Vec::new(),
    };
    let from = &plan.upload_to[0];
    for repo in &plan.mount_into {
        if client.mount(repo, from, &digest).await? {
            done.mounted.push(repo.clone());
        } else {
            // Mount refused (202: the session it opened is cancelled). The bundle's bytes
            // have streamed by, but the registry has them: copy them across.
            client.copy_blob(repo, from, &digest, size).await?;
            done.uploaded.push(repo.clone());
        }
    }
    Ok(done)
}
