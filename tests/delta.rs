//! Delta bundles: the gap host's inventory goes out, a bundle that leaves out every layer
//! the host has comes in, and `load` checks the left-out layers are there first.

use std::process::Command;

use airlock_testkit::{fixtures, ImageSpec, Layer};
use airlock_tests::*;
use serde_json::Value;

fn header(w: &World, bundle: &std::path::Path) -> Value {
    let o = w.unpack("inspect", bundle, &["--json"]);
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_delta_carries_only_new_layers_and_load_checks_the_rest() {
    delta_on(Engine::System);
}

/// On the containerd image store the engine keeps layers as snapshots under their chain IDs
/// and lists the same diff IDs, so the inventory, the delta and its pre-check are the same.
#[test]
fn a_delta_carries_only_new_layers_and_load_checks_the_rest_docker26() {
    delta_on(Engine::Docker26);
}

fn delta_on(engine: Engine) {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let full = w.build("full.airlock", false);
    let _guard = engine.lock();
    let tags = [w.hello.as_str(), w.second.as_str()];
    let before = engine.images();
    let result = std::panic::catch_unwind(|| {
        assert_ok(&w.unpack_on(engine, "load", &full, &[]));

        // Bump one image: the same tag gets one more layer on top.
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
        let spec = w.spec();
        assert_ok(&w.pack(["lock", spec.to_str().unwrap(), "--update"]));

        // The gap host's inventory, taken with no network.
        let inv = w.path("host.inventory");
        let o = Command::new("unshare")
            .arg("-n")
            .arg(unpack_bin())
            .args(["inventory", "-o"])
            .arg(&inv)
            .envs(engine.env())
            .output()
            .unwrap();
        assert_ok(&o);
        let inventory: Value = serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
        assert!(
            inventory["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["diff_ids"][0] == w.busybox_layer.diff_id.to_string().as_str()),
            "{inventory}"
        );
        // The loaded image is listed under the ID its engine gives it (the manifest digest on
        // the containerd store), with its tag and the diff IDs of its config.
        let loaded = header(&w, &full);
        let hello = loaded["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["ref"] == w.hello.as_str())
            .unwrap();
        let id = engine.image_id(
            hello["config"].as_str().unwrap(),
            hello["manifest"].as_str().unwrap(),
        );
        let listed = inventory["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {inventory}"));
        assert!(
            listed["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == w.hello.as_str()),
            "{listed}"
        );
        assert_eq!(
            listed["diff_ids"],
            serde_json::json!([w.busybox_layer.diff_id.to_string()]),
            "{listed}"
        );

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
        // Only the new layer, and the small documents, travel.
        let h = header(&w, &delta);
        let carried: Vec<String> = h["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        assert!(carried.contains(&bump.digest.to_string()));
        for shared in [&w.busybox_layer, &extra] {
            assert!(!carried.contains(&shared.digest.to_string()));
        }
        let present: Vec<String> = h["expected_present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["digest"].as_str().unwrap().to_string())
            .collect();
        assert!(present.contains(&w.busybox_layer.digest.to_string()), "{h}");
        assert!(present.contains(&extra.digest.to_string()), "{h}");
        let (full_size, delta_size) = (
            std::fs::metadata(&full).unwrap().len(),
            std::fs::metadata(&delta).unwrap().len(),
        );
        assert!(
            delta_size + w.busybox_layer.size < full_size,
            "delta {delta_size} vs full {full_size}"
        );
        eprintln!(
            "delta: {delta_size} bytes, {} entries (full bundle: {full_size} bytes); left out {} blobs, carried the new layer of {} bytes",
            carried.len(),
            present.len(),
            bump.size
        );

        // On a host without those layers the delta is refused, naming them, and nothing
        // is loaded.
        engine.rmi(&tags);
        let bare = engine.images();
        run_ok(
            Command::new(pack_bin())
                .args(["keygen", "-o"])
                .arg(w.path("report-keys")),
        );
        let report = w.path("refused.json");
        let report_key = w.path("report-keys/airlock.key");
        let o = w.unpack_on(
            engine,
            "load",
            &delta,
            &[
                "--report",
                report.to_str().unwrap(),
                "--report-sign-key",
                report_key.to_str().unwrap(),
            ],
        );
        // The refusal is on record, signed.
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(r["result"], "refused", "{r}");
        assert_eq!(r["exit_code"], 11, "{r}");
        assert_eq!(r["operation"], "load");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains(&w.busybox_layer.digest.to_string()),
            "{r}"
        );
        run_ok(
            Command::new("minisign")
                .arg("-Vm")
                .arg(&report)
                .arg("-p")
                .arg(w.path("report-keys/airlock.pub")),
        );
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
        assert_eq!(engine.images(), bare, "a refused delta loads nothing");

        // On the host it was made for, it loads and runs.
        assert_ok(&w.unpack_on(engine, "load", &full, &[]));
        let report = w.path("loaded.json");
        let o = w.unpack_on(
            engine,
            "load",
            &delta,
            &["--json", "--report", report.to_str().unwrap()],
        );
        assert_ok(&o);
        // The report on stdout and in the file: what was verified and where it went.
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["header_digest"], printed["header_digest"]);
        assert_eq!(r["result"], "ok");
        assert_eq!(r["header_digest"], h["header_digest"], "{r}");
        assert_eq!(r["signer"], h["signer"]);
        assert_eq!(r["signature_verified"], true);
        let sums = std::fs::read(w.path("delta.airlock.sums")).unwrap();
        assert_eq!(
            r["bundle"]["sums_digest"],
            airlock_bundle::Digest::of(&sums).to_string().as_str()
        );
        assert!(r["started"].as_str().unwrap() <= r["finished"].as_str().unwrap());
        assert!(r["tool"].as_str().unwrap().starts_with("airlock-unpack "));
        let second = r["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"] == w.second.as_str())
            .unwrap();
        assert_eq!(second["already_present"], false);
        assert!(!report.with_extension("json.minisig").exists());
        let out = engine.run(&w.second);
        assert_eq!(out.trim(), format!("bumped {}", w.marker));
    });
    // Images by ID too: the bumped tag left the old image untagged.
    let mut ids: Vec<String> = Vec::new();
    for b in [full.clone(), w.path("delta.airlock")] {
        if b.exists() {
            let h = header(&w, &b);
            for i in h["images"].as_array().unwrap() {
                let (config, manifest) = (
                    i["config"].as_str().unwrap(),
                    i["manifest"].as_str().unwrap(),
                );
                ids.push(engine.image_id(config, manifest).to_string());
            }
        }
    }
    engine.rmi(&tags);
    engine.rmi(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(engine.images(), before);
    result.unwrap();
}

/// Model blobs: a delta leaves out what the host's models directory holds, loads where it
/// is, and is refused (nothing written) where it is not or where it rotted.
#[test]
fn a_model_delta_relies_on_the_store_and_checks_it() {
    use airlock_bundle::ollama::ModelName;
    use airlock_testkit::ollama::OllamaModel;
    let w = World::new();
    let store = w.path("store");
    let a = OllamaModel::generate(&w.path("a-src"), 8 << 20, 21);
    a.install_local(&store, &ModelName::parse("tiny:v1").unwrap());
    let b = OllamaModel::generate(&w.path("b-src"), 4 << 20, 22);
    b.install_local(&store, &ModelName::parse("other:v1").unwrap());
    let spec = w.spec();
    let write_spec = |models: &[&str]| {
        let mut s =
            "name = \"e2e\"\n[ollama]\nsource = \"local\"\npath = \"/unused\"\n".to_string();
        for m in models {
            s.push_str(&format!("[[model]]\nname = \"{m}\"\n"));
        }
        std::fs::write(&spec, s).unwrap();
    };
    let pack = |args: &[std::ffi::OsString]| {
        let o = w.pack_offline(&store, args);
        assert_ok(&o);
        o
    };
    let build = |out: &str, extra: &[&str]| {
        let out = w.path(out);
        let mut args = w.build_args(&out, true);
        args.push("--quiet".into());
        args.extend(extra.iter().map(Into::into));
        pack(&args);
        out
    };
    let lock = || pack(&["lock".into(), spec.clone().into_os_string()]);
    // No engine anywhere: a models directory needs none.
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent.sock")];
    let host = w.path("host-models");
    let into =
        |dir: &std::path::Path| vec!["--ollama-models".to_string(), dir.display().to_string()];

    write_spec(&["tiny:v1"]);
    lock();
    let full = build("full.airlock", &[]);
    let args = into(&host);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&w.unpack_env("load", &full, &args, &no_engine));

    // The inventory of that directory; then the spec gains a model.
    let inv = w.path("host.inventory");
    let o = Command::new("unshare")
        .arg("-n")
        .arg(unpack_bin())
        .args(["inventory", "--no-engine", "--ollama-models"])
        .arg(&host)
        .arg("-o")
        .arg(&inv)
        .output()
        .unwrap();
    assert_ok(&o);
    // Within the same second as the first lock: the updated lock is still a later second
    // (anti-rollback refuses a different bundle of the same name and time).
    write_spec(&["tiny:v1", "other:v1"]);
    lock();
    let delta = build("delta.airlock", &["--have", inv.to_str().unwrap()]);
    let h = header(&w, &delta);
    let carried: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let weights_a = a.layers[0].digest.to_string();
    assert!(!carried.contains(&weights_a.as_str()), "{h}");
    assert!(carried.contains(&b.layers[0].digest.to_string().as_str()));
    assert!(h["expected_present"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["digest"] == weights_a.as_str() && p.get("chain_id").is_none()));

    // Elsewhere: refused, naming the blob, nothing written.
    let empty = w.path("elsewhere");
    let args = into(&empty);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_refused(
        &w.unpack_env("load", &delta, &args, &no_engine),
        11,
        &[&weights_a, "nothing was loaded"],
    );
    assert!(
        !empty.join("manifests").exists(),
        "a refused delta writes no manifest"
    );

    // Where it was made for: loads; the left-out blobs count as present.
    let args = into(&host);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = w.unpack_env(
        "load",
        &delta,
        &[&args[..], &["--json"]].concat(),
        &no_engine,
    );
    assert_ok(&o);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let other = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str().unwrap().contains("/other:"))
        .unwrap();
    assert!(other["blobs_written"].as_u64().unwrap() > 0, "{r}");
    assert!(host
        .join("manifests/registry.ollama.ai/library/other/v1")
        .is_file());

    // A left-out blob that rotted in place (same size) is not present.
    let blob = host.join(format!("blobs/sha256-{}", a.layers[0].digest.hex()));
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, flip(&bytes, 1000)).unwrap();
    std::fs::remove_file(host.join("manifests/registry.ollama.ai/library/other/v1")).unwrap();
    assert_refused(
        &w.unpack_env("load", &delta, &args, &no_engine),
        11,
        &[&weights_a],
    );
    assert!(
        !host
            .join("manifests/registry.ollama.ai/library/other/v1")
            .exists(),
        "nothing was loaded"
    );
}
