//! Ollama models for tests: a generated model (random weights blob, small template, params
//! and license layers, a config and the raw manifest naming them), written into a docker
//! distribution registry over its HTTP API, into an Ollama store as `ollama pull` leaves it,
//! or served by [`RedirectRegistry`], a loopback stand-in for registry.ollama.ai that
//! answers blob requests with a 307 to a second "CDN" listener and can demand basic auth.
//!
//! HTTP goes through the testkit's small [`crate::http`]; the stand-in registry is in
//! `server.rs`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_bundle::hashing::{HashingWriter, COPY_BUF};
use airlock_bundle::ollama::{blob_path, ModelName, MODEL_LAYER};
use airlock_bundle::Digest;
use rand::{RngCore, SeedableRng};

mod server;

pub use server::{Listener, Recorded, RedirectRegistry};

use crate::http::{request, split_location, Body};

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const TEMPLATE_LAYER: &str = "application/vnd.ollama.image.template";
pub const PARAMS_LAYER: &str = "application/vnd.ollama.image.params";
pub const LICENSE_LAYER: &str = "application/vnd.ollama.image.license";

/// An Ollama-format model generated on disk: a random "model" blob plus small
/// template/params/license layers and a config blob, and the raw docker-v2 manifest bytes
/// naming them.
#[derive(Debug, Clone)]
pub struct OllamaModel {
    /// Where the blob files live (one file per blob, named by hex).
    pub dir: PathBuf,
    /// Raw manifest bytes exactly as a registry would serve them.
    pub manifest: Vec<u8>,
    /// sha256 of `manifest`.
    pub digest: Digest,
    /// Config blob (`application/vnd.docker.container.image.v1+json`).
    pub config: Blob,
    /// Model layer first (`application/vnd.ollama.image.model`), then template, params,
    /// license.
    pub layers: Vec<Blob>,
}

/// One blob file of an [`OllamaModel`].
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub path: PathBuf,
}

fn small_blob(dir: &Path, data: &[u8], media_type: &str) -> Blob {
    let digest = Digest::of(data);
    let path = dir.join(digest.hex());
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    Blob {
        digest,
        size: data.len() as u64,
        media_type: media_type.into(),
        path,
    }
}

