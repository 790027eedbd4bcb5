//! `cargo xtask vectors`: writes the format test vectors in `tests/vectors/` (one small
//! bundle per format version and layer kind, which every future reader must still read) and
//! the hostile bundles `tests/golden/` runs the refusals on. Everything is made here, with
//! the workspace's own writer, signer and encryption: synthetic OCI and Ollama blobs, no
//! network, no engine.
//!
//! Rerunning it rewrites the same bytes for every plain vector (fixed `created`, fixed
//! content, deterministic Ed25519 signatures), so `git diff` after a run shows what a code
//! change did to the format. age encryption is randomised: encrypted vectors (and their
//! sums) differ on every run, and nothing may depend on their bytes. The keys are made once
//! and then reused: they are committed, test-only, and trusted nowhere else.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use airlock_bundle::crypt::{self, Encryption};
use airlock_bundle::header::{
    ComposeRecord, ComposeService, Entry, FileRecord, Header, ImageRecord, ModelRecord, Present,
    Target, FORMAT_NAME, INDEX_PATH, OCI_LAYOUT_PATH,
};
use airlock_bundle::oci::{self, Descriptor, Platform};
use airlock_bundle::ollama::ModelConfig;
use airlock_bundle::parts::write_sums;
use airlock_bundle::sign::SigningKey;
use airlock_bundle::writer::write_bundle;
use airlock_bundle::Digest;
use airlock_testkit::Layer;
use anyhow::{bail, Context as _};
use serde_json::json;

use crate::util::root;

mod parity;
mod provenance;

/// Every vector's signed creation time: fixed, so that reruns write the same bytes.
const CREATED: &str = "2026-01-01T00:00:00Z";
const TOOL: &str = "airlock-pack 0.1.0";
/// Where the vectors' `[[files]]` and models go on a host (never written by the tests: they
/// only extract, or load into directories given on the command line).
const FILES_DIR: &str = "/opt/airlock-vectors";
const MODELS_DIR: &str = "/var/lib/airlock-vectors/models";
/// Part size of the split vectors: small, so that they have several parts (five).
const PART_SIZE: u64 = 2048;

pub fn run() -> anyhow::Result<()> {
    let dir = root().join("tests/vectors");
    let golden = root().join("tests/golden/bundles");
    let keys = Keys::ensure(&dir.join("keys"), &golden)?;
    let mut blobs = Blobs::make()?;
    let v4 = provenance::v4_provenance(&mut blobs, &dir.join("keys"))?;

    let out = Vectors {
        dir: &dir,
        blobs: &blobs,
        keys: &keys,
    };
    let plain = Encryption::None;
    out.write("v1-image.airlock", &v1_image(&blobs), &plain, None)?;
    let v2 = v2_image_model_file(&blobs);
    let to_host = Encryption::Recipients(vec![crypt::parse_recipient(&keys.host_recipient)?]);
    out.write("v2-model-file.airlock", &v2, &to_host, None)?;
    let v2_plain = Header {
        name: "v2-plain".into(),
        ..v2
    };
    out.write("v2-plain.airlock", &v2_plain, &plain, None)?;
    out.write("v3-delta.airlock", &v3_delta(&blobs), &plain, None)?;
    let split = Header {
        name: "v3-split".into(),
        version: 3,
        provenance: Vec::new(),
        ..v1_image(&blobs)
    };
    out.write("v3-split.airlock", &split, &plain, Some(PART_SIZE))?;
    out.write("v4-provenance.airlock", &v4, &plain, None)?;
    out.write("v5-compose.airlock", &v5_compose(&blobs), &plain, None)?;
    out.write_with_parity("v5-parity.airlock", &parity::v5_parity(v1_image(&blobs)))?;

    hostile(&golden, &blobs, &keys)?;
    eprintln!(
        "xtask: vectors written to {} and {}",
        dir.display(),
        golden.display()
    );
    Ok(())
}

/// The test-only keys: the vectors' minisign key, the host's age identity, and an unrelated
/// key and identity for the refusal tests. Made once; reused when present.
struct Keys {
    sign: SigningKey,
    other_sign: SigningKey,
    host_recipient: String,
}

