//! The engine pre-flight and the rollback of engine refusals, against the real Docker 20.10
//! on this machine (classic image store: no zstd before Engine 23.0) with a zstd image made
//! by a real tool (`skopeo copy --dest-compress-format zstd`). The unpack side runs inside
//! `unshare -n`.

use std::process::Command;

use airlock_tests::*;
use serde_json::Value;

/// Removes the test's tags from the engine however the test ends.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        let tags: Vec<&str> = self.0.iter().map(String::as_str).collect();
        docker_rmi(&tags);
    }
}

/// `REPO:TAG` → the manifest skopeo reads from the test registry.
fn registry_manifest(image: &str) -> Value {
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    serde_json::from_str(&raw).unwrap()
}

fn config_digest(image: &str) -> String {
    registry_manifest(image)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The engine's image list (IDs and tags), narrowed to what this test's load could touch:
/// images of this world's registry, and images with this test's IDs. Other test processes
/// (other worktrees, other suites) may load their own images meanwhile; those never match.
fn our_images(w: &World, ids: &[&str]) -> Vec<String> {
    docker_images()
        .into_iter()
        .filter(|l| l.contains(&w.registry.addr) || ids.iter().any(|id| l.starts_with(id)))
        .collect()
}

/// A real zstd image in the world's registry: skopeo recompresses `second` (busybox + a
/// layer unique to this world) into OCI `tar+zstd` layers. Straight from registry to
/// registry, skopeo 1.9 substitutes the gzip blobs the registry already has for the same
/// content, so it goes through an OCI layout, and is pushed from there with its digests
/// preserved. Returns its reference and its zstd layers' digests.
fn zstd_image(w: &World) -> (String, Vec<String>) {
    let zstd = format!("{}/e2e/second-zstd:v1", w.registry.addr);
    let layout = format!("oci:{}:v1", w.path("zstd-layout").display());
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &format!("docker://{}", w.second),
        &layout,
    ]));
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &layout,
        &format!("docker://{zstd}"),
    ]));
    let manifest = registry_manifest(&zstd);
    let zstd_layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd")
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !zstd_layers.is_empty(),
        "skopeo wrote no tar+zstd layer: {manifest:#}"
    );
    (zstd, zstd_layers)
}

