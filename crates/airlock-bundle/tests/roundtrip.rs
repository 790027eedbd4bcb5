//! Writer and reader against each other: a bundle round-trips, every kind of damage is
//! refused with the entry named, and sizes past 8 GiB stream through in constant memory.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use airlock_bundle::crypt::{encrypting_writer, Decryption, Encryption};
use airlock_bundle::header::{Entry, Header, FORMAT_NAME, FORMAT_VERSION};
use airlock_bundle::reader::{read_bundle, ReadOptions, Trust, Verified, Visitor};
use airlock_bundle::sign::{generate_keypair, SigningKey, TrustSet, TrustedKey};
use airlock_bundle::writer::write_bundle;
use airlock_bundle::{BundleError, Digest, ErrorClass};

struct Keys {
    _dir: tempfile::TempDir,
    key: SigningKey,
    trust: TrustSet,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk, _) = generate_keypair(dir.path(), None).unwrap();
    Keys {
        key: SigningKey::load(&sk, None).unwrap(),
        trust: TrustSet::new(vec![TrustedKey::load(&pk).unwrap()]),
        _dir: dir,
    }
}

fn entry(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        digest: Digest::of(data),
        size: data.len() as u64,
        media_type: None,
    }
}

fn sample() -> (Header, HashMap<String, Vec<u8>>) {
    let mut blobs = HashMap::new();
    let mut entries = Vec::new();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let index = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    for (p, d) in [("oci-layout", layout), ("index.json", index)] {
        entries.push(entry(p, &d));
        blobs.insert(p.to_string(), d);
    }
    for i in 0..3u8 {
        let data: Vec<u8> = (0..(5000 + i as usize * 777))
            .map(|j| (j as u8) ^ i)
            .collect();
        let d = Digest::of(&data);
        entries.push(entry(&d.blob_path(), &data));
        blobs.insert(d.blob_path(), data);
    }
    let header = Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        provenance: Vec::new(),
        tool: "test".into(),
        name: "t".into(),
        created: "2026-01-01T00:00:00Z".into(),
        entries,
        images: vec![],
        models: vec![],
        files: vec![],
        expected_present: vec![],
        compose: Vec::new(),
    };
    (header, blobs)
}

fn write(header: &Header, blobs: &HashMap<String, Vec<u8>>, key: &SigningKey) -> Vec<u8> {
    let mut out = Vec::new();
    write_bundle(&mut out, header, key, &mut |e: &Entry| {
        Ok(Box::new(io::Cursor::new(blobs[&e.path].clone())) as Box<dyn Read>)
    })
    .unwrap();
    out
}

