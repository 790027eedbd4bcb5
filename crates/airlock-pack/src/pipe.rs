//! A bounded in-memory pipe from a download (async) to the bundle writer (a blocking
//! thread): a cold build streams each layer from the registry into the bundle without a
//! copy on disk. Bytes in flight are bounded per pipe; a download ahead of the writer waits
//! (backpressure), so memory stays constant however large the blobs.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

/// Bytes buffered per pipe at most: with `--jobs 4`, 16 MiB in all, inside the 64 MiB the
/// whole build may take. The blob the writer is on streams without pause; the ones ahead of
/// it fill their pipe and then wait, and a registry that drops a waiting connection is
/// asked for the rest with a `Range` request.
pub const PIPE_BOUND: usize = 4 << 20;

enum Msg {
    Data(Bytes),
    Failed(String),
}

/// A pipe holding at most `bound` bytes.
pub fn pipe(bound: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = unbounded_channel();
    let sem = Arc::new(Semaphore::new(bound));
    (
        PipeWriter {
            tx,
            sem: sem.clone(),
            bound,
        },
        PipeReader {
            rx,
            sem,
            bound,
            cur: Bytes::new(),
            held: 0,
        },
    )
}

/// The reading end went away (the writer stopped).
#[derive(Debug)]
pub struct Closed;

#[derive(Debug)]
pub struct PipeWriter {
    tx: UnboundedSender<Msg>,
    sem: Arc<Semaphore>,
    bound: usize,
}

impl PipeWriter {
    /// Queues `b`, waiting while the pipe is full.
    pub async fn send(&self, b: Bytes) -> Result<(), Closed> {
        if b.is_empty() {
            return Ok(());
        }
        let n = b.len().min(self.bound) as u32;
        self.sem.acquire_many(n).await.map_err(|_| Closed)?.forget();
        self.tx.send(Msg::Data(b)).map_err(|_| Closed)
    }

    /// Tells the reader the download failed for good (its read then fails with `why`).
    pub fn fail(&self, why: String) {
        let _ = self.tx.send(Msg::Failed(why));
    }
}

#[derive(Debug)]
pub struct PipeReader {
    rx: UnboundedReceiver<Msg>,
    sem: Arc<Semaphore>,
    bound: usize,
    cur: Bytes,
    /// Permits the current chunk holds, given back once it is consumed.
    held: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.cur.is_empty() {
            self.sem.add_permits(std::mem::take(&mut self.held));
            match self.rx.blocking_recv() {
                Some(Msg::Data(b)) => {
                    self.held = b.len().min(self.bound);
                    self.cur = b;
                }
                Some(Msg::Failed(why)) => {
                    return Err(io::Error::other(format!("download failed: {why}")))
                }
                // The download ended: the writer checks size and digest.
                None => return Ok(0),
            }
        }
        let n = self.cur.len().min(buf.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // Wakes a download waiting for room: nobody will read what it sends.
        self.sem.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pipe_holds_the_sender_until_the_reader_catches_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (w, mut r) = pipe(1000);
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            rt.block_on(async {
                for c in sent.chunks(700) {
                    w.send(Bytes::copy_from_slice(c)).await.unwrap();
                    // Never more than the bound waits in the pipe.
                    assert!(w.sem.available_permits() <= 1000);
                }
            })
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_dropped_reader_releases_a_waiting_sender() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (w, r) = pipe(10);
        rt.block_on(async {
            w.send(Bytes::from_static(b"0123456789")).await.unwrap();
            drop(r);
            assert!(w.send(Bytes::from_static(b"more")).await.is_err());
        });
    }
}
