//! Streaming blobs into containerd's content store on the bundle reader's thread: each blob
//! a `Content/Write` call, committed only once the reader verified its digest.

use std::collections::HashSet;
use std::io::{self, Write};

use airlock_bundle::header::Entry;
use airlock_bundle::text::escape;
use airlock_bundle::{BundleError, Digest};
use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::Status;

use super::api::{self, path, Client};
use crate::load::EngineStream;

/// containerd's gRPC server takes messages up to 16 MiB; 1 MiB writes keep memory flat.
const CHUNK: usize = 1 << 20;

/// The blobs of the load's images containerd lacks, as the bundle reader streams them.
pub(super) struct BlobStream {
    handle: Handle,
    /// The connection under the load's lease; none when no image is loaded.
    client: Option<Client>,
    /// The blobs to write.
    write: HashSet<Digest>,
    /// The blob streaming now.
    current: Option<BlobWriter>,
    /// The last blob streamed, its commit held until the reader verified it.
    pending: Option<BlobWriter>,
    /// Where [`EngineStream::out`] points between blobs (never written to).
    idle: io::Sink,
}

impl BlobStream {
    pub(super) fn new(handle: &Handle, client: Option<Client>, write: HashSet<Digest>) -> Self {
        BlobStream {
            handle: handle.clone(),
            client,
            write,
            current: None,
            pending: None,
            idle: io::sink(),
        }
    }

    /// Commits the blob the reader has verified since.
    fn commit_pending(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(b) => b.commit(),
            None => Ok(()),
        }
    }
}

impl EngineStream for BlobStream {
    /// The previous entry verified (the reader checks each digest before the next).
    fn next_entry(&mut self) -> io::Result<()> {
        self.commit_pending()
    }

    fn wants(&self, digest: &Digest) -> bool {
        self.client.is_some() && self.write.contains(digest)
    }

    fn begin(&mut self, entry: &Entry) -> io::Result<()> {
        if let Some(c) = &self.client {
            self.current = Some(BlobWriter::start(&self.handle, c, entry));
        }
        Ok(())
    }

    fn out(&mut self) -> &mut dyn Write {
        match &mut self.current {
            Some(b) => b,
            None => &mut self.idle,
        }
    }

    fn end(&mut self, _entry: &Entry, copied: io::Result<()>) -> io::Result<()> {
        match (copied, self.current.take()) {
            // Committed when the reader comes back: only then has it checked the digest,
            // and a bad blob must fail as the bundle's fault, not containerd's refusal.
            (Ok(()), b) => {
                self.pending = b;
                Ok(())
            }
            (Err(e), Some(b)) => {
                b.abort();
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        self.commit_pending().map_err(|e| BundleError::Output {
            entry: "content store".into(),
            source: e,
        })
    }

    /// The read failed: the blob in flight goes, never committed.
    fn abort(&mut self, _why: &BundleError) {
        if let Some(b) = self.current.take() {
            b.abort();
        }
        if let Some(b) = self.pending.take() {
            b.abort();
        }
    }
}

/// One blob streaming into containerd's content store (a `Content/Write` call), fed from
/// the bundle reader's thread.
struct BlobWriter {
    handle: Handle,
    client: Client,
    tx: Option<mpsc::Sender<api::WriteContentRequest>>,
    task: Option<tokio::task::JoinHandle<Result<(), Status>>>,
    reference: String,
    digest: Digest,
    size: u64,
    offset: u64,
    buf: BytesMut,
    /// containerd had the blob after all (another writer committed it first).
    done: bool,
}

impl BlobWriter {
    fn start(handle: &Handle, client: &Client, entry: &Entry) -> BlobWriter {
        let (tx, rx) = mpsc::channel::<api::WriteContentRequest>(4);
        let input =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let c = client.clone();
        let task = handle.spawn(async move {
            let mut answers = match c
                .streaming::<_, api::WriteContentResponse, _>(path::CONTENT_WRITE, input)
                .await
            {
                Ok(a) => a,
                Err(s) if api::already_exists(&s) => return Ok(()),
                Err(s) => return Err(s),
            };
            loop {
                match answers.message().await {
                    Ok(Some(m)) if m.action == api::COMMIT => return Ok(()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(Status::aborted("the write ended before its commit")),
                    Err(s) if api::already_exists(&s) => return Ok(()),
                    Err(s) => return Err(s),
                }
            }
        });
        BlobWriter {
            handle: handle.clone(),
            client: client.clone(),
            tx: Some(tx),
            task: Some(task),
            // Unique per load: a crashed earlier load's ingest of the same blob is not ours.
            reference: format!(
                "airlock-{}-{}",
                client_lease_tag(client),
                entry.digest.to_string().replace(':', "-")
            ),
            digest: entry.digest,
            size: entry.size,
            offset: 0,
            buf: BytesMut::with_capacity(CHUNK),
            done: false,
        }
    }

    fn request(&self, action: i32, data: bytes::Bytes) -> api::WriteContentRequest {
        api::WriteContentRequest {
            action,
            r#ref: self.reference.clone(),
            total: self.size as i64,
            expected: self.digest.to_string(),
            offset: self.offset as i64,
            data,
        }
    }

    /// Sends one request; if containerd ended the call, its answer says why.
    fn send(&mut self, action: i32) -> io::Result<()> {
        let data = self.buf.split().freeze();
        let req = self.request(action, data.clone());
        self.offset += data.len() as u64;
        let Some(tx) = self.tx.as_ref() else {
            return Ok(());
        };
        if tx.blocking_send(req).is_err() {
            self.tx = None;
            self.wait()?;
            // The call ended without an error: containerd has the blob already.
            self.done = true;
        }
        Ok(())
    }

    /// Waits for the call to end and turns its status into an error naming the blob.
    fn wait(&mut self) -> io::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match self.handle.block_on(task) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) => Err(io::Error::other(format!(
                "containerd refused blob {} ({} bytes): {} ({:?})",
                self.digest,
                self.size,
                escape(s.message()),
                s.code()
            ))),
            Err(e) => Err(io::Error::other(format!(
                "writing blob {} to containerd: {e}",
                self.digest
            ))),
        }
    }

    /// The last bytes and the commit: containerd checks size and digest against the
    /// expected ones and only then makes the blob content.
    fn commit(mut self) -> io::Result<()> {
        if !self.done {
            self.send(api::COMMIT)?;
        }
        self.tx = None;
        self.wait()
    }

    /// Ends the call without a commit and drops what containerd received so far.
    fn abort(mut self) {
        self.tx = None;
        let _ = self.wait();
        let req = api::AbortRequest {
            r#ref: self.reference.clone(),
        };
        let c = self.client.clone();
        let _ = self
            .handle
            .block_on(async move { c.unary::<_, api::Empty>(path::CONTENT_ABORT, req).await });
    }
}

impl Write for BlobWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.done {
            return Ok(b.len());
        }
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send(api::WRITE)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A short, unique tag for ingest references: the lease id.
fn client_lease_tag(c: &Client) -> String {
    c.lease_id().unwrap_or("nolease").to_string()
}
