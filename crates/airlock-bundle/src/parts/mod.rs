//! The bundle as files on media: one file, or parts `NAME.001`, `NAME.002`, … cut at a size,
//! plus `NAME.sums` (lines `sha256sum -c` reads) and `NAME.sums.minisig` (a minisign signature
//! over the sums). This module owns cutting the stream into parts as it is written, finding
//! the parts again from whatever file the user names, reading them as one stream, and
//! naming exactly which part is missing, extra, renamed, reordered or corrupt.
//!
//! The sums are an outer layer for transfer stations: they can be checked with standard tools
//! and without the decryption key. The bundle's own signed header still covers every byte of
//! the content; reading never depends on the sums being right.
//!
//! Everything found on media is looked at before any signature is checked, so the work is
//! bounded ([`MAX_PARTS`], [`MAX_SUMS_SIZE`], nothing hashed that cannot be a part), links
//! beside the named file are not followed, and parts are opened one at a time.

mod locate;
pub mod parity;
mod problem;
pub mod repair;
mod sums;
mod write;

pub use locate::{BundleFiles, PartsReader};
pub use problem::PartProblem;
pub use sums::{Layout, SignedSums, Sums};
pub use write::{
    remove_stale, set_fits, write_sums, write_sums_carrying, write_sums_with, Part, PartWriter,
};

/// Appended to the bundle name for the sums file.
pub const SUMS_SUFFIX: &str = ".sums";
/// Appended to the sums file's name for its signature (minisign's convention).
pub const SIG_SUFFIX: &str = ".minisig";
/// How every sums signature's trusted comment starts; the rest records the part layout.
pub const SUMS_COMMENT: &str = "airlock-bundle sums v1";
/// The trusted comment of sums that also list carried files (`carried=K` follows the
/// layout): a v1 reader refuses it as "not a sums signature" instead of reading a carried
/// file as the bundle's last part.
pub const SUMS_COMMENT_V2: &str = "airlock-bundle sums v2";
/// The trusted comment of sums that list parity parts after the data parts (and before
/// any carried files): `carried=K`, then `parity=N code=... stripe=W` follow the layout
/// ([`parity::Scheme`]). v1 and v2 readers refuse it, instead of reading a parity part as
/// the bundle's next part.
pub const SUMS_COMMENT_V3: &str = "airlock-bundle sums v3";
/// File names the sums may list beside the parts as carried files, never read as bundle
/// bytes: the static `airlock-unpack` that `airlock-pack build --with-unpacker` puts
/// beside the bundle for a host that has no unpacker yet.
pub const CARRIED: &[&str] = &["airlock-unpack"];

/// Whether a sums line names a carried file rather than a part.
pub fn is_carried(name: &str) -> bool {
    CARRIED.contains(&name)
}

/// `fat32`: the largest file FAT32 can hold.
pub const FAT32: u64 = (4 << 30) - 1;

/// The most parts a bundle may have: the writer refuses to cut more, and a reader refuses a
/// sums file listing more, before it looks at any of them. (10 000 parts of `fat32` are
/// 40 TiB; of 700M, 6.8 TiB.)
pub const MAX_PARTS: usize = 10_000;
/// A sums file is read only up to this size, before its signature is checked: 10 000 lines
/// of a digest, two spaces and a 255-byte name fit.
pub const MAX_SUMS_SIZE: u64 = 4 << 20;
/// A sums signature is a few hundred bytes.
const MAX_SIG_SIZE: u64 = 4096;
/// The longest file name Linux file systems take.
const MAX_NAME: usize = 255;

/// Parses a part size: a number of bytes with an optional unit (`K`, `M`, `G`, `T` and
/// `KiB`… are powers of 1024, as `split -b` reads them; `KB`, `MB`, `GB`, `TB` powers of
/// 1000) or a medium: `fat32` (4 GiB − 1 byte), `dvd` (4.7 GB), `bd25` (25 GB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let preset = match t.to_ascii_lowercase().as_str() {
        "fat32" => Some(FAT32),
        "dvd" => Some(4_700_000_000),
        "bd25" => Some(25_000_000_000),
        _ => None,
    };
    let size = match preset {
        Some(p) => p,
        None => {
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("{s:?}: expected a size like 4G, 700M, 4GiB or fat32"))?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kib" => 1 << 10,
                "m" | "mib" => 1 << 20,
                "g" | "gib" => 1 << 30,
                "t" | "tib" => 1 << 40,
                "kb" => 1_000,
                "mb" => 1_000_000,
                "gb" => 1_000_000_000,
                "tb" => 1_000_000_000_000,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown unit {unit:?} (K, M, G, T, KiB…, KB…)"
                    ))
                }
            };
            n.checked_mul(mult)
                .ok_or_else(|| format!("{s:?}: too large"))?
        }
    };
    // A part must hold at least the age header and the first tar blocks; tiny parts are
    // almost surely a typo (700 instead of 700M).
    if size < 4096 {
        return Err(format!("{s:?}: a part must be at least 4096 bytes"));
    }
    Ok(size)
}

