//! `extract --archive FILE`: the verified load archive in a file, read by the real
//! `docker load -i` (the system engine) and `podman load -i` (private storage), with
//! builder-made and generated images; a damaged bundle leaves neither FILE nor a temp file.

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use airlock_testkit::builders;
use airlock_tests::*;
use serde_json::Value;

fn json_of(o: &std::process::Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// The archive's entry names, in order, and its docker `manifest.json`.
fn archive_contents(file: &Path) -> (Vec<String>, Value) {
    let mut names = Vec::new();
    let mut manifest = Value::Null;
    let mut a = tar::Archive::new(std::fs::File::open(file).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            manifest = serde_json::from_slice(&b).unwrap();
        }
        names.push(name);
    }
    (names, manifest)
}

/// `(config, tag)` per image of a docker `manifest.json`, sorted.
fn manifest_images(manifest: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Config"]
                    .as_str()
                    .unwrap()
                    .replace("blobs/sha256/", "sha256:"),
                m["RepoTags"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `(config, ref)` of the header's images for `platform`, sorted.
fn header_images(h: &Value, platform: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["platform"] == platform)
        .map(|i| {
            (
                i["config"].as_str().unwrap().to_string(),
                i["ref"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Names in `dir` (files a failed run could leave behind).
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn one_archive_file_loads_with_docker_and_podman_and_only_once_verified() {
    let w = World::new();
    let built = {
        let _guard = docker_lock();
        builders::built()
    };
    let reg = w.registry.addr.clone();
    built.publish(&reg);
    // Not the zstd image: Docker 20.10 cannot read zstd layers.
    let refs: Vec<String> = [&w.hello, &w.second, &w.multi]
        .into_iter()
        .cloned()
        .chain(
            [&built.docker, &built.podman, &built.multi]
                .iter()
                .map(|b| b.reference(&reg)),
        )
        .collect();
    let ref_strs: Vec<&str> = refs.iter().map(String::as_str).collect();
    w.lock_images(&["linux/amd64", "linux/arm64"], &ref_strs);
    let bundle = w.build("archive.airlock", false);
    let h = json_of(&w.unpack("inspect", &bundle, &["--json"]));
    let out = w.path("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("images.tar");

    let o = w.unpack("extract", &bundle, &["--archive", file.to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        o.stdout.is_empty(),
        "stdout is for the archive only: {}",
        text(&o)
    );
    assert_eq!(dir_names(&out), ["images.tar"], "no temp file left");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // This machine's platform by default, one image per reference; the documents last.
    let (names, manifest) = archive_contents(&file);
    assert_eq!(
        names[names.len() - 3..],
        ["oci-layout", "index.json", "manifest.json"]
    );
    assert!(names[..names.len() - 3]
        .iter()
        .all(|n| n.starts_with("blobs/sha256/")));
    let want = header_images(&h, "linux/amd64");
    assert_eq!(want.len(), refs.len());
    assert_eq!(manifest_images(&manifest), want);

    // The same bytes to stdout.
    let o = w.unpack("extract", &bundle, &["--archive", "-", "--quiet"]);
    assert_ok(&o);
    assert!(
        o.stdout == std::fs::read(&file).unwrap(),
        "stdout archive differs from FILE"
    );

    // Another platform: the arm64 images of the two multi-platform references.
    let arm = out.join("arm64.tar");
    assert_ok(&w.unpack(
        "extract",
        &bundle,
        &[
            "--archive",
            arm.to_str().unwrap(),
            "--platform",
            "linux/arm64",
        ],
    ));
    let (_, arm_manifest) = archive_contents(&arm);
    assert_eq!(
        manifest_images(&arm_manifest),
        header_images(&h, "linux/arm64")
    );
    assert_eq!(manifest_images(&arm_manifest).len(), 2);

    // An existing FILE is refused before any work, and left alone.
    let o = w.unpack("extract", &bundle, &["--archive", arm.to_str().unwrap()]);
    assert_refused(&o, 2, &["exists"]);
    assert_eq!(manifest_images(&archive_contents(&arm).1).len(), 2);

    // podman load -i, private storage: every tag at its config digest.
    let pstore = tempfile::tempdir().unwrap();
    std::fs::write(pstore.path().join("registries.conf"), "").unwrap();
    let podman = |args: &[&str]| {
        airlock_testkit::tools::run(airlock_testkit::podman::cli(pstore.path(), "vfs").args(args))
    };
    podman(&["load", "--quiet", "-i", file.to_str().unwrap()]);
    let mut listed: Vec<(String, String)> = podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ])
    .lines()
    .map(|l| {
        let (id, tag) = l.split_once(' ').unwrap();
        (id.to_string(), tag.to_string())
    })
    .collect();
    listed.sort();
    assert_eq!(listed, want, "podman load -i");

    // docker load -i into the system engine: the images and tags `load` makes, exactly.
    let _guard = docker_lock();
    let before = docker_images();
    let tags: Vec<&str> = ref_strs.clone();
    let ids: Vec<String> = want.iter().map(|(c, _)| c.clone()).collect();
    let result = std::panic::catch_unwind(|| {
        run_ok(Command::new("docker").args(["load", "-q", "-i", file.to_str().unwrap()]));
        for (config, r) in &want {
            let id = run_ok(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", r]));
            assert_eq!(id.trim(), config, "{r}");
        }
        let by_docker_load = docker_images();
        docker_rmi(&tags);
        assert_eq!(docker_images(), before);
        assert_ok(&w.unpack("load", &bundle, &[]));
        assert_eq!(
            docker_images(),
            by_docker_load,
            "load and docker load -i differ"
        );
    });
    docker_rmi(&tags);
    docker_rmi(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(docker_images(), before);
    result.unwrap();
}

#[test]
fn a_damaged_bundle_leaves_no_archive_and_no_temp_file() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let plain = w.build("plain.airlock", true);
    let bytes = std::fs::read(&plain).unwrap();
    // One bit of the busybox layer, deep inside the bundle.
    let layer = std::fs::read(&w.busybox_layer.path).unwrap();
    let at = find(&bytes, &layer[layer.len() / 2..layer.len() / 2 + 64]);
    let damaged = write_variant(&w, "damaged.airlock", &flip(&bytes, at));
    let out = w.path("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("images.tar");
    let o = w.unpack("extract", &damaged, &["--archive", file.to_str().unwrap()]);
    assert_refused(&o, 3, &[&w.busybox_layer.digest.hex()]);
    assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));

    // To stdout, nothing can be taken back: but the documents that make it loadable are
    // not there.
    let o = w.unpack("extract", &damaged, &["--archive", "-"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let mut names = Vec::new();
    let mut a = tar::Archive::new(o.stdout.as_slice());
    if let Ok(entries) = a.entries() {
        for e in entries.flatten() {
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        !names
            .iter()
            .any(|n| n == "manifest.json" || n == "index.json"),
        "{names:?}"
    );

    // The undamaged bundle writes it.
    assert_ok(&w.unpack("extract", &plain, &["--archive", file.to_str().unwrap()]));
    assert_eq!(dir_names(&out), ["images.tar"]);
}

#[test]
fn a_delta_bundle_makes_no_archive() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let full = w.build("full.airlock", false);
    // An inventory of an engine holding `hello` (a private Podman).
    let p = airlock_testkit::podman::Podman::start();
    assert_ok(&w.unpack_env("load", &full, &[], &[("DOCKER_HOST", &p.docker_host())]));
    let inv = w.path("host.inventory");
    run_ok(
        Command::new("unshare")
            .arg("-n")
            .arg(unpack_bin())
            .args(["inventory", "-o"])
            .arg(&inv)
            .env("DOCKER_HOST", p.docker_host()),
    );
    // `second` shares hello's busybox layer: the delta leaves it out.
    w.lock_images(&["linux/amd64"], &[&w.second]);
    let delta = w.path("delta.airlock");
    let mut args = w.build_args(&delta, false);
    args.extend(["--have".into(), inv.into_os_string()]);
    assert_ok(&w.pack(&args));
    let out = w.path("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("images.tar");
    let o = w.unpack("extract", &delta, &["--archive", file.to_str().unwrap()]);
    assert_refused(
        &o,
        11,
        &[
            "left out of this delta bundle",
            &w.busybox_layer.digest.to_string(),
        ],
    );
    assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));
}
