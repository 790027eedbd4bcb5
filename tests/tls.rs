//! TLS as registries inside a gap run it (issue 13, item 7): `docker-registry` serving HTTPS
//! from a test CA made with `openssl`, one requiring a client certificate, one presenting a
//! certificate for another name, one an expired certificate.
//!
//! `airlock-unpack push` runs inside `unshare -n` (loopback only) against registries started
//! there: refused without the CA (the message names the unknown CA and where to put it),
//! accepted with `--ca-cert`, with a certs.d directory found by the real lookup (HOME's
//! `.config/containers/certs.d/HOST:PORT`, so no test writes /etc) and with `--cert-dir`;
//! the mutual-TLS registry refuses a push without a client certificate or with one from
//! another CA, and takes one from certs.d (docker's `client.cert`/`client.key`) or the
//! flags; `skopeo` reads the pushed image back. `airlock-pack lock`/`build` reach the same
//! kind of registry with and without the CA, and a model from a mutual-TLS registry (its
//! images from one: not yet, oci-client cannot present a client certificate).

use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::ollama::OllamaModel;
use airlock_testkit::tls::{ServerCert, TestPki};
use airlock_testkit::TestRegistry;
use airlock_tests::*;

/// The registries inside the namespace (a fresh network stack: any port is free).
const GOOD: &str = "127.0.0.1:5000";
const MTLS: &str = "127.0.0.1:5001";
const WRONG_NAME: &str = "127.0.0.1:5002";
const EXPIRED: &str = "127.0.0.1:5003";

/// An empty HOME, so that no certs.d directory of the machine's user is found.
fn empty_home(w: &World) -> std::path::PathBuf {
    let h = w.path("empty-home");
    std::fs::create_dir_all(&h).unwrap();
    h
}

/// Runs `script` (`sh -e`) in a new network namespace with only loopback, after starting
/// the four TLS registries and waiting for them. Each `try NAME CMD…` in the script records
/// CMD's exit code, stdout and stderr under `out` as NAME.{rc,out,err}.
fn in_gap(w: &World, pki: &TestPki, script: &str) -> Output {
    let dir = w.path("gap");
    std::fs::create_dir_all(&dir).unwrap();
    let mut start = String::new();
    for (i, (addr, server, mtls)) in [
        (GOOD, ServerCert::Good, false),
        (MTLS, ServerCert::Good, true),
        (WRONG_NAME, ServerCert::WrongName, false),
        (EXPIRED, ServerCert::Expired, false),
    ]
    .into_iter()
    .enumerate()
    {
        let config = dir.join(format!("config-{i}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n{}",
                dir.join(format!("data-{i}")).display(),
                pki.http_yaml(server, mtls)
            ),
        )
        .unwrap();
        let port = addr.rsplit(':').next().unwrap();
        start.push_str(&format!(
            "docker-registry serve {config} >{log} 2>&1 &\n\
             PIDS=\"$PIDS $!\"\n\
             i=0\n\
             until printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' | busybox nc 127.0.0.1 {port} 2>/dev/null | grep -q ' 400 '; do\n\
               i=$((i+1)); [ $i -lt 200 ] || {{ echo registry {addr} did not start >&2; cat {log} >&2; exit 99; }}\n\
               sleep 0.05\n\
             done\n",
            config = config.display(),
            log = dir.join(format!("registry-{i}.log")).display(),
        ));
    }
    let wrapped = format!(
        "set -e\n\
         ip link set lo up\n\
         PIDS=\n\
         trap 'kill $PIDS' EXIT\n\
         {start}\
         try() {{ n=$1; shift; set +e; \"$@\" >$OUT/$n.out 2>$OUT/$n.err; echo $? >$OUT/$n.rc; set -e; }}\n\
         {script}\n"
    );
    std::fs::create_dir_all(w.path("out")).unwrap();
    Command::new("unshare")
        .args(["-n", "sh", "-c", &wrapped])
        .env("UNPACK", unpack_bin())
        .env("TRUST", w.path("pack-keys/airlock.pub"))
        .env("IDENTITY", w.path("host/host.key"))
        .env("OUT", w.path("out"))
        .env("HOME", empty_home(w))
        .env_remove("AIRLOCK_TRUST_DIR")
        .env_remove("AIRLOCK_POLICY")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .output()
        .unwrap()
}

/// Exit code and stderr of a `try NAME …` of the script.
fn outcome(w: &World, name: &str) -> (i32, String) {
    let read = |ext: &str| {
        std::fs::read_to_string(w.path(&format!("out/{name}.{ext}")))
            .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
    };
    (read("rc").trim().parse().unwrap(), read("err"))
}

