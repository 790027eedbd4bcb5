//! Podman as the engine: `load`, `inventory`, delta pre-checks and volume restore through
//! Podman's Docker-compatible API (`podman system service` on a temp socket, private
//! storage), with the unpack side inside `unshare -n` and `DOCKER_HOST` at that socket.
//! What Podman stored is checked with its own CLI (image IDs, tags, `volume export`):
//! containers cannot start under this sandbox's rlimits, so nothing is run.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output};

use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use airlock_testkit::builders::{self, Built};
use airlock_testkit::ollama::OllamaModel;
use airlock_testkit::podman::Podman;
use airlock_testkit::{fixtures, ImageSpec, Layer};
use airlock_tests::*;
use serde_json::Value;

/// A world whose registry also serves the builder-made images.
fn world_with_built() -> (World, &'static Built) {
    let w = World::new();
    // The first call builds (and removes) an image in the system Docker engine.
    let built = {
        let _guard = docker_lock();
        builders::built()
    };
    built.publish(&w.registry.addr);
    (w, built)
}

/// `airlock-unpack CMD BUNDLE …` with no network, against the Podman engine.
fn unpack_podman(w: &World, p: &Podman, cmd: &str, bundle: &Path, extra: &[&str]) -> Output {
    w.unpack_env(cmd, bundle, extra, &[("DOCKER_HOST", &p.docker_host())])
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Every image in the Podman engine: full ID and tag, sorted.
fn podman_images(p: &Podman) -> Vec<String> {
    let out = p.run(&[
        "images",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The signed header, as `inspect --json` shows it.
fn header(w: &World, bundle: &Path) -> Value {
    json_of(&w.unpack("inspect", bundle, &["--json"]))
}

/// The header's record of `reference` for linux/amd64.
fn amd64<'a>(h: &'a Value, reference: &str) -> &'a Value {
    h["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == reference && i["platform"] == "linux/amd64")
        .unwrap_or_else(|| panic!("no linux/amd64 record of {reference}: {h}"))
}

/// The media type the header records for `digest`.
fn media_type(h: &Value, digest: &str) -> String {
    h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == digest)
        .and_then(|e| e["media_type"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `podman image inspect` of `reference`: (ID, tags, layer diff IDs).
fn inspect(p: &Podman, reference: &str) -> (String, Vec<String>, Vec<String>) {
    let v: Value = serde_json::from_str(&p.run(&["image", "inspect", reference])).unwrap();
    let i = &v[0];
    let strings = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    (
        i["Id"].as_str().unwrap().to_string(),
        strings(&i["RepoTags"]),
        strings(&i["RootFS"]["Layers"]),
    )
}

#[test]
fn podman_loads_builder_made_and_generated_images_under_their_ids_and_tags() {
    let (w, built) = world_with_built();
    let reg = &w.registry.addr;
    let refs: Vec<String> = [&w.hello, &w.second, &w.multi]
        .into_iter()
        .cloned()
        .chain(built.all().iter().map(|b| b.reference(reg)))
        .collect();
    let ref_strs: Vec<&str> = refs.iter().map(String::as_str).collect();
    w.lock_images(&["linux/amd64", "linux/arm64"], &ref_strs);
    let bundle = w.build("podman.airlock", false);
    let h = header(&w, &bundle);

    // The builders' own formats made it into the bundle unchanged.
    let docker_rec = amd64(&h, &built.docker.reference(reg));
    assert_eq!(
        docker_rec["manifest"], built.docker.digest,
        "the bundle carries the manifest docker push wrote"
    );
    assert_eq!(
        media_type(&h, docker_rec["manifest"].as_str().unwrap()),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let podman_rec = amd64(&h, &built.podman.reference(reg));
    assert_eq!(
        media_type(&h, podman_rec["manifest"].as_str().unwrap()),
        "application/vnd.oci.image.manifest.v1+json"
    );
    let zstd_rec = amd64(&h, &built.zstd.reference(reg));
    let zstd_types: Vec<String> = zstd_rec["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| media_type(&h, l.as_str().unwrap()))
        .collect();
    assert!(
        zstd_types.iter().any(|t| t.ends_with("tar+zstd")),
        "{zstd_types:?}"
    );
    let multi_refs: Vec<&str> = h["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ref"] == built.multi.reference(reg).as_str())
        .map(|i| i["platform"].as_str().unwrap())
        .collect();
    assert_eq!(multi_refs, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        amd64(&h, &built.multi.reference(reg))["index"],
        built.multi.digest
    );

    let p = Podman::start();
    assert!(podman_images(&p).is_empty());
    let report = json_of(&unpack_podman(&w, &p, "load", &bundle, &["--json"]));
    let loaded = report["images"].as_array().unwrap();
    assert_eq!(loaded.len(), refs.len(), "{report}");
    assert!(
        report["engine"].as_str().unwrap().contains("4.3"),
        "{report}"
    );

    // Podman's own view: every tag at the image whose ID is the config digest, and nothing
    // else in the engine.
    let mut want = Vec::new();
    for r in &refs {
        let rec = amd64(&h, r);
        let config = rec["config"].as_str().unwrap();
        let (id, tags, layers) = inspect(&p, r);
        assert_eq!(format!("sha256:{id}"), config, "{r}");
        assert!(tags.contains(r), "{r}: {tags:?}");
        assert_eq!(
            layers.len(),
            rec["layers"].as_array().unwrap().len(),
            "{r}: {layers:?}"
        );
        let l = loaded
            .iter()
            .find(|i| i["reference"] == r.as_str())
            .unwrap();
        assert_eq!(l["id"], config, "{report}");
        assert_eq!(l["already_present"], false);
        want.push(format!("sha256:{id} {r}"));
    }
    want.sort();
    assert_eq!(podman_images(&p), want);

    // Again: every image is found under its tag with the right ID, and nothing is sent.
    let again = json_of(&unpack_podman(&w, &p, "load", &bundle, &["--json"]));
    for i in again["images"].as_array().unwrap() {
        assert_eq!(i["already_present"], true, "{again}");
    }
    assert_eq!(podman_images(&p), want);
}

#[test]
fn inventory_and_delta_bundles_against_podman() {
    let w = World::new();
    // The base comes as a one-image bundle: Podman 4.3 reads an archive of several images
    // as a docker-archive, which records layers by diff ID only, and then cannot find them
    // by the compressed digest a later one-image (OCI) archive names unless its global
    // blob-info cache happens to know the pair (fixed in Podman 4.5: it uses the config's
    // diff IDs).
    w.lock_images(&["linux/amd64"], &[&w.second]);
    let full = w.build("full.airlock", false);
    let p = Podman::start();
    assert_ok(&unpack_podman(&w, &p, "load", &full, &[]));

    // Podman's inventory, taken with no network: the layers it has, by diff ID.
    let inv = w.path("podman.inventory");
    let o = Command::new("unshare")
        .arg("-n")
        .arg(unpack_bin())
        .args(["inventory", "-o"])
        .arg(&inv)
        .env("DOCKER_HOST", p.docker_host())
        .output()
        .unwrap();
    assert_ok(&o);
    let inventory: Value = serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    let images = inventory["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{inventory}");
    assert!(
        images
            .iter()
            .any(|i| i["diff_ids"][0] == w.busybox_layer.diff_id.to_string().as_str()),
        "{inventory}"
    );

    // Bump one image and build a delta against Podman's inventory.
    let layers = w.path("layers2");
    let extra = Layer::files(
        &layers,
        &[(
            "marker.txt",
            format!("second {}\n", w.marker).as_bytes(),
            0o644,
        )],
    );
    let bump = Layer::files(
        &layers,
        &[(
            "bumped.txt",
            format!("bumped {}\n", w.marker).as_bytes(),
            0o644,
        )],
    );
    fixtures::push(
        &w.registry.addr,
        "e2e/second:v1",
        &[ImageSpec::new(
            vec![w.busybox_layer.clone(), extra.clone(), bump.clone()],
            &["/bin/busybox", "cat", "/bumped.txt"],
        )],
    );
    assert_ok(&w.pack(["lock", w.spec().to_str().unwrap(), "--update"]));
    let delta = w.path("delta.airlock");
    let mut args = w.build_args(&delta, false);
    args.extend(["--have".into(), inv.clone().into_os_string()]);
    let o = w.pack(&args);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("leaving out 2 blobs"),
        "{}",
        text(&o)
    );
    let h = header(&w, &delta);
    let bumped_config = amd64(&h, &w.second)["config"].as_str().unwrap().to_string();

    // A Podman without those layers refuses it before loading anything.
    let bare = Podman::start();
    let o = unpack_podman(&w, &bare, "load", &delta, &[]);
    assert_refused(
        &o,
        11,
        &[
            "delta bundle",
            &w.busybox_layer.digest.to_string(),
            &extra.digest.to_string(),
            "nothing was loaded",
        ],
    );
    assert!(
        podman_images(&bare).is_empty(),
        "a refused delta loads nothing"
    );

    // The Podman it was made for loads it: the tag moves to the bumped image.
    let report = json_of(&unpack_podman(&w, &p, "load", &delta, &["--json"]));
    let second = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == w.second.as_str())
        .unwrap();
    assert_eq!(second["already_present"], false, "{report}");
    let (id, tags, layers) = inspect(&p, &w.second);
    assert_eq!(format!("sha256:{id}"), bumped_config);
    assert!(tags.contains(&w.second));
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[2], bump.diff_id.to_string());
}

/// Every regular file in a Podman volume (from `podman volume export`): mode and sha256.
fn volume_files(p: &Podman, volume: &str) -> BTreeMap<String, (u32, Digest)> {
    let out = p.cli().args(["volume", "export", volume]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mode = e.header().mode().unwrap() & 0o7777;
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(path, (mode, Digest::of(&data)));
    }
    files
}

#[test]
fn models_and_files_restore_into_podman_volumes() {
    let w = World::new();
    let model = OllamaModel::generate(&w.path("model-src"), 8 << 20, 7);
    model.push(&w.registry.addr, "library/tiny", "latest");
    let name = format!("{}/library/tiny:latest", w.registry.addr);
    let parsed = ModelName::parse(&name).unwrap();
    let conf = w.path("conf");
    std::fs::create_dir_all(conf.join("bin")).unwrap();
    let prom = format!("# {}\n", w.marker);
    std::fs::write(conf.join("prometheus.yml"), &prom).unwrap();
    let run_sh = b"#!/bin/sh\necho run\n";
    std::fs::write(conf.join("bin/run.sh"), run_sh).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        conf.join("prometheus.yml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        conf.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    w.write_spec(&["linux/amd64"], &[&w.hello]);
    let mut spec = std::fs::read_to_string(w.spec()).unwrap();
    spec.push_str(&format!(
        "\n[[model]]\nname = \"{name}\"\nvolume = \"models-vol\"\n\
         \n[[files]]\nsource = \"conf\"\nvolume = \"files-vol\"\ndest = \"etc\"\n"
    ));
    std::fs::write(w.spec(), spec).unwrap();
    w.lock();
    let bundle = w.build("volumes.airlock", false);

    let p = Podman::start();
    let report = json_of(&unpack_podman(&w, &p, "load", &bundle, &["--json"]));
    assert_eq!(
        report["models"][0]["target"], "volume models-vol",
        "{report}"
    );
    assert_eq!(report["models"][0]["blobs_written"], 5, "{report}");

    // The model volume holds exactly Ollama's store (under models/, as Ollama's image
    // mounts the volume at /root/.ollama), every blob byte for byte.
    let mut want = BTreeMap::new();
    for b in model.blobs() {
        want.insert(
            format!("models/blobs/sha256-{}", b.digest.hex()),
            (0o644, b.digest),
        );
    }
    want.insert(
        format!("models/{}", parsed.manifest_path().display()),
        (0o644, model.digest),
    );
    assert_eq!(volume_files(&p, "models-vol"), want);

    // The files volume: content and modes.
    let mut want = BTreeMap::new();
    want.insert(
        "etc/prometheus.yml".to_string(),
        (0o640, Digest::of(prom.as_bytes())),
    );
    want.insert("etc/bin/run.sh".to_string(), (0o755, Digest::of(run_sh)));
    assert_eq!(volume_files(&p, "files-vol"), want);

    // Again: every blob in the volume is read back through the API, hashed, not resent.
    let again = json_of(&unpack_podman(&w, &p, "load", &bundle, &["--json"]));
    assert_eq!(again["models"][0]["blobs_written"], 0, "{again}");
    assert_eq!(again["models"][0]["blobs_present"], 5, "{again}");
    for f in again["files"].as_array().unwrap() {
        assert!(
            f["action"] == "unchanged" || f["action"] == "directory",
            "{f}"
        );
    }

    // No helper container or image is left in Podman.
    let leftovers = p.run(&["ps", "-a", "--filter", "label=io.airlock.helper", "-q"]);
    assert!(
        leftovers.trim().is_empty(),
        "helper containers left: {leftovers}"
    );
    let tags = podman_images(&p);
    assert_eq!(tags.len(), 1, "only the bundle's image: {tags:?}");
    assert!(tags[0].ends_with(&w.hello), "{tags:?}");
}
