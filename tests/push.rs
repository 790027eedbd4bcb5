//! End to end for `airlock-unpack push`: a bundle of images (one of them two platforms) and
//! an Ollama model, pushed from inside `unshare -n` (loopback only) into a second, fresh
//! `docker-registry` started in that namespace; read back with `skopeo`; pushed again (a
//! no-op); and a corrupt bundle that must leave no tag behind.

use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::ollama::OllamaModel;
use airlock_tests::*;
use serde_json::Value;

/// The registry inside the namespace: a fresh network stack, so any port is free.
const GAP: &str = "127.0.0.1:5000";

/// Runs `script` with `sh -e` inside a new network namespace that has only loopback, after
/// starting a `docker-registry` on [`GAP`] with its storage under `dir` (a fresh one per
/// call) and waiting for it. `$UNPACK`, `$TRUST`, `$IDENTITY` are set for the script.
fn in_gap(w: &World, name: &str, script: &str) -> Output {
    let dir = w.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {GAP}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let wrapped = format!(
        "set -e\n\
         ip link set lo up\n\
         docker-registry serve {config} >{log} 2>&1 &\n\
         REG=$!\n\
         trap 'kill $REG' EXIT\n\
         i=0\n\
         until busybox wget -q -O /dev/null http://{GAP}/v2/ 2>/dev/null; do\n\
           i=$((i+1)); [ $i -lt 200 ] || {{ echo registry did not start >&2; cat {log} >&2; exit 99; }}\n\
           sleep 0.05\n\
         done\n\
         {script}\n",
        config = config.display(),
        log = dir.join("registry.log").display(),
    );
    Command::new("unshare")
        .args(["-n", "sh", "-c", &wrapped])
        .env("UNPACK", unpack_bin())
        .env("TRUST", w.path("pack-keys/airlock.pub"))
        .env("IDENTITY", w.path("host/host.key"))
        .env_remove("AIRLOCK_TRUST_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .output()
        .unwrap()
}

fn json_file(p: &Path) -> Value {
    let s = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn item<'a>(report: &'a Value, kind: &str, source: &str) -> &'a Value {
    report[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == source)
        .unwrap_or_else(|| panic!("{source} not in the report: {report:#}"))
}

