//! Bounded pipes between threads. [`ReadAhead`]: a thread reads (and, for age bundles,
//! decrypts) the next chunks while the caller hashes the current one. [`WriteBehind`]: the
//! caller hashes while a thread encrypts and writes. Two cores then do two jobs at once;
//! memory stays at `depth` chunks whatever the bundle size.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

#[derive(Debug)]
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl ReadAhead {
    pub fn spawn<R: Read + Send + 'static>(mut inner: R, chunk: usize, depth: usize) -> ReadAhead {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(depth);
        let (recycle, spare) = sync_channel::<Vec<u8>>(depth + 2);
        thread::Builder::new()
            .name("airlock-readahead".into())
            .spawn(move || loop {
                let mut buf = spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(chunk));
                buf.resize(chunk, 0);
                let mut filled = 0;
                let res = loop {
                    if filled == chunk {
                        break Ok(());
                    }
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let eof = filled < chunk;
                if filled > 0 && tx.send(Ok(buf)).is_err() {
                    return;
                }
                if let Err(e) = res {
                    let _ = tx.send(Err(e));
                    return;
                }
                if eof {
                    return;
                }
            })
            .expect("spawn read-ahead thread");
        ReadAhead {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
            failed: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Readers downstream (the age decryptor, the magic-line peek) take their bytes straight
/// from the current chunk instead of through yet another buffer copy.
impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            if self.failed {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_and_errors_through() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut r = ReadAhead::spawn(io::Cursor::new(data.clone()), 4096, 2);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "boom"));
                }
                let n = b.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = ReadAhead::spawn(Failing(10_000), 4096, 2);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            out.len(),
            10_000,
            "everything read before the error arrives"
        );
    }
}

/// The writing twin of [`ReadAhead`]: writes are gathered into chunks and handed to a
/// thread that performs the (slow) inner writes, e.g. age encryption and file output,
/// while the caller goes on hashing the next chunk. Memory: `depth` chunks.
pub struct WriteBehind<W: Write + Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    chunk: usize,
    thread: Option<thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for WriteBehind<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteBehind({} buffered)", self.buf.len())
    }
}

impl<W: Write + Send + 'static> WriteBehind<W> {
    pub fn spawn(mut inner: W, chunk: usize, depth: usize) -> WriteBehind<W> {
        let (tx, rx) = sync_channel::<Vec<u8>>(depth);
        let (recycle, spare) = sync_channel::<Vec<u8>>(depth + 2);
        let thread = thread::Builder::new()
            .name("airlock-writebehind".into())
            .spawn(move || {
                for buf in rx {
                    inner.write_all(&buf)?;
                    let _ = recycle.try_send(buf);
                }
                inner.flush()?;
                Ok(inner)
            })
            .expect("spawn write-behind thread");
        WriteBehind {
            tx: Some(tx),
            spare,
            buf: Vec::with_capacity(chunk),
            chunk,
            thread: Some(thread),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().map(|mut b| {
            b.clear();
            b
        });
        let next = next.unwrap_or_else(|_| Vec::with_capacity(self.chunk));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(full).is_ok())
            .unwrap_or(false);
        if !sent {
            // The thread stopped: its error is the one to report.
            return Err(self.join_error());
        }
        Ok(())
    }

    fn join_error(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("write-behind thread panicked"),
            _ => io::Error::other("write-behind thread stopped"),
        }
    }

    /// Flushes everything and returns the inner writer, or the first error it hit.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("write-behind thread panicked")),
            None => Err(io::Error::other("write-behind already finished")),
        }
    }
}

/// Dropped unfinished (a failed write), the thread is still waited for, so that whatever
/// the inner writer cleans up on drop (temporary files) is gone when the caller returns.
impl<W: Write + Send + 'static> Drop for WriteBehind<W> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<W: Write + Send + 'static> Write for WriteBehind<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn writes_arrive_in_order_and_errors_surface() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = WriteBehind::spawn(Vec::new(), 4096, 2);
        for c in data.chunks(1000) {
            w.write_all(c).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = WriteBehind::spawn(Full, 4096, 1);
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = w.write_all(&[0u8; 4096]) {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.finish().map(drop).unwrap_err(),
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
