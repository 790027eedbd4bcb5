//! Reads a bundle in one pass, header first, then the body: [`BundleReader::open`] removes
//! the age layer, reads and verifies the signed header and returns it with the unread
//! [`Body`]; [`Body::read`] streams every entry to a [`Visitor`] while hashing it, and
//! refuses the first entry whose path, size or digest differs from the header. Memory stays
//! constant.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::crypt::{decrypting_reader, Decryption, PlainStream};
use crate::header::{
    Entry, Header, HEADER_PATH, MAX_HEADER_SIZE, MAX_SIGNATURE_SIZE, SIGNATURE_PATH,
};
use crate::readahead::ReadAhead;
use crate::sign::{signature_key_id, KeyId, TrustSet};
use crate::{tarfmt, BundleError};

/// Whose signatures are accepted.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    Keys(&'a TrustSet),
    /// Read without checking the signature at all (`--insecure-skip-signature`).
    InsecureSkip,
}

#[derive(Debug)]
pub struct ReadOptions<'a> {
    pub trust: Trust<'a>,
    pub decryption: &'a Decryption,
}

/// What is known once the header has been read.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    /// The key that made the signature: verified, unless the signature was skipped.
    pub signer: Option<KeyId>,
    pub signature_checked: bool,
    pub encrypted: bool,
    /// sha256 of the header bytes: names this exact bundle content in reports.
    pub header_digest: crate::Digest,
    /// The header and signature exactly as stored (for `extract`).
    pub header_bytes: Vec<u8>,
    pub signature: String,
}

/// Receives the bundle's entries as [`Body::read`] streams them.
pub trait Visitor {
    /// One entry; `data` yields at most the entry's bytes. What is not read is drained and
    /// still verified. An error here is reported as an output error.
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()>;
    /// Every entry verified and the archive ended where the header says.
    fn finish(&mut self) -> Result<(), BundleError> {
        Ok(())
    }
}

/// Opens bundles: the one reading path, header first, then the body (the shape of
/// `age::Decryptor::new` then `decrypt`, or tough's `load` then `read_target`).
#[derive(Debug)]
pub struct BundleReader;

impl BundleReader {
    /// Reads `input` (the file as stored, encrypted or not) up to and including the signed
    /// header, verifies the signature and parses the header. Nothing of the body is read
    /// yet: the caller decides from the [`Verified`] header what to do with it (refuse by
    /// policy, plan a load, connect to an engine) and then streams it with [`Body::read`],
    /// on this thread or another (a `Body` is `Send`).
    pub fn open<R: Read + Send + 'static>(
        input: R,
        opts: &ReadOptions<'_>,
    ) -> Result<(Verified, Body), BundleError> {
        // Up to three stages on their own threads: file reads, age decryption, and tar
        // framing plus hashing (where the body is read), each handing 1 MiB chunks to the
        // next through a bounded pipe.
        let raw = ReadAhead::spawn(input, 1 << 20, 4);
        let (plain, encrypted) = decrypting_reader(raw, opts.decryption)?;
        let mut tar = TarStream {
            r: plain,
            encrypted,
        };

        let header_bytes = tar.read_small(HEADER_PATH, MAX_HEADER_SIZE)?;
        let sig_bytes = tar.read_small(SIGNATURE_PATH, MAX_SIGNATURE_SIZE)?;
        let sig_text = String::from_utf8(sig_bytes)
            .map_err(|_| BundleError::Malformed(format!("{SIGNATURE_PATH} is not text")))?;
        let (signer, signature_checked) = match opts.trust {
            Trust::Keys(set) => (Some(set.verify(&header_bytes, &sig_text)?), true),
            Trust::InsecureSkip => (signature_key_id(&sig_text), false),
        };
        let header = Header::parse(&header_bytes)?;
        let body = Body {
            tar,
            entries: header.entries.clone(),
        };
        let verified = Verified {
            header_digest: crate::Digest::of(&header_bytes),
            header,
            signer,
            signature_checked,
            encrypted,
            header_bytes,
            signature: sig_text,
        };
        Ok((verified, body))
    }
}

/// The rest of a bundle whose header verified: its entries, in the header's order, not
/// read yet. Dropping it without reading stops the read (nothing else is checked).
pub struct Body {
    tar: TarStream,
    /// The verified header's entries: what the archive must hold, in order.
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("entries", &self.entries.len())
            .field("encrypted", &self.tar.encrypted)
            .finish_non_exhaustive()
    }
}

