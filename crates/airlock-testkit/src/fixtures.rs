//! Fixture images built from scratch: layers as files (gzip tar or plain tar), configs whose
//! `Cmd` prints a marker, single-platform manifests or multi-platform indexes, pushed into a
//! registry with the real `skopeo`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_bundle::hashing::HashingWriter;
use airlock_bundle::oci;
use airlock_bundle::Digest;
use serde_json::json;

/// A layer blob on disk.
#[derive(Debug, Clone)]
pub struct Layer {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub media_type: &'static str,
}

fn tar_file_header(name: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

fn finish_layer(
    dir: &Path,
    tmp: PathBuf,
    digest: Digest,
    size: u64,
    diff_id: Digest,
    media_type: &'static str,
) -> Layer {
    let path = dir.join(digest.hex());
    std::fs::rename(&tmp, &path).unwrap();
    Layer {
        path,
        digest,
        size,
        diff_id,
        media_type,
    }
}

impl Layer {
    /// A gzip layer holding `files` (path in the image, content, mode).
    pub fn files(dir: &Path, files: &[(&str, &[u8], u32)]) -> Layer {
        std::fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!("tmp-{}", rand::random::<u64>()));
        let outer = HashingWriter::new(BufWriter::new(File::create(&tmp).unwrap()));
        let gz = flate2::write::GzEncoder::new(outer, flate2::Compression::fast());
        let mut inner = HashingWriter::new(gz);
        {
            let mut b = tar::Builder::new(&mut inner);
            for (name, data, mode) in files {
                b.append(&tar_file_header(name, data.len() as u64, *mode), *data)
                    .unwrap();
            }
            b.finish().unwrap();
        }
        let (diff_id, _, gz) = inner.finish();
        let outer = gz.finish().unwrap();
        let (digest, size, mut w) = outer.finish();
        w.flush().unwrap();
        finish_layer(dir, tmp, digest, size, diff_id, oci::OCI_LAYER_GZIP)
    }

    /// A gzip layer with the static busybox binary at /bin/busybox.
    pub fn busybox(dir: &Path) -> Layer {
        let bin = std::fs::read(crate::tools::busybox_path()).unwrap();
        Layer::files(dir, &[("bin/busybox", &bin, 0o755)])
    }

    /// An uncompressed layer of `size` pseudo-random (incompressible) bytes, streamed to
    /// disk: for benchmarks, like model weights or compressed layers.
    pub fn random(dir: &Path, size: u64, seed: u64) -> Layer {
        std::fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!("tmp-{}", rand::random::<u64>()));
        let mut w = HashingWriter::new(BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp).unwrap(),
        ));
        w.write_all(tar_file_header(&format!("data/random-{seed}.bin"), size, 0o644).as_bytes())
            .unwrap();
        let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for c in buf.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                c.copy_from_slice(&state.to_le_bytes()[..c.len()]);
            }
            let n = left.min(buf.len() as u64) as usize;
            w.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        let pad = airlock_bundle::tarfmt::padding(size);
        w.write_all(&vec![0u8; pad + 1024]).unwrap();
        let (digest, len, mut inner) = w.finish();
        inner.flush().unwrap();
        finish_layer(dir, tmp, digest, len, digest, oci::OCI_LAYER_TAR)
    }
}

/// One platform's image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub cmd: Vec<String>,
    pub arch: String,
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>, cmd: &[&str]) -> ImageSpec {
        ImageSpec {
            layers,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            arch: "amd64".into(),
        }
    }

    pub fn arch(mut self, arch: &str) -> ImageSpec {
        self.arch = arch.into();
        self
    }

    /// The image config (linux/ARCH, `Cmd`, one diff ID per layer), serialised.
    pub fn config_bytes(&self) -> Vec<u8> {
        let config = json!({
            "architecture": self.arch,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": self.cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
            "history": self.layers.iter().map(|_| json!({"created_by": "airlock-testkit"})).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&config).unwrap()
    }

    /// The OCI image manifest for this spec with its config blob's digest and size.
    pub fn manifest(&self, config: &Digest, config_size: u64) -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": config.to_string(), "size": config_size},
            "layers": self.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})).collect::<Vec<_>>(),
        })
    }
}

fn put(blobs: &Path, data: &[u8]) -> (Digest, u64) {
    let d = Digest::of(data);
    std::fs::write(blobs.join(d.hex()), data).unwrap();
    (d, data.len() as u64)
}

fn link_or_copy(from: &Path, to: &Path) {
    if !to.exists() && std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// Pushes an image (one spec) or a multi-platform index (several) to
/// `registry/repo_tag` with skopeo; returns the digest of the top manifest or index.
pub fn push(registry: &str, repo_tag: &str, platforms: &[ImageSpec]) -> Digest {
    push_with_creds(registry, repo_tag, platforms, None)
}

/// [`push`] to a registry that wants `user:password`.
pub fn push_with_creds(
    registry: &str,
    repo_tag: &str,
    platforms: &[ImageSpec],
    creds: Option<&str>,
) -> Digest {
    let layout = tempfile::tempdir().unwrap();
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut manifests = Vec::new();
    for spec in platforms {
        for l in &spec.layers {
            link_or_copy(&l.path, &blobs.join(l.digest.hex()));
        }
        let (cd, cs) = put(&blobs, &spec.config_bytes());
        let manifest = spec.manifest(&cd, cs);
        let (md, ms) = put(&blobs, &serde_json::to_vec(&manifest).unwrap());
        manifests.push(json!({
            "mediaType": oci::OCI_MANIFEST, "digest": md.to_string(), "size": ms,
            "platform": {"architecture": spec.arch, "os": "linux"},
        }));
    }
    let top = if manifests.len() == 1 {
        let mut m = manifests.pop().unwrap();
        m.as_object_mut().unwrap().remove("platform");
        m
    } else {
        // An attestation-like entry, as BuildKit adds: pack must skip it.
        let att = json!({"mediaType": oci::OCI_MANIFEST, "digest": manifests[0]["digest"], "size": manifests[0]["size"],
                         "platform": {"architecture": "unknown", "os": "unknown"}});
        manifests.push(att);
        let index =
            json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": manifests});
        let (id, is) = put(&blobs, &serde_json::to_vec(&index).unwrap());
        json!({"mediaType": oci::OCI_INDEX, "digest": id.to_string(), "size": is})
    };
    let top_digest: Digest = top["digest"].as_str().unwrap().parse().unwrap();
    let mut top = top;
    top.as_object_mut().unwrap().insert(
        "annotations".into(),
        json!({oci::ANNOTATION_REF_NAME: "fixture"}),
    );
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).unwrap(),
    )
    .unwrap();
    let mut skopeo = Command::new("skopeo");
    skopeo.args([
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    if let Some(c) = creds {
        skopeo.arg("--dest-creds").arg(c);
    }
    skopeo
        .arg(format!("oci:{}:fixture", layout.path().display()))
        .arg(format!("docker://{registry}/{repo_tag}"));
    crate::tools::run(&mut skopeo);
    top_digest
}
