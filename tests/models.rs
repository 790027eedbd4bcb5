//! End to end for Ollama models and carried files: pulled from the loopback registry (and a
//! redirecting, authenticating front), from a local Ollama store, restored inside
//! `unshare -n` into a host models directory and into Docker volumes, and refused without
//! touching what was already there.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use airlock_testkit::ollama::{Listener, OllamaModel, RedirectRegistry};
use airlock_tests::*;
use serde_json::Value;

const MODEL_BYTES: u64 = 50 << 20;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

/// Volumes and images a test made in `engine`, removed when it ends, passed or failed.
struct Cleanup {
    engine: Engine,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self
            .engine
            .docker()
            .args(["volume", "rm", "-f"])
            .args(&self.volumes)
            .output();
        let images: Vec<&str> = self.images.iter().map(String::as_str).collect();
        self.engine.rmi(&images);
    }
}

/// Appends TOML to the world's spec.
fn append_spec(w: &World, extra: &str) {
    let mut s = std::fs::read_to_string(w.spec()).unwrap();
    s.push_str(extra);
    std::fs::write(w.spec(), s).unwrap();
}

/// The exact Ollama store layout `model` must have under `models` as `name`.
fn expected_store(model: &OllamaModel, name: &ModelName) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    want.insert(String::new(), "755 dir".to_string());
    want.insert("blobs".into(), "755 dir".into());
    for b in model.blobs() {
        want.insert(
            format!("blobs/sha256-{}", b.digest.hex()),
            format!("644 {}", b.digest),
        );
    }
    let mut dir = PathBuf::from("manifests");
    want.insert("manifests".into(), "755 dir".into());
    for part in [&name.host, &name.namespace, &name.model] {
        dir.push(part);
        want.insert(dir.display().to_string(), "755 dir".into());
    }
    want.insert(
        dir.join(&name.tag).display().to_string(),
        format!("644 {}", model.digest),
    );
    want
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Runs a shell `script` in a container of `image` (no network) with `volume` at `mount`,
/// in `engine`.
fn in_volume(engine: Engine, volume: &str, mount: &str, image: &str, script: &str) -> String {
    engine.run_docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:{mount}"),
        image,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ])
}

/// A world whose registry also serves a generated Ollama model as `library/tiny:latest`.
fn model_world(seed: u64) -> (World, OllamaModel, String) {
    let w = World::new();
    let model = OllamaModel::generate(&w.path("model-src"), MODEL_BYTES, seed);
    model.push(&w.registry.addr, "library/tiny", "latest");
    let name = format!("{}/library/tiny:latest", w.registry.addr);
    (w, model, name)
}

