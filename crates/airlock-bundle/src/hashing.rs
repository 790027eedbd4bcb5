//! Streaming hash and size-limit adapters: blobs are hashed while they are copied, never
//! buffered whole. A reader or writer wrapped here counts bytes, refuses to go past a size
//! cap, and yields the sha256 when the stream is done.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::Digest;

/// Buffer size for bulk copies: large enough that syscalls and hashing calls are cheap,
/// small enough to keep memory flat.
pub const COPY_BUF: usize = 1 << 20;

/// A reader that hashes and counts everything read through it and fails once more than
/// `limit` bytes arrive (so a lying size cannot make us read forever).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, u64::MAX)
    }

    pub fn with_limit(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// The digest and byte count of what was read so far.
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the expected {} bytes", self.limit),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> (Digest, u64, W) {
        (
            Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies with a large heap buffer (std's `io::copy` uses 8 KiB, which costs measurable
/// throughput on multi-GB blobs).
pub fn copy_large(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Hashes a whole stream (for files on disk: cache entries, local stores).
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hr = HashingReader::new(reader);
    copy_large(&mut hr, &mut io::sink())?;
    Ok(hr.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn streaming_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..20_000),
                                     chunk in 1usize..4096) {
            // Read through the adapter in arbitrary small chunks.
            let mut r = HashingReader::new(&data[..]);
            let mut buf = vec![0u8; chunk];
            let mut out = Vec::new();
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
            }
            let (d, n) = r.finish();
            prop_assert_eq!(d, Digest::of(&data));
            prop_assert_eq!(n, data.len() as u64);
            prop_assert_eq!(out, data.clone());

            // And the writer, fed in chunks.
            let mut w = HashingWriter::new(Vec::new());
            for c in data.chunks(chunk) { w.write_all(c).unwrap(); }
            let (wd, wn, inner) = w.finish();
            prop_assert_eq!(wd, Digest::of(&data));
            prop_assert_eq!(wn, data.len() as u64);
            prop_assert_eq!(inner, data);
        }
    }

    #[test]
    fn limit_is_enforced() {
        let data = [7u8; 100];
        let mut r = HashingReader::with_limit(&data[..], 99);
        let err = copy_large(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut ok = HashingReader::with_limit(&data[..], 100);
        assert_eq!(copy_large(&mut ok, &mut io::sink()).unwrap(), 100);
    }
}