/// `size` bytes from a seeded ChaCha generator, hashed while streamed to disk. The RNG
/// comes from a dependency (built optimised even in debug test runs), so gigabytes stay
/// quick.
fn random_blob(dir: &Path, size: u64, seed: u64) -> Blob {
    let tmp = dir.join(format!("tmp-{}", rand::random::<u64>()));
    let file = File::create(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let mut w = HashingWriter::new(BufWriter::with_capacity(COPY_BUF, file));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    let (digest, written, mut inner) = w.finish();
    inner.flush().unwrap();
    drop(inner);
    let path = dir.join(digest.hex());
    std::fs::rename(&tmp, &path).unwrap();
    Blob {
        digest,
        size: written,
        media_type: MODEL_LAYER.into(),
        path,
    }
}

/// Ollama's `model_type` label (`8.0B`, `135M`): a Q4_0 weight takes about half a byte.
fn size_label(model_bytes: u64) -> String {
    let params = model_bytes.saturating_mul(2);
    if params >= 1_000_000_000 {
        format!("{:.1}B", params as f64 / 1e9)
    } else if params >= 1_000_000 {
        format!("{}M", params / 1_000_000)
    } else {
        format!("{}K", params.div_ceil(1000))
    }
}

fn descriptor(b: &Blob) -> String {
    format!(
        r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
        b.media_type, b.digest, b.size
    )
}

impl OllamaModel {
    /// Generates a model whose model blob has `model_bytes` random bytes, streamed to disk
    /// in 1 MiB chunks (2 GiB is fine: nothing is held in memory). The same `seed` gives
    /// the same bytes, a different one different bytes in every blob.
    pub fn generate(dir: &Path, model_bytes: u64, seed: u64) -> OllamaModel {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let model = random_blob(dir, model_bytes, seed);
        let template = format!(
            "{{{{- if .System }}}}<|start_header_id|>system<|end_header_id|>\n\n{{{{ .System }}}}<|eot_id|>{{{{- end }}}}\
             <|start_header_id|>user<|end_header_id|>\n\n{{{{ .Prompt }}}}<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n{{{{ .Response }}}}<|eot_id|>\n\
             {{{{/* airlock test model, seed {seed} */}}}}"
        );
        let params = format!(
            r#"{{"seed":{seed},"stop":["<|start_header_id|>","<|end_header_id|>","<|eot_id|>"]}}"#
        );
        let license = format!(
            "AIRLOCK TEST MODEL LICENSE (seed {seed})\n\nThese weights are random bytes made by \
             airlock-testkit. Use them for anything; they will not answer.\n"
        );
        let layers = vec![
            model,
            small_blob(dir, template.as_bytes(), TEMPLATE_LAYER),
            small_blob(dir, params.as_bytes(), PARAMS_LAYER),
            small_blob(dir, license.as_bytes(), LICENSE_LAYER),
        ];
        // Written by hand rather than with `json!`: serde_json's key order depends on
        // whether some crate in the build enables `preserve_order`, and these bytes must be
        // identical in every build (their digests are the model's identity).
        let diff_ids = layers
            .iter()
            .map(|l| format!("\"{}\"", l.digest))
            .collect::<Vec<_>>()
            .join(",");
        let config = format!(
            r#"{{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"{}","file_type":"Q4_0","architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}}}}"#,
            size_label(model_bytes)
        );
        let config = small_blob(dir, config.as_bytes(), DOCKER_CONFIG);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_V2}","config":{},"layers":[{}]}}"#,
            descriptor(&config),
            layers.iter().map(descriptor).collect::<Vec<_>>().join(",")
        )
        .into_bytes();
        OllamaModel {
            dir: dir.to_path_buf(),
            digest: Digest::of(&manifest),
            manifest,
            config,
            layers,
        }
    }

    /// All blobs: config then layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config)
            .chain(self.layers.iter())
            .collect()
    }

    /// Pushes blobs and manifest into a docker distribution registry over plain HTTP
    /// (`addr` = "127.0.0.1:PORT"): monolithic uploads (POST, then PUT with the file
    /// streamed as the body), skipping blobs the registry already has, then the raw
    /// manifest under `tag`. Panics on any unexpected answer, and checks that the registry
    /// serves the manifest bytes back unchanged.
    pub fn push(&self, addr: &str, repository: &str, tag: &str) {
        for blob in self.blobs() {
            let head = request(
                addr,
                "HEAD",
                &format!("/v2/{repository}/blobs/{}", blob.digest),
                &[],
                Body::Empty,
            );
            match head.status {
                200 => continue,
                404 => {}
                _ => head.fail("HEAD blob", addr),
            }
            let post = request(
                addr,
                "POST",
                &format!("/v2/{repository}/blobs/uploads/"),
                &[],
                Body::Empty,
            );
            if post.status != 202 {
                post.fail("POST blob upload", addr);
            }
            let location = post
                .header("location")
                .unwrap_or_else(|| panic!("upload to {addr} answered 202 without a Location"));
            let (host, target) = split_location(location, addr);
            let sep = if target.contains('?') { '&' } else { '?' };
            let target = format!("{target}{sep}digest=sha256%3A{}", blob.digest.hex());
            let put = request(
                &host,
                "PUT",
                &target,
                &[("Content-Type", "application/octet-stream")],
                Body::File(&blob.path, blob.size),
            );
            if put.status != 201 {
                put.fail(&format!("PUT blob {}", blob.digest), &host);
            }
        }
        let path = format!("/v2/{repository}/manifests/{tag}");
        let put = request(
            addr,
            "PUT",
            &path,
            &[("Content-Type", DOCKER_MANIFEST_V2)],
            Body::Bytes(&self.manifest),
        );
        if put.status != 201 {
            put.fail("PUT manifest", addr);
        }
        let get = request(
            addr,
            "GET",
            &path,
            &[("Accept", DOCKER_MANIFEST_V2)],
            Body::Empty,
        );
        if get.status != 200 {
            get.fail("GET manifest", addr);
        }
        assert!(
            get.body == self.manifest,
            "{addr}{path} serves different manifest bytes than were pushed:\n{}",
            String::from_utf8_lossy(&get.body)
        );
    }

    /// Writes the model into an Ollama store rooted at `models_dir` as `ollama pull` would:
    /// `blobs/sha256-<hex>` and `manifests/<host>/<namespace>/<model>/<tag>` (the raw
    /// manifest bytes), files 0644 and the directories it creates 0755. Blobs already there
    /// are left alone; the manifest comes last, so the model is never listed half-written.
    pub fn install_local(&self, models_dir: &Path, name: &ModelName) {
        let manifest_path = models_dir.join(name.manifest_path());
        make_dirs(models_dir, Path::new("blobs"));
        make_dirs(models_dir, manifest_path.parent().unwrap());
        for blob in self.blobs() {
            let dest = models_dir.join(blob_path(&blob.digest));
            if dest.exists() {
                continue;
            }
            // Ollama downloads into `<blob>-partial` and renames when the digest matches.
            let partial = PathBuf::from(format!("{}-partial", dest.display()));
            std::fs::copy(&blob.path, &partial).unwrap_or_else(|e| {
                panic!(
                    "copying {} to {}: {e}",
                    blob.path.display(),
                    partial.display()
                )
            });
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::rename(&partial, &dest).unwrap();
        }
        let tmp = manifest_path.with_file_name(format!(".tmp-{}", rand::random::<u64>()));
        std::fs::write(&tmp, &self.manifest)
            .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &manifest_path).unwrap();
    }
}