/// The file name of part `index` (1-based) of bundle `base`.
pub fn part_name(base: &str, index: usize) -> String {
    format!("{base}.{index:03}")
}

/// The name of parity part `index` (1-based): `base.p01`, `base.p02`, … (two digits, more
/// past 99).
pub fn parity_name(base: &str, index: usize) -> String {
    format!("{base}.p{index:02}")
}

/// The parity part number in `name` if it is `base.pNN` (two or more digits).
pub fn parity_index(base: &str, name: &str) -> Option<usize> {
    let digits = name.strip_prefix(base)?.strip_prefix(".p")?;
    (digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The part number in `name` if it is `base.NNN` (three or more digits).
fn part_index(base: &str, name: &str) -> Option<usize> {
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    (digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{Read as _, Write as _};
    use std::path::Path;

    use super::*;

    use crate::sign::{SigningKey, TrustSet};
    use crate::BundleError;
    use crate::Digest;

    #[test]
    fn sizes_parse_like_split_and_media() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("700MB").unwrap(), 700_000_000);
        assert_eq!(parse_size("fat32").unwrap(), 4_294_967_295);
        assert_eq!(parse_size("DVD").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("bd25").unwrap(), 25_000_000_000);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        for bad in ["", "G", "4X", "-1G", "100", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A new signing key, and the trust set of its public key (in the returned directory).
    fn signer() -> (tempfile::TempDir, SigningKey, TrustSet) {
        let keys = tempfile::tempdir().unwrap();
        let (sk, pk, _) = crate::sign::generate_keypair(keys.path(), None).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        let trust = TrustSet::new(vec![crate::sign::TrustedKey::load(&pk).unwrap()]);
        (keys, key, trust)
    }

    fn write_parts(dir: &Path, data: &[u8], limit: Option<u64>, chunk: usize) -> Vec<Part> {
        let mut w = PartWriter::new(dir, "b.airlock", limit);
        for c in data.chunks(chunk) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    /// `data` as `b.airlock.001…` of `part` bytes, `n` parity parts and the signed sums
    /// listing both; the data parts and the parity parts.
    fn write_parity_set(
        dir: &Path,
        data: &[u8],
        part: u64,
        n: usize,
        key: &SigningKey,
    ) -> (Vec<Part>, Vec<Part>) {
        let parts = write_parts(dir, data, Some(part), 4096);
        let (scheme, pp) = parity::write_parity(dir, "b.airlock", &parts, n).unwrap();
        write_sums_with(
            dir,
            "b.airlock",
            &parts,
            Some(part),
            Some((&scheme, &pp)),
            &[],
            key,
        )
        .unwrap();
        (parts, pp)
    }

    #[test]
    fn parts_cut_at_the_limit_and_read_back_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_000), 3333);
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "b.airlock.001",
                "b.airlock.002",
                "b.airlock.003",
                "b.airlock.004",
                "b.airlock.005"
            ]
        );
        assert!(parts.iter().all(|p| p.size == 10_000));
        assert_eq!(parts[2].digest, Digest::of(&data[20_000..30_000]));
        // No temporaries are left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        for first in [
            "b.airlock.001",
            "b.airlock.003",
            "b.airlock",
            "b.airlock.sums",
        ] {
            if first == "b.airlock.sums" {
                std::fs::write(dir.path().join(first), Sums::of(&parts).to_text()).unwrap();
            }
            let files = BundleFiles::locate(&dir.path().join(first)).unwrap();
            assert_eq!(files.parts.len(), 5, "{first}");
            let mut back = Vec::new();
            files.reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{first}");
        }
    }

    #[test]
    fn an_unsplit_bundle_is_one_part_and_a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let parts = write_parts(dir.path(), b"hello", None, 2);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "b.airlock");
        let mut w = PartWriter::new(dir.path(), "c.airlock", Some(4096));
        w.write_all(&[1u8; 10_000]).unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["b.airlock"]);
    }

    /// A reader refuses more than MAX_PARTS parts, so the writer never cuts them.
    #[test]
    fn the_writer_cuts_no_more_parts_than_a_reader_takes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::new(dir.path(), "b.airlock", Some(4096));
        let chunk = vec![7u8; 4096 * 100];
        for _ in 0..MAX_PARTS / 100 {
            w.write_all(&chunk).unwrap();
        }
        let e = w.write_all(b"one byte more").unwrap_err();
        assert!(e.to_string().contains("more than 10000 parts"), "{e}");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A set as large as a reader takes is written and read back; one file more (a
    /// carried unpacker beside the most parts, or parity on top) is refused before the sums
    /// are written, not discovered by the reader at the gap.
    #[test]
    fn sums_list_no_more_files_than_a_reader_takes() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key, _) = signer();
        let part = |i: usize| Part {
            name: part_name("b.airlock", i),
            digest: Digest::of(&i.to_le_bytes()),
            size: 1,
        };
        let most: Vec<Part> = (1..=MAX_PARTS).map(part).collect();
        let (sums, _) =
            write_sums_with(dir.path(), "b.airlock", &most, None, None, &[], &key).unwrap();
        let listed = Sums::parse(&std::fs::read(&sums).unwrap(), &sums).unwrap();
        assert_eq!(listed.lines.len(), MAX_PARTS);
        let unpacker = Part {
            name: CARRIED[0].to_string(),
            digest: Digest::of(b"unpacker"),
            size: 8,
        };
        let before = std::fs::read(&sums).unwrap();
        let e = write_sums_with(
            dir.path(),
            "b.airlock",
            &most,
            None,
            None,
            &[unpacker],
            &key,
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::Usage(_)), "{e}");
        assert!(
            e.to_string().contains(
                "b.airlock: 10000 data parts, 0 parity parts and 1 carried files are more than the 10000 files"
            ),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&sums).unwrap(),
            before,
            "the sums are unchanged"
        );
        let e = set_fits("b.airlock", MAX_PARTS - 1, 2, 0).unwrap_err();
        assert!(
            e.to_string().contains("9999 data parts, 2 parity parts"),
            "{e}"
        );
        set_fits("b.airlock", MAX_PARTS - 3, 2, 1).unwrap();
    }

    #[test]
    fn sums_round_trip_and_refuse_paths() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a");
        let text = format!("{}  a.001\n{} *a.002\n", d.hex(), d.hex());
        let s = Sums::parse(text.as_bytes(), p).unwrap();
        assert_eq!(s.lines[1].0, "a.002");
        for bad in [
            format!("{}  ../a.001\n", d.hex()),
            format!("{}  /etc/passwd\n", d.hex()),
            format!("{} a.001\n", d.hex()),
            format!("{}  a\n{}  a\n", d.hex(), d.hex()),
            "nothex  a\n".to_string(),
            String::new(),
        ] {
            assert!(Sums::parse(bad.as_bytes(), p).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn layout_comment_round_trips() {
        let l = Layout {
            parts: 5,
            total: 48_000,
            part_size: Some(10_000),
        };
        assert_eq!(Layout::parse_comment(&l.comment()), Some(l));
        assert_eq!(l.size_of(0), Some(10_000));
        assert_eq!(l.size_of(4), Some(8_000));
        assert_eq!(l.size_of(5), None);
        let one = Layout::of(&[], None);
        assert_eq!(one.size_of(0), None);
    }

    /// Numbers in a trusted comment are the signer's (or, unverified, anyone's): no layout
    /// makes the arithmetic wrap (or panic in a debug build).
    #[test]
    fn layouts_that_overflow_are_not_layouts() {
        let max = u64::MAX;
        for c in [
            format!("{SUMS_COMMENT} parts=4 part-size={max} total=4"),
            format!("{SUMS_COMMENT} parts=3 part-size=10 total=5"),
            format!("{SUMS_COMMENT} parts=3 part-size=10 total=31"),
            format!("{SUMS_COMMENT} parts=0 total=0"),
            format!("{SUMS_COMMENT} parts=2 total=10"),
            format!("{SUMS_COMMENT} parts=1 part-size=5 total=5"),
            format!("{SUMS_COMMENT} parts={max} part-size=2 total={max}"),
            format!("{SUMS_COMMENT} parts=18446744073709551616 total=1"),
        ] {
            assert_eq!(Layout::parse_comment(&c), None, "{c}");
        }
        let l = Layout::parse_comment(&format!(
            "{SUMS_COMMENT} parts=2 part-size={max} total={max}"
        ))
        .unwrap();
        assert_eq!((l.size_of(0), l.size_of(1)), (Some(max), Some(0)));
        // Built by hand, past what parse_comment accepts: None, not a wrapped number.
        let l = Layout {
            parts: 4,
            total: 4,
            part_size: Some(max),
        };
        assert_eq!(l.size_of(3), None);
        assert_eq!(l.size_of(1), Some(max));
        let sizes = Layout::of(
            &[
                Part {
                    name: "a".into(),
                    digest: Digest::of(b""),
                    size: max,
                },
                Part {
                    name: "b".into(),
                    digest: Digest::of(b""),
                    size: 1,
                },
            ],
            Some(max),
        );
        assert_eq!(sizes.total, max);
    }

    #[test]
    fn sums_are_bounded_and_parsed_in_linear_time() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a").hex();
        // The most parts a bundle may have, a name repeated only on the last line: found
        // (a quadratic check took seconds for this many).
        let mut text: String = (0..MAX_PARTS - 1)
            .map(|i| format!("{d}  b.airlock.{i:05}\n"))
            .collect();
        text.push_str(&format!("{d}  b.airlock.00000\n"));
        let started = std::time::Instant::now();
        let e = Sums::parse(text.as_bytes(), p).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "line {MAX_PARTS}: b.airlock.00000 is listed twice"
            )),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // One line more than that many parts.
        let text: String = (0..=MAX_PARTS)
            .map(|i| format!("{d}  b.airlock.{i:05}\n"))
            .collect();
        let e = Sums::parse(text.as_bytes(), p).unwrap_err();
        assert!(e.to_string().contains("more than 10000 parts"), "{e}");
        // More bytes than a sums file may have.
        let big = vec![b'\n'; MAX_SUMS_SIZE as usize + 1];
        let e = Sums::parse(&big, p).unwrap_err();
        assert!(e.to_string().contains("more than 4194304 bytes"), "{e}");
    }

    #[test]
    fn sums_that_are_not_text_or_name_controls_are_malformed() {
        let p = Path::new("x.sums");
        let d = Digest::of(b"a").hex();
        let mut bytes = format!("{d}  a\n{d}  b").into_bytes();
        bytes.push(0xff);
        let e = Sums::parse(&bytes, p).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity, "{e}");
        assert!(e.to_string().contains("x.sums line 2: not UTF-8"), "{e}");
        for name in ["x\u{1b}]0;PWNED\u{7}", "a\u{202e}b", &"n".repeat(256)] {
            let e = Sums::parse(format!("{d}  {name}\n").as_bytes(), p).unwrap_err();
            let shown = e.to_string();
            assert!(!crate::text::has_controls(&shown), "{shown:?}");
            assert!(shown.contains("is not a part name"), "{shown}");
        }
        // The digest is not echoed either.
        let e = Sums::parse("\u{1b}[2J  a\n".as_bytes(), p).unwrap_err();
        assert!(!crate::text::has_controls(&e.to_string()), "{e}");
    }

    /// Five signed parts, then each kind of damage is named exactly.
    #[test]
    fn problems_are_named_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, key, trust) = signer();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_000), 4096);
        write_sums(dir.path(), "b.airlock", &parts, Some(10_000), &key).unwrap();
        let p = |n: usize| dir.path().join(part_name("b.airlock", n));
        let check = || {
            let files = BundleFiles::locate(&p(1)).unwrap();
            let sums = SignedSums::load(&files, Some(&trust)).unwrap();
            let found = sums.check_all(&files, &|_| {}).unwrap();
            found.iter().map(|x| x.to_string()).collect::<Vec<_>>()
        };
        assert!(check().is_empty(), "{:?}", check());
        // Another bundle beside it is not a stray of this one.
        std::fs::write(dir.path().join("b.airlock-old.001"), b"x").unwrap();
        assert!(check().is_empty(), "{:?}", check());

        // A flipped byte in part 3.
        let orig3 = std::fs::read(p(3)).unwrap();
        let mut bad = orig3.clone();
        bad[77] ^= 1;
        std::fs::write(p(3), &bad).unwrap();
        let found = check();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("b.airlock.003: corrupt: expected sha256 "),
            "{found:?}"
        );
        std::fs::write(p(3), &orig3).unwrap();

        // Renamed.
        std::fs::rename(p(3), dir.path().join("b.airlock.3")).unwrap();
        assert_eq!(
            check(),
            ["b.airlock.003: missing; its content is in b.airlock.3 (renamed?)"]
        );
        std::fs::rename(dir.path().join("b.airlock.3"), p(3)).unwrap();

        // Missing outright.
        std::fs::rename(p(4), keys.path().join("away")).unwrap();
        assert_eq!(check(), ["b.airlock.004: missing"]);
        let files = BundleFiles::locate(&p(1)).unwrap();
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(
            sums.check_layout(&files),
            [PartProblem::Missing {
                part: "b.airlock.004".into(),
                found_as: None
            }]
        );
        std::fs::rename(keys.path().join("away"), p(4)).unwrap();

        // Swapped (reordered).
        let two = std::fs::read(p(2)).unwrap();
        std::fs::write(p(2), &orig3).unwrap();
        std::fs::write(p(3), &two).unwrap();
        let found = check();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("b.airlock.002: holds the content of b.airlock.003"));
        assert!(found[1].starts_with("b.airlock.003: holds the content of b.airlock.002"));
        std::fs::write(p(2), &two).unwrap();
        std::fs::write(p(3), &orig3).unwrap();

        // Duplicated: a copy beside the parts.
        std::fs::copy(p(2), dir.path().join("b.airlock.002.copy")).unwrap();
        assert_eq!(
            check(),
            ["b.airlock.002.copy: not in the signed sums; it is a copy of b.airlock.002 (duplicated part)"]
        );
        std::fs::remove_file(dir.path().join("b.airlock.002.copy")).unwrap();

        // Truncated: named from the signed layout before hashing.
        std::fs::write(p(5), &data[40_000..45_000]).unwrap();
        let files = BundleFiles::locate(&p(1)).unwrap();
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(
            sums.check_layout(&files)
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>(),
            ["b.airlock.005: 5000 bytes, the signed sums say 10000 (truncated)"]
        );
        // … and not hashed: its size already says it is not the part.
        assert_eq!(
            check(),
            ["b.airlock.005: 5000 bytes, the signed sums say 10000 (truncated)"]
        );
        std::fs::write(p(5), &data[40_000..]).unwrap();

        // A stray larger than any part is named by its size, never read: 200 GiB, sparse.
        let huge = dir.path().join("b.airlock.999");
        File::create(&huge).unwrap().set_len(200 << 30).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            check(),
            ["b.airlock.999: not a part of this bundle (not in the signed sums); 214748364800 bytes, larger than any part, so not hashed"]
        );
        // Also while saying where a missing part went.
        std::fs::rename(p(2), dir.path().join("b.airlock.two")).unwrap();
        assert_eq!(
            check(),
            [
                "b.airlock.002: missing; its content is in b.airlock.two (renamed?)",
                "b.airlock.999: not a part of this bundle (not in the signed sums); 214748364800 bytes, larger than any part, so not hashed"
            ]
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        std::fs::rename(dir.path().join("b.airlock.two"), p(2)).unwrap();
        std::fs::remove_file(&huge).unwrap();
        assert!(check().is_empty(), "{:?}", check());
    }

    #[test]
    fn links_beside_the_named_file_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(8192), 4096);
        assert_eq!(parts.len(), 3);
        let part = |n: usize| dir.path().join(part_name("b.airlock", n));
        // Part 2 moved away and linked back: same bytes, still refused, named.
        std::fs::rename(part(2), other.path().join("two")).unwrap();
        std::os::unix::fs::symlink(other.path().join("two"), part(2)).unwrap();
        let e = BundleFiles::locate(&part(1)).unwrap_err();
        assert!(matches!(e, BundleError::Malformed(_)), "{e}");
        assert!(
            e.to_string().contains("b.airlock.002 is a symbolic link"),
            "{e}"
        );
        // Named by the user, a link is read (their choice); the links beside it are not.
        assert_eq!(BundleFiles::locate(&part(2)).unwrap().parts.len(), 3);
        std::fs::rename(part(3), other.path().join("three")).unwrap();
        std::os::unix::fs::symlink(other.path().join("three"), part(3)).unwrap();
        let e = BundleFiles::locate(&part(2)).unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003 is a symbolic link"),
            "{e}"
        );
        std::fs::remove_file(part(3)).unwrap();
        std::fs::rename(other.path().join("three"), part(3)).unwrap();
        std::fs::remove_file(part(2)).unwrap();
        std::fs::rename(other.path().join("two"), part(2)).unwrap();
        let whole = other.path().join("whole.airlock");
        std::fs::write(&whole, &data).unwrap();
        let link = dir.path().join("w.airlock");
        std::os::unix::fs::symlink(&whole, &link).unwrap();
        let files = BundleFiles::locate(&link).unwrap();
        let mut back = Vec::new();
        files.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // A part replaced by a link after it was found is refused when it is reached.
        let files = BundleFiles::locate(&part(1)).unwrap();
        std::fs::rename(part(3), other.path().join("three")).unwrap();
        std::os::unix::fs::symlink(other.path().join("three"), part(3)).unwrap();
        let e = files
            .reader()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003 is a symbolic link"),
            "{e}"
        );
        // A FIFO put in a part's place after it was found is refused, not waited on.
        std::fs::remove_file(part(3)).unwrap();
        std::fs::rename(other.path().join("three"), part(3)).unwrap();
        let files = BundleFiles::locate(&part(1)).unwrap();
        std::fs::remove_file(part(3)).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(part(3))
            .status()
            .unwrap();
        assert!(fifo.success());
        let e = files
            .reader()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("b.airlock.003: not a regular file"),
            "{e}"
        );
    }

    /// Every file of a set is written under a fixed temp name (a killed whole-bundle build
    /// resumes from it); links planted at those names, dangling or not, are replaced, never
    /// written through.
    #[test]
    fn links_at_the_temp_names_are_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let (_keys, key, trust) = signer();
        let temps = [
            "b.airlock.001",
            "b.airlock.002",
            "b.airlock.003",
            "b.airlock.p01",
            "b.airlock.sums",
            "b.airlock.sums.minisig",
        ];
        for (i, name) in temps.iter().enumerate() {
            let target = match i % 2 {
                0 => victim.clone(),
                _ => outside.path().join(format!("created-{i}")),
            };
            std::os::unix::fs::symlink(&target, dir.path().join(format!(".{name}.partial")))
                .unwrap();
        }
        let data: Vec<u8> = (0..25_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write_parity_set(dir.path(), &data, 10_000, 1, &key);

        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let mut outside_now: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside_now.sort();
        assert_eq!(
            outside_now,
            ["victim"],
            "nothing created through a dangling link"
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, temps, "the links are gone, the set is in place");
        let files = BundleFiles::locate(&dir.path().join("b.airlock.sums")).unwrap();
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert!(sums.check_all(&files, &|_| {}).unwrap().is_empty());
    }

    #[test]
    fn a_sums_file_without_its_signature_does_not_choose_the_parts() {
        let dir = tempfile::tempdir().unwrap();
        write_parts(dir.path(), b"the real bundle", None, 100);
        std::fs::write(dir.path().join("old-release.bin"), b"something else").unwrap();
        let sums = dir.path().join("b.airlock.sums");
        std::fs::write(
            &sums,
            format!("{}  old-release.bin\n", Digest::of(b"something else").hex()),
        )
        .unwrap();
        for named in ["b.airlock", "b.airlock.sums"] {
            let files = BundleFiles::locate(&dir.path().join(named)).unwrap();
            assert_eq!(files.parts, [dir.path().join("b.airlock")], "{named}");
            assert!(!files.listed_by_sums());
            assert_eq!(files.describe_parts(), "b.airlock");
        }
        // With a signature beside it (valid or not: that is checked next), the sums list
        // the parts.
        std::fs::write(dir.path().join("b.airlock.sums.minisig"), b"x").unwrap();
        let files = BundleFiles::locate(&dir.path().join("b.airlock")).unwrap();
        assert_eq!(files.parts, [dir.path().join("old-release.bin")]);
        assert!(files.listed_by_sums());
        assert_eq!(
            files.sums_digest(),
            Some(Digest::of(&std::fs::read(&sums).unwrap()))
        );
    }

    #[test]
    fn a_sums_file_without_signature_or_with_a_moved_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key, trust) = signer();
        let parts = write_parts(dir.path(), &[5u8; 9000], Some(4096), 1000);
        let (sums, sig) = write_sums(dir.path(), "b.airlock", &parts, Some(4096), &key).unwrap();
        let files = BundleFiles::locate(&sums).unwrap();
        assert_eq!(files.parts.len(), 3);
        let ok = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(ok.signer, Some(key.key_id()));
        assert_eq!(ok.layout.unwrap().parts, 3);
        // A header signature over the same bytes is not a sums signature.
        std::fs::write(&sig, key.sign(&std::fs::read(&sums).unwrap())).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert!(e.to_string().contains("not a sums signature"), "{e}");
        std::fs::remove_file(&sig).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Trust);
        assert!(e.to_string().contains("missing"), "{e}");
    }

    /// A carried file (the unpacker beside the bundle) is listed and signed with the parts
    /// but never read as bundle bytes; it is checked when there, and may be moved away.
    #[test]
    fn carried_files_are_listed_checked_and_never_read_as_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key, trust) = signer();
        let data: Vec<u8> = (0..30_000u32).map(|i| (i * 11 % 239) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_000), 4096);
        let tool = b"\x7fELF pretend unpacker".to_vec();
        std::fs::write(dir.path().join("airlock-unpack"), &tool).unwrap();
        let carried = [Part {
            name: "airlock-unpack".into(),
            digest: Digest::of(&tool),
            size: tool.len() as u64,
        }];
        let (sums_path, sig_path) = write_sums_carrying(
            dir.path(),
            "b.airlock",
            &parts,
            Some(10_000),
            &carried,
            &key,
        )
        .unwrap();
        let text = std::fs::read_to_string(&sums_path).unwrap();
        assert!(
            text.ends_with(&format!("{}  airlock-unpack\n", Digest::of(&tool).hex())),
            "{text}"
        );
        let sig = std::fs::read_to_string(&sig_path).unwrap();
        assert_eq!(
            crate::sign::trusted_comment(&sig).unwrap(),
            format!("{SUMS_COMMENT_V2} parts=3 part-size=10000 total=30000 carried=1")
        );
        let files = BundleFiles::locate(&dir.path().join("b.airlock.sums")).unwrap();
        assert_eq!(files.parts.len(), 3);
        assert_eq!(files.carried, [dir.path().join("airlock-unpack")]);
        let mut back = Vec::new();
        files.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "the carried file is not read as bundle bytes");
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(sums.carried().count(), 1);
        assert!(sums.check_layout(&files).is_empty());
        assert!(sums.check_all(&files, &|_| {}).unwrap().is_empty());

        // A changed unpacker is named; one moved away is not the bundle's problem.
        std::fs::write(dir.path().join("airlock-unpack"), b"\x7fELF other").unwrap();
        let found: Vec<String> = sums
            .check_all(&files, &|_| {})
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("airlock-unpack: corrupt: expected sha256 "),
            "{found:?}"
        );
        std::fs::remove_file(dir.path().join("airlock-unpack")).unwrap();
        assert!(sums.check_all(&files, &|_| {}).unwrap().is_empty());

        // Only the carried names may be carried.
        let mut other = carried.clone();
        other[0].name = "b.airlock.004".into();
        let e = write_sums_carrying(dir.path(), "b.airlock", &parts, Some(10_000), &other, &key)
            .unwrap_err();
        assert!(
            e.to_string().contains("not a file the sums may carry"),
            "{e}"
        );

        // Signed v1 sums that list a carried file: a v1 reader would read it as a part, so
        // the count in the signed comment must match.
        let listed = std::fs::read(&sums_path).unwrap();
        let v1 = key.sign_with(
            &listed,
            &format!("{SUMS_COMMENT} parts=3 part-size=10000 total=30000"),
        );
        std::fs::write(&sig_path, v1).unwrap();
        let files = BundleFiles::locate(&dir.path().join("b.airlock.001")).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not count the 1 carried file(s)"),
            "{e}"
        );
    }

    /// Parity parts are listed between the data parts and the carried files under a v3
    /// comment that records the scheme, checked as parts are, and never read as bundle
    /// bytes; a v1 or v2 signature over sums listing them is refused.
    #[test]
    fn parity_parts_are_listed_checked_and_never_read_as_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key, trust) = signer();
        let data: Vec<u8> = (0..25_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let parts = write_parts(dir.path(), &data, Some(10_001), 4096);
        let (scheme, pp) = parity::write_parity(dir.path(), "b.airlock", &parts, 2).unwrap();
        assert_eq!(scheme.parity_size(), 10_002);
        assert!(pp.iter().all(|p| p.size == 10_002));
        let names: Vec<&str> = pp.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b.airlock.p01", "b.airlock.p02"]);
        let tool = b"\x7fELF pretend unpacker".to_vec();
        std::fs::write(dir.path().join("airlock-unpack"), &tool).unwrap();
        let carried = [Part {
            name: "airlock-unpack".into(),
            digest: Digest::of(&tool),
            size: tool.len() as u64,
        }];
        let (sums_path, sig_path) = write_sums_with(
            dir.path(),
            "b.airlock",
            &parts,
            Some(10_001),
            Some((&scheme, &pp)),
            &carried,
            &key,
        )
        .unwrap();
        let text = std::fs::read_to_string(&sums_path).unwrap();
        let listed: Vec<&str> = text.lines().map(|l| &l[66..]).collect();
        assert_eq!(
            listed,
            [
                "b.airlock.001",
                "b.airlock.002",
                "b.airlock.003",
                "b.airlock.p01",
                "b.airlock.p02",
                "airlock-unpack"
            ]
        );
        let sig = std::fs::read_to_string(&sig_path).unwrap();
        assert_eq!(
            crate::sign::trusted_comment(&sig).unwrap(),
            format!(
                "{SUMS_COMMENT_V3} parts=3 part-size=10001 total=25001 carried=1 parity=2 code=leopard16-high stripe={}",
                parity::MAX_STRIPE
            )
        );
        let files = BundleFiles::locate(&dir.path().join("b.airlock.p01")).unwrap();
        assert_eq!(files.parts.len(), 3);
        assert_eq!(files.parity.len(), 2);
        let mut back = Vec::new();
        files.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "parity parts are not read as bundle bytes");
        let sums = SignedSums::load(&files, Some(&trust)).unwrap();
        assert_eq!(sums.parity_scheme, Some(scheme));
        assert_eq!(sums.parts().count(), 3);
        assert_eq!(sums.parity().count(), 2);
        assert!(sums.check_layout(&files).is_empty());
        assert!(sums.check_all(&files, &|_| {}).unwrap().is_empty());

        // A damaged or missing parity part is named, like a part.
        let p2 = dir.path().join("b.airlock.p02");
        let mut bytes = std::fs::read(&p2).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&p2, &bytes).unwrap();
        std::fs::remove_file(dir.path().join("b.airlock.p01")).unwrap();
        let found: Vec<String> = sums
            .check_all(&files, &|_| {})
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("b.airlock.p01: missing"), "{found:?}");
        assert!(found[1].starts_with("b.airlock.p02: corrupt"), "{found:?}");

        // Signed v2 sums listing parity parts: a v2 reader would read them as parts.
        let listed = std::fs::read(&sums_path).unwrap();
        let v2 = key.sign_with(
            &listed,
            &format!("{SUMS_COMMENT_V2} parts=3 part-size=10001 total=25001 carried=1"),
        );
        std::fs::write(&sig_path, v2).unwrap();
        let files = BundleFiles::locate(&dir.path().join("b.airlock.001")).unwrap();
        let e = SignedSums::load(&files, Some(&trust)).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not count the 2 parity part(s)"),
            "{e}"
        );
    }

    /// `repair`'s plan finds up to N damaged, truncated, swapped or lost files of the set
    /// and rebuilds them from the rest, checked against the signed sums; more than N is
    /// refused, naming them, before anything is rebuilt.
    #[test]
    fn repair_rebuilds_up_to_n_files_and_refuses_more() {
        use repair::RepairPlan;
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key, trust) = signer();
        let data: Vec<u8> = (0..40_123u32).map(|i| (i * 13 % 241) as u8).collect();
        let (parts, pp) = write_parity_set(dir.path(), &data, 9_999, 2, &key);
        let names: Vec<String> = parts.iter().chain(&pp).map(|p| p.name.clone()).collect();
        let path = |n: &str| dir.path().join(n);
        let good: Vec<Vec<u8>> = names
            .iter()
            .map(|n| std::fs::read(path(n)).unwrap())
            .collect();
        let plan = || {
            let files = BundleFiles::locate(&path("b.airlock.sums")).unwrap();
            let sums = SignedSums::load(&files, Some(&trust)).unwrap();
            RepairPlan::find(&files, &sums, &|_| {})
        };
        let shards = || parity::FileShards::new(names.iter().map(|n| path(n)).collect());
        // Rebuilds by the plan (and by the next one, if the rebuild found more damage)
        // into memory; returns the last plan, how many passes it took and what was rebuilt.
        let rebuild = |mut plan: RepairPlan| {
            for passes in 1..=2 {
                let mut out = vec![Vec::new(); plan.lost.len()];
                match plan.rebuild(&shards(), &mut out, &|_| {})? {
                    None => return Ok((plan, passes, out)),
                    Some(next) => {
                        assert!(next.unverified.is_empty(), "the second plan knows all");
                        plan = next;
                    }
                }
            }
            panic!("a second pass found more damage")
        };
        // Rebuilds what the plan found lost and puts the good files back.
        let rebuild_and_restore = |plan: RepairPlan| {
            let (plan, passes, out) = rebuild(plan).unwrap();
            for (o, &i) in out.iter().zip(&plan.lost) {
                assert!(*o == good[i], "{} rebuilt", names[i]);
            }
            for (n, g) in names.iter().zip(&good) {
                std::fs::write(path(n), g).unwrap();
            }
            (plan.lost, passes)
        };
        let nothing = plan().unwrap();
        assert!(nothing.lost.is_empty());
        assert_eq!(nothing.covered.len(), 7);

        // Damage kinds: flipped byte, truncated, zeroed, deleted, swapped (two files).
        let damage = |kind: &str, i: usize| {
            let p = path(&names[i]);
            match kind {
                "flip" => {
                    let mut b = good[i].clone();
                    let mid = b.len() / 2;
                    b[mid] ^= 0x40;
                    std::fs::write(&p, b).unwrap();
                }
                "truncate" => std::fs::write(&p, &good[i][..good[i].len() - 1]).unwrap(),
                "zero" => std::fs::write(&p, vec![0u8; good[i].len()]).unwrap(),
                "delete" => std::fs::remove_file(&p).unwrap(),
                _ => unreachable!(),
            }
        };
        // One pass when the damage shows in the sizes (the rest is hashed as the rebuild
        // reads it), or when nothing does (everything is hashed first); two when a file of
        // the right size turns out damaged during a rebuild.
        for (kind_a, a, kind_b, b, passes) in [
            ("flip", 1, "delete", 5, 2),
            ("truncate", 4, "zero", 0, 2),
            ("delete", 3, "delete", 2, 1),
            ("flip", 6, "truncate", 5, 2),
            ("flip", 6, "zero", 2, 1),
        ] {
            damage(kind_a, a);
            damage(kind_b, b);
            let case = format!("{kind_a} {a}, {kind_b} {b}");
            let p = plan().unwrap();
            let by_size = |k: &str| k == "delete" || k == "truncate";
            assert_eq!(
                p.unverified.is_empty(),
                !by_size(kind_a) && !by_size(kind_b),
                "{case}: what is left to hash as it is read"
            );
            assert_eq!(
                rebuild_and_restore(p),
                (vec![a.min(b), a.max(b)], passes),
                "{case}"
            );
        }
        // Swapped parts: both are lost, and rebuilt.
        std::fs::write(path(&names[0]), &good[1]).unwrap();
        std::fs::write(path(&names[1]), &good[0]).unwrap();
        let p = plan().unwrap();
        assert_eq!(p.lost, [0, 1]);
        assert!(p.unverified.is_empty());
        assert_eq!(rebuild_and_restore(p), (vec![0, 1], 1));
        let files = BundleFiles::locate(&path("b.airlock.sums")).unwrap();
        let mut back = Vec::new();
        files.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        // A source that changes after everything was hashed: the rebuilt file does not
        // match the signed sums, and that is an error (the caller places nothing).
        damage("flip", 2);
        let p = plan().unwrap();
        assert_eq!((&p.lost[..], p.unverified.is_empty()), (&[2][..], true));
        damage("flip", 0);
        let mut out = vec![Vec::new()];
        let e = p.rebuild(&shards(), &mut out, &|_| {}).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity);
        assert!(
            e.to_string().contains(&format!(
                "rebuilt b.airlock.003 does not match the signed sums (expected sha256 {}",
                crate::Digest::of(&good[2]).hex()
            )),
            "{e}"
        );
        // One lost by its size, another damaged where it stands: the rebuild that hashes
        // the rest finds the second, and the next pass rebuilds both.
        damage("delete", 2);
        let p = plan().unwrap();
        assert_eq!(
            (&p.lost[..], &p.unverified[..]),
            (&[2][..], &[0, 1, 3, 4, 5, 6][..])
        );
        assert_eq!(rebuild_and_restore(p), (vec![0, 2], 2));

        // Three damaged with two parity parts: refused, naming them, by the outer check
        // when all three show in their sizes or sha256...
        let refusal = "3 of 7 files damaged or missing (b.airlock.001, b.airlock.003, b.airlock.p02); 2 parity parts rebuild at most 2: 1 more good files would be needed. Nothing was changed.";
        damage("flip", 0);
        damage("zero", 2);
        damage("zero", 6);
        let e = plan().unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity);
        assert!(e.to_string().contains(refusal), "{e}");
        // ...or by the rebuild that finds the third.
        damage("delete", 2);
        let e: BundleError = rebuild(plan().unwrap()).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity);
        assert!(e.to_string().contains(refusal), "{e}");
    }
}