impl Keys {
    fn ensure(dir: &Path, golden: &Path) -> anyhow::Result<Keys> {
        fs::create_dir_all(dir)?;
        fs::create_dir_all(golden)?;
        let sign = minisign_pair(dir, "vectors")?;
        let other_sign = minisign_pair(golden, "other")?;
        let host_recipient = age_identity(dir, "host")?;
        age_identity(golden, "other-host")?;
        Ok(Keys {
            sign,
            other_sign,
            host_recipient,
        })
    }
}

/// `dir/NAME.key` and `dir/NAME.pub`, made when missing; the secret key.
fn minisign_pair(dir: &Path, name: &str) -> anyhow::Result<SigningKey> {
    let (sk, pk) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    if !sk.exists() {
        let tmp = tempfile::tempdir()?;
        let keys = tmp.path().join("keys");
        airlock_bundle::sign::generate_keypair(&keys, None)?;
        fs::copy(keys.join("airlock.key"), &sk)?;
        fs::copy(keys.join("airlock.pub"), &pk)?;
    }
    Ok(SigningKey::load(&sk, None)?)
}

/// `dir/NAME.key` (an age identity file) and `dir/NAME.pub`, made when missing; the
/// recipient.
fn age_identity(dir: &Path, name: &str) -> anyhow::Result<String> {
    let (sk, pk) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    if !sk.exists() {
        let (secret, recipient) = crypt::generate_identity();
        fs::write(
            &sk,
            crypt::identity_file_text(&secret, &recipient, CREATED).as_bytes(),
        )?;
        fs::write(&pk, format!("{recipient}\n"))?;
    }
    let text = fs::read_to_string(&pk)?;
    Ok(text.trim().to_string())
}

/// Every blob the vectors carry, by digest, with what the headers need to know of them.
struct Blobs {
    data: BTreeMap<Digest, Vec<u8>>,
    image: Image,
    model: Model,
    compose: Digest,
    script: Digest,
    /// `oci-layout`, the `index.json` naming the image, and the one naming nothing.
    layout: Digest,
    index: Digest,
    empty_index: Digest,
}

struct Image {
    reference: String,
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Descriptor>,
}

struct Model {
    name: String,
    manifest: Digest,
    config: Digest,
    layers: Vec<(Digest, &'static str)>,
    info: ModelConfig,
}

impl Blobs {
    fn make() -> anyhow::Result<Blobs> {
        let mut data = BTreeMap::new();
        let mut put = |bytes: Vec<u8>| {
            let d = Digest::of(&bytes);
            data.insert(d, bytes);
            d
        };
        // A one-layer image: the layer a gzip tar made by the test kit's fixture builder.
        let tmp = tempfile::tempdir()?;
        let layer = Layer::files(
            tmp.path(),
            &[("hello.txt", b"hello from a format vector\n", 0o644)],
        );
        let layer_bytes = fs::read(&layer.path)?;
        let layer_digest = put(layer_bytes);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": {"Cmd": ["/bin/cat", "/hello.txt"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        });
        let config_bytes = serde_json::to_vec(&config)?;
        let config_size = config_bytes.len() as u64;
        let config_digest = put(config_bytes);
        let layer_desc = Descriptor {
            media_type: oci::OCI_LAYER_GZIP.into(),
            digest: layer_digest,
            size: layer.size,
            platform: None,
            annotations: None,
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
            "layers": [&layer_desc],
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_size = manifest_bytes.len() as u64;
        let manifest_digest = put(manifest_bytes);
        let image = Image {
            reference: "vectors.invalid/airlock/hello:v1".into(),
            manifest: Descriptor {
                media_type: oci::OCI_MANIFEST.into(),
                digest: manifest_digest,
                size: manifest_size,
                platform: Some(amd64().to_oci()),
                annotations: None,
            },
            config: config_digest,
            layers: vec![layer_desc],
        };

        // A tiny Ollama model: a "weights" layer and a template, its config and manifest.
        let weights = b"GGUF\x03\0\0\0 not a real model, only bytes for a format vector\n".to_vec();
        let template = b"{{ .Prompt }}".to_vec();
        let info = ModelConfig {
            model_format: "gguf".into(),
            model_family: "vector".into(),
            model_type: "1K".into(),
            file_type: "F16".into(),
        };
        let model_config = serde_json::to_vec(&json!({
            "model_format": info.model_format, "model_family": info.model_family,
            "model_type": info.model_type, "file_type": info.file_type,
            "architecture": "amd64", "os": "linux",
        }))?;
        let mut model_layers = Vec::new();
        let mut layer_json = Vec::new();
        for (bytes, media) in [
            (weights, airlock_bundle::ollama::MODEL_LAYER),
            (template, "application/vnd.ollama.image.template"),
        ] {
            let size = bytes.len();
            let d = put(bytes);
            layer_json.push(json!({"mediaType": media, "digest": d.to_string(), "size": size}));
            model_layers.push((d, media));
        }
        let model_config_size = model_config.len();
        let model_config_digest = put(model_config);
        let model_manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": oci::DOCKER_MANIFEST,
            "config": {"mediaType": oci::DOCKER_CONFIG, "digest": model_config_digest.to_string(), "size": model_config_size},
            "layers": layer_json,
        }))?;
        let model = Model {
            name: "registry.ollama.ai/library/vector:tiny".into(),
            manifest: put(model_manifest),
            config: model_config_digest,
            layers: model_layers,
            info,
        };

