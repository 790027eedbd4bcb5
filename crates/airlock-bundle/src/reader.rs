//! Reads a bundle in one pass: removes the age layer, reads and verifies the signed header,
//! then streams every entry to a [`Visitor`] while hashing it, and refuses the first entry
//! whose path, size or digest differs from the header. Memory stays constant.

use std::io::{self, Read};

use crate::crypt::{decrypting_reader, Decryption};
use crate::hashing::{copy_large, HashingReader};
use crate::header::{
    Entry, Header, HEADER_PATH, MAX_HEADER_SIZE, MAX_SIGNATURE_SIZE, SIGNATURE_PATH,
};
use crate::readahead::ReadAhead;
use crate::sign::{signature_key_id, KeyId, TrustSet};
use crate::writer::TrackRead;
use crate::BundleError;

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

/// Receives the bundle as it is read.
pub trait Visitor {
    /// The header verified. Return `false` to stop reading here (nothing else is checked).
    fn header(&mut self, _verified: &Verified) -> Result<bool, BundleError> {
        Ok(true)
    }
    /// One entry; `data` yields at most the entry's bytes. What is not read is drained and
    /// still verified. An error here is reported as an output error.
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()>;
    /// Every entry verified and the archive ended where the header says.
    fn finish(&mut self) -> Result<(), BundleError> {
        Ok(())
    }
}

/// Reads the whole bundle from `input` (the file as stored, encrypted or not).
pub fn read_bundle<R: Read + Send + 'static>(
    input: R,
    opts: &ReadOptions<'_>,
    visitor: &mut dyn Visitor,
) -> Result<Verified, BundleError> {
    // Up to three stages on their own threads: file reads, age decryption, and (here) tar
    // framing plus hashing. Each hands 1 MiB chunks to the next through a bounded pipe.
    let raw = ReadAhead::spawn(input, 1 << 20, 4);
    let (plain, encrypted) = decrypting_reader(raw, opts.decryption)?;
    let plain: Box<dyn Read + Send> = if encrypted {
        Box::new(ReadAhead::spawn(plain, 1 << 20, 4))
    } else {
        plain
    };
    let mut archive = tar::Archive::new(plain);
    let mut entries = archive
        .entries()
        .map_err(|e| read_error("bundle", e, encrypted))?;

    let header_bytes = read_small(&mut entries, HEADER_PATH, MAX_HEADER_SIZE, encrypted)?;
    let sig_bytes = read_small(&mut entries, SIGNATURE_PATH, MAX_SIGNATURE_SIZE, encrypted)?;
    let sig_text = String::from_utf8(sig_bytes)
        .map_err(|_| BundleError::Malformed(format!("{SIGNATURE_PATH} is not text")))?;
    let (signer, signature_checked) = match opts.trust {
        Trust::Keys(set) => (Some(set.verify(&header_bytes, &sig_text)?), true),
        Trust::InsecureSkip => (signature_key_id(&sig_text), false),
    };
    let header = Header::parse(&header_bytes)?;
    let verified = Verified {
        header_digest: crate::Digest::of(&header_bytes),
        header,
        signer,
        signature_checked,
        encrypted,
        header_bytes,
        signature: sig_text,
    };
    if !visitor.header(&verified)? {
        return Ok(verified);
    }

    for expected in &verified.header.entries {
        let mut entry = match entries.next() {
            None => {
                return Err(BundleError::Truncated {
                    entry: expected.path.clone(),
                    detail: "the archive ends before it".into(),
                })
            }
            Some(r) => r.map_err(|e| read_error(&expected.path, e, encrypted))?,
        };
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path != expected.path || !entry.header().entry_type().is_file() {
            return Err(BundleError::UnexpectedEntry {
                expected: expected.path.clone(),
                found: path,
            });
        }
        let tar_size = entry.size();
        if tar_size != expected.size {
            return Err(BundleError::SizeMismatch {
                entry: expected.path.clone(),
                expected: expected.size,
                actual: tar_size,
            });
        }
        let mut hashing = HashingReader::with_limit(&mut entry, expected.size);
        let mut source_failed = None;
        let visited = {
            let mut tracked = TrackRead {
                inner: &mut hashing,
                failed: &mut source_failed,
            };
            visitor
                .entry(expected, &mut tracked)
                .and_then(|()| copy_large(&mut tracked, &mut io::sink()).map(drop))
        };
        if let Some(e) = source_failed {
            return Err(read_error(&expected.path, e, encrypted));
        }
        visited.map_err(|e| BundleError::Output {
            entry: expected.path.clone(),
            source: e,
        })?;
        let (digest, size) = hashing.finish();
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
    }
    match entries.next() {
        None => {}
        Some(Ok(extra)) => {
            return Err(BundleError::UnexpectedEntry {
                expected: "end of archive".into(),
                found: String::from_utf8_lossy(&extra.path_bytes()).into_owned(),
            })
        }
        Some(Err(e)) => return Err(read_error("end of archive", e, encrypted)),
    }
    visitor.finish()?;
    Ok(verified)
}

fn read_small<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    want: &str,
    limit: u64,
    encrypted: bool,
) -> Result<Vec<u8>, BundleError> {
    let mut entry = match entries.next() {
        None => {
            return Err(BundleError::Truncated {
                entry: want.into(),
                detail: "the archive ends before it".into(),
            })
        }
        Some(r) => r.map_err(|e| read_error(want, e, encrypted))?,
    };
    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if path != want {
        return Err(BundleError::Malformed(format!(
            "expected {want} at this position, found {path:?} (is this an airlock bundle?)"
        )));
    }
    if entry.size() > limit {
        return Err(BundleError::Malformed(format!(
            "{want} is {} bytes, more than the {limit} allowed",
            entry.size()
        )));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| read_error(want, e, encrypted))?;
    if (buf.len() as u64) < entry.size() {
        return Err(BundleError::Truncated {
            entry: want.into(),
            detail: format!("{} of {} bytes present", buf.len(), entry.size()),
        });
    }
    Ok(buf)
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