impl Body {
    /// Streams every entry to `visitor` while hashing it, and refuses the first whose path,
    /// size or digest differs from the header, then anything after the end of the archive.
    /// Only when this returns `Ok` has the whole bundle verified.
    pub fn read(mut self, visitor: &mut dyn Visitor) -> Result<(), BundleError> {
        let tar = &mut self.tar;
        let encrypted = tar.encrypted;
        for expected in &self.entries {
            let found = tar
                .next(&expected.path)?
                .ok_or_else(|| BundleError::Truncated {
                    entry: expected.path.clone(),
                    detail: "the archive ends before it".into(),
                })?;
            if found.path != expected.path || !found.regular {
                return Err(BundleError::UnexpectedEntry {
                    expected: expected.path.clone(),
                    found: found.path,
                });
            }
            if found.size != expected.size {
                return Err(BundleError::SizeMismatch {
                    entry: expected.path.clone(),
                    expected: expected.size,
                    actual: found.size,
                });
            }
            let mut data = EntryData::new(&mut tar.r, expected.size);
            let visited = visitor.entry(expected, &mut data);
            // What the visitor did not read is read and hashed all the same.
            let drained = visited.is_ok().then(|| data.drain());
            if let Some(e) = data.failed.take() {
                return Err(read_error(&expected.path, e, encrypted));
            }
            visited.map_err(|e| BundleError::Output {
                entry: expected.path.clone(),
                source: e,
            })?;
            if let Some(Err(e)) = drained {
                return Err(read_error(&expected.path, e, encrypted));
            }
            let (digest, size) = data.finish();
            if size != expected.size {
                return Err(BundleError::Truncated {
                    entry: expected.path.clone(),
                    detail: format!("{size} of {} bytes present", expected.size),
                });
            }
            if digest != expected.digest {
                return Err(BundleError::DigestMismatch {
                    entry: expected.path.clone(),
                    expected: expected.digest,
                    actual: digest,
                });
            }
            tar.skip_padding(&expected.path, expected.size)?;
        }
        if let Some(extra) = tar.next("end of archive")? {
            return Err(BundleError::UnexpectedEntry {
                expected: "end of archive".into(),
                found: extra.path,
            });
        }
        // Nothing may follow: bytes after the archive would be covered by no signature.
        let trailing = tar
            .r
            .fill_buf()
            .map_err(|e| read_error("end of archive", e, encrypted))?;
        if !trailing.is_empty() {
            return Err(BundleError::Malformed(
                "data after the end of the archive".into(),
            ));
        }
        visitor.finish()
    }
}

/// Reads the whole bundle from `input`: [`BundleReader::open`], then [`Body::read`] (for
/// callers that decide nothing from the header before the body).
pub fn read_bundle<R: Read + Send + 'static>(
    input: R,
    opts: &ReadOptions<'_>,
    visitor: &mut dyn Visitor,
) -> Result<Verified, BundleError> {
    let (verified, body) = BundleReader::open(input, opts)?;
    body.read(visitor)?;
    Ok(verified)
}

/// The plaintext tar, read block by block from a buffered stream.
struct TarStream {
    r: PlainStream,
    encrypted: bool,
}