#[test]
fn push_into_a_registry_inside_the_gap_then_again_unchanged() {
    let w = World::new();
    let model = OllamaModel::generate(&w.path("model-src"), 8 << 20, 7);
    model.push(&w.registry.addr, "library/tiny", "latest");
    let model_name = format!("{}/library/tiny:latest", w.registry.addr);
    w.write_spec(
        &["linux/amd64", "linux/arm64"],
        &[&w.hello, &w.second, &w.multi],
    );
    let mut spec = std::fs::read_to_string(w.spec()).unwrap();
    spec.push_str(&format!("\n[[model]]\nname = \"{model_name}\"\n"));
    std::fs::write(w.spec(), spec).unwrap();
    w.lock();
    let bundle = w.build("push.airlock", false);
    let out = w.path("gap-out");
    std::fs::create_dir_all(&out).unwrap();

    let repos = ["gap/e2e/hello:v1", "gap/e2e/second:v1", "gap/e2e/multi:v1"];
    let mut script = format!(
        "$UNPACK push {b} --registry {GAP} --insecure --prefix gap/ --trust $TRUST --identity $IDENTITY --json --quiet >{o}/first.json\n",
        b = bundle.display(),
        o = out.display()
    );
    for (i, r) in repos.iter().enumerate() {
        script.push_str(&format!(
            "skopeo inspect --tls-verify=false docker://{GAP}/{r} >{o}/inspect-{i}.json\n",
            o = out.display()
        ));
    }
    script.push_str(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{GAP}/gap/library/tiny:latest >{o}/model-manifest\n\
         $UNPACK push {b} --registry {GAP} --insecure --prefix gap/ --trust $TRUST --identity $IDENTITY --json --quiet --report {o}/second-report.json >{o}/second.json\n\
         $UNPACK push {b} --registry {GAP} --insecure --prefix gap/ --trust $TRUST --identity $IDENTITY >{o}/second.txt\n",
        b = bundle.display(),
        o = out.display()
    ));
    let o = in_gap(&w, "gap-registry", &script);
    assert_ok(&o);

    let first = json_file(&out.join("first.json"));
    assert_eq!(first["registry"], GAP);
    assert_eq!(first["result"], "ok");
    assert_eq!(first["operation"], "push");
    // --report writes the same record as --json prints.
    let report = json_file(&out.join("second-report.json"));
    let second = json_file(&out.join("second.json"));
    assert_eq!(report["header_digest"], first["header_digest"]);
    assert_eq!(report["images"], second["images"]);
    assert_eq!(report["blobs_uploaded"], 0, "{report:#}");
    assert_eq!(first["signature_verified"], true);
    // hello, second and multi share the busybox layer: uploaded once, mounted twice.
    assert!(
        first["blobs_mounted"].as_u64().unwrap() >= 2,
        "no cross-repository mount: {first:#}"
    );
    assert_eq!(first["blobs_present"], 0, "{first:#}");
    for (i, (src, repo)) in [&w.hello, &w.second, &w.multi]
        .iter()
        .zip(repos)
        .enumerate()
    {
        let it = item(&first, "images", src);
        assert_eq!(it["status"], "pushed", "{it:#}");
        assert_eq!(it["reference"], format!("{GAP}/{repo}"));
        let inspect = json_file(&out.join(format!("inspect-{i}.json")));
        assert_eq!(
            inspect["Digest"], it["manifest"],
            "skopeo sees {repo} at another digest: {inspect:#}"
        );
    }
    // The two-platform image became an index of its two platform manifests.
    let multi = item(&first, "images", &w.multi);
    assert_eq!(multi["platforms"].as_array().unwrap().len(), 2, "{multi:#}");

    // The model: its exact manifest bytes, under the Ollama name's namespace/model:tag.
    let m = item(&first, "models", &model_name);
    assert_eq!(m["reference"], format!("{GAP}/gap/library/tiny:latest"));
    assert_eq!(m["manifest"], model.digest.to_string());
    assert_eq!(
        m["blobs_uploaded"].as_u64().unwrap(),
        1 + model.layers.len() as u64
    );
    let served = std::fs::read(out.join("model-manifest")).unwrap();
    assert_eq!(
        airlock_bundle::Digest::of(&served),
        model.digest,
        "the registry serves other manifest bytes for the model"
    );

    // Again: nothing uploaded, every tag unchanged.
    for name in ["second.json"] {
        let again = json_file(&out.join(name));
        assert_eq!(again["blobs_uploaded"], 0, "{again:#}");
        assert_eq!(again["bytes_uploaded"], 0, "{again:#}");
        assert_eq!(again["blobs_mounted"], 0, "{again:#}");
        for it in again["images"]
            .as_array()
            .unwrap()
            .iter()
            .chain(again["models"].as_array().unwrap())
        {
            assert_eq!(it["status"], "unchanged", "{it:#}");
            assert_eq!(it["blobs_uploaded"], 0, "{it:#}");
        }
    }
    let text = std::fs::read_to_string(out.join("second.txt")).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().all(|l| l.starts_with("unchanged ")), "{text}");
}

#[test]
fn a_corrupt_bundle_pushes_no_tag() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let plain = w.build("plain.airlock", true);
    let good = std::fs::read(&plain).unwrap();
    let layer = std::fs::read(&w.busybox_layer.path).unwrap();
    let corrupt = write_variant(
        &w,
        "corrupt.airlock",
        &flip(&good, find(&good, &layer[1000..1064]) + 7),
    );
    let out = w.path("gap-out");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        "set +e\n\
         $UNPACK push {b} --registry {GAP} --insecure --trust $TRUST --quiet 2>{o}/stderr\n\
         echo $? >{o}/code\n\
         for r in e2e/hello:v1 e2e/second:v1; do\n\
           skopeo inspect --raw --tls-verify=false docker://{GAP}/$r >/dev/null 2>&1 && echo $r >>{o}/tags\n\
         done\n\
         $UNPACK push {good} --registry 127.0.0.1:1 --insecure --trust $TRUST --quiet 2>{o}/unreachable\n\
         echo $? >{o}/unreachable-code\n\
         true\n",
        b = corrupt.display(),
        good = plain.display(),
        o = out.display()
    );
    let o = in_gap(&w, "gap-registry", &script);
    assert_ok(&o);
    let code = std::fs::read_to_string(out.join("code")).unwrap();
    let stderr = std::fs::read_to_string(out.join("stderr")).unwrap();
    assert_eq!(code.trim(), "3", "stderr: {stderr}");
    let entry = w.busybox_layer.digest.blob_path();
    assert!(stderr.contains(&entry), "{stderr}");
    assert!(
        stderr.contains(&format!("expected {}", w.busybox_layer.digest)),
        "{stderr}"
    );
    // A registry that is not there: retried, then exit 9 naming it.
    let unreachable = std::fs::read_to_string(out.join("unreachable")).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("unreachable-code"))
            .unwrap()
            .trim(),
        "9",
        "{unreachable}"
    );
    assert!(
        unreachable.contains("registry 127.0.0.1:1"),
        "{unreachable}"
    );
    assert!(
        !out.join("tags").exists(),
        "tags exist after a refused push: {:?}",
        std::fs::read_to_string(out.join("tags"))
    );
}

