//! End to end, with real parts: a real registry, the real Docker engines (the system's 20.10
//! and a Docker 26 with the containerd image store), the real `age`, `minisign` and
//! `skopeo`; the unpacking side runs inside `unshare -n`.

use std::path::Path;
use std::process::Command;

use airlock_bundle::header::{HEADER_PATH, SIGNATURE_PATH};
use airlock_tests::*;
use serde_json::Value;

#[test]
fn round_trip_load_and_run_offline() {
    round_trip_on(Engine::System);
}

#[test]
fn round_trip_load_and_run_offline_docker26() {
    round_trip_on(Engine::Docker26);
}

fn round_trip_on(engine: Engine) {
    let w = World::new();
    w.lock();
    let bundle = w.build("e2e.airlock", false);

    let v = w.unpack("verify", &bundle, &[]);
    assert_ok(&v);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("(verified)"),
        "{}",
        text(&v)
    );

    let i = w.unpack("inspect", &bundle, &["--json"]);
    assert_ok(&i);
    let j: Value = serde_json::from_slice(&i.stdout).unwrap();
    let mut images: Vec<(String, String)> = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap().to_string(),
                i["platform"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    images.sort();
    assert_eq!(
        images,
        vec![
            (w.hello.clone(), "linux/amd64".to_string()),
            (w.multi.clone(), "linux/amd64".to_string()),
            (w.multi.clone(), "linux/arm64".to_string()),
            (w.second.clone(), "linux/amd64".to_string()),
        ]
    );
    assert_eq!(j["encrypted"], true);
    assert_eq!(j["signature_verified"], true);
    // The busybox layer is shared by every image but stored once.
    let entries = j["entries"].as_array().unwrap();
    let busybox = w.busybox_layer.digest.to_string();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["digest"] == busybox.as_str())
            .count(),
        1
    );

    let _guard = engine.lock();
    let load = w.unpack_on(engine, "load", &bundle, &["--json"]);
    let tags = [w.hello.as_str(), w.second.as_str(), w.multi.as_str()];
    let result = std::panic::catch_unwind(|| {
        assert_ok(&load);
        let report: Value = serde_json::from_slice(&load.stdout).unwrap();
        assert_eq!(report["images"].as_array().unwrap().len(), 3, "{report}");
        let hello = engine.run(&w.hello);
        assert_eq!(hello.trim(), w.marker);
        let second = engine.run(&w.second);
        assert_eq!(second.trim(), format!("second {}", w.marker));
        let multi = engine.run(&w.multi);
        assert_eq!(
            multi.trim(),
            format!("multi {}", w.marker),
            "the engine's platform (amd64) was loaded"
        );
        // Every tag points at the image the bundle promised: its config digest (classic
        // store) or manifest digest (containerd store), and the engine reports that ID.
        for r in report["images"].as_array().unwrap() {
            let (config, manifest) = (
                r["config"].as_str().unwrap(),
                r["manifest"].as_str().unwrap(),
            );
            let id = engine.run_docker(&[
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                r["reference"].as_str().unwrap(),
            ]);
            assert_eq!(
                id.trim(),
                engine.image_id(config, manifest),
                "{}",
                engine.name()
            );
            assert_eq!(r["id"], engine.image_id(config, manifest), "{report}");
        }
    });
    engine.rmi(&tags);
    result.unwrap();
}

/// The second engine really is another engine: Docker 26, containerd image store, its own
/// socket, not the system's.
#[test]
fn docker26_runs_beside_the_system_engine_with_the_containerd_store() {
    let engine = Engine::Docker26;
    let info = engine.run_docker(&[
        "info",
        "--format",
        "{{.ServerVersion}} {{.Driver}} {{json .DriverStatus}}",
    ]);
    assert!(info.starts_with("26."), "{info}");
    assert!(info.contains("io.containerd.snapshotter.v1"), "{info}");
    let system = Engine::System.run_docker(&["info", "--format", "{{.ID}} {{.ServerVersion}}"]);
    let ours = engine.run_docker(&["info", "--format", "{{.ID}} {{.ServerVersion}}"]);
    assert_ne!(system, ours);
    assert!(engine.host().unwrap().starts_with("unix:///"));
}

