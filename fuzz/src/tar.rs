//! The bundle's tar framing as `read_bundle` reads it with the signature skipped (as
//! `--insecure-skip-signature` does): the size-capped reads of the header and its signature
//! before anything is verified, then every entry checked against the header, then the end
//! of the archive.
//!
//! The first input byte says how to use the rest. Bit 0: recompute the checksum of every
//! header block first, so that mutations reach the fields behind the checksum. Bit 1: the
//! visitor reads only the first bytes of each entry, and the reader must drain and verify
//! the rest itself.

use std::io::{self, Cursor, Read};

use airlock_bundle::crypt::Decryption;
use airlock_bundle::header::{check_relative, Entry, Header};
use airlock_bundle::reader::{read_bundle, ReadOptions, Trust, Verified, Visitor};
use airlock_bundle::tarfmt::{self, ParsedHeader, BLOCK};
use airlock_bundle::{BundleError, Digest};

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if mode & 1 != 0 {
        fix_checksums(&mut input);
    }
    let partial = mode & 2 != 0;
    if let Some(block) = input.first_chunk::<BLOCK>() {
        check_block(block);
    }
    let Ok((verified, seen)) = read(input.clone(), partial) else {
        return;
    };
    assert!(!verified.signature_checked);
    assert_eq!(verified.header_digest, Digest::of(&verified.header_bytes));
    assert_eq!(
        Header::parse(&verified.header_bytes).ok().as_ref(),
        Some(&verified.header)
    );
    // Every entry of the header went to the visitor, in order, with its own bytes.
    assert_eq!(seen.finished, 1, "finish() calls");
    assert_eq!(seen.entries.len(), verified.header.entries.len());
    for (e, s) in verified.header.entries.iter().zip(&seen.entries) {
        assert_eq!((&e.path, e.size), (&s.path, s.size));
        assert!(s.read <= e.size, "{}: visitor got {} bytes", e.path, s.read);
        if !partial {
            assert_eq!((s.read, s.digest), (e.size, e.digest), "{}", e.path);
        }
    }
    // Complete means complete: one byte less or one more is refused.
    let mut cut = input.clone();
    cut.pop();
    assert!(
        read(cut, partial).is_err(),
        "accepted with its last byte cut"
    );
    let mut longer = input.clone();
    longer.push(0);
    assert!(
        read(longer, partial).is_err(),
        "accepted with a byte appended"
    );
    // Nothing unsigned rides along in an accepted bundle: the padding after each entry and
    // the end-of-archive blocks after the last are all zero.
    let sizes = [
        verified.header_bytes.len() as u64,
        verified.signature.len() as u64,
    ]
    .into_iter()
    .chain(verified.header.entries.iter().map(|e| e.size));
    let mut end = 0usize;
    for size in sizes {
        let data = end + BLOCK + size as usize;
        end = data + tarfmt::padding(size);
        assert!(
            input[data..end].iter().all(|&b| b == 0),
            "accepted non-zero padding at {data}..{end}"
        );
    }
    let tail = &input[end..];
    assert!(
        tail.len() == BLOCK || tail.len() == 2 * BLOCK,
        "{} bytes after the last entry",
        tail.len()
    );
    assert!(
        tail.iter().all(|&b| b == 0),
        "accepted non-zero bytes after the last entry (end-of-archive blocks)"
    );
}

/// One header block both ways: what `parse_header` accepts as a regular file, `file_header`
/// writes back to a block that parses to the same size (and the same path, for a path the
/// format allows).
fn check_block(block: &[u8; BLOCK]) {
    let Ok(Some(p)) = tarfmt::parse_header(block) else {
        return;
    };
    if !p.regular {
        return;
    }
    let Ok(written) = tarfmt::file_header(&p.path, p.size) else {
        return;
    };
    let back = tarfmt::parse_header(&written)
        .expect("a written header parses")
        .expect("a written header is not the end");
    assert!(back.regular);
    assert_eq!(back.size, p.size);
    if check_relative(&p.path).is_ok() {
        assert_eq!(back.path, p.path, "path changed when written");
    }
}

#[derive(Debug)]
struct SeenEntry {
    path: String,
    size: u64,
    read: u64,
    digest: Digest,
}

#[derive(Debug, Default)]
struct Seen {
    partial: bool,
    entries: Vec<SeenEntry>,
    finished: usize,
}

impl Visitor for Seen {
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut buf = Vec::new();
        if self.partial {
            data.take(100).read_to_end(&mut buf)?;
        } else {
            data.read_to_end(&mut buf)?;
        }
        self.entries.push(SeenEntry {
            path: entry.path.clone(),
            size: entry.size,
            read: buf.len() as u64,
            digest: Digest::of(&buf),
        });
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        self.finished += 1;
        Ok(())
    }
}

fn read(input: Vec<u8>, partial: bool) -> Result<(Verified, Seen), BundleError> {
    let decryption = Decryption::default();
    let opts = ReadOptions {
        trust: Trust::InsecureSkip,
        decryption: &decryption,
    };
    let mut seen = Seen {
        partial,
        ..Seen::default()
    };
    let verified = read_bundle(Cursor::new(input), &opts, &mut seen)?;
    Ok((verified, seen))
}

/// Walks the archive as the reader would and gives every header block a right checksum.
fn fix_checksums(b: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(block) = b.get_mut(pos..pos + BLOCK) {
        if block.iter().all(|&x| x == 0) {
            pos += BLOCK;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&x| u32::from(x)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let block: &[u8; BLOCK] = (&*block).try_into().unwrap();
        let size = match tarfmt::parse_header(block) {
            Ok(Some(ParsedHeader { size, .. })) => size,
            _ => return,
        };
        let data = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        match usize::try_from(data)
            .ok()
            .and_then(|d| d.checked_add(BLOCK))
            .and_then(|d| pos.checked_add(d))
        {
            Some(next) => pos = next,
            None => return,
        }
    }
}
