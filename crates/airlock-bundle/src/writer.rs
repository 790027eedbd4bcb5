//! Writes the plaintext of a bundle: the header, its signature, then every entry in header
//! order, each streamed from its source and checked against the header's digest and size
//! as it goes. See `docs/FORMAT.md`.

use std::io::{Read, Write};

use crate::hashing::{copy_large, HashingReader};
use crate::header::{Entry, Header, HEADER_PATH, SIGNATURE_PATH};
use crate::sign::SigningKey;
use crate::tarfmt;
use crate::BundleError;

/// Where an entry's bytes come from (a cache file, an in-memory document).
pub type EntrySource<'a> = dyn FnMut(&Entry) -> std::io::Result<Box<dyn Read>> + 'a;

/// Writes the bundle plaintext into `out`. A source that yields other bytes than the header
/// promises (a corrupted cache file) fails the write, naming the entry.
pub fn write_bundle(
    out: &mut dyn Write,
    header: &Header,
    key: &SigningKey,
    open: &mut EntrySource<'_>,
) -> Result<(), BundleError> {
    let output_err = |entry: &str, source| BundleError::Output {
        entry: entry.to_string(),
        source,
    };
    let header_bytes = header.to_bytes();
    let signature = key.sign(&header_bytes);
    tarfmt::write_small(out, HEADER_PATH, &header_bytes).map_err(|e| output_err(HEADER_PATH, e))?;
    tarfmt::write_small(out, SIGNATURE_PATH, signature.as_bytes())
        .map_err(|e| output_err(SIGNATURE_PATH, e))?;
    for entry in &header.entries {
        let block =
            tarfmt::file_header(&entry.path, entry.size).map_err(|e| output_err(&entry.path, e))?;
        out.write_all(&block)
            .map_err(|e| output_err(&entry.path, e))?;
        let source = open(entry).map_err(|e| BundleError::Read {
            entry: entry.path.clone(),
            source: e,
        })?;
        let mut hashing = HashingReader::with_limit(source, entry.size);
        let mut source_failed = None;
        let copied = {
            let mut tracking = TrackRead {
                inner: &mut hashing,
                failed: &mut source_failed,
            };
            copy_large(&mut tracking, out)
        };
        if let Err(e) = copied {
            return Err(match source_failed {
                Some(src) => BundleError::Read {
                    entry: entry.path.clone(),
                    source: src,
                },
                None => output_err(&entry.path, e),
            });
        }
        let (digest, size) = hashing.finish();
        if size != entry.size {
            return Err(BundleError::SizeMismatch {
                entry: entry.path.clone(),
                expected: entry.size,
                actual: size,
            });
        }
        if digest != entry.digest {
            return Err(BundleError::DigestMismatch {
                entry: entry.path.clone(),
                expected: entry.digest,
                actual: digest,
            });
        }
        tarfmt::write_padding(out, entry.size).map_err(|e| output_err(&entry.path, e))?;
    }
    tarfmt::write_end(out).map_err(|e| output_err("end of archive", e))?;
    out.flush().map_err(|e| output_err("end of archive", e))
}

/// How many bytes [`write_bundle`] writes for `header` signed by `key` (the tar framing
/// included): where a byte counter over its output ends.
pub fn plaintext_size(header: &Header, key: &SigningKey) -> u64 {
    let block = tarfmt::BLOCK as u64;
    let framed = |len: u64| {
        block
            .saturating_add(len)
            .saturating_add(tarfmt::padding(len) as u64)
    };
    let header_bytes = header.to_bytes();
    let signature = key.sign(&header_bytes);
    header.entries.iter().fold(
        framed(header_bytes.len() as u64) + framed(signature.len() as u64) + 2 * block,
        |sum, e| sum.saturating_add(framed(e.size)),
    )
}

/// Remembers whether an error came from the source (as opposed to the output).
pub(crate) struct TrackRead<'a, R> {
    pub inner: R,
    pub failed: &'a mut Option<std::io::Error>,
}

impl<R: Read> Read for TrackRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}