        let compose =
            put(b"services:\n  hello:\n    image: vectors.invalid/airlock/hello:v1\n".to_vec());
        let script = put(b"#!/bin/sh\necho hello\n".to_vec());
        let layout = put(oci::OCI_LAYOUT.to_vec());
        let index = put(oci::layout_index([(
            image.reference.clone(),
            image.manifest.clone(),
        )]));
        let empty_index = put(oci::layout_index([]));
        Ok(Blobs {
            layout,
            index,
            empty_index,
            data,
            image,
            model,
            compose,
            script,
        })
    }

    /// Adds a blob made after [`Blobs::make`]; its digest.
    fn put(&mut self, bytes: Vec<u8>) -> Digest {
        let d = Digest::of(&bytes);
        self.data.insert(d, bytes);
        d
    }

    fn entry(&self, d: &Digest, media_type: Option<&str>) -> Entry {
        self.named_entry(d.blob_path(), d, media_type)
    }

    fn named_entry(&self, path: String, d: &Digest, media_type: Option<&str>) -> Entry {
        Entry {
            path,
            digest: *d,
            size: self.data.get(d).map_or(0, |b| b.len() as u64),
            media_type: media_type.map(str::to_string),
        }
    }

    /// `oci-layout`, `index.json` and the image's blobs: the entries every vector starts with.
    fn image_entries(&self) -> (Vec<Entry>, ImageRecord) {
        let img = &self.image;
        let mut entries = self.layout_entries(&self.index);
        entries.extend([
            self.entry(&img.manifest.digest, Some(oci::OCI_MANIFEST)),
            self.entry(&img.config, Some(oci::OCI_CONFIG)),
        ]);
        entries.extend(
            img.layers
                .iter()
                .map(|l| self.entry(&l.digest, Some(&l.media_type))),
        );
        let record = ImageRecord {
            reference: img.reference.clone(),
            platform: amd64(),
            manifest: img.manifest.digest,
            config: img.config,
            layers: img.layers.iter().map(|l| l.digest).collect(),
            index: None,
        };
        (entries, record)
    }

    /// `oci-layout` and `index.json`, which every bundle carries first.
    fn layout_entries(&self, index: &Digest) -> Vec<Entry> {
        vec![
            self.named_entry(OCI_LAYOUT_PATH.into(), &self.layout, None),
            self.named_entry(INDEX_PATH.into(), index, None),
        ]
    }

    /// The bytes of an entry, found by its digest.
    fn source(&self, entry: &Entry) -> std::io::Result<Box<dyn Read>> {
        let bytes = self
            .data
            .get(&entry.digest)
            .cloned()
            .ok_or_else(|| std::io::Error::other(format!("no blob for {}", entry.path)))?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
}