/// Creates `root` and each missing directory down to `root/rel` with mode 0755 (set
/// explicitly: the umask must not decide what the store looks like). Existing directories
/// keep their mode.
fn make_dirs(root: &Path, rel: &Path) {
    let rel = rel.strip_prefix(root).unwrap_or(rel);
    let mut dir = root.to_path_buf();
    let mut todo = vec![dir.clone()];
    for c in rel.components() {
        dir.push(c);
        todo.push(dir.clone());
    }
    for d in todo {
        if d.is_dir() {
            continue;
        }
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::server::parse_range;
    use super::*;
    use crate::http::request;

    fn sha_file(p: &Path) -> (Digest, u64) {
        airlock_bundle::hashing::digest_reader(File::open(p).unwrap()).unwrap()
    }

    #[test]
    fn generate_is_deterministic_and_consistent() {
        let t = tempfile::tempdir().unwrap();
        let a = OllamaModel::generate(&t.path().join("a"), 3 << 20, 7);
        let b = OllamaModel::generate(&t.path().join("b"), 3 << 20, 7);
        let c = OllamaModel::generate(&t.path().join("c"), 3 << 20, 8);
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.digest, b.digest);
        for (x, y) in a.blobs().iter().zip(c.blobs()) {
            assert_ne!(x.digest, y.digest, "{} differs per seed", x.media_type);
        }
        assert_eq!(a.digest, Digest::of(&a.manifest));
        assert_eq!(a.layers[0].size, 3 << 20);
        let media: Vec<_> = a.blobs().iter().map(|b| b.media_type.clone()).collect();
        assert_eq!(
            media,
            [
                DOCKER_CONFIG,
                MODEL_LAYER,
                TEMPLATE_LAYER,
                PARAMS_LAYER,
                LICENSE_LAYER
            ]
        );

        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], DOCKER_MANIFEST_V2);
        let descs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap());
        for (d, blob) in descs.zip(a.blobs()) {
            assert_eq!(d["digest"], blob.digest.to_string());
            assert_eq!(d["size"], blob.size);
            assert_eq!(d["mediaType"], blob.media_type.as_str());
            assert_eq!(blob.path, a.dir.join(blob.digest.hex()));
            assert_eq!(sha_file(&blob.path), (blob.digest, blob.size));
        }
        assert!(a
            .manifest
            .starts_with(br#"{"schemaVersion":2,"mediaType":"#));

        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&a.config.path).unwrap()).unwrap();
        assert_eq!(config["model_format"], "gguf");
        assert_eq!(config["model_type"], "6M");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            a.layers[0].digest.to_string()
        );
        let params: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&a.layers[2].path).unwrap()).unwrap();
        assert_eq!(params["stop"][2], "<|eot_id|>");
    }

    #[test]
    fn helpers() {
        assert_eq!(crate::http::basic_token("user", "pw!"), "dXNlcjpwdyE=");
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=50-", 100), Some(Ok((50, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=9-3", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(size_label(4_661_211_424), "9.3B");
        assert_eq!(
            split_location("/v2/x/blobs/uploads/u?_state=s", "127.0.0.1:1"),
            (
                "127.0.0.1:1".into(),
                "/v2/x/blobs/uploads/u?_state=s".into()
            )
        );
        assert_eq!(
            split_location("http://127.0.0.1:2/v2/u", "127.0.0.1:1"),
            ("127.0.0.1:2".into(), "/v2/u".into())
        );
    }

    #[test]
    fn redirect_registry_auth_redirect_and_ranges() {
        let t = tempfile::tempdir().unwrap();
        let model = OllamaModel::generate(t.path(), 3 << 20, 1);
        let reg = RedirectRegistry::start(&model, "library/tiny", "latest", Some(("u", "p")));
        let auth = format!("Basic {}", crate::http::basic_token("u", "p"));
        let manifest_path = "/v2/library/tiny/manifests/latest";

        let r = request(&reg.front, "GET", manifest_path, &[], Body::Empty);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Basic realm="airlock-test""#)
        );
        let wrong = format!("Basic {}", crate::http::basic_token("u", "nope"));
        let r = request(
            &reg.front,
            "GET",
            manifest_path,
            &[("Authorization", &wrong)],
            Body::Empty,
        );
        assert_eq!(r.status, 401);

        let r = request(
            &reg.front,
            "GET",
            manifest_path,
            &[("Authorization", &auth)],
            Body::Empty,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, model.manifest);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(model.digest.to_string().as_str())
        );
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let by_digest = format!("/v2/library/tiny/manifests/{}", model.digest);
        let r = request(
            &reg.front,
            "GET",
            &by_digest,
            &[("Authorization", &auth)],
            Body::Empty,
        );
        assert_eq!((r.status, &r.body), (200, &model.manifest));

        let blob = &model.layers[0];
        let r = request(
            &reg.front,
            "GET",
            &format!("/v2/library/tiny/blobs/{}", blob.digest),
            &[("Authorization", &auth)],
            Body::Empty,
        );
        assert_eq!(r.status, 307);
        let location = r.header("location").unwrap().to_string();
        assert_eq!(
            location,
            format!("http://{}/blob/{}?sig=x", reg.blobs, blob.digest)
        );
        let (host, target) = split_location(&location, &reg.front);
        assert_eq!(host, reg.blobs);

        let data = std::fs::read(&blob.path).unwrap();
        let (a, b) = (1_000_000u64, 2_500_000u64);
        let r = request(
            &host,
            "GET",
            &target,
            &[("Range", &format!("bytes={a}-{b}"))],
            Body::Empty,
        );
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{}", blob.size).as_str())
        );
        assert_eq!(r.body, &data[a as usize..=b as usize]);
        let r = request(&host, "GET", &target, &[], Body::Empty);
        assert_eq!(r.status, 200);
        assert!(r.body == data);
        let r = request(&host, "HEAD", &target, &[], Body::Empty);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length"),
            Some(blob.size.to_string().as_str())
        );
        let r = request(
            &host,
            "GET",
            &target,
            &[("Range", &format!("bytes={}-", blob.size))],
            Body::Empty,
        );
        assert_eq!(r.status, 416);

        let r = request(
            &reg.front,
            "GET",
            "/v2/library/other/manifests/latest",
            &[("Authorization", &auth)],
            Body::Empty,
        );
        assert_eq!(r.status, 404);
        let r = request(
            &reg.blobs,
            "GET",
            &format!("/blob/{}", Digest::of(b"x")),
            &[],
            Body::Empty,
        );
        assert_eq!(r.status, 404);

        let log = reg.requests();
        assert_eq!(log.len(), 11);
        assert_eq!(log[0].listener, Listener::Front);
        assert_eq!(log[0].path, manifest_path);
        assert_eq!(log[0].authorization, None);
        assert_eq!(log[2].authorization.as_deref(), Some(auth.as_str()));
        let blob_reqs: Vec<_> = log
            .iter()
            .filter(|r| r.listener == Listener::Blobs)
            .collect();
        assert_eq!(blob_reqs.len(), 5);
        assert!(blob_reqs.iter().all(|r| r.authorization.is_none()));
        assert_eq!(blob_reqs[0].path, format!("/blob/{}", blob.digest));
        assert_eq!(blob_reqs[0].range.as_deref(), Some("bytes=1000000-2500000"));
        assert_eq!(blob_reqs[1].range, None);
        assert_eq!(blob_reqs[2].method, "HEAD");
        drop(reg);
    }

    #[test]
    fn install_local_writes_ollamas_layout() {
        let t = tempfile::tempdir().unwrap();
        let model = OllamaModel::generate(&t.path().join("gen"), 3 << 20, 2);
        let models = t.path().join("models");
        let name = ModelName::parse("127.0.0.1:5000/library/tiny:v1").unwrap();
        // A blob already present is left as it is (Ollama never re-verifies either).
        std::fs::create_dir_all(models.join("blobs")).unwrap();
        let pre = models.join(blob_path(&model.layers[3].digest));
        std::fs::write(&pre, b"already here").unwrap();
        model.install_local(&models, &name);

        let mut found = Vec::new();
        let mut stack = vec![models.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                let rel = p
                    .strip_prefix(&models)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if p.is_dir() {
                    stack.push(p);
                    if rel != "blobs" {
                        assert_eq!(mode, 0o755, "{rel}");
                    }
                } else {
                    if p != pre {
                        assert_eq!(mode, 0o644, "{rel}");
                    }
                    found.push(rel);
                }
            }
        }
        found.sort();
        let mut want: Vec<String> = model
            .blobs()
            .iter()
            .map(|b| blob_path(&b.digest).to_string_lossy().into_owned())
            .collect();
        want.push("manifests/127.0.0.1:5000/library/tiny/v1".into());
        want.sort();
        assert_eq!(found, want);
        assert_eq!(
            std::fs::read(models.join(name.manifest_path())).unwrap(),
            model.manifest
        );
        assert_eq!(std::fs::read(&pre).unwrap(), b"already here");
        for b in &model.blobs()[..4] {
            let p = models.join(blob_path(&b.digest));
            assert_eq!(sha_file(&p), (b.digest, b.size));
        }
        // Installing again is a no-op that still succeeds.
        model.install_local(&models, &name);
    }

    #[test]
    fn push_round_trips_through_docker_registry() {
        let t = tempfile::tempdir().unwrap();
        let model = OllamaModel::generate(t.path(), 3 << 20, 3);
        let reg = crate::TestRegistry::start();
        model.push(&reg.addr, "library/tiny", "latest");
        // Twice: the second push finds every blob and only rewrites the manifest.
        model.push(&reg.addr, "library/tiny", "v2");
        let r = request(
            &reg.addr,
            "GET",
            "/v2/library/tiny/manifests/latest",
            &[("Accept", DOCKER_MANIFEST_V2)],
            Body::Empty,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, model.manifest);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(model.digest.to_string().as_str())
        );
        for b in model.blobs() {
            let r = request(
                &reg.addr,
                "GET",
                &format!("/v2/library/tiny/blobs/{}", b.digest),
                &[],
                Body::Empty,
            );
            assert_eq!(r.status, 200, "{}", b.digest);
            assert_eq!(Digest::of(&r.body), b.digest);
            assert_eq!(r.body.len() as u64, b.size);
        }
    }
}
