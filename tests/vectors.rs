//! The format test vectors (`tests/vectors/`, see its README): every committed bundle of
//! every format version is read by the current reader and by the `airlock-unpack` binary
//! (`verify`, `verify --outer-only`, `inspect --json`, `extract`), and must give the
//! committed header and every entry's digest. Offline: no engine, no registry. A failure here means a reader no longer
//! reads what an older writer wrote.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_bundle::crypt::Decryption;
use airlock_bundle::header::Entry;
use airlock_bundle::parts::BundleFiles;
use airlock_bundle::reader::{read_bundle, ReadOptions, Trust, Visitor};
use airlock_bundle::sign::{TrustSet, TrustedKey};
use airlock_bundle::Digest;
use airlock_tests::unpack_bin;
use serde_json::Value;

/// (file to open, its name in `expected/`, format version, encrypted).
const VECTORS: &[(&str, &str, u32, bool)] = &[
    ("v1-image.airlock", "v1-image.airlock", 1, false),
    ("v2-model-file.airlock", "v2-model-file.airlock", 2, true),
    ("v2-plain.airlock", "v2-plain.airlock", 2, false),
    ("v3-delta.airlock", "v3-delta.airlock", 3, false),
    ("v3-split.airlock.001", "v3-split.airlock", 3, false),
    ("v4-provenance.airlock", "v4-provenance.airlock", 4, false),
    ("v5-compose.airlock", "v5-compose.airlock", 5, false),
    ("v5-parity.airlock.001", "v5-parity.airlock", 5, false),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn public_key() -> PathBuf {
    dir().join("keys/vectors.pub")
}

fn identity() -> PathBuf {
    dir().join("keys/host.key")
}

fn expected_header(name: &str) -> Vec<u8> {
    std::fs::read(dir().join("expected").join(format!("{name}.header.json"))).unwrap()
}

/// Every entry's path and the digest of the bytes the reader handed out.
#[derive(Default)]
struct Collect(Vec<(String, Digest)>);

impl Visitor for Collect {
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        self.0.push((entry.path.clone(), Digest::of(&bytes)));
        Ok(())
    }
}

#[test]
fn the_current_reader_reads_every_vector() {
    let trust = TrustSet::new(vec![TrustedKey::load(&public_key()).unwrap()]);
    for &(file, name, version, encrypted) in VECTORS {
        let mut decryption = Decryption::default();
        decryption.add_identity_file(&identity()).unwrap();
        let opts = ReadOptions {
            trust: Trust::Keys(&trust),
            decryption: &decryption,
        };
        // The parts (or the one file) streamed as one input, as the binaries read them.
        let files = BundleFiles::locate(&dir().join(file)).unwrap();
        let input = files.reader().unwrap();
        let mut seen = Collect::default();
        let verified = read_bundle(input, &opts, &mut seen)
            .unwrap_or_else(|e| panic!("{file}: the current reader refuses it: {e}"));
        assert_eq!(
            verified.header_bytes,
            expected_header(name),
            "{file}: signed header"
        );
        assert_eq!(verified.header.version, version, "{file}");
        assert_eq!(verified.encrypted, encrypted, "{file}");
        assert!(verified.signature_checked, "{file}");
        let promised: Vec<(String, Digest)> = verified
            .header
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.digest))
            .collect();
        assert_eq!(seen.0, promised, "{file}: entries and their digests");
    }
}