#[derive(Debug, Default)]
struct Collect(Vec<(String, Vec<u8>)>, bool);
impl Visitor for Collect {
    fn entry(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        self.0.push((e.path.clone(), v));
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BundleError> {
        self.1 = true;
        Ok(())
    }
}

fn read(
    bytes: Vec<u8>,
    trust: &TrustSet,
    dec: &Decryption,
) -> Result<(Verified, Collect), BundleError> {
    let mut c = Collect::default();
    let opts = ReadOptions {
        trust: Trust::Keys(trust),
        decryption: dec,
    };
    let v = read_bundle(io::Cursor::new(bytes), &opts, &mut c)?;
    Ok((v, c))
}

#[test]
fn round_trip_plain_and_deterministic() {
    let k = keys();
    let (header, blobs) = sample();
    let a = write(&header, &blobs, &k.key);
    assert_eq!(a, write(&header, &blobs, &k.key), "same input, same bytes");
    // What a progress bar over the writer's output is told to expect.
    assert_eq!(
        airlock_bundle::writer::plaintext_size(&header, &k.key),
        a.len() as u64
    );
    let (v, c) = read(a, &k.trust, &Decryption::default()).unwrap();
    assert!(c.1, "finish must be called");
    assert_eq!(v.header, header);
    assert_eq!(v.signer, Some(k.key.key_id()));
    assert!(!v.encrypted);
    assert_eq!(c.0.len(), header.entries.len());
    for (p, d) in &c.0 {
        assert_eq!(&blobs[p], d);
    }
}

#[test]
fn round_trip_encrypted() {
    let k = keys();
    let (header, blobs) = sample();
    let plain = write(&header, &blobs, &k.key);
    let (secret, recipient) = airlock_bundle::crypt::generate_identity();
    let enc = Encryption::Recipients(vec![
        airlock_bundle::crypt::parse_recipient(&recipient).unwrap()
    ]);
    let mut w = encrypting_writer(Vec::new(), &enc).unwrap();
    w.write_all(&plain).unwrap();
    let cipher = w.finish().unwrap();
    assert!(cipher.starts_with(airlock_bundle::crypt::AGE_MAGIC));

    let dir = tempfile::tempdir().unwrap();
    let idp = dir.path().join("host.key");
    std::fs::write(
        &idp,
        airlock_bundle::crypt::identity_file_text(&secret, &recipient, "now"),
    )
    .unwrap();
    let mut dec = Decryption::default();
    dec.add_identity_file(&idp).unwrap();
    let (v, c) = read(cipher.clone(), &k.trust, &dec).unwrap();
    assert!(v.encrypted);
    assert_eq!(c.0.len(), header.entries.len());

    // No identity, wrong identity: a decryption error, not an integrity one.
    let err = read(cipher.clone(), &k.trust, &Decryption::default()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Decrypt, "{err}");
    let (s2, r2) = airlock_bundle::crypt::generate_identity();
    let idp2 = dir.path().join("other.key");
    std::fs::write(
        &idp2,
        airlock_bundle::crypt::identity_file_text(&s2, &r2, "now"),
    )
    .unwrap();
    let mut wrong = Decryption::default();
    wrong.add_identity_file(&idp2).unwrap();
    let err = read(cipher.clone(), &k.trust, &wrong).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Decrypt, "{err}");

    // A flipped byte deep in the ciphertext fails authentication.
    let mut bad = cipher.clone();
    let at = bad.len() - 3000;
    bad[at] ^= 1;
    let err = read(bad, &k.trust, &dec).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");

    // Truncated ciphertext.
    let err = read(cipher[..cipher.len() - 100].to_vec(), &k.trust, &dec).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn damage_is_refused_and_named() {
    let k = keys();
    let (header, blobs) = sample();
    let good = write(&header, &blobs, &k.key);
    let blob_entry = &header.entries[3];
    let blob = &blobs[&blob_entry.path];

    // A flipped byte inside a blob: digest mismatch naming the entry, expected and computed.
    let mut bad = good.clone();
    let at = find(&bad, &blob[100..164]) + 10;
    bad[at] ^= 0x40;
    let err = read(bad, &k.trust, &Decryption::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&blob_entry.path), "{err}");
    assert!(
        err.contains(&format!("expected {}", blob_entry.digest)),
        "{err}"
    );
    assert!(err.contains("computed sha256:"), "{err}");

    // A flipped byte in the header: the signature fails.
    let mut bad = good.clone();
    let at = find(&bad, b"\"created\"");
    bad[at + 3] ^= 1;
    let err = read(bad, &k.trust, &Decryption::default()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Trust, "{err}");

    // A flipped byte in the signature.
    let mut bad = good.clone();
    let at = find(&bad, b"trusted comment: airlock") + 40;
    bad[at] ^= 1;
    let err = read(bad, &k.trust, &Decryption::default()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Trust, "{err}");

    // Truncation anywhere after the header.
    for cut in [good.len() / 2, good.len() - 1500] {
        let err = read(good[..cut].to_vec(), &k.trust, &Decryption::default()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "cut at {cut}: {err}");
    }