/// Credentials come from REGISTRY_AUTH_FILE (docker's `auths` format); without them a
/// registry that wants a password refuses with exit code 9, naming the registry.
#[test]
fn push_answers_basic_auth_with_registry_auth_file() {
    use base64::Engine as _;
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("plain.airlock", true);
    let target = airlock_testkit::TestRegistry::start_with_auth("gap", "s3cret");
    let push = |env: &[(&str, &std::path::Path)]| {
        let mut c = Command::new(unpack_bin());
        c.arg("push")
            .arg(&bundle)
            .args([
                "--registry",
                &target.addr,
                "--insecure",
                "--quiet",
                "--trust",
            ])
            .arg(w.path("pack-keys/airlock.pub"))
            .env_remove("AIRLOCK_TRUST_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", w.path("no-docker-config"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert_refused(&push(&[]), 9, &[&target.addr, "401"]);
    let auth = w.path("auth.json");
    let token = base64::engine::general_purpose::STANDARD.encode("gap:s3cret");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{token}"}}}}}}"#, target.addr),
    )
    .unwrap();
    let o = push(&[("REGISTRY_AUTH_FILE", &auth)]);
    assert_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("pushed {}/e2e/hello:v1", target.addr)),
        "{}",
        text(&o)
    );
}

/// A registry that wants bearer tokens (distribution's `auth: token`, checking ES256 JWTs
/// from a token service on loopback): push answers the 401 challenge, logs in to the realm
/// with the user and password from the docker config, and pushes with the tokens it gets.
/// The token service listens on another port of a plain-http registry, so push sends it
/// the password only once the operator names it with `--token-realm`.
#[test]
fn push_gets_bearer_tokens_from_the_registry_token_service() {
    use base64::Engine as _;
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let bundle = w.build("plain.airlock", true);
    let target = airlock_testkit::token::TokenRegistry::start("gap", "t0ken-pass");
    let docker_config = w.path("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("gap:t0ken-pass");
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            target.registry.addr
        ),
    )
    .unwrap();
    let push_realm = |config: &Path, realm: Option<&str>| {
        let mut c = Command::new(unpack_bin());
        c.arg("push")
            .arg(&bundle)
            .args([
                "--registry",
                &target.registry.addr,
                "--insecure",
                "--quiet",
                "--json",
                "--trust",
            ])
            .arg(w.path("pack-keys/airlock.pub"))
            .env_remove("AIRLOCK_TRUST_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", config);
        if let Some(r) = realm {
            c.args(["--token-realm", r]);
        }
        c.output().unwrap()
    };
    let push_with = |config: &Path| push_realm(config, Some(&target.realm));
    let push = || push_with(&docker_config);
    // The realm is not the registry's origin: nothing is sent there unless named.
    assert_refused(
        &push_realm(&docker_config, None),
        9,
        &[
            &target.registry.addr,
            &target.realm,
            "not at the registry's origin",
        ],
    );
    assert_eq!(target.issued.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Without credentials the token service says no: exit 9, naming the realm.
    assert_refused(
        &push_with(&w.path("no-docker-config")),
        9,
        &[&target.registry.addr, "token service", &target.realm, "401"],
    );
    assert_eq!(target.issued.load(std::sync::atomic::Ordering::SeqCst), 0);
    let o = push();
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    for it in report["images"].as_array().unwrap() {
        assert_eq!(it["status"], "pushed", "{report:#}");
    }
    // The shared busybox layer was mounted across, which needs a token for both scopes.
    assert_eq!(report["blobs_mounted"], 1, "{report:#}");
    let issued = target.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued >= 2, "only {issued} tokens issued");
    let again = push();
    assert_ok(&again);
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["blobs_uploaded"], 0, "{report:#}");
}
