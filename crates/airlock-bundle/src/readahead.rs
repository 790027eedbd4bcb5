//! A bounded read-ahead pipe: a thread reads (and, for age bundles, decrypts) the next
//! chunks while the caller hashes the current one. Two cores then do the two jobs at once;
//! memory stays at `depth` chunks whatever the bundle size.

use std::io::{self, Read};
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
        while self.pos == self.cur.len() {
            if self.failed {
                return Ok(0);
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
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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