fn unpack(args: &[&str]) -> std::process::Output {
    Command::new(unpack_bin())
        .args(args)
        .env_remove("AIRLOCK_IDENTITY")
        .env_remove("AIRLOCK_TRUST_DIR")
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_binary_verifies_inspects_and_extracts_every_vector() {
    let key = public_key();
    let key = key.to_str().unwrap();
    let id = identity();
    let id = id.to_str().unwrap();
    for &(file, name, version, _) in VECTORS {
        let path = dir().join(file);
        let path = path.to_str().unwrap();
        let keys = ["--trust", key, "--identity", id, "--quiet"];

        ok(
            &unpack(&[&["verify", path][..], &keys].concat()),
            &format!("verify {file}"),
        );

        // The outer layer too: the signed sums of the file or of every part, no identity.
        ok(
            &unpack(&["verify", path, "--outer-only", "--trust", key, "--quiet"]),
            &format!("verify --outer-only {file}"),
        );

        let json = ok(
            &unpack(&[&["inspect", path, "--json"][..], &keys].concat()),
            &format!("inspect {file}"),
        );
        let inspected: Value = serde_json::from_str(&json).unwrap();
        let header: Value = serde_json::from_slice(&expected_header(name)).unwrap();
        assert_eq!(inspected["version"], version, "{file}: {json}");
        assert_eq!(inspected["name"], header["name"], "{file}: {json}");
        assert_eq!(inspected["created"], header["created"], "{file}: {json}");
        // Compose stacks (version 5) are shown as the header has them; absent before.
        assert_eq!(
            inspected.get("compose"),
            header.get("compose"),
            "{file}: {json}"
        );

        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("x");
        if let Some(present) = header.get("expected_present") {
            // A delta bundle's content is not whole without the host it was built for:
            // extract refuses it from the header (exit 11), naming every left-out blob and
            // what needs it, and leaves nothing behind.
            let refused =
                unpack(&[&["extract", path, "--to", to.to_str().unwrap()][..], &keys].concat());
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(11), "extract {file}: {stderr}");
            assert!(
                stderr.contains("this is a delta bundle"),
                "{file}: {stderr}"
            );
            for p in present.as_array().unwrap() {
                let digest = p["digest"].as_str().unwrap();
                assert!(
                    stderr.contains(digest),
                    "{file}: {digest} not named: {stderr}"
                );
            }
            assert!(stderr.contains("a blob of model "), "{file}: {stderr}");
            assert!(
                !to.exists(),
                "{file}: a refused extract left {}",
                to.display()
            );
            let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
            assert!(left.is_empty(), "{file}: a refused extract left {left:?}");
            continue;
        }
        ok(
            &unpack(&[&["extract", path, "--to", to.to_str().unwrap()][..], &keys].concat()),
            &format!("extract {file}"),
        );
        // Every carried blob is in the extracted layout, byte for byte.
        for entry in header["entries"].as_array().unwrap() {
            let p = entry["path"].as_str().unwrap();
            let bytes = std::fs::read(to.join(p))
                .unwrap_or_else(|e| panic!("{file}: extract wrote no {p}: {e}"));
            assert_eq!(
                Digest::of(&bytes).to_string(),
                entry["digest"].as_str().unwrap(),
                "{file}: {p}"
            );
        }
    }
}

/// The v4 vector's carried signature is a real cosign-format signature: it verifies with
/// `keys/cosign.pub` for the image's manifest digest and repository, its `verified_with` is
/// that key's fingerprint, and it does not verify for another digest.
#[test]
fn the_v4_signature_verifies_with_the_vector_cosign_key() {
    let bytes = expected_header("v4-provenance.airlock");
    let header = airlock_bundle::Header::parse(&bytes).unwrap();
    let key = airlock_sigstore::PublicKey::from_pem(
        &std::fs::read(dir().join("keys/cosign.pub")).unwrap(),
    )
    .unwrap();
    let image = &header.images[0];
    let record = header
        .provenance
        .iter()
        .find(|p| p.kind == airlock_bundle::provenance::ArtifactKind::Signature)
        .expect("a signature record");
    let sig = &record.signatures[0];
    assert_eq!(sig.verified_with.as_deref(), Some(key.fingerprint()));
    let payload = sig.payload_bytes().unwrap();
    let input = [airlock_sigstore::SignatureInput {
        label: record.manifest.to_string(),
        payload: &payload,
        signature: sig.signature_bytes(),
    }];
    let repo = airlock_bundle::ImageRef::parse(&image.reference)
        .unwrap()
        .name();
    let j = airlock_sigstore::judge(&key, &image.manifest, &repo, &input);
    assert!(j.verified(), "{j}");
    let j = airlock_sigstore::judge(&key, &Digest::of(b"another"), &repo, &input);
    assert!(
        !j.verified() && j.to_string().contains("by this key, but for"),
        "{j}"
    );
}

/// The parity vector's set, in the order its signed sums list it: data parts, then parity.
const PARITY_SET: &[&str] = &[
    "v5-parity.airlock.001",
    "v5-parity.airlock.002",
    "v5-parity.airlock.003",
    "v5-parity.airlock.004",
    "v5-parity.airlock.005",
    "v5-parity.airlock.p01",
    "v5-parity.airlock.p02",
];