fn assert_pushed(w: &World, name: &str) {
    let (rc, err) = outcome(w, name);
    assert_eq!(rc, 0, "{name} failed: {err}");
}

fn assert_refused_with(w: &World, name: &str, code: i32, needles: &[&str]) {
    let (rc, err) = outcome(w, name);
    assert_eq!(rc, code, "{name}: wrong exit code: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: stderr lacks {n:?}: {err}");
    }
}

#[test]
fn push_to_registries_on_their_own_ca() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("tls.airlock", false);
    let pki = TestPki::generate();

    // HOME's containers certs.d, as podman and skopeo look it up: the CA for GOOD; the CA
    // and docker's client pair for MTLS.
    let home = w.path("home");
    let certs_d = home.join(".config/containers/certs.d");
    pki.certs_d(&certs_d.join(GOOD), false);
    pki.certs_d(&certs_d.join(MTLS), true);
    // A --cert-dir with the CA and the client pair (skopeo's flag of the same name).
    let cert_dir = w.path("cert-dir");
    pki.certs_d(&cert_dir, true);
    // A CA file others may rewrite: refused before anything is sent.
    let loose = w.path("loose-ca.crt");
    std::fs::copy(pki.path("ca.crt"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();

    let push = format!(
        "$UNPACK push {} --trust $TRUST --identity $IDENTITY --quiet",
        bundle.display()
    );
    let ca = pki.path("ca.crt");
    let (ca, client, client_key, rogue, rogue_key) = (
        ca.display(),
        pki.path("client.cert"),
        pki.path("client.key"),
        pki.path("rogue-client.cert"),
        pki.path("rogue-client.key"),
    );
    let (client, client_key, rogue, rogue_key) = (
        client.display(),
        client_key.display(),
        rogue.display(),
        rogue_key.display(),
    );
    let script = format!(
        "try no-ca {push} --registry {GOOD}\n\
         try ca-cert {push} --registry {GOOD} --ca-cert {ca}\n\
         try certs-d env HOME={home} {push} --registry {GOOD}\n\
         try cert-dir {push} --registry {GOOD} --cert-dir {cert_dir}\n\
         try loose {push} --registry {GOOD} --ca-cert {loose}\n\
         try insecure-ca {push} --registry {GOOD} --insecure --ca-cert {ca}\n\
         try mtls-none {push} --registry {MTLS} --ca-cert {ca}\n\
         try mtls-rogue {push} --registry {MTLS} --ca-cert {ca} --client-cert {rogue} --client-key {rogue_key}\n\
         try mtls-flags {push} --registry {MTLS} --ca-cert {ca} --client-cert {client} --client-key {client_key}\n\
         try mtls-certs-d env HOME={home} {push} --registry {MTLS}\n\
         try mtls-cert-dir {push} --registry {MTLS} --cert-dir {cert_dir}\n\
         try skopeo skopeo inspect --cert-dir {cert_dir} docker://{MTLS}/e2e/hello:v1\n\
         try wrong-name {push} --registry {WRONG_NAME} --ca-cert {ca}\n\
         try expired {push} --registry {EXPIRED} --ca-cert {ca}\n",
        home = home.display(),
        cert_dir = cert_dir.display(),
        loose = loose.display(),
    );
    let o = in_gap(&w, &pki, &script);
    assert_ok(&o);

    // Without the CA: exit 9, naming the unknown CA and the two ways to trust it.
    assert_refused_with(
        &w,
        "no-ca",
        9,
        &[
            "unknown issuer",
            &format!("/etc/docker/certs.d/{GOOD}/ca.crt"),
            "--ca-cert FILE",
            "[trusted: the system store]",
        ],
    );
    for ok in ["ca-cert", "certs-d", "cert-dir"] {
        assert_pushed(&w, ok);
    }
    assert_refused_with(&w, "loose", 2, &["loose-ca.crt", "mode 0666", "chmod go-w"]);
    assert_refused_with(&w, "insecure-ca", 2, &["--insecure"]);

    // Mutual TLS: no client certificate, or one from another CA, is refused.
    assert_refused_with(
        &w,
        "mtls-none",
        9,
        &["requires a client certificate", "--client-cert FILE"],
    );
    assert_refused_with(&w, "mtls-rogue", 9, &["refused the client certificate"]);
    for ok in ["mtls-flags", "mtls-certs-d", "mtls-cert-dir"] {
        assert_pushed(&w, ok);
    }
    // The image is in the mutual-TLS registry, as skopeo (with the same directory) sees it.
    assert_pushed(&w, "skopeo");
    let inspect: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("out/skopeo.out")).unwrap()).unwrap();
    assert_eq!(inspect["Architecture"], "amd64", "{inspect:#}");

    // A certificate for another name: which names it has.
    assert_refused_with(
        &w,
        "wrong-name",
        9,
        &[
            "name mismatch",
            "not valid for \"127.0.0.1\"",
            "it is for DNS:elsewhere.invalid;",
        ],
    );
    assert_refused_with(
        &w,
        "expired",
        9,
        &["certificate expired at 2020-01-02T00:00:00Z", "clock says"],
    );
}