fn amd64() -> Platform {
    Platform {
        os: "linux".into(),
        arch: "amd64".into(),
        variant: None,
    }
}

fn header(version: u32, name: &str, entries: Vec<Entry>, images: Vec<ImageRecord>) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        version,
        provenance: Vec::new(),
        tool: TOOL.into(),
        name: name.into(),
        created: CREATED.into(),
        entries,
        images,
        models: Vec::new(),
        files: Vec::new(),
        expected_present: Vec::new(),
        compose: Vec::new(),
    }
}

/// Version 1: images only. The newer fields are empty, so they are not written at all:
/// the header bytes are those a version 1 writer wrote.
fn v1_image(blobs: &Blobs) -> Header {
    let (entries, image) = blobs.image_entries();
    header(1, "v1-image", entries, vec![image])
}

/// Version 2: an image, an Ollama model into a volume, and `[[files]]` (a directory, a
/// file, an executable).
fn v2_image_model_file(blobs: &Blobs) -> Header {
    let (mut entries, image) = blobs.image_entries();
    let m = &blobs.model;
    entries.push(blobs.entry(&m.manifest, Some(oci::DOCKER_MANIFEST)));
    entries.push(blobs.entry(&m.config, Some(oci::DOCKER_CONFIG)));
    for (d, media) in &m.layers {
        entries.push(blobs.entry(d, Some(media)));
    }
    entries.push(blobs.entry(&blobs.compose, None));
    entries.push(blobs.entry(&blobs.script, None));
    let mut h = header(2, "v2-model-file", entries, vec![image]);
    h.models = vec![model_record(blobs, Target::Volume("ollama-data".into()))];
    h.files = files(blobs);
    h
}

/// Version 3: a delta bundle. The model's weights are left out (`expected_present`, no
/// chain ID: they must be in the model's Ollama store); its manifest, config, template and
/// a file are carried. No image, so that `load` of it needs no engine.
fn v3_delta(blobs: &Blobs) -> Header {
    let m = &blobs.model;
    let (weights, template) = (m.layers[0].0, m.layers[1]);
    let mut entries = blobs.layout_entries(&blobs.empty_index);
    entries.extend([
        blobs.entry(&m.manifest, Some(oci::DOCKER_MANIFEST)),
        blobs.entry(&m.config, Some(oci::DOCKER_CONFIG)),
        blobs.entry(&template.0, Some(template.1)),
        blobs.entry(&blobs.compose, None),
    ]);
    let mut h = header(3, "v3-delta", entries, Vec::new());
    h.models = vec![model_record(blobs, Target::Path(MODELS_DIR.into()))];
    h.files = vec![FileRecord {
        target: Target::Path(FILES_DIR.into()),
        path: "docker-compose.yml".into(),
        mode: "0644".into(),
        digest: Some(blobs.compose),
    }];
    h.expected_present = vec![Present {
        digest: weights,
        size: blobs.data.get(&weights).map_or(0, |b| b.len() as u64),
        chain_id: None,
    }];
    h
}

/// Version 5: the version 2 content, its compose file named as a compose stack whose one
/// service runs the bundle's image.
fn v5_compose(blobs: &Blobs) -> Header {
    let mut h = v2_image_model_file(blobs);
    h.name = "v5-compose".into();
    h.version = 5;
    h.compose = vec![ComposeRecord {
        target: Target::Path(FILES_DIR.into()),
        path: "docker-compose.yml".into(),
        services: vec![ComposeService {
            name: "hello".into(),
            image: h.images[0].reference.clone(),
        }],
    }];
    h
}

fn model_record(blobs: &Blobs, target: Target) -> ModelRecord {
    let m = &blobs.model;
    ModelRecord {
        name: m.name.clone(),
        manifest: m.manifest,
        config: m.config,
        layers: m.layers.iter().map(|(d, _)| *d).collect(),
        target,
        info: Some(m.info.clone()),
    }
}

