//! The gap host's own limits, end to end with the real binaries: an operator policy file
//! (allowed, refused with every violation named and nothing written, per-key scopes,
//! `--no-files`, typos refused) and anti-rollback and freshness (newer, same, older,
//! `--allow-downgrade`, ties, `--max-age`, future-dated, a corrupt record). The unpacking
//! side runs inside `unshare -n`; only the image test uses the Docker engine.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use airlock_testkit::ollama::OllamaModel;
use airlock_tests::*;
use serde_json::{json, Value};

/// A world with a local Ollama store (model `tiny:v1`) and a spec carrying that model and
/// two `[[files]]` into host paths: `conf/` (0644, 0600) into `gap/allowed`, and
/// `tools/run.sh` (0755) into `gap/elsewhere`. No images: no Docker engine needed.
struct Fixture {
    w: World,
    store: PathBuf,
    model: OllamaModel,
    allowed: PathBuf,
    elsewhere: PathBuf,
    models: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let w = World::new();
        let store = w.path("store");
        let model = OllamaModel::generate(&w.path("model-src"), 1 << 20, 31);
        model.install_local(&store, &ModelName::parse("tiny:v1").unwrap());
        let conf = w.path("conf");
        std::fs::create_dir_all(conf.join("sub")).unwrap();
        std::fs::write(conf.join("app.yml"), format!("# {}\n", w.marker)).unwrap();
        std::fs::write(conf.join("sub/secret.env"), "TOKEN=x\n").unwrap();
        std::fs::set_permissions(
            conf.join("sub/secret.env"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir_all(w.path("tools")).unwrap();
        std::fs::write(w.path("tools/run.sh"), "#!/bin/sh\necho run\n").unwrap();
        std::fs::set_permissions(
            w.path("tools/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let host = w.path("gap");
        std::fs::create_dir_all(&host).unwrap();
        let (allowed, elsewhere, models) = (
            host.join("allowed"),
            host.join("elsewhere"),
            host.join("models"),
        );
        std::fs::write(
            w.spec(),
            format!(
                "name = \"policy\"\n[ollama]\nsource = \"local\"\npath = \"/unused\"\n\
                 [[model]]\nname = \"tiny:v1\"\n\
                 [[files]]\nsource = \"conf\"\npath = \"{}\"\n\
                 [[files]]\nsource = \"tools/run.sh\"\npath = \"{}\"\n",
                allowed.display(),
                elsewhere.display()
            ),
        )
        .unwrap();
        let f = Fixture {
            w,
            store,
            model,
            allowed,
            elsewhere,
            models,
        };
        let spec = f.w.spec();
        assert_ok(&f.w.pack_offline(&f.store, ["lock".into(), spec.into_os_string()]));
        f
    }

    /// Builds the spec, plain (so that tests can re-sign variants), signed with `key`.
    fn build(&self, name: &str, key: &Path) -> PathBuf {
        let out = self.w.path(name);
        let mut args = self.w.build_args(&out, true);
        args[5] = key.into();
        args.push("--quiet".into());
        assert_ok(&self.w.pack_offline(&self.store, &args));
        out
    }

    fn pack_key(&self) -> PathBuf {
        self.w.path("pack-keys/airlock.key")
    }

    /// `airlock-unpack load BUNDLE --ollama-models gap/models EXTRA…` with no network and
    /// no Docker engine, trusting the pack key unless `env` names a trust dir.
    fn load(&self, bundle: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = Command::new("unshare");
        c.arg("-n")
            .arg(unpack_bin())
            .arg("load")
            .arg(bundle)
            .arg("--ollama-models")
            .arg(&self.models)
            .args(extra)
            .env("AIRLOCK_STATE_DIR", self.w.path("state"))
            .env("AIRLOCK_WORK_DIR", self.w.path("work"))
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("AIRLOCK_POLICY")
            .env_remove("AIRLOCK_TRUST_DIR");
        if !env.iter().any(|(k, _)| *k == "AIRLOCK_TRUST_DIR") {
            c.arg("--trust").arg(self.w.path("pack-keys/airlock.pub"));
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Writes a policy file (0644, as an operator would) and returns its path.
    fn policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.w.path(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// Everything under the host dirs: what a refused load must leave as it was.
    fn host(&self) -> BTreeMap<String, String> {
        snapshot(&self.w.path("gap"))
    }

    fn model_manifest(&self) -> PathBuf {
        self.models
            .join(ModelName::parse("tiny:v1").unwrap().manifest_path())
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_policy_allows_refuses_naming_every_violation_and_writes_nothing() {
    let f = Fixture::new();
    let bundle = f.build("stack.airlock", &f.pack_key());
    let run_sh = f.elsewhere.join("run.sh");

    // A policy that allows the conf target but not the other one, caps modes at 0644,
    // lists models dirs but not this one, and does not list models at all.
    let strict = f.policy(
        "strict.toml",
        &format!(
            "# what any trusted signer may do here\nfiles = [{:?}]\nmodels_dirs = [{:?}]\nmax_mode = \"0644\"\n",
            s(&f.allowed),
            s(&f.w.path("gap/other-models"))
        ),
    );
    let before = f.host();
    let o = f.load(&bundle, &["--policy", s(&strict)], &[]);
    let policy_sha = Digest::of(&std::fs::read(&strict).unwrap());
    assert_refused(
        &o,
        12,
        &[
            "refused by this host's policy",
            &format!("policy {}, {policy_sha}", strict.display()),
            "nothing was loaded",
            // The new file outside every prefix, named with its bundle target and path.
            &format!(
                "file {} (bundle target {}, path run.sh): not under any allowed prefix: files = [{:?}] in {}",
                run_sh.display(),
                f.elsewhere.display(),
                s(&f.allowed),
                strict.display()
            ),
            &format!(
                "file {} (bundle target {}, path run.sh): mode 0755 has bits beyond max_mode = \"0644\" in {}",
                run_sh.display(),
                f.elsewhere.display(),
                strict.display()
            ),
            // Deny by default: models are not listed, so no model may load.
            "model registry.ollama.ai/library/tiny:v1: not allowed by models is not listed (a category a policy does not list allows nothing)",
            // The command line's models dir is checked too.
            &format!(
                "model registry.ollama.ai/library/tiny:v1 into {} (the command line's target): not allowed by models_dirs = [{:?}]",
                f.models.display(),
                s(&f.w.path("gap/other-models"))
            ),
            // Directories count too: a 0755 directory is beyond 0644.
            &format!(
                "directory {}/sub (bundle target {}, path sub): mode 0755 has bits beyond max_mode",
                f.allowed.display(),
                f.allowed.display()
            ),
            "5 problems",
        ],
    );
    assert!(
        !stderr(&o).contains("notice: no policy"),
        "with a policy there is no notice: {}",
        text(&o)
    );
    assert_eq!(f.host(), before, "a refused load wrote something");
    assert!(!f.allowed.exists() && !f.elsewhere.exists() && !f.models.exists());
    assert!(
        !f.w.path("state").exists(),
        "a refused load records nothing"
    );

    // --no-files: images and models only; the files are skipped, listed, and reported. The
    // policy still has to allow the models.
    let models_only = f.policy(
        "models-only.toml",
        &format!(
            "models = [\"registry.ollama.ai/library/*\"]\nmodels_dirs = [{:?}]\n",
            s(&f.models)
        ),
    );
    let o = f.load(&bundle, &["--policy", s(&models_only)], &[]);
    assert_refused(&o, 12, &["files is not listed", "4 problems"]);
    assert!(!f.models.exists());
    let report = f.w.path("no-files.json");
    let o = f.load(
        &bundle,
        &[
            "--policy",
            s(&models_only),
            "--no-files",
            "--report",
            s(&report),
        ],
        &[],
    );
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "skipped (--no-files) {} run.sh",
            f.elsewhere.display()
        )) && out.contains(&format!(
            "skipped (--no-files) {} app.yml",
            f.allowed.display()
        )),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(f.model_manifest()).unwrap(),
        f.model.manifest,
        "the model loaded"
    );
    assert!(
        !f.allowed.exists() && !f.elsewhere.exists(),
        "files skipped"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "ok", "{r}");
    assert_eq!(
        r["policy"],
        json!({
            "path": models_only,
            "sha256": Digest::of(&std::fs::read(&models_only).unwrap()).to_string(),
        }),
        "{r}"
    );
    let skipped: Vec<&str> = r["files_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        skipped.contains(&"run.sh") && skipped.contains(&"sub/secret.env"),
        "{r}"
    );
    assert_eq!(r["rollback"]["decision"], "first", "{r}");

    // Allowed: both targets listed, modes up to 0755: everything is written.
    let open = f.policy(
        "open.toml",
        &format!(
            "files = [{:?}, {:?}]\nmodels = [\"tiny\"]\nmodels_dirs = [{:?}]\nmax_mode = \"0755\"\nimages = []\nvolumes = []\n",
            s(&f.allowed),
            s(&f.elsewhere),
            s(&f.models)
        ),
    );
    let o = f.load(&bundle, &["--policy", s(&open)], &[]);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(f.allowed.join("app.yml")).unwrap(),
        format!("# {}\n", f.w.marker)
    );
    assert_eq!(
        std::fs::metadata(f.allowed.join("sub/secret.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(run_sh.is_file());

    // A prefix is whole path components: "gap/allow" is a string prefix of "gap/allowed"
    // but not a parent of it.
    let tricky = f.policy(
        "tricky.toml",
        &format!(
            "files = [{:?}]\nmodels = [\"*\"]\nmodels_dirs = [\"*\"]\n",
            format!("{}/allow", f.w.path("gap").display())
        ),
    );
    let o = f.load(&bundle, &["--policy", s(&tricky)], &[]);
    assert_refused(
        &o,
        12,
        &["app.yml", "run.sh", "not under any allowed prefix"],
    );

    // A typo is an error, never a silent permission: an unknown key, a relative path.
    for (name, text, needle) in [
        ("typo.toml", "file = [\"/opt\"]\n", "unknown field `file`"),
        (
            "relative.toml",
            "files = [\"opt/x\"]\n",
            "not an absolute path",
        ),
    ] {
        let p = f.policy(name, text);
        let o = f.load(&bundle, &["--policy", s(&p)], &[]);
        assert_refused(&o, 2, &[&p.display().to_string(), needle]);
    }
    // A policy anyone may write is no limit.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = f.load(&bundle, &["--policy", s(&open)], &[]);
    assert_refused(&o, 2, &["lets group or others write it"]);
    // A policy named but missing is not "no policy".
    let o = f.load(&bundle, &["--policy", s(&f.w.path("nope.toml"))], &[]);
    assert_refused(&o, 2, &["nope.toml", "no such file"]);
}

/// `[signer.NAME]` narrows what the key in `trust.d/NAME.pub` may do: the same bundle is
/// refused when `pack` signed it and loads when `ops` did.
#[test]
fn a_signer_section_narrows_one_key() {
    let f = Fixture::new();
    run_ok(
        Command::new(pack_bin())
            .args(["keygen", "-o"])
            .arg(f.w.path("ops-keys")),
    );
    let trust = f.w.path("trust.d");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(f.w.path("pack-keys/airlock.pub"), trust.join("pack.pub")).unwrap();
    std::fs::copy(f.w.path("ops-keys/airlock.pub"), trust.join("ops.pub")).unwrap();
    let by_pack = f.build("by-pack.airlock", &f.pack_key());
    let by_ops = f.build("by-ops.airlock", &f.w.path("ops-keys/airlock.key"));
    let env = [("AIRLOCK_TRUST_DIR", trust.as_path())];
    let policy = f.policy(
        "scoped.toml",
        &format!(
            "files = [\"*\"]\nmodels = [\"*\"]\nmodels_dirs = [\"*\"]\n\
             [signer.pack]\nfiles = [{:?}]\nmodels = [\"*\"]\nmodels_dirs = [\"*\"]\n",
            s(&f.allowed)
        ),
    );
    let before = f.host();
    let o = f.load(&by_pack, &["--policy", s(&policy)], &env);
    assert_refused(
        &o,
        12,
        &[
            &format!(
                "file {}/run.sh (bundle target {}, path run.sh): not under any allowed prefix: [signer.pack] files = [{:?}] in {}",
                f.elsewhere.display(),
                f.elsewhere.display(),
                s(&f.allowed),
                policy.display()
            ),
            "1 problem:",
        ],
    );
    assert_eq!(f.host(), before);
    // The same content signed by the other trusted key: the top level alone applies.
    assert_ok(&f.load(&by_ops, &["--policy", s(&policy)], &env));
    assert!(f.elsewhere.join("run.sh").is_file());
    assert!(f.model_manifest().is_file());

    // A section for a key that is not trusted is a typo, not a rule for nobody.
    let typo = f.policy(
        "typo-signer.toml",
        "files = [\"*\"]\n[signer.pakc]\nfiles = []\n",
    );
    let o = f.load(&by_ops, &["--policy", s(&typo)], &env);
    assert_refused(
        &o,
        2,
        &["[signer.pakc]", "no trusted key is named pakc", "ops, pack"],
    );
}

/// An image whose repository the policy does not list is not sent to the engine: no tag
/// appears. Listed, it loads.
#[test]
fn images_outside_the_policy_are_not_tagged() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("images.airlock", true);
    let policy = |name: &str, images: &str| {
        let p = w.path(name);
        std::fs::write(&p, format!("images = [{images}]\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    };
    let other = policy("other.toml", "\"busybox\", \"ghcr.io/open-webui/*\"");
    let _guard = docker_lock();
    let before = docker_images();
    let result = std::panic::catch_unwind(|| {
        let o = w.unpack("load", &bundle, &["--policy", s(&other)]);
        let repo = w.hello.trim_end_matches(":v1");
        assert_refused(
            &o,
            12,
            &[&format!(
                "image {} (repository {repo}): not allowed by images = [\"busybox\", \"ghcr.io/open-webui/*\"] in {}",
                w.hello,
                other.display()
            )],
        );
        assert_eq!(docker_images(), before, "a refused image was tagged");
        let ours = policy("ours.toml", &format!("\"{}/e2e/*\"", w.registry.addr));
        let o = w.unpack("load", &bundle, &["--policy", s(&ours), "--json"]);
        assert_ok(&o);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["images"][0]["reference"], w.hello.as_str(), "{r}");
    });
    docker_rmi(&[&w.hello]);
    result.unwrap();
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Anti-rollback and freshness with re-signed variants of one bundle (validly signed by the
/// trusted key, differing only in `created` and what a test changes).
#[test]
fn old_replayed_and_future_bundles_are_refused() {
    let f = Fixture::new();
    let plain = f.build("base.airlock", &f.pack_key());
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);
    let variant = |name: &str, created: SystemTime, change: &dyn Fn(&mut Value)| {
        let bytes = resign(&f.w, &plain, |v| {
            v["created"] = Value::from(rfc3339(created));
            change(v);
        });
        write_variant(&f.w, name, &bytes)
    };
    let same = |_: &mut Value| {};
    let digest = |b: &Path| -> String {
        let o = f.w.unpack("inspect", b, &["--json"]);
        assert_ok(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["header_digest"].as_str().unwrap().to_string()
    };
    let mid = variant("mid.airlock", now - 2 * day, &same);
    // The old one would write elsewhere: a refusal must leave that untouched.
    let old_target = f.w.path("gap/old-target");
    let old = variant("old.airlock", now - 10 * day, &|v| {
        for file in v["files"].as_array_mut().unwrap() {
            if file["target"]["path"] == s(&f.allowed) {
                file["target"] = json!({ "path": s(&old_target) });
            }
        }
    });
    let new = variant("new.airlock", now - day, &same);
    let tie = variant("tie.airlock", now - day, &|v| {
        v["tool"] = Value::from("airlock-pack rebuilt");
    });
    let future = variant("future.airlock", now + 3 * day, &same);
    let (d_mid, d_old, d_new, d_tie) = (digest(&mid), digest(&old), digest(&new), digest(&tie));
    let state = f.w.path("state/state.json");
    let recorded = || -> Value { serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap() };

    // The first load is recorded; without a policy load says so once, even with -q.
    let o = f.load(&mid, &["-q"], &[]);
    assert_ok(&o);
    let notices = stderr(&o)
        .lines()
        .filter(|l| l.contains("notice: no policy file"))
        .count();
    assert_eq!(notices, 1, "{}", text(&o));
    assert!(stderr(&o).contains("any trusted signer may write any path"));
    assert_eq!(
        recorded()["bundles"]["policy"]["header_digest"],
        d_mid.as_str()
    );
    assert_eq!(
        std::fs::metadata(f.w.path("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // The same bundle again: fine.
    assert_ok(&f.load(&mid, &[], &[]));

    // Older: refused, naming both times and both digests; nothing written.
    let before = f.host();
    let o = f.load(&old, &[], &[]);
    assert_refused(
        &o,
        12,
        &[
            &rfc3339(now - 10 * day),
            &rfc3339(now - 2 * day),
            &d_old,
            &d_mid,
            "older than the newest of that name this host loaded",
            "--allow-downgrade",
        ],
    );
    assert_eq!(f.host(), before);
    assert!(!old_target.exists());
    // --allow-downgrade loads it, and the newer record stays.
    assert_ok(&f.load(&old, &["--allow-downgrade"], &[]));
    assert!(old_target.join("app.yml").is_file());
    assert_eq!(
        recorded()["bundles"]["policy"]["header_digest"],
        d_mid.as_str()
    );

    // Newer: loads and is recorded.
    let report = f.w.path("newer.json");
    assert_ok(&f.load(&new, &["--report", s(&report)], &[]));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["rollback"]["decision"], "newer", "{r}");
    assert_eq!(
        r["rollback"]["previous"]["header_digest"],
        d_mid.as_str(),
        "{r}"
    );
    assert_eq!(r["policy"], Value::Null, "{r}");
    assert_eq!(
        recorded()["bundles"]["policy"]["header_digest"],
        d_new.as_str()
    );

    // As old, other content: which is newer cannot be told.
    let o = f.load(&tie, &[], &[]);
    assert_refused(&o, 12, &["same creation time", &d_tie, &d_new]);

    // Too old for --max-age, or for the policy's max_age: the stricter applies.
    let o = f.load(&new, &["--max-age", "12h"], &[]);
    assert_refused(&o, 12, &["1d ago: older than 12h (--max-age)"]);
    let aged = f.policy(
        "aged.toml",
        "files = [\"*\"]\nmodels = [\"*\"]\nmodels_dirs = [\"*\"]\nmax_age = \"6h\"\n",
    );
    let o = f.load(&new, &["--policy", s(&aged), "--max-age", "30d"], &[]);
    assert_refused(
        &o,
        12,
        &[&format!("older than 6h (max_age in {})", aged.display())],
    );
    assert_ok(&f.load(&new, &["--max-age", "2d"], &[]));

    // From the future: refused, saying why it matters; not recorded.
    let o = f.load(&future, &[], &[]);
    assert_refused(
        &o,
        12,
        &[
            "in this host's future",
            "it would make every later bundle of that name look older",
        ],
    );
    assert_eq!(
        recorded()["bundles"]["policy"]["header_digest"],
        d_new.as_str()
    );

    // A corrupt record is an environment error naming it, never silently reset.
    std::fs::write(&state, "{\"version\": 1, \"bundles\": ").unwrap();
    let o = f.load(&new, &[], &[]);
    assert_refused(&o, 7, &[s(&state), "not a state file"]);
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b"{\"version\": 1, \"bundles\": ",
        "the state was rewritten"
    );
}