/// Source files for a `[[files]]` entry: modes 0640, 0644 and 0755, one sub-directory.
fn write_files(dir: &Path, marker: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("prometheus.yml"), format!("# {marker}\n")).unwrap();
    std::fs::set_permissions(
        dir.join("prometheus.yml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(dir.join("bin/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(
        dir.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn models_and_files_round_trip_into_a_models_dir_and_volumes() {
    round_trip_on(Engine::System);
}

/// Volumes on the containerd image store: the helper container and the archive API work
/// the same there.
#[test]
fn models_and_files_round_trip_into_a_models_dir_and_volumes_docker26() {
    round_trip_on(Engine::Docker26);
}

fn round_trip_on(engine: Engine) {
    let (w, model, name) = model_world(1);
    let parsed = ModelName::parse(&name).unwrap();
    let model_volume = unique("airlock-e2e-models");
    let files_volume = unique("airlock-e2e-files");
    // Removed however the test ends: a failed assertion must not leave them in the engine.
    let _cleanup = Cleanup {
        engine,
        volumes: vec![model_volume.clone(), files_volume.clone()],
        images: vec![w.hello.clone()],
    };
    let host_files = w.path("host-files");
    write_files(&w.path("conf"), &w.marker);
    w.write_spec(&["linux/amd64"], &[&w.hello]);
    append_spec(
        &w,
        &format!(
            "\n[[model]]\nname = \"{name}\"\nvolume = \"{model_volume}\"\n\
             \n[[files]]\nsource = \"conf\"\nvolume = \"{files_volume}\"\ndest = \"etc\"\n\
             \n[[files]]\nsource = \"conf/prometheus.yml\"\npath = \"{}\"\n",
            host_files.display()
        ),
    );
    w.lock();
    let lock = std::fs::read_to_string(w.path("e2e.lock")).unwrap();
    assert!(lock.contains(&model.digest.to_string()), "{lock}");
    let bundle = w.build("models.airlock", false);

    // inspect lists the model with what its config says, and the files.
    let o = w.unpack("inspect", &bundle, &[]);
    assert_ok(&o);
    let listing = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "tiny:latest",
        "gguf",
        "Q4_0",
        "etc/bin/run.sh",
        "0755",
        "prometheus.yml",
    ] {
        assert!(
            listing.contains(needle),
            "inspect lacks {needle}: {listing}"
        );
    }

    // extract writes the Ollama store and the files beside the OCI layout.
    let x = w.path("extracted");
    assert_ok(&w.unpack("extract", &bundle, &["--to", x.to_str().unwrap()]));
    assert_eq!(
        snapshot(&x.join("ollama/models")),
        expected_store(&model, &parsed)
    );
    let run_sh = x.join(format!("files/volume/{files_volume}/etc/bin/run.sh"));
    assert_eq!(
        std::fs::metadata(&run_sh).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let prom = x.join(format!(
        "files/path/{}/prometheus.yml",
        host_files.display().to_string().trim_start_matches('/')
    ));
    assert_eq!(
        std::fs::read_to_string(&prom).unwrap(),
        format!("# {}\n", w.marker)
    );

    let _guard = engine.lock();
    let models_dir = w.path("ollama-models");
    let report = json_of(&w.unpack_on(
        engine,
        "load",
        &bundle,
        &["--json", "--ollama-models", models_dir.to_str().unwrap()],
    ));
    assert_eq!(report["models"][0]["blobs_written"], 5, "{report}");
    assert_eq!(report["models"][0]["manifest"], model.digest.to_string());

    // The host models directory: exactly Ollama's layout, byte for byte, with its modes.
    assert_eq!(snapshot(&models_dir), expected_store(&model, &parsed));
    assert_eq!(
        std::fs::read(models_dir.join(parsed.manifest_path())).unwrap(),
        model.manifest,
        "manifest bytes must be the registry's, unchanged"
    );

    // Files into a host path: content and mode.
    let p = host_files.join("prometheus.yml");
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("# {}\n", w.marker)
    );
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // Files into a volume, read back by a container of the loaded image.
    let listing = in_volume(
        engine,
        &files_volume,
        "/data",
        &w.hello,
        "cd /data && for f in etc etc/bin etc/bin/run.sh etc/prometheus.yml; do /bin/busybox stat -c '%a %n' $f; done && /bin/busybox cat etc/prometheus.yml",
    );
    assert_eq!(
        listing,
        format!(
            "755 etc\n755 etc/bin\n755 etc/bin/run.sh\n640 etc/prometheus.yml\n# {}\n",
            w.marker
        )
    );

    // A second load changes nothing and writes nothing: every blob is verified in place.
    let mtimes = || -> Vec<i64> {
        model
            .blobs()
            .iter()
            .map(|b| {
                std::fs::metadata(models_dir.join(format!("blobs/sha256-{}", b.digest.hex())))
                    .unwrap()
                    .mtime_nsec()
            })
            .collect()
    };
    let mtimes_before = mtimes();
    let again = json_of(&w.unpack_on(
        engine,
        "load",
        &bundle,
        &["--json", "--ollama-models", models_dir.to_str().unwrap()],
    ));
    assert_eq!(again["models"][0]["blobs_written"], 0, "{again}");
    assert_eq!(again["models"][0]["blobs_present"], 5, "{again}");
    assert_eq!(again["images"][0]["already_present"], true, "{again}");
    for f in again["files"].as_array().unwrap() {
        assert!(
            f["action"] == "unchanged" || f["action"] == "directory",
            "{f}"
        );
    }
    assert_eq!(
        mtimes_before,
        mtimes(),
        "present blobs must not be rewritten"
    );
    assert_eq!(snapshot(&models_dir), expected_store(&model, &parsed));

    // A blob that rotted in place (same size, one bit) is found and replaced, nothing else.
    let rotted = models_dir.join(format!("blobs/sha256-{}", model.layers[0].digest.hex()));
    let mut bytes = std::fs::read(&rotted).unwrap();
    bytes[(MODEL_BYTES / 2) as usize] ^= 0x04;
    std::fs::write(&rotted, &bytes).unwrap();
    let repaired = json_of(&w.unpack_on(
        engine,
        "load",
        &bundle,
        &["--json", "--ollama-models", models_dir.to_str().unwrap()],
    ));
    assert_eq!(repaired["models"][0]["blobs_written"], 1, "{repaired}");
    assert_eq!(snapshot(&models_dir), expected_store(&model, &parsed));

    // The bundle's own target: the model volume, as Ollama's image mounts it.
    let report = json_of(&w.unpack_on(engine, "load", &bundle, &["--json"]));
    assert_eq!(
        report["models"][0]["target"],
        format!("volume {model_volume}")
    );
    let listing = in_volume(
        engine,
        &model_volume,
        "/root/.ollama",
        &w.hello,
        "cd /root/.ollama/models && /bin/busybox find . -type f | /bin/busybox sort && /bin/busybox sha256sum blobs/* $(/bin/busybox find manifests -type f)",
    );
    let mut want: Vec<String> = model
        .blobs()
        .iter()
        .map(|b| format!("./blobs/sha256-{}", b.digest.hex()))
        .collect();
    want.push(format!("./{}", parsed.manifest_path().display()));
    want.sort();
    let (files, sums): (Vec<&str>, Vec<&str>) = listing.lines().partition(|l| l.starts_with("./"));
    assert_eq!(files, want, "{listing}");
    for b in model.blobs() {
        let line = format!("{}  blobs/sha256-{}", b.digest.hex(), b.digest.hex());
        assert!(sums.contains(&line.as_str()), "{line} missing: {listing}");
    }
    let mline = format!(
        "{}  {}",
        model.digest.hex(),
        parsed.manifest_path().display()
    );
    assert!(sums.contains(&mline.as_str()), "{mline} missing: {listing}");
    // Again into the volume: every blob there is read back, hashed, and not sent again.
    let again = json_of(&w.unpack_on(engine, "load", &bundle, &["--json"]));
    assert_eq!(again["models"][0]["blobs_written"], 0, "{again}");
    assert_eq!(again["models"][0]["blobs_present"], 5, "{again}");
    // A blob damaged inside the volume (same size) is found by its hash and sent again.
    let damaged = format!(
        "/root/.ollama/models/blobs/sha256-{}",
        model.layers[0].digest.hex()
    );
    in_volume(
        engine,
        &model_volume,
        "/root/.ollama",
        &w.hello,
        &format!("printf X | /bin/busybox dd of={damaged} bs=1 seek=1000 conv=notrunc"),
    );
    let repaired = json_of(&w.unpack_on(engine, "load", &bundle, &["--json"]));
    assert_eq!(repaired["models"][0]["blobs_written"], 1, "{repaired}");
    let sum = in_volume(
        engine,
        &model_volume,
        "/root/.ollama",
        &w.hello,
        &format!("/bin/busybox sha256sum {damaged}"),
    );
    assert!(sum.starts_with(&model.layers[0].digest.hex()), "{sum}");
    // No helper container or image is left behind.
    let leftovers = engine.run_docker(&["ps", "-a", "--filter", "label=io.airlock.helper", "-q"]);
    assert!(
        leftovers.trim().is_empty(),
        "helper containers left: {leftovers}"
    );
    let images = engine.run_docker(&["images", "-q", "airlock-helper"]);
    assert!(images.trim().is_empty(), "helper images left: {images}");
}

#[test]
fn redirects_drop_credentials_and_large_blobs_come_in_range_parts() {
    let w = World::new();
    let model = OllamaModel::generate(&w.path("model-src"), MODEL_BYTES, 2);
    let front =
        RedirectRegistry::start(&model, "library/tiny", "latest", Some(("alice", "s3cret")));
    let name = format!("{}/library/tiny:latest", front.front);
    std::fs::write(
        w.spec(),
        format!(
            "name = \"e2e\"\n[[model]]\nname = \"{name}\"\npath = \"/srv/models\"\n[registries.\"{}\"]\ninsecure = true\n",
            front.front
        ),
    )
    .unwrap();
    let pack_in = |cache: &str, args: &[&str], auth: bool| {
        let mut c = Command::new(pack_bin());
        c.args(args).arg("--cache").arg(w.path(cache));
        c.env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", w.path("no-docker-config"));
        if auth {
            let creds = w.path("auth.json");
            // "alice:s3cret"
            std::fs::write(
                &creds,
                format!(
                    r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
                    front.front
                ),
            )
            .unwrap();
            c.env("REGISTRY_AUTH_FILE", creds);
        }
        c.output().unwrap()
    };
    let pack = |args: &[&str], auth: bool| pack_in("cache", args, auth);
    let spec = w.spec();
    let spec = spec.to_str().unwrap();
    // Without credentials the front refuses: a registry error.
    assert_refused(&pack(&["lock", spec], false), 9, &["401"]);
    let refused = front.requests().len();
    assert_ok(&pack(&["lock", spec], true));
    let out = w.path("redirect.airlock");
    let key = w.path("pack-keys/airlock.key");
    // `airlock-pack build` into `out` with the given cache, with credentials.
    let build_in = |cache: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "build",
            spec,
            "-o",
            out.to_str().unwrap(),
            "--sign-key",
            key.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        pack_in(cache, &args, true)
    };
    assert_ok(&build_in("cache", &out, &["--jobs", "4"]));

    let reqs = front.requests()[refused..].to_vec();
    // The blobs the writer followed are served by the first bundle (a store in the cache):
    // a rebuild fetches none.
    let out2 = w.path("redirect-again.airlock");
    assert_ok(&build_in("cache", &out2, &[]));
    let refetched: Vec<_> = front.requests()[refused + reqs.len()..]
        .iter()
        .filter(|r| r.path.contains("/blob"))
        .cloned()
        .collect();
    assert!(refetched.is_empty(), "a warm rebuild fetched {refetched:?}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    let front_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| r.listener == Listener::Front)
        .collect();
    let blob_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| r.listener == Listener::Blobs)
        .collect();
    assert!(!front_reqs.is_empty() && !blob_reqs.is_empty(), "{reqs:?}");
    assert!(
        front_reqs.iter().all(|r| r.authorization.is_some()),
        "the registry itself gets the credentials: {front_reqs:?}"
    );
    assert!(
        blob_reqs.iter().all(|r| r.authorization.is_none()),
        "credentials leaked to the redirect target: {blob_reqs:?}"
    );
    let big = &model.layers[0];
    let ranges: Vec<&str> = blob_reqs
        .iter()
        .filter(|r| r.path.contains(&big.digest.hex()))
        .filter_map(|r| r.range.as_deref())
        .collect();
    assert!(
        ranges.len() >= 4,
        "the model blob should come in parts: {ranges:?}"
    );
    assert!(ranges.contains(&"bytes=0-8388607"), "{ranges:?}");

    // Resume: a cache holding the first two parts of the model blob (and a journal saying
    // so) fetches only the rest. A journal whose parts are not really there (a crash lost
    // them) costs one fetch from scratch, not a failed build.
    let part = 8u64 << 20;
    let data = std::fs::read(&big.path).unwrap();
    let build_with = |cache: &str, real_parts: bool| {
        let tmp = w.path(cache).join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut partial = vec![0u8; data.len()];
        if real_parts {
            partial[..2 * part as usize].copy_from_slice(&data[..2 * part as usize]);
        }
        std::fs::write(tmp.join(format!("{}.partial", big.digest.hex())), &partial).unwrap();
        std::fs::write(
            tmp.join(format!("{}.parts", big.digest.hex())),
            format!("{} {part}\n0\n1\n", data.len()),
        )
        .unwrap();
        let mark = front.requests().len();
        let o = w.path(&format!("{cache}.airlock"));
        assert_ok(&build_in(cache, &o, &[]));
        assert_ok(&w.unpack("verify", &o, &[]));
        front.requests()[mark..]
            .iter()
            .filter(|r| r.listener == Listener::Blobs && r.path.contains(&big.digest.hex()))
            .filter_map(|r| r.range.clone())
            .collect::<Vec<String>>()
    };
    let resumed = build_with("cache-resume", true);
    assert!(
        !resumed
            .iter()
            .any(|r| r == "bytes=0-8388607" || r == "bytes=8388608-16777215"),
        "parts already in the cache were fetched again: {resumed:?}"
    );
    assert!(
        resumed.contains(&"bytes=16777216-25165823".to_string()),
        "{resumed:?}"
    );
    let stale = build_with("cache-stale", false);
    assert!(stale.contains(&"bytes=0-8388607".to_string()), "{stale:?}");

    // The bundle carries the model intact.
    let x = w.path("x");
    assert_ok(&w.unpack("extract", &out, &["--to", x.to_str().unwrap()]));
    let parsed = ModelName::parse(&name).unwrap();
    assert_eq!(
        snapshot(&x.join("ollama/models")),
        expected_store(&model, &parsed)
    );
    assert_eq!(
        std::fs::read(x.join("ollama/models").join(parsed.manifest_path())).unwrap(),
        model.manifest
    );

    // A server without Range support: one probe, then the blob in one piece, not once
    // per part.
    front.ignore_ranges(true);
    let mark = front.requests().len();
    let whole = w.path("whole.airlock");
    assert_ok(&build_in("cache-norange", &whole, &[]));
    front.ignore_ranges(false);
    let gets: Vec<_> = front.requests()[mark..]
        .iter()
        .filter(|r| r.listener == Listener::Blobs && r.path.contains(&big.digest.hex()))
        .map(|r| r.range.clone())
        .collect();
    assert_eq!(gets, [Some("bytes=0-0".to_string()), None], "{gets:?}");
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());

    // A registry that serves other bytes (same size) under the digest: refused with the
    // digests named, no bundle written, and nothing kept in the cache.
    let mut bytes = std::fs::read(&big.path).unwrap();
    bytes[(MODEL_BYTES / 3) as usize] ^= 0x20;
    std::fs::write(&big.path, &bytes).unwrap();
    let bad = w.path("bad.airlock");
    let o = build_in("cache-bad", &bad, &[]);
    assert_refused(
        &o,
        3,
        &[
            &format!("expected {}", big.digest),
            "does not match its digest",
        ],
    );
    assert!(!bad.exists());
    // The bad blob is gone; the other blobs may stay as resumable partials.
    let kept: Vec<_> = std::fs::read_dir(w.path("cache-bad/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&big.digest.hex()))
        .collect();
    assert!(kept.is_empty(), "kept {kept:?}");
    assert!(!w
        .path(&format!("cache-bad/blobs/sha256/{}", big.digest.hex()))
        .exists());
}

#[test]
fn a_local_store_is_packed_without_network_and_checked() {
    let w = World::new();
    let model = OllamaModel::generate(&w.path("model-src"), 8 << 20, 3);
    let store = w.path("store");
    let name = ModelName::parse("tiny:q4").unwrap();
    model.install_local(&store, &name);
    // The same model under a second tag: every blob is carried once.
    model.install_local(&store, &ModelName::parse("tiny:latest").unwrap());
    std::fs::write(
        w.spec(),
        "name = \"e2e\"\n[ollama]\nsource = \"local\"\n\
         [[model]]\nname = \"tiny:q4\"\n[[model]]\nname = \"tiny:latest\"\n",
    )
    .unwrap();
    // Both lock and build run with no network at all.
    let offline_pack = |args: &[&str]| w.pack_offline(&store, args);
    let spec = w.spec();
    let spec = spec.to_str().unwrap();
    assert_ok(&offline_pack(&["lock", spec]));
    let out = w.path("local.airlock");
    let build = |o: &Path| {
        let mut args = w.build_args(o, true);
        args.push("--quiet".into());
        w.pack_offline(&store, &args)
    };
    assert_ok(&build(&out));
    let o = w.unpack("inspect", &out, &["--json"]);
    let inspected = json_of(&o);
    assert_eq!(
        inspected["models"].as_array().unwrap().len(),
        2,
        "{inspected}"
    );
    // oci-layout, index.json, then the manifest and five blobs once for both tags.
    assert_eq!(
        inspected["entries"].as_array().unwrap().len(),
        2 + 1 + 5,
        "{inspected}"
    );
    let models_dir = w.path("restored");
    assert_ok(&w.unpack(
        "load",
        &out,
        &["--ollama-models", models_dir.to_str().unwrap()],
    ));
    let mut want = expected_store(&model, &name);
    want.insert(
        "manifests/registry.ollama.ai/library/tiny/latest".into(),
        format!("644 {}", model.digest),
    );
    assert_eq!(snapshot(&models_dir), want);
    // `--ollama-models` without a directory means Ollama's own: $OLLAMA_MODELS.
    let env_models = w.path("env-models");
    let o = w.unpack_env(
        "load",
        &out,
        &["--ollama-models"],
        &[("OLLAMA_MODELS", env_models.to_str().unwrap())],
    );
    assert_ok(&o);
    assert_eq!(snapshot(&env_models), want);

    // A blob that rotted in the store (same size, one bit) is refused, named, and no
    // bundle is written.
    let blob = store.join(format!("blobs/sha256-{}", model.layers[0].digest.hex()));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[12345] ^= 0x10;
    std::fs::write(&blob, &bytes).unwrap();
    let bad = w.path("bad.airlock");
    assert_refused(
        &build(&bad),
        3,
        &[
            blob.to_str().unwrap(),
            &format!("expected {}", model.layers[0].digest),
            "computed sha256:",
        ],
    );
    assert!(!bad.exists(), "a refused build left {}", bad.display());
}

#[test]
fn refusals_leave_models_and_files_untouched() {
    let (w, model, name) = model_world(4);
    let parsed = ModelName::parse(&name).unwrap();
    let conf = w.path("conf");
    write_files(&conf, &w.marker);
    let host_files = w.path("host-files");
    // No images and no volumes: this load needs no Docker engine at all.
    std::fs::write(
        w.spec(),
        format!(
            "name = \"e2e\"\n[[model]]\nname = \"{name}\"\npath = \"/unused\"\n\
             [[files]]\nsource = \"conf\"\npath = \"{}\"\n\
             [registries.\"{}\"]\ninsecure = true\n",
            host_files.display(),
            w.registry.addr
        ),
    )
    .unwrap();
    w.lock();
    let plain = w.build("plain.airlock", true);
    let good = std::fs::read(&plain).unwrap();

    // What is already on the host: another model, and a prometheus.yml edited by hand.
    let models_dir = w.path("ollama-models");
    let other = OllamaModel::generate(&w.path("other-src"), 1 << 20, 5);
    other.install_local(&models_dir, &ModelName::parse("other:latest").unwrap());
    std::fs::create_dir_all(&host_files).unwrap();
    std::fs::write(host_files.join("prometheus.yml"), "# edited on the host\n").unwrap();
    let before_models = snapshot(&models_dir);
    let before_files = snapshot(&host_files);
    let work = w.path("work");
    let load = |bundle: &Path, extra: &[&str]| {
        let mut args = vec!["--ollama-models", models_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        w.unpack_env(
            "load",
            bundle,
            &args,
            &[
                ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
                ("AIRLOCK_WORK_DIR", work.to_str().unwrap()),
            ],
        )
    };
    let unchanged = |what: &str| {
        assert_eq!(
            snapshot(&models_dir),
            before_models,
            "{what}: models dir changed"
        );
        assert_eq!(snapshot(&host_files), before_files, "{what}: files changed");
        let work = w.path("work");
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: spool left {left:?}");
    };

    // 1. An existing file that differs: refused before anything is read, both digests named.
    let edited = Digest::of(b"# edited on the host\n");
    assert_refused(
        &load(&plain, &[]),
        10,
        &["prometheus.yml", &edited.to_string(), "--overwrite"],
    );
    unchanged("conflict");

    // 2. A corrupted model blob: refused with the entry and digests, nothing new visible.
    let layer = std::fs::read(&model.layers[0].path).unwrap();
    let at = find(&good, &layer[4096..4160]) + 11;
    let corrupt = write_variant(&w, "corrupt.airlock", &flip(&good, at));
    assert_refused(
        &load(&corrupt, &["--overwrite"]),
        3,
        &[
            &model.layers[0].digest.blob_path(),
            &format!("expected {}", model.layers[0].digest),
        ],
    );
    unchanged("corrupt blob");
    // Into a models directory that does not exist yet: after a refusal it still does not.
    let fresh = w.path("fresh/ollama/models");
    let o = w.unpack_env(
        "load",
        &corrupt,
        &["--ollama-models", fresh.to_str().unwrap(), "--overwrite"],
        &[("AIRLOCK_WORK_DIR", work.to_str().unwrap())],
    );
    assert_refused(&o, 3, &["expected"]);
    assert!(
        !w.path("fresh").exists(),
        "a refused load left directories behind"
    );

    // 3. A validly signed header whose model name climbs out of the store.
    let evil = resign(&w, &plain, |v| {
        v["models"][0]["name"] = Value::from("127.0.0.1:1/library/..:latest")
    });
    let evil = write_variant(&w, "evil.airlock", &evil);
    assert_refused(&load(&evil, &["--overwrite"]), 3, &["invalid model name"]);
    let evil = resign(&w, &plain, |v| {
        v["files"][0]["path"] = Value::from("../escape.yml")
    });
    let evil = write_variant(&w, "evil-file.airlock", &evil);
    assert_refused(&load(&evil, &["--overwrite"]), 3, &["../escape.yml"]);
    unchanged("malicious names");
    assert!(!w.path("escape.yml").exists());

    // 4. With --overwrite the good bundle lands: the file replaced (and reported), the
    //    other model untouched, the new model complete.
    let o = load(&plain, &["--overwrite"]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "overwritten {} prometheus.yml (was {edited})",
            host_files.display()
        )),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(host_files.join("prometheus.yml")).unwrap(),
        format!("# {}\n", w.marker)
    );
    let after = snapshot(&models_dir);
    for (k, v) in &before_models {
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
    for (k, v) in expected_store(&model, &parsed) {
        assert_eq!(after.get(&k), Some(&v), "{k}");
    }
}