/// `airlock-pack ARGS` with this world's cache and `home` as HOME.
fn pack(w: &World, home: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(pack_bin())
        .args(args)
        .arg("--cache")
        .arg(w.path("cache"))
        .env("HOME", home)
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap()
}

#[test]
fn pack_lock_and_build_from_registries_on_their_own_ca() {
    let w = World::new();
    let pki = TestPki::generate();
    // The world's images, and a model, served over TLS from the plain registry's storage.
    let model = OllamaModel::generate(&w.path("model-src"), 1 << 20, 3);
    model.push(&w.registry.addr, "library/tiny", "latest");
    let tls = TestRegistry::start_tls(&pki, ServerCert::Good, false, Some(w.registry.storage()));
    let mtls = TestRegistry::start_tls(&pki, ServerCert::Good, true, Some(w.registry.storage()));
    let image = format!("{}/e2e/hello:v1", tls.addr);
    let spec = w.spec();
    w.write_spec(&["linux/amd64"], &[&image]);
    let home = empty_home(&w);
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ca, spec_s) = (pki.path("ca.crt"), spec.clone().into_os_string());

    // Without the CA: exit 9 at once, naming the unknown CA.
    let o = pack(&w, &home, &[&os("lock"), &spec_s]);
    assert_refused(&o, 9, &["unknown issuer", "--ca-cert FILE", &tls.addr]);
    // With it.
    let o = pack(
        &w,
        &home,
        &[&os("lock"), &spec_s, &os("--ca-cert"), ca.as_os_str()],
    );
    assert_ok(&o);
    // build finds the CA in HOME's certs.d, as podman would.
    let certs_home = w.path("home");
    pki.certs_d(
        &certs_home
            .join(".config/containers/certs.d")
            .join(&tls.addr),
        false,
    );
    let out = w.path("tls.airlock");
    let mut args = w.build_args(&out, false);
    args.push("--quiet".into());
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let o = pack(&w, &empty_home(&w), &args);
    assert_refused(&o, 9, &["unknown issuer"]);
    let o = pack(&w, &certs_home, &args);
    assert_ok(&o);
    assert_ok(&w.unpack("verify", &out, &[]));

    // A model from a registry that requires a client certificate: the Ollama client
    // presents one; without it the handshake is refused over the client certificate.
    std::fs::write(
        &spec,
        format!(
            "name = \"e2e\"\nplatforms = [\"linux/amd64\"]\n\n[[model]]\nname = \"{}/library/tiny:latest\"\n",
            mtls.addr
        ),
    )
    .unwrap();
    let o = pack(
        &w,
        &home,
        &[&os("lock"), &spec_s, &os("--ca-cert"), ca.as_os_str()],
    );
    assert_refused(&o, 9, &["client certificate"]);
    let o = pack(
        &w,
        &home,
        &[
            &os("lock"),
            &spec_s,
            &os("--ca-cert"),
            ca.as_os_str(),
            &os("--client-cert"),
            pki.path("client.cert").as_os_str(),
            &os("--client-key"),
            pki.path("client.key").as_os_str(),
        ],
    );
    assert_ok(&o);
    let lock = std::fs::read_to_string(w.path("e2e.lock")).unwrap();
    assert!(lock.contains("library/tiny"), "{lock}");

    // Images come through oci-client 0.18, which cannot present a client certificate: a
    // registry that requires one refuses them, said as such (see the README).
    w.write_spec(&["linux/amd64"], &[&format!("{}/e2e/hello:v1", mtls.addr)]);
    let o = pack(
        &w,
        &home,
        &[
            &os("lock"),
            &spec_s,
            &os("--ca-cert"),
            ca.as_os_str(),
            &os("--client-cert"),
            pki.path("client.cert").as_os_str(),
            &os("--client-key"),
            pki.path("client.key").as_os_str(),
        ],
    );
    assert_refused(&o, 9, &["refused the handshake over a client certificate"]);
}