#[test]
fn interop_with_age_minisign_and_skopeo() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let bundle = w.build("e2e.airlock", false);

    // Secret keys are written for their owner's eyes only.
    use std::os::unix::fs::PermissionsExt as _;
    for secret in ["host/host.key", "pack-keys/airlock.key"] {
        let mode = std::fs::metadata(w.path(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
    // The real age decrypts it with the host identity airlock-unpack wrote.
    let plain = w.path("plain.tar");
    age_decrypt(&w.path("host/host.key"), &bundle, &plain);
    // And what the real age encrypts, airlock-unpack decrypts (its payload reader is its
    // own): re-encrypt the plaintext to the host and verify that.
    let by_age = w.path("by-age.airlock");
    let recipient = std::fs::read_to_string(w.path("host/host.pub")).unwrap();
    run_ok(
        Command::new("age")
            .arg("-r")
            .arg(recipient.trim())
            .arg("-o")
            .arg(&by_age)
            .arg(&plain),
    );
    assert_ok(&w.unpack("verify", &by_age, &[]));

    // tar x gives the header, its signature and an OCI layout.
    let layout = w.path("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&plain)
            .arg("-C")
            .arg(&layout),
    );
    // The real minisign verifies the header signature with the pack key.
    let out = run_ok(
        Command::new("minisign")
            .args(["-V", "-m"])
            .arg(layout.join(HEADER_PATH))
            .arg("-x")
            .arg(layout.join(SIGNATURE_PATH))
            .arg("-p")
            .arg(w.path("pack-keys/airlock.pub")),
    );
    assert!(out.contains("airlock-bundle v1 header"), "{out}");

    // skopeo reads the layout from plain `tar x` and from `airlock-unpack extract`.
    let extracted = w.path("extracted");
    assert_ok(&w.unpack("extract", &bundle, &["--to", extracted.to_str().unwrap()]));
    for dir in [&layout, &extracted] {
        let dest = w.path(&format!(
            "skopeo-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--quiet"])
                .arg(format!("oci:{}:{}", dir.display(), w.hello))
                .arg(format!("dir:{}", dest.display())),
        );
        assert!(dest.join("manifest.json").exists());
        let inspect = run_ok(Command::new("skopeo").arg("inspect").arg(format!(
            "oci:{}:{}",
            dir.display(),
            w.second
        )));
        let j: Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(j["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    }
}

/// Passphrase bundles and ssh-ed25519 recipients, against the real age as well.
#[test]
fn passphrase_and_ssh_recipients() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let spec = w.spec();
    let key = w.path("pack-keys/airlock.key");
    let pack = |out: &Path, extra: &[&str], pass: Option<&str>| {
        let mut c = Command::new(pack_bin());
        c.arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(out)
            .arg("--sign-key")
            .arg(&key)
            .arg("-q")
            .arg("--cache")
            .arg(w.path("cache"))
            .args(extra);
        if let Some(p) = pass {
            c.env("AIRLOCK_PASSPHRASE", p);
        }
        assert_ok(&c.output().unwrap());
    };
    let verify = |bundle: &Path, identity: Option<&Path>, pass: Option<&str>| {
        let mut c = Command::new("unshare");
        c.arg("-n")
            .arg(unpack_bin())
            .arg("verify")
            .arg(bundle)
            .arg("--trust")
            .arg(w.path("pack-keys/airlock.pub"))
            .env_remove("AIRLOCK_PASSPHRASE");
        if let Some(i) = identity {
            c.arg("--identity").arg(i);
        }
        if let Some(p) = pass {
            c.env("AIRLOCK_PASSPHRASE", p);
        }
        c.output().unwrap()
    };

    let pb = w.path("pass.airlock");
    pack(&pb, &["--passphrase"], Some("correct horse battery staple"));
    assert_ok(&verify(&pb, None, Some("correct horse battery staple")));
    assert_refused(&verify(&pb, None, Some("wrong")), 5, &["decrypt"]);
    assert_refused(&verify(&pb, None, None), 5, &["passphrase"]);

    let ssh_key = w.path("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "gap", "-f"])
            .arg(&ssh_key),
    );
    let recipient = std::fs::read_to_string(w.path("id_ed25519.pub")).unwrap();
    let sb = w.path("ssh.airlock");
    pack(&sb, &["--recipient", recipient.trim()], None);
    assert_ok(&verify(&sb, Some(&ssh_key), None));
    age_decrypt(&ssh_key, &sb, Path::new("/dev/null"));
    assert_refused(
        &verify(&sb, Some(&w.path("host/host.key")), None),
        5,
        &["decrypt"],
    );
}

#[test]
fn builds_are_deterministic() {
    let w = World::new();
    w.lock();
    let a = std::fs::read(w.build("a.airlock", true)).unwrap();
    let b = std::fs::read(w.build("b.airlock", true)).unwrap();
    assert!(a == b, "two plain builds from one lock differ");
    // Encrypted builds differ (fresh file key) but their plaintexts do not.
    let ea = w.build("a.enc.airlock", false);
    let eb = w.build("b.enc.airlock", false);
    assert_ne!(std::fs::read(&ea).unwrap(), std::fs::read(&eb).unwrap());
    for (enc, out) in [(&ea, "a.dec"), (&eb, "b.dec")] {
        age_decrypt(&w.path("host/host.key"), enc, &w.path(out));
    }
    assert!(std::fs::read(w.path("a.dec")).unwrap() == a);
    assert!(std::fs::read(w.path("b.dec")).unwrap() == a);

    // Layers are not copied into the cache: the bundles built so far serve them. One that
    // rotted in place (same inode, size and mtime, so only the writer's hash can tell) is
    // caught, its record dropped, and the build fetches the layer again: the same bytes
    // again.
    let layer_at = find(
        &a,
        format!("blobs/sha256/{}\0", w.busybox_layer.digest.hex()).as_bytes(),
    ) + 512
        + 500;
    for other in ["b.airlock", "a.enc.airlock", "b.enc.airlock"] {
        std::fs::remove_file(w.path(other)).unwrap();
    }
    flip_in_place(&w.path("a.airlock"), layer_at as u64);
    let (out, o) = w.try_build("c.airlock", true);
    assert_ok(&o);
    let refetched = airlock_progress::human(w.busybox_layer.size);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("({refetched} downloaded)")),
        "only the layer of the rotten bundle is fetched again: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no longer holds what the blob cache recorded"),
        "{}",
        text(&o)
    );
    assert!(std::fs::read(&out).unwrap() == a);
    // A corrupted copy in the cache itself (as earlier versions kept every layer) fails the
    // build, is evicted, and the next build produces the same bytes again.
    let cached = w.path("cache").join(w.busybox_layer.digest.blob_path());
    let mut bytes = std::fs::read(&w.busybox_layer.path).unwrap();
    bytes[500] ^= 0xff;
    std::fs::write(&cached, bytes).unwrap();
    let (out, o) = w.try_build("d.airlock", true);
    assert_refused(
        &o,
        3,
        &["digest mismatch", "was corrupt and has been removed"],
    );
    assert!(!out.exists(), "a failed build left its output");
    assert!(!cached.exists());
    let (_, again) = w.try_build("d.airlock", true);
    assert_ok(&again);
    assert!(std::fs::read(&out).unwrap() == a);
    // With everything cached, a build downloads nothing.
    let (_, cached_build) = w.try_build("d.airlock", true);
    assert!(
        String::from_utf8_lossy(&cached_build.stdout).contains("(0 B downloaded)"),
        "{}",
        text(&cached_build)
    );
}

