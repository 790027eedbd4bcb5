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
    fn padding_rounds_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
