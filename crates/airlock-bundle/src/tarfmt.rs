//! Deterministic tar framing: GNU headers with fixed metadata, padding, end-of-archive.
//! Written by hand (with `tar::Header` for the header block) so that entries can be streamed
//! with a large buffer and a size known in advance from the bundle header.

use std::io::{self, Write};

pub const BLOCK: usize = 512;

/// A regular-file header block: mode 0644, uid/gid 0, mtime 0, no user or group names.
/// Sizes of 8 GiB and more get the GNU base-256 encoding.
pub fn file_header(path: &str, size: u64) -> io::Result<[u8; BLOCK]> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; BLOCK];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Zero bytes after an entry of `size` bytes up to the next block boundary.
pub fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

pub fn write_padding(w: &mut dyn Write, size: u64) -> io::Result<()> {
    const ZEROS: [u8; BLOCK] = [0u8; BLOCK];
    w.write_all(&ZEROS[..padding(size)])
}

/// The two zero blocks that end an archive.
pub fn write_end(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

/// A whole small entry (header, data, padding).
pub fn write_small(w: &mut dyn Write, path: &str, data: &[u8]) -> io::Result<()> {
    w.write_all(&file_header(path, data.len() as u64)?)?;
    w.write_all(data)?;
    write_padding(w, data.len() as u64)
}

/// What a header block says, for the reader. Only what airlock writes is accepted: regular
/// files with a valid checksum. Long-name and PAX extension entries are other entry types
/// and so are refused like any unexpected entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub path: String,
    pub size: u64,
    pub regular: bool,
}

/// Parses one 512-byte header block; `None` for an all-zero (end-of-archive) block.
///
/// Errors never quote the block: before the signature is checked it may be any file's
/// first bytes (a bundle path that is a link to a root-only file), and the `tar` crate's
/// own messages include the raw name field. The entry's name, once the checksum holds, is
/// the caller's to show, escaped.
pub fn parse_header(block: &[u8; BLOCK]) -> Result<Option<ParsedHeader>, String> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = octal(&block[148..156])
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("the header checksum field is not an octal number (not a tar header)")?;
    // The checksum is the byte sum of the block with the checksum field read as spaces.
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(format!(
            "header checksum mismatch (stored {stored}, computed {computed})"
        ));
    }
    let h = tar::Header::from_byte_slice(block);
    let size = h
        .entry_size()
        .map_err(|_| "the entry size field is not a number".to_string())?;
    Ok(Some(ParsedHeader {
        path: String::from_utf8_lossy(&h.path_bytes()).into_owned(),
        size,
        regular: h.entry_type().is_file(),
    }))
}

/// A tar octal field: optional leading spaces, octal digits, then only NULs or spaces.
fn octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ')?;
    let digits = field[start..]
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(b))
        .count();
    let (num, rest) = field[start..].split_at(digits);
    if digits == 0 || !rest.iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    num.iter().try_fold(0u64, |v, &d| {
        v.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_past_8_gib_use_base_256() {
        let size = (8u64 << 30) + 12345;
        let h = file_header("blobs/sha256/x", size).unwrap();
        // The size field (offset 124, 12 bytes) starts with the base-256 marker bit.
        assert_eq!(h[124] & 0x80, 0x80);
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.size().unwrap(), size);
        assert_eq!(parsed.mode().unwrap(), 0o644);
        assert_eq!(parsed.mtime().unwrap(), 0);
        // Below the limit the octal field is kept, for maximum compatibility.
        let small = file_header("a", (8u64 << 30) - 1).unwrap();
        assert_eq!(small[124] & 0x80, 0);
    }

    #[test]
    fn parses_what_it_writes_and_refuses_bad_checksums() {
        let h = file_header("blobs/sha256/abc", 12345).unwrap();
        let p = parse_header(&h).unwrap().unwrap();
        assert_eq!(
            p,
            ParsedHeader {
                path: "blobs/sha256/abc".into(),
                size: 12345,
                regular: true
            }
        );
        let big = file_header("x", (9u64 << 30) + 1).unwrap();
        assert_eq!(parse_header(&big).unwrap().unwrap().size, (9u64 << 30) + 1);
        let mut bad = h;
        bad[0] ^= 1;
        assert!(parse_header(&bad).unwrap_err().contains("checksum"));
        assert_eq!(parse_header(&[0u8; BLOCK]).unwrap(), None);
        let mut dir = tar::Header::new_gnu();
        dir.set_path("d").unwrap();
        dir.set_size(0);
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_cksum();
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(dir.as_bytes());
        assert!(!parse_header(&block).unwrap().unwrap().regular);
    }

    #[test]
    fn errors_never_quote_the_block() {
        let mut block = [0u8; BLOCK];
        let secret = b"root:$y$j9T$SECRETSALT:19700:0:99999:7:::\nuser2:SECRET";
        for (i, b) in block.iter_mut().enumerate() {
            *b = secret[i % secret.len()];
        }
        let e = parse_header(&block).unwrap_err();
        assert!(!e.contains("SECRET") && !e.contains("root"), "{e}");
        // A valid checksum over a garbled size field: the name is still not in the error.
        let mut h = file_header("SECRET-NAME", 1).unwrap();
        h[124..136].copy_from_slice(b"SECRETSIZE!!");
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let e = parse_header(&h).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("size"), "{e}");
    }

    #[test]
    fn octal_fields_read_like_tar() {
        assert_eq!(octal(b"0012345\0"), Some(0o12345));
        assert_eq!(octal(b"  1234 \0"), Some(0o1234));
        assert_eq!(octal(b"012345 \0"), Some(0o12345));
        for bad in [
            &b"        "[..],
            b"\0\0\0\0",
            b"12x4\0",
            b"0089\0",
            b"\x1b[31m",
        ] {
            assert_eq!(octal(bad), None, "{bad:?}");
        }
        assert_eq!(octal(&[b'7'; 30]), None, "overflow");
    }

    #[test]
    fn padding_rounds_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