impl TarStream {
    /// Fills `out` completely; `Ok(false)` on a clean end of stream before the first byte.
    fn read_exact_or_eof(&mut self, out: &mut [u8], what: &str) -> Result<bool, BundleError> {
        let mut filled = 0;
        while filled < out.len() {
            let avail = self
                .r
                .fill_buf()
                .map_err(|e| read_error(what, e, self.encrypted))?;
            if avail.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(BundleError::Truncated {
                    entry: what.into(),
                    detail: "the archive ends inside a header".into(),
                });
            }
            let n = avail.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&avail[..n]);
            self.r.consume(n);
            filled += n;
        }
        Ok(true)
    }

    /// The next entry's header, or `None` at the end-of-archive blocks. A stream that stops
    /// without them is truncated.
    fn next(&mut self, what: &str) -> Result<Option<tarfmt::ParsedHeader>, BundleError> {
        let mut block = [0u8; tarfmt::BLOCK];
        if !self.read_exact_or_eof(&mut block, what)? {
            return Err(BundleError::Truncated {
                entry: what.into(),
                detail: "the archive ends before it".into(),
            });
        }
        match tarfmt::parse_header(&block) {
            Ok(Some(h)) => Ok(Some(h)),
            Ok(None) => {
                // The second end-of-archive block: missing is tolerated as GNU tar does, but
                // what is there must be zeros (it is covered by no signature).
                if self.read_exact_or_eof(&mut block, what)? && block.iter().any(|&b| b != 0) {
                    return Err(BundleError::Malformed(
                        "the second end-of-archive block is not zero".into(),
                    ));
                }
                Ok(None)
            }
            Err(e) => Err(BundleError::Malformed(format!("at {what}: {e}"))),
        }
    }

    fn skip_padding(&mut self, what: &str, size: u64) -> Result<(), BundleError> {
        let mut pad = [0u8; tarfmt::BLOCK];
        let n = tarfmt::padding(size);
        if n > 0 && !self.read_exact_or_eof(&mut pad[..n], what)? {
            return Err(BundleError::Truncated {
                entry: what.into(),
                detail: "the archive ends inside its padding".into(),
            });
        }
        // Padding is zeros, as the writer makes it: nothing unsigned rides along.
        if pad[..n].iter().any(|b| *b != 0) {
            return Err(BundleError::Malformed(format!(
                "the padding after {} is not zeros (FORMAT.md: nothing but the entries may be in the archive)",
                crate::text::Escaped(what)
            )));
        }
        Ok(())
    }

    /// A small entry read whole (header, signature), with a size cap checked first.
    fn read_small(&mut self, want: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
        let h = self.next(want)?.ok_or_else(|| BundleError::Truncated {
            entry: want.into(),
            detail: "the archive ends before it".into(),
        })?;
        if h.path != want || !h.regular {
            return Err(BundleError::Malformed(format!(
                "expected {want} at this position, found \"{}\" (is this an airlock bundle?)",
                crate::text::Escaped(&h.path)
            )));
        }
        if h.size > limit {
            return Err(BundleError::Malformed(format!(
                "{want} is {} bytes, more than the {limit} allowed",
                h.size
            )));
        }
        let mut buf = vec![0u8; h.size as usize];
        if !self.read_exact_or_eof(&mut buf, want)? && h.size > 0 {
            return Err(BundleError::Truncated {
                entry: want.into(),
                detail: "the archive ends before its data".into(),
            });
        }
        self.skip_padding(want, h.size)?;
        Ok(buf)
    }
}

/// Fits in L2 with room to spare.
const DRAIN_BUF: usize = 128 << 10;

/// One entry's bytes: at most `size` of them, hashed as they pass. Remembers a failure of
/// the underlying stream so that it is not mistaken for the visitor's own.
struct EntryData<'a> {
    r: &'a mut PlainStream,
    remaining: u64,
    hasher: Sha256,
    count: u64,
    failed: Option<io::Error>,
}

impl<'a> EntryData<'a> {
    fn new(r: &'a mut PlainStream, size: u64) -> Self {
        EntryData {
            r,
            remaining: size,
            hasher: Sha256::new(),
            count: 0,
            failed: None,
        }
    }

    /// Hashes the rest of the entry. The bytes are copied into a small local buffer first:
    /// hashing straight out of memory the producer thread has just written ran at about
    /// two thirds of the speed here (the cache lines still belong to the other core), while
    /// a bulk copy pulls them over cheaply and the hash then runs on cache-hot data.
    fn drain(&mut self) -> io::Result<()> {
        let mut local = vec![0u8; DRAIN_BUF];
        while self.remaining > 0 {
            let n = self.read(&mut local)?;
            if n == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    fn finish(self) -> (crate::Digest, u64) {
        (
            crate::Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
        )
    }
}

/// The stream's buffered bytes; a failure is remembered as the stream's, not the visitor's.
fn fill<'b>(r: &'b mut PlainStream, failed: &mut Option<io::Error>) -> io::Result<&'b [u8]> {
    r.fill_buf()
        .inspect_err(|e| *failed = Some(io::Error::new(e.kind(), e.to_string())))
}

impl Read for EntryData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        let avail = fill(self.r, &mut self.failed)?;
        let n = avail.len().min(out.len()).min(self.remaining as usize);
        out[..n].copy_from_slice(&avail[..n]);
        self.hasher.update(&out[..n]);
        self.r.consume(n);
        self.remaining -= n as u64;
        self.count += n as u64;
        Ok(n)
    }
}

/// Classifies a failure of the bundle stream itself.
fn read_error(entry: &str, e: io::Error, encrypted: bool) -> BundleError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated {
            entry: entry.into(),
            detail: e.to_string(),
        },
        io::ErrorKind::InvalidData if encrypted => BundleError::CorruptCiphertext {
            entry: entry.into(),
            detail: e.to_string(),
        },
        io::ErrorKind::InvalidData | io::ErrorKind::Other => {
            BundleError::Malformed(format!("at {entry}: {e}"))
        }
        _ => BundleError::Read {
            entry: entry.into(),
            source: e,
        },
    }
}