    // Cut exactly before the end-of-archive blocks: every entry is there, still truncated.
    let err = read(
        good[..good.len() - 1024].to_vec(),
        &k.trust,
        &Decryption::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
    // Bytes after the end of the archive are covered by no signature: refused.
    let mut bad = good.clone();
    bad.extend_from_slice(b"appended");
    let err = read(bad, &k.trust, &Decryption::default()).unwrap_err();
    assert!(
        err.to_string().contains("after the end of the archive"),
        "{err}"
    );

    // Untrusted signer.
    let other = keys();
    let err = read(good.clone(), &other.trust, &Decryption::default()).unwrap_err();
    assert!(matches!(err, BundleError::UntrustedSigner { .. }), "{err}");
}

#[test]
fn unknown_version_is_refused_before_blobs() {
    let k = keys();
    let (mut header, blobs) = sample();
    header.version = FORMAT_VERSION + 1;
    let bytes = write(&header, &blobs, &k.key);
    let err = read(bytes, &k.trust, &Decryption::default()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Version, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("version {}", FORMAT_VERSION + 1)),
        "{err}"
    );
}

/// An endless pseudo-random stream (cheap to generate, not compressible by accident).
struct Pattern(u64);
impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// A blob just past 8 GiB goes through writer and reader without touching the disk: the
/// GNU base-256 size field is written, read and checked, and memory stays bounded.
#[test]
fn blob_over_8_gib_streams() {
    let size = (8u64 << 30) + 4097;
    let (digest, n) = airlock_bundle::hashing::digest_reader(Pattern(7).take(size)).unwrap();
    assert_eq!(n, size);
    let k = keys();
    let (mut header, mut blobs) = sample();
    blobs.retain(|p, _| p == "oci-layout" || p == "index.json");
    header.entries.truncate(2);
    header.entries.push(Entry {
        path: digest.blob_path(),
        digest,
        size,
        media_type: None,
    });
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let writer = std::thread::spawn(move || {
        struct ChanWriter(std::sync::mpsc::SyncSender<Vec<u8>>);
        impl Write for ChanWriter {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0
                    .send(b.to_vec())
                    .map_err(|_| io::Error::other("closed"))?;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = ChanWriter(tx);
        write_bundle(&mut out, &header, &k.key, &mut |e: &Entry| {
            Ok(match blobs.get(&e.path) {
                Some(b) => Box::new(io::Cursor::new(b.clone())) as Box<dyn Read>,
                None => Box::new(Pattern(7).take(size)),
            })
        })
        .unwrap();
        k
    });
    struct ChanReader(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>, usize);
    impl Read for ChanReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.2 == self.1.len() {
                match self.0.recv() {
                    Ok(v) => {
                        self.1 = v;
                        self.2 = 0;
                    }
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.1.len() - self.2);
            buf[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
            self.2 += n;
            Ok(n)
        }
    }
    struct Count(u64);
    impl Visitor for Count {
        fn entry(&mut self, _: &Entry, data: &mut dyn Read) -> io::Result<()> {
            self.0 += airlock_bundle::hashing::copy_large(data, &mut io::sink())?;
            Ok(())
        }
    }
    // The signature is checked by the other tests; this one is about sizes.
    let mut count = Count(0);
    let opts = ReadOptions {
        trust: Trust::InsecureSkip,
        decryption: &Decryption::default(),
    };
    let v = read_bundle(ChanReader(rx, Vec::new(), 0), &opts, &mut count).unwrap();
    let k = writer.join().unwrap();
    assert_eq!(count.0, size + 30 + 34);
    assert_eq!(v.header.entries[2].size, size);
    assert_eq!(v.signer, Some(k.key.key_id()));
}

/// The tar of `bundle` (plain) with each entry passed through `f`, which writes what it wants
/// in its place; the end-of-archive blocks follow.
fn rewrite(bundle: &[u8], f: impl Fn(&str, &[u8], &mut Vec<u8>)) -> Vec<u8> {
    let mut archive = tar::Archive::new(io::Cursor::new(bundle));
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        f(&path, &data, &mut out);
    }
    airlock_bundle::tarfmt::write_end(&mut out).unwrap();
    out
}

const EVIL: &str = "x\u{1b}]0;PWNED\u{7}\u{1b}[2J";