#[test]
fn refusals_have_exit_codes_and_leave_the_engine_alone() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let plain = w.build("plain.airlock", true);
    let enc = w.build("enc.airlock", false);
    let good = std::fs::read(&plain).unwrap();
    let good_enc = std::fs::read(&enc).unwrap();
    let layer = std::fs::read(&w.busybox_layer.path).unwrap();
    let layer_entry = w.busybox_layer.digest.blob_path();

    let mut cases: Vec<(&str, std::path::PathBuf, i32, Vec<String>)> = Vec::new();
    // A flipped byte in a layer: named, with expected and computed digests.
    let b = flip(&good, find(&good, &layer[1000..1064]) + 7);
    cases.push((
        "flipped-blob",
        write_variant(&w, "flipped-blob.airlock", &b),
        3,
        vec![
            layer_entry.clone(),
            format!("expected {}", w.busybox_layer.digest),
            "computed sha256:".into(),
        ],
    ));
    // A flipped byte in the header, then in the signature: the signature fails.
    for (name, needle, offset) in [
        ("flipped-header", &b"\"created\""[..], 2),
        (
            "flipped-signature",
            &b"trusted comment: airlock-bundle v1 header\n"[..],
            45,
        ),
    ] {
        let b = flip(&good, find(&good, needle) + offset);
        cases.push((
            name,
            write_variant(&w, &format!("{name}.airlock"), &b),
            4,
            vec!["signature".into()],
        ));
    }
    // Truncated, plain and encrypted.
    cases.push((
        "truncated-plain",
        write_variant(&w, "truncated.airlock", &good[..good.len() - 5000]),
        3,
        vec!["truncated".into()],
    ));
    cases.push((
        "truncated-encrypted",
        write_variant(&w, "truncated-enc.airlock", &good_enc[..good_enc.len() / 2]),
        3,
        vec![],
    ));
    // A flipped byte inside the ciphertext.
    let b = flip(&good_enc, good_enc.len() - 4000);
    cases.push((
        "flipped-ciphertext",
        write_variant(&w, "flipped-ciphertext.airlock", &b),
        3,
        vec!["corrupt".into()],
    ));
    // A newer format version than this reader implements, validly signed.
    let next = airlock_bundle::FORMAT_VERSION + 1;
    let b = resign(&w, &plain, |v| v["version"] = Value::from(next));
    cases.push((
        "unknown-version",
        write_variant(&w, "v-next.airlock", &b),
        6,
        vec![format!("version {next}")],
    ));
    // A signed header whose entry path tries to escape.
    let b = resign(&w, &plain, |v| {
        v["entries"][0]["path"] = Value::from("../../etc/passwd")
    });
    cases.push((
        "path-traversal",
        write_variant(&w, "traversal.airlock", &b),
        3,
        vec!["invalid path".into()],
    ));

    let _guard = docker_lock();
    let before = docker_images();
    for (name, path, code, needles) in &cases {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        for cmd in ["verify", "load"] {
            let o = w.unpack(cmd, path, &[]);
            assert_refused(&o, *code, &needles);
            eprintln!(
                "{name} / {cmd}: exit {code}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let extracted = w.path(&format!("x-{name}"));
        let o = w.unpack("extract", path, &["--to", extracted.to_str().unwrap()]);
        assert_refused(&o, *code, &needles);
        assert!(
            !extracted.exists(),
            "{name}: a refused extract left {}",
            extracted.display()
        );
    }
    assert_eq!(
        docker_images(),
        before,
        "a refused load changed the engine's images"
    );
    drop(_guard);
    // The same refusals from Docker 26 with the containerd image store: its load stores
    // blobs in containerd's content store as they arrive, and still ends up with nothing.
    let engine = Engine::Docker26;
    let _guard = engine.lock();
    let before = engine.images();
    for (name, path, code, needles) in &cases {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let o = w.unpack_on(engine, "load", path, &[]);
        assert_refused(&o, *code, &needles);
        eprintln!("{name} / load on {}: exit {code}", engine.name());
    }
    assert_eq!(
        engine.images(),
        before,
        "a refused load changed {}'s images",
        engine.name()
    );
    drop(_guard);

    // DOCKER_HOST is honoured; an unreachable engine is an environment error.
    let o = Command::new(unpack_bin())
        .arg("load")
        .arg(&plain)
        .arg("--trust")
        .arg(w.path("pack-keys/airlock.pub"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}", w.path("no-such-docker.sock").display()),
        )
        .output()
        .unwrap();
    assert_refused(&o, 7, &["no-such-docker.sock"]);

    // Wrong identity: cannot decrypt.
    let other = w.path("other-host");
    run_ok(
        Command::new(unpack_bin())
            .args(["keygen", "-o"])
            .arg(&other),
    );
    let o = Command::new("unshare")
        .arg("-n")
        .arg(unpack_bin())
        .args(["verify"])
        .arg(&enc)
        .arg("--trust")
        .arg(w.path("pack-keys/airlock.pub"))
        .arg("--identity")
        .arg(other.join("host.key"))
        .output()
        .unwrap();
    assert_refused(&o, 5, &["decrypt"]);

    // Untrusted signer: another pack key.
    run_ok(
        Command::new(pack_bin())
            .args(["keygen", "-o"])
            .arg(w.path("other-pack")),
    );
    let o = Command::new(unpack_bin())
        .arg("verify")
        .arg(&plain)
        .arg("--trust")
        .arg(w.path("other-pack/airlock.pub"))
        .output()
        .unwrap();
    assert_refused(&o, 4, &["not signed by a trusted key"]);

    // No trusted key at all (empty trust dir): refused before reading.
    let empty = w.path("empty-trust");
    std::fs::create_dir(&empty).unwrap();
    let o = Command::new(unpack_bin())
        .arg("verify")
        .arg(&plain)
        .env("AIRLOCK_TRUST_DIR", &empty)
        .output()
        .unwrap();
    assert_refused(&o, 4, &["no trusted keys"]);
    // The trust dir is honoured when it has the key.
    std::fs::copy(w.path("pack-keys/airlock.pub"), empty.join("pack.pub")).unwrap();
    let o = Command::new(unpack_bin())
        .arg("verify")
        .arg(&plain)
        .env("AIRLOCK_TRUST_DIR", &empty)
        .output()
        .unwrap();
    assert_ok(&o);
    // --insecure-skip-signature reads an untrusted bundle, loudly.
    let o = Command::new(unpack_bin())
        .arg("verify")
        .arg(&plain)
        .arg("--insecure-skip-signature")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("WARNING"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("NOT verified"),
        "{}",
        text(&o)
    );
}

#[test]
fn lock_drift_is_refused_with_advice() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let spec = w.spec();
    let out = w.path("x.airlock");
    let build = |w: &World| w.try_build("x.airlock", true).1;

    // The tag moves at the registry.
    let layers = w.path("layers2");
    airlock_testkit::fixtures::push(
        &w.registry.addr,
        "e2e/hello:v1",
        &[airlock_testkit::ImageSpec::new(
            vec![airlock_testkit::Layer::busybox(&layers)],
            &["/bin/busybox", "echo", "moved"],
        )],
    );
    let o = build(&w);
    assert_refused(&o, 8, &[&w.hello, "locked at", "lock --update"]);
    assert!(!out.exists());

    // lock (without --update) keeps the pin; --update moves it and says so.
    assert_ok(&w.pack(["lock", spec.to_str().unwrap()]));
    assert_refused(&build(&w), 8, &["locked at"]);
    let o = w.pack(["lock", "--update", spec.to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(" -> sha256:"),
        "{}",
        text(&o)
    );
    assert_ok(&build(&w));

    // The spec gains an image the lock lacks.
    w.write_spec(&["linux/amd64"], &[&w.hello, &w.second]);
    assert_refused(&build(&w), 8, &[&w.second, "not in the lock"]);

    // A platform the index lacks is named.
    w.write_spec(&["linux/s390x"], &[&w.multi]);
    assert_ok(&w.pack(["lock", spec.to_str().unwrap()]));
    assert_refused(
        &build(&w),
        2,
        &["linux/s390x", "linux/amd64", "linux/arm64"],
    );
}

/// The offline build of airlock-unpack (`--no-default-features`: no `push`) pulls in no HTTP
/// client, TLS stack or registry client; the default build has the push client, so this
/// check looks at a tree where the banned crates can actually appear.
#[test]
fn unpack_depends_on_no_network_stack() {
    let tree = |extra: &[&str]| {
        let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
            .args([
                "tree",
                "--quiet",
                "-p",
                "airlock-unpack",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert_ok(&o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let has = |tree: &str, name: &str| {
        tree.lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    };
    let offline = tree(&["--no-default-features"]);
    assert!(has(&offline, "bollard"), "unexpected tree: {offline}");
    // containerd's gRPC client (load --containerd) is in the offline build, without TLS.
    assert!(has(&offline, "tonic"), "unexpected tree: {offline}");
    for banned in [
        "reqwest",
        "rustls",
        "hyper-rustls",
        "native-tls",
        "openssl",
        "oci-client",
        "hyper-tls",
        "tokio-rustls",
        "webpki-roots",
        "rustls-native-certs",
    ] {
        assert!(
            !has(&offline, banned),
            "airlock-unpack --no-default-features depends on {banned}"
        );
    }
    // The default build carries the push client: the names above are the right ones.
    let default = tree(&[]);
    for expected in ["bollard", "reqwest", "rustls"] {
        assert!(
            has(&default, expected),
            "airlock-unpack's default build lacks {expected}: {default}"
        );
    }
}

/// Credentials come from REGISTRY_AUTH_FILE or the docker config (DOCKER_CONFIG); without
/// them a registry that wants auth refuses, with the registry exit code.
#[test]
fn registry_credentials_are_honoured() {
    use base64::Engine as _;
    let reg = airlock_testkit::TestRegistry::start_with_auth("airlock", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let layer = airlock_testkit::Layer::busybox(&dir.path().join("layers"));
    airlock_testkit::fixtures::push_with_creds(
        &reg.addr,
        "private/app:v1",
        &[airlock_testkit::ImageSpec::new(
            vec![layer],
            &["/bin/busybox", "true"],
        )],
        Some("airlock:s3cret"),
    );
    let spec = dir.path().join("private.toml");
    std::fs::write(&spec, format!("name = \"private\"\n[[image]]\nref = \"{0}/private/app:v1\"\n[registries.\"{0}\"]\ninsecure = true\n", reg.addr)).unwrap();
    let lock = |env: &[(&str, &Path)]| {
        let mut c = Command::new(pack_bin());
        c.arg("lock")
            .arg(&spec)
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .arg("-q");
        c.env("DOCKER_CONFIG", dir.path().join("no-docker-config"))
            .env_remove("REGISTRY_AUTH_FILE");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert_refused(&lock(&[]), 9, &["registry error"]);

    let auth = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.addr,
        base64::engine::general_purpose::STANDARD.encode("airlock:s3cret")
    );
    let auth_file = dir.path().join("auth.json");
    std::fs::write(&auth_file, &auth).unwrap();
    assert_ok(&lock(&[("REGISTRY_AUTH_FILE", &auth_file)]));

    std::fs::remove_file(dir.path().join("private.lock")).unwrap();
    let docker_config = dir.path().join("docker-config");
    std::fs::create_dir(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), &auth).unwrap();
    assert_ok(&lock(&[("DOCKER_CONFIG", &docker_config)]));

    run_ok(
        Command::new(pack_bin())
            .args(["keygen", "-o"])
            .arg(dir.path().join("keys")),
    );
    let mut build = Command::new(pack_bin());
    build
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(dir.path().join("p.airlock"))
        .arg("--sign-key")
        .arg(dir.path().join("keys/airlock.key"))
        .arg("--cache")
        .arg(dir.path().join("cache2"))
        .arg("-q")
        .env("DOCKER_CONFIG", &docker_config);
    assert_ok(&build.output().unwrap());
}

/// A registry that drops the first connections: lock and build retry with back-off and
/// succeed, and the blobs still verify.
#[test]
fn transient_registry_failures_are_retried() {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let w = World::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let upstream = w.registry.addr.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down2 = down.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            // The first two connections are cut at once, as a flaky network would.
            if seen2.fetch_add(1, Ordering::SeqCst) < 2 || down2.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c2, mut s2) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let hello = format!("{proxy}/e2e/hello:v1");
    std::fs::write(
        w.spec(),
        format!("name = \"flaky\"\n[[image]]\nref = \"{hello}\"\n[registries.\"{proxy}\"]\ninsecure = true\n"),
    )
    .unwrap();
    w.lock();
    assert!(seen.load(Ordering::SeqCst) >= 3, "the proxy was not used");
    let bundle = w.build("flaky.airlock", false);
    assert_ok(&w.unpack("verify", &bundle, &[]));

    // A registry that stays down: a few tries, then the registry exit code and the URL.
    down.store(true, Ordering::SeqCst);
    let spec = w.spec();
    let o = w.pack(["lock", "--update", spec.to_str().unwrap()]);
    assert_refused(&o, 9, &["registry error", &hello.replace(":v1", "")]);
}

/// Flips one byte of `path` in place, keeping its inode, size and mtime.
fn flip_in_place(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt as _;
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
    f.set_modified(mtime).unwrap();
}