#[test]
fn an_engine_that_cannot_load_zstd_refuses_before_harm_and_rolls_back() {
    let w = World::new();
    let (zstd, zstd_layers) = zstd_image(&w);
    // A third image, whose tag the engine does not have yet.
    let fresh = format!("{}/e2e/fresh:v1", w.registry.addr);
    airlock_testkit::fixtures::push(
        &w.registry.addr,
        "e2e/fresh:v1",
        &[airlock_testkit::ImageSpec::new(
            vec![w.busybox_layer.clone()],
            &["/bin/busybox", "echo", "fresh", &w.marker],
        )],
    );
    // The bundle lists images by reference, and the load archive follows: second-zstd comes
    // after fresh and hello, so the engine loads those before it fails on it (checked below).
    w.lock_images(&["linux/amd64"], &[&w.hello, &fresh, &zstd]);
    let bundle = w.build("engines.airlock", false);

    let hello_id = config_digest(&w.hello);
    let fresh_id = config_digest(&fresh);
    let zstd_id = config_digest(&zstd);
    let multi_id = {
        let index = registry_manifest(&w.multi);
        let amd64 = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        config_digest(&format!("{}/e2e/multi@{amd64}", w.registry.addr))
    };

    let _lock = docker_lock();
    let _untag = Untag(vec![
        w.multi.clone(),
        w.hello.clone(),
        fresh.clone(),
        zstd.clone(),
    ]);
    // The bundle's first tag already names another image: the failed load must point it
    // back there, not just delete it.
    run_ok(Command::new("docker").args(["pull", "-q", &w.multi]));
    run_ok(Command::new("docker").args(["tag", &w.multi, &w.hello]));
    let ids = [
        hello_id.as_str(),
        fresh_id.as_str(),
        zstd_id.as_str(),
        multi_id.as_str(),
    ];
    let before = our_images(&w, &ids);
    assert!(
        before.contains(&format!("{multi_id} {}", w.hello)),
        "pre-tagged: {before:#?}"
    );

    // (a) The pre-flight: nothing is sent, exit 13, naming image, layer, media type, engine.
    let o = w.unpack("load", &bundle, &[]);
    let mut needles = vec![
        zstd.as_str(),
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "Docker 20.10",
        "23.0",
        "nothing was loaded",
        "push",
        "extract",
    ];
    needles.extend(zstd_layers.iter().map(String::as_str));
    assert_refused(&o, 13, &needles);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains(&format!("{}:", w.hello)),
        "the loadable image is not named a problem: {}",
        text(&o)
    );
    assert_eq!(our_images(&w, &ids), before, "the pre-flight sent nothing");

    // inspect --engine shows the same verdict per image, and exits 13 too.
    let i = w.unpack("inspect", &bundle, &["--engine"]);
    assert_eq!(i.status.code(), Some(13), "{}", text(&i));
    let out = String::from_utf8_lossy(&i.stdout);
    // The verdict table follows the engine line (the header's image table comes before).
    let verdicts = out
        .split_once("\nengine   ")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no engine section: {}", text(&i)));
    let line = |r: &str| {
        verdicts
            .lines()
            .find(|l| l.starts_with(&format!("{r} ")))
            .unwrap_or_else(|| panic!("no verdict for {r}: {}", text(&i)))
            .to_string()
    };
    assert!(line(&w.hello).ends_with("loadable"), "{}", text(&i));
    assert!(line(&zstd).contains("CANNOT"), "{}", text(&i));
    assert!(line(&zstd).contains(&zstd_layers[0]), "{}", text(&i));
    assert!(verdicts.starts_with("Docker 20.10"), "{}", text(&i));
    let j = w.unpack("inspect", &bundle, &["--engine", "--json"]);
    assert_eq!(j.status.code(), Some(13), "{}", text(&j));
    let j: Value = serde_json::from_slice(&j.stdout).unwrap();
    let verdicts: Vec<(&str, &str)> = j["engine"]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["ref"].as_str().unwrap(), v["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        verdicts,
        [
            (fresh.as_str(), "loadable"),
            (w.hello.as_str(), "loadable"),
            (zstd.as_str(), "cannot")
        ],
        "in bundle order, the zstd image last"
    );
    assert_eq!(j["engine"]["facts"]["kind"], "docker");
    assert_eq!(j["engine"]["facts"]["containerd_store"], false);

    // (b) --no-preflight: the engine loads hello (moving its tag) and fresh (a new tag), then
    // refuses the zstd image; the load is rolled back to exactly the images and tags of
    // before.
    let report = w.path("refused.json");
    let o = w.unpack(
        "load",
        &bundle,
        &["--no-preflight", "--report", report.to_str().unwrap()],
    );
    let after = our_images(&w, &ids);
    assert_refused(
        &o,
        7,
        &[
            &format!("refused image {zstd}"),
            "not the bundle",
            "the bundle verified",
            "Docker 20.10",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &zstd_layers[0],
            "rolled back",
            &format!("pointed {} back at {multi_id}", w.hello),
            "as before",
        ],
    );
    assert_eq!(
        after,
        before,
        "the engine's images and tags changed: {}",
        text(&o)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "refused", "{r:#}");
    assert_eq!(r["exit_code"], 7, "{r:#}");
    let failure = &r["engine_failure"];
    assert_eq!(failure["image"], zstd.as_str(), "{r:#}");
    let rollback = &failure["rollback"];
    assert_eq!(rollback["repointed"][0]["tag"], w.hello.as_str(), "{r:#}");
    assert_eq!(rollback["repointed"][0]["to"], multi_id.as_str(), "{r:#}");
    assert_eq!(rollback["untagged"], serde_json::json!([fresh]), "{r:#}");
    let mut added = vec![hello_id.as_str(), fresh_id.as_str()];
    added.sort();
    assert_eq!(
        rollback["removed"],
        serde_json::json!(added),
        "the images the load added, and only those, are removed: {r:#}"
    );
    assert_eq!(rollback["failed"], Value::Array(vec![]), "{r:#}");
}

/// `podman system service` on a socket of its own, stopped (by its pid) when dropped.
struct PodmanService {
    child: std::process::Child,
}