/// The parity vector's signed sums v3 check with the standard tools: `minisign -Vm` with
/// the vectors' key (the trusted comment recording the scheme) and `sha256sum -c` of every
/// data and parity part, listed data parts first.
#[test]
fn the_parity_vector_checks_with_the_standard_tools() {
    let sums = std::fs::read_to_string(dir().join("v5-parity.airlock.sums")).unwrap();
    let listed: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    assert_eq!(listed, PARITY_SET, "{sums}");
    let sig = std::fs::read_to_string(dir().join("v5-parity.airlock.sums.minisig")).unwrap();
    assert!(
        sig.contains("trusted comment: airlock-bundle sums v3 parts=5 part-size=2048 total=")
            && sig.contains(" carried=0 parity=2 code=leopard16-high stripe="),
        "{sig}"
    );
    let m = Command::new("minisign")
        .args(["-Vm", "v5-parity.airlock.sums", "-p"])
        .arg(public_key())
        .current_dir(dir())
        .output()
        .unwrap();
    ok(&m, "minisign -Vm v5-parity.airlock.sums");
    let c = Command::new("sha256sum")
        .args(["-c", "--strict", "v5-parity.airlock.sums"])
        .current_dir(dir())
        .output()
        .unwrap();
    let said = ok(&c, "sha256sum -c v5-parity.airlock.sums");
    assert_eq!(said.matches(": OK\n").count(), PARITY_SET.len(), "{said}");
}

/// The committed parity bytes are what the code makes: `write_parity` over the committed
/// data parts writes them again byte for byte, and `airlock-unpack repair` of a copy with
/// a data part lost and a parity part damaged rebuilds both byte-identical to the committed
/// files. A change to the Reed–Solomon layout (stripes, padding, shard order, the crate's
/// field) fails here, before it strands a set written by an earlier version.
#[test]
fn repair_rebuilds_the_parity_vector_byte_for_byte() {
    let committed: Vec<Vec<u8>> = PARITY_SET
        .iter()
        .map(|f| std::fs::read(dir().join(f)).unwrap())
        .collect();

    // The writer, over the committed data parts.
    let tmp = tempfile::tempdir().unwrap();
    let parts: Vec<airlock_bundle::parts::Part> = PARITY_SET[..5]
        .iter()
        .zip(&committed)
        .map(|(name, bytes)| {
            std::fs::write(tmp.path().join(name), bytes).unwrap();
            airlock_bundle::parts::Part {
                name: name.to_string(),
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
            }
        })
        .collect();
    let (scheme, written) =
        airlock_bundle::parts::parity::write_parity(tmp.path(), "v5-parity.airlock", &parts, 2)
            .unwrap();
    assert_eq!((scheme.data, scheme.parity, scheme.part_size), (5, 2, 2048));
    for (p, want) in written.iter().zip(&committed[5..]) {
        assert_eq!(
            &std::fs::read(tmp.path().join(&p.name)).unwrap(),
            want,
            "{}: write_parity no longer writes the committed bytes",
            p.name
        );
    }

    // repair, on a copy of the whole set with its signed sums.
    let copy = tempfile::tempdir().unwrap();
    for f in PARITY_SET
        .iter()
        .copied()
        .chain(["v5-parity.airlock.sums", "v5-parity.airlock.sums.minisig"])
    {
        std::fs::copy(dir().join(f), copy.path().join(f)).unwrap();
    }
    std::fs::remove_file(copy.path().join("v5-parity.airlock.002")).unwrap();
    let p01 = copy.path().join("v5-parity.airlock.p01");
    let mut damaged = committed[5].clone();
    damaged[1000] ^= 0x40;
    std::fs::write(&p01, &damaged).unwrap();
    let sums = copy.path().join("v5-parity.airlock.sums");
    let key = public_key();
    let said = ok(
        &unpack(&[
            "repair",
            sums.to_str().unwrap(),
            "--trust",
            key.to_str().unwrap(),
        ]),
        "repair v5-parity",
    );
    assert!(
        said.contains("rebuilt v5-parity.airlock.002\n")
            && said.contains(
                "rebuilt v5-parity.airlock.p01 (the damaged file kept as v5-parity.airlock.p01.damaged)"
            )
            && said.contains("2 of 7 files rebuilt"),
        "{said}"
    );
    for (f, want) in PARITY_SET.iter().zip(&committed) {
        let got = std::fs::read(copy.path().join(f)).unwrap();
        assert!(
            &got == want,
            "{f}: repair did not rebuild the committed bytes"
        );
    }
    assert_eq!(
        std::fs::read(copy.path().join("v5-parity.airlock.p01.damaged")).unwrap(),
        damaged
    );
}