#[test]
fn the_second_end_of_archive_block_carries_nothing() {
    let k = keys();
    let (header, blobs) = sample();
    let good = write(&header, &blobs, &k.key);
    let n = good.len();
    assert!(good[n - 1024..].iter().all(|&b| b == 0));
    let mut bad = good.clone();
    bad[n - 512..n - 500].copy_from_slice(b"unsigned!!!!");
    let err = read(bad, &k.trust, &Decryption::default()).unwrap_err();
    assert!(matches!(err, BundleError::Malformed(_)), "{err}");
    assert!(
        err.to_string()
            .contains("the second end-of-archive block is not zero"),
        "{err}"
    );
    // A single end block is still read, as GNU tar writes it in some modes.
    read(good[..n - 512].to_vec(), &k.trust, &Decryption::default()).unwrap();
}

#[test]
fn tar_header_bytes_are_never_echoed() {
    let k = keys();
    // Any file's first bytes, read as a tar header: a bundle path that is a link to a
    // root-only file must not put that file's content into the error.
    let mut secret = b"root:$y$j9T$SECRETSALTSECRETSALT$SECRETHASH:19700:0:99999:7:::\n".to_vec();
    while secret.len() < 2048 {
        secret.extend_from_slice(b"user2:SECRETHASH:19700:0:99999:7:::\n");
    }
    let err = read(secret, &k.trust, &Decryption::default()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    let shown = err.to_string();
    assert!(
        !shown.contains("SECRET") && !shown.contains("root:"),
        "{shown}"
    );

    // A block whose name and checksum fields hold terminal escapes.
    let mut block = vec![0u8; 512];
    block[..EVIL.len()].copy_from_slice(EVIL.as_bytes());
    block[148..156].copy_from_slice(b"\x1b[31m\x07\x1b[");
    block.extend_from_slice(&[0x1b; 1024]);
    let shown = read(block, &k.trust, &Decryption::default())
        .unwrap_err()
        .to_string();
    assert!(!airlock_bundle::text::has_controls(&shown), "{shown:?}");

    // An entry with a valid checksum, named with escapes, in place of index.json, and in
    // place of the header: named, escaped.
    let (header, blobs) = sample();
    let good = write(&header, &blobs, &k.key);
    for replaced in ["index.json", airlock_bundle::header::HEADER_PATH] {
        let bad = rewrite(&good, |path, data, out| {
            let path = if path == replaced { EVIL } else { path };
            airlock_bundle::tarfmt::write_small(out, path, data).unwrap();
        });
        let err = read(bad, &k.trust, &Decryption::default()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("x\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J"),
            "{replaced}: {shown:?}"
        );
        assert!(!airlock_bundle::text::has_controls(&shown), "{shown:?}");
    }
}

#[test]
fn a_header_signed_as_something_else_is_refused() {
    let k = keys();
    let (header, blobs) = sample();
    let good = write(&header, &blobs, &k.key);
    let resigned = |comment: &str| {
        rewrite(&good, |path, data, out| match path {
            airlock_bundle::header::HEADER_PATH => {
                airlock_bundle::tarfmt::write_small(out, path, data).unwrap();
                let sig = k.key.sign_with(data, comment);
                airlock_bundle::tarfmt::write_small(
                    out,
                    airlock_bundle::header::SIGNATURE_PATH,
                    sig.as_bytes(),
                )
                .unwrap();
            }
            airlock_bundle::header::SIGNATURE_PATH => {}
            _ => airlock_bundle::tarfmt::write_small(out, path, data).unwrap(),
        })
    };
    for comment in [
        "airlock-bundle sums v1 parts=1 total=1",
        "airlock-unpack report v1",
        "airlock-bundle v1 headers",
        EVIL,
    ] {
        let err = read(resigned(comment), &k.trust, &Decryption::default()).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("not a header signature"), "{shown}");
        assert!(
            shown.contains(&airlock_bundle::text::escape(comment)),
            "{shown}"
        );
        assert!(!airlock_bundle::text::has_controls(&shown), "{shown:?}");
    }
    // The same bytes with the header's comment are fine.
    read(
        resigned(airlock_bundle::sign::TRUSTED_COMMENT),
        &k.trust,
        &Decryption::default(),
    )
    .unwrap();
}