impl PodmanService {
    fn start(socket: &std::path::Path) -> PodmanService {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("podman must be installed (apt-get install podman)");
        let service = PodmanService { child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "podman system service did not create {}",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        service
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With DOCKER_HOST unset and no `/var/run/docker.sock`, the Podman socket is found (the
/// rootful one, else the rootless one under `XDG_RUNTIME_DIR`) and said; Podman reads zstd,
/// so the bundle Docker 20.10 refuses is loadable there. The unpack side runs in a mount
/// namespace where a tmpfs hides `/run` (so Docker's socket), with no network.
#[test]
fn without_docker_the_podman_socket_is_found_and_judged() {
    let w = World::new();
    let (zstd, _) = zstd_image(&w);
    w.lock_images(&["linux/amd64"], &[&w.hello, &zstd]);
    let bundle = w.build("podman.airlock", false);
    let xdg = w.path("xdg");
    let socket = xdg.join("podman/podman.sock");
    let _podman = PodmanService::start(&socket);

    // `inspect --engine` in a namespace whose /run is an empty tmpfs, after `setup`.
    let inspect = |setup: &str, env: &[(&str, &str)]| {
        let script = format!(
            "set -e; mount -t tmpfs tmpfs /run; {setup}; test ! -e /var/run/docker.sock; exec \"$@\""
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "-n", "sh", "-c", &script, "sh"])
            .arg(unpack_bin())
            .args(["inspect", "--engine", "--quiet"])
            .arg(&bundle)
            .arg("--trust")
            .arg(w.path("pack-keys/airlock.pub"))
            .arg("--identity")
            .arg(w.path("host/host.key"))
            .env_remove("DOCKER_HOST")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("AIRLOCK_TRUST_DIR")
            .envs(env.iter().copied());
        c.output().unwrap()
    };
    let judged_by_podman = |o: &std::process::Output, found: &str| {
        assert_ok(o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("using the Podman socket unix://{found}")),
            "{}",
            text(o)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let verdicts = out
            .split_once("\nengine   ")
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no engine section: {}", text(o)));
        assert!(verdicts.starts_with("Podman 4."), "{}", text(o));
        for r in [&w.hello, &zstd] {
            let line = verdicts
                .lines()
                .find(|l| l.starts_with(&format!("{r} ")))
                .unwrap_or_else(|| panic!("no verdict for {r}: {}", text(o)));
            assert!(line.ends_with("loadable"), "{}", text(o));
        }
    };

    let xdg_env = [("XDG_RUNTIME_DIR", xdg.to_str().unwrap())];
    // Rootful first: /run/podman/podman.sock (here: the service's socket bound there).
    let o = inspect(
        &format!(
            "mkdir /run/podman; touch /run/podman/podman.sock; mount --bind {} /run/podman/podman.sock",
            socket.display()
        ),
        &xdg_env,
    );
    judged_by_podman(&o, "/run/podman/podman.sock");
    // Then rootless: $XDG_RUNTIME_DIR/podman/podman.sock.
    let o = inspect("true", &xdg_env);
    judged_by_podman(&o, &socket.display().to_string());
    // Neither: Docker's default is named, with what else was tried.
    let o = inspect("true", &[]);
    assert_refused(
        &o,
        7,
        &[
            "unix:///var/run/docker.sock",
            "/run/podman/podman.sock",
            "XDG_RUNTIME_DIR",
        ],
    );
}

/// An image whose last layer skopeo encrypted (ocicrypt, `jwe:` with an RSA key made here):
/// no engine can read it without the key. Returns its reference and encrypted layers.
fn encrypted_image(w: &World) -> (String, Vec<String>) {
    let key = w.path("enc-key.pem");
    let public = w.path("enc-pub.pem");
    run_ok(Command::new("openssl").args(["genrsa", "-out", key.to_str().unwrap(), "2048"]));
    run_ok(Command::new("openssl").args([
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]));
    let sealed = format!("{}/e2e/sealed:v1", w.registry.addr);
    let layout = format!("oci:{}:v1", w.path("sealed-layout").display());
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--encryption-key",
        &format!("jwe:{}", public.display()),
        "--encrypt-layer",
        "-1",
        &format!("docker://{}", w.second),
        &layout,
    ]));
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &layout,
        &format!("docker://{sealed}"),
    ]));
    let manifest = registry_manifest(&sealed);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["mediaType"]
                .as_str()
                .unwrap_or("")
                .ends_with("+encrypted")
        })
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !layers.is_empty(),
        "skopeo encrypted no layer: {manifest:#}"
    );
    (sealed, layers)
}

/// The same promise on Docker 26 with the containerd image store, which reads zstd but not
/// an encrypted layer: pre-flight refuses before anything is sent (exit 13); forced past it,
/// the engine refuses and the load is rolled back, so its image list is as before.
#[test]
fn docker26_refusals_are_caught_before_and_rolled_back_after() {
    let engine = Engine::Docker26;
    let w = World::new();
    let (sealed, layers) = encrypted_image(&w);
    w.lock_images(&["linux/amd64"], &[&w.hello, &sealed]);
    let bundle = w.build("sealed.airlock", false);
    let _lock = engine.lock();
    let before = engine.images();

    let o = w.unpack_on(engine, "load", &bundle, &[]);
    assert_refused(&o, 13, &["e2e/sealed:v1", &layers[0], "+encrypted"]);
    assert_eq!(engine.images(), before, "pre-flight sent something");

    let state = w.fresh_state_dir();
    let o = w.unpack_on_env(
        engine,
        "load",
        &bundle,
        &["--no-preflight"],
        &[("AIRLOCK_STATE_DIR", state.to_str().unwrap())],
    );
    let after = engine.images();
    engine.rmi(&[&w.hello, &sealed]);
    assert_refused(&o, 7, &["refused", "e2e/sealed:v1"]);
    assert_eq!(
        after,
        before,
        "the refused load left images behind: {}",
        text(&o)
    );
}