fn files(blobs: &Blobs) -> Vec<FileRecord> {
    let target = Target::Path(FILES_DIR.into());
    vec![
        FileRecord {
            target: target.clone(),
            path: "docker-compose.yml".into(),
            mode: "0644".into(),
            digest: Some(blobs.compose),
        },
        FileRecord {
            target: target.clone(),
            path: "bin".into(),
            mode: "0755".into(),
            digest: None,
        },
        FileRecord {
            target,
            path: "bin/hello".into(),
            mode: "0755".into(),
            digest: Some(blobs.script),
        },
    ]
}

/// Where the vectors go, and what they are made of.
struct Vectors<'a> {
    dir: &'a Path,
    blobs: &'a Blobs,
    keys: &'a Keys,
}

impl Vectors<'_> {
    /// Writes `dir/name` (or its parts) with its signed sums, and `expected/name.header.json`:
    /// the exact signed header bytes, which readers of the vector must find (kept in a folder
    /// of their own: beside the bundle, a reader would name them as stray files).
    fn write(
        &self,
        name: &str,
        header: &Header,
        enc: &Encryption,
        split: Option<u64>,
    ) -> anyhow::Result<()> {
        self.expect(name, header)?;
        if !matches!(enc, Encryption::None) && self.dir.join(name).exists() {
            // age output is randomised: a rerun would rewrite the committed bytes for nothing.
            eprintln!("xtask: vectors: {name} is encrypted and exists: kept as committed");
            return Ok(());
        }
        let parts = self.write_parts(name, header, enc, split)?;
        write_sums(self.dir, name, &parts, split, &self.keys.sign)?;
        Ok(())
    }

    /// Checks `header` and writes it to `expected/name.header.json`.
    fn expect(&self, name: &str, header: &Header) -> anyhow::Result<()> {
        header.validate()?;
        let expected = self.dir.join("expected");
        fs::create_dir_all(&expected)?;
        fs::write(
            expected.join(format!("{name}.header.json")),
            header.to_bytes(),
        )?;
        Ok(())
    }
}

fn plaintext(header: &Header, key: &SigningKey, blobs: &Blobs) -> anyhow::Result<Vec<u8>> {
    let mut plain = Vec::new();
    write_bundle(&mut plain, header, key, &mut |e: &Entry| blobs.source(e))
        .with_context(|| format!("writing {}", header.name))?;
    Ok(plain)
}

fn encrypt(plain: &[u8], enc: &Encryption) -> anyhow::Result<Vec<u8>> {
    let mut w = crypt::encrypting_writer(Vec::new(), enc)?;
    w.write_all(plain)?;
    Ok(w.finish()?)
}

/// The bundles the golden refusal tests read: each is wrong in exactly one way.
fn hostile(dir: &Path, blobs: &Blobs, keys: &Keys) -> anyhow::Result<()> {
    let v1 = plaintext(&v1_image(blobs), &keys.sign, blobs)?;
    // A byte of the last blob flipped (the layer): the signature still verifies, the entry
    // digest does not.
    let layer = &blobs.image.layers[0];
    let layer_bytes = blobs.data.get(&layer.digest).map_or(&[][..], Vec::as_slice);
    let Some(start) = v1
        .windows(layer_bytes.len().max(1))
        .position(|w| w == layer_bytes)
    else {
        bail!("the layer is not in the v1 plaintext");
    };
    let middle = start + layer_bytes.len() / 2;
    let mut tampered = v1.clone();
    tampered[middle] ^= 0x20;
    write_plain(dir, "tampered.airlock", &tampered)?;
    // Cut in the middle of the layer.
    write_plain(dir, "truncated.airlock", &v1[..middle])?;
    // Signed by a key no test trusts.
    let untrusted = plaintext(
        &Header {
            name: "untrusted".into(),
            ..v1_image(blobs)
        },
        &keys.other_sign,
        blobs,
    )?;
    write_plain(dir, "untrusted.airlock", &untrusted)?;
    // A future format version, validly signed.
    let v99 = Header {
        name: "v99".into(),
        version: 99,
        provenance: Vec::new(),
        ..v1_image(blobs)
    };
    write_plain(dir, "v99.airlock", &plaintext(&v99, &keys.sign, blobs)?)?;
    Ok(())
}

fn write_plain(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}
