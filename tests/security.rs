//! The gap host is hostile too: a real unprivileged user (uid 65534, through `setpriv`)
//! owns the models directory and a `[[files]]` target directory of a root `load`, and
//! attacks it the ways the security review found: symlinks planted at every name the code
//! might use, temp files swapped while they are written, symlinks below a target root,
//! reading decrypted content from the spool and from an extract, and leftovers of killed
//! runs. After each, the victim file keeps its bytes and mode, no destination is a symlink,
//! and nothing decrypted was readable.
//!
//! These tests need root (to act as another user); they are the gap host's situation.

use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_bundle::ollama::ModelName;
use airlock_testkit::ollama::OllamaModel;
use airlock_tests::*;

const SECRET: &str = "DB_PASSWORD=correct-horse-battery-staple\n";
const VICTIM: &[u8] = b"ROOT ONLY: the gap host's age identity\n";

/// A world with a signed bundle of one model (`MODEL_MIB` MiB) from a local store and two
/// `[[files]]`, `datasources.yml` (0644) and `secret.env` (0600), bound for `svc`; and a
/// directory everyone may traverse, holding the attacker's and the victim's files.
struct Gap {
    w: World,
    base: tempfile::TempDir,
    bundle: PathBuf,
    model: OllamaModel,
}

impl Gap {
    fn new(model_mib: u64) -> Gap {
        let w = World::new();
        let base = tempfile::Builder::new()
            .prefix("airlock-gap-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let model = OllamaModel::generate(&w.path("model-src"), model_mib << 20, 9);
        let store = w.path("store");
        model.install_local(&store, &ModelName::parse("big:latest").unwrap());
        let conf = w.path("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("datasources.yml"), "grafana: provisioning\n").unwrap();
        std::fs::write(conf.join("secret.env"), SECRET).unwrap();
        std::fs::set_permissions(
            conf.join("secret.env"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let svc = base.path().join("svc");
        std::fs::write(
            w.spec(),
            format!(
                "name = \"sec\"\n[ollama]\nsource = \"local\"\npath = \"/unused\"\n\
                 [[model]]\nname = \"big:latest\"\n\
                 [[files]]\nsource = \"conf\"\npath = \"{}\"\n",
                svc.display()
            ),
        )
        .unwrap();
        let spec = w.spec();
        assert_ok(&w.pack_offline(&store, ["lock", spec.to_str().unwrap()]));
        let bundle = w.path("sec.airlock");
        let mut args = w.build_args(&bundle, false);
        args.push("--quiet".into());
        assert_ok(&w.pack_offline(&store, &args));
        Gap {
            w,
            base,
            bundle,
            model,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.base.path().join(rel)
    }

    /// A directory owned by the attacker.
    fn nobody_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        chown_nobody(&p);
        p
    }

    /// An Ollama models directory (`blobs/`, `manifests/`) owned by the attacker, as
    /// `/usr/share/ollama/.ollama/models` is owned by the `ollama` user.
    fn nobody_models(&self) -> PathBuf {
        let models = self.path("models");
        std::fs::create_dir_all(models.join("blobs")).unwrap();
        std::fs::create_dir_all(models.join("manifests")).unwrap();
        chown_nobody(&models);
        models
    }

    /// A root-only file (0600) the attacker wants to overwrite or read.
    fn victim(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, VICTIM).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn load_cmd(&self, models: &Path, work: &Path) -> Command {
        let mut c = Command::new("unshare");
        c.arg("-n")
            .arg(unpack_bin())
            .arg("load")
            .arg(&self.bundle)
            .arg("--trust")
            .arg(self.w.path("pack-keys/airlock.pub"))
            .arg("--identity")
            .arg(self.w.path("host/host.key"))
            .arg("--ollama-models")
            .arg(models)
            .arg("--quiet")
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("AIRLOCK_WORK_DIR", work)
            .env("AIRLOCK_STATE_DIR", self.w.fresh_state_dir())
            .env_remove("AIRLOCK_TRUST_DIR");
        c
    }

    /// `load` of a plain (re-signed) `bundle`, with a state dir of its own.
    fn load_plain(&self, bundle: &Path, models: &Path, work: &Path) -> Output {
        Command::new("unshare")
            .arg("-n")
            .arg(unpack_bin())
            .arg("load")
            .arg(bundle)
            .arg("--trust")
            .arg(self.w.path("pack-keys/airlock.pub"))
            .arg("--ollama-models")
            .arg(models)
            .arg("--quiet")
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("AIRLOCK_WORK_DIR", work)
            .env("AIRLOCK_STATE_DIR", self.w.fresh_state_dir())
            .env_remove("AIRLOCK_TRUST_DIR")
            .output()
            .unwrap()
    }

    fn load(&self, models: &Path, work: &Path) -> Output {
        self.load_cmd(models, work).output().unwrap()
    }
}

/// Runs a Python script as the unprivileged user.
fn as_nobody(script: &str, args: &[&Path]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        script,
    ])
    .args(args);
    c
}

fn assert_victim_intact(victim: &Path) {
    let meta = std::fs::symlink_metadata(victim).unwrap();
    assert!(meta.is_file(), "{} is no longer a file", victim.display());
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "{}: mode changed",
        victim.display()
    );
    assert_eq!(
        std::fs::read(victim).unwrap(),
        VICTIM,
        "{}: bytes changed",
        victim.display()
    );
}

/// No entry below `dir` is a symlink the attacker planted that now stands where we wrote.
fn assert_no_symlink_at(paths: &[PathBuf]) {
    for p in paths {
        let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            meta.file_type().is_file(),
            "{} is not a regular file after the load",
            p.display()
        );
        assert_eq!(meta.uid(), 0, "{} is not root's", p.display());
    }
}

/// Plants symlinks to the victim for the next `count` process ids at every name pattern
/// the loader used (or might use) for its temps, and for the spool directory names.
const PLANT: &str = r#"
import os, sys
models, svc, victim, blobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
start = int(open("/proc/sys/kernel/ns_last_pid").read()) + 1
n = 0
for pid in range(start, start + 1500):
    names = [os.path.join(models, "manifests", ".airlock-%d.tmp" % pid),
             os.path.join(svc, ".datasources.yml.airlock-%d.tmp" % pid),
             os.path.join(svc, ".secret.env.airlock-%d.tmp" % pid)]
    for b in blobs:
        names.append(os.path.join(models, "blobs", "sha256-%s-partial-airlock-%d" % (b, pid)))
    for name in names:
        try:
            os.symlink(victim, name)
            n += 1
        except FileExistsError:
            pass
print(n)
"#;

#[test]
fn symlinks_planted_for_every_predictable_name_are_never_followed() {
    let g = Gap::new(4);
    let models = g.nobody_models();
    let svc = g.nobody_dir("svc");
    let victim = g.victim("victim-secret");
    let blobs: Vec<String> = g.model.blobs().iter().map(|b| b.digest.hex()).collect();
    let mut args: Vec<&Path> = vec![&models, &svc, &victim];
    let blob_paths: Vec<PathBuf> = blobs.iter().map(PathBuf::from).collect();
    args.extend(blob_paths.iter().map(PathBuf::as_path));
    let planted = as_nobody(PLANT, &args).output().unwrap();
    assert_ok(&planted);
    let n: usize = String::from_utf8_lossy(&planted.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(n > 1000, "the attacker planted only {n} links");

    let o = g.load(&models, &g.path("work"));
    assert_ok(&o);
    assert_victim_intact(&victim);
    let name = ModelName::parse("big:latest").unwrap();
    let mut placed = vec![
        svc.join("datasources.yml"),
        svc.join("secret.env"),
        models.join(name.manifest_path()),
    ];
    placed.extend(
        blobs
            .iter()
            .map(|h| models.join("blobs").join(format!("sha256-{h}"))),
    );
    assert_no_symlink_at(&placed);
    assert_eq!(
        std::fs::read_to_string(svc.join("secret.env")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::metadata(svc.join("secret.env")).unwrap().mode() & 0o777,
        0o600
    );
    // The model restored is the model packed.
    for b in g.model.blobs() {
        let p = models
            .join("blobs")
            .join(format!("sha256-{}", b.digest.hex()));
        assert_eq!(
            airlock_bundle::Digest::of(&std::fs::read(&p).unwrap()),
            b.digest
        );
    }
}

/// Swaps every temp file the loader creates in the directories it owns for a symlink to
/// the victim, as soon as it sees one, for as long as it runs; prints how many it swapped.
const SWAP: &str = r#"
import os, sys, time
victim, dirs = sys.argv[1], sys.argv[2:]
seen, swapped, end = set(), 0, time.time() + 120
while time.time() < end and not os.path.exists(os.path.join(dirs[0], "..", "stop")):
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if "airlock" not in n or n in seen:
                continue
            p = os.path.join(d, n)
            seen.add(n)
            try:
                os.rename(p, p + ".stolen")
                os.symlink(victim, p)
                swapped += 1
            except OSError:
                pass
print(swapped, flush=True)
"#;

#[test]
fn temps_swapped_while_being_written_are_not_placed() {
    let g = Gap::new(64);
    let models = g.nobody_models();
    let svc = g.nobody_dir("svc");
    let victim = g.victim("victim-secret");
    let attacker: Child = as_nobody(SWAP, &[&victim, &models.join("blobs"), &svc])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = g.load(&models, &g.path("work"));
    std::fs::write(models.join("stop"), b"").unwrap();
    let out = attacker.wait_with_output().unwrap();
    let swapped: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        swapped > 0,
        "the attacker swapped nothing: the race was not run"
    );
    // Refused (a temp was not ours any more) or loaded: either way the victim is intact,
    // and nothing stands at a destination but a file of ours.
    assert_victim_intact(&victim);
    if o.status.success() {
        assert_no_symlink_at(&[svc.join("datasources.yml"), svc.join("secret.env")]);
    } else {
        assert_refused(
            &o,
            10,
            &["was replaced by someone else while airlock-unpack was writing it"],
        );
        for e in std::fs::read_dir(models.join("blobs")).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !(name.starts_with("sha256-") && name.len() == 71 && meta.is_symlink()),
                "a blob destination is a symlink: {name}"
            );
        }
    }
}

#[test]
fn symlinks_below_a_target_root_are_refused_and_untrusted_roots_too() {
    let g = Gap::new(1);
    let victim = g.victim("victim-secret");
    let work = g.path("work");
    // The models directory's manifests/registry.ollama.ai is a symlink to a private dir.
    let models = g.nobody_dir("models");
    let private = g.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(models.join("manifests")).unwrap();
    symlink(&private, models.join("manifests/registry.ollama.ai")).unwrap();
    chown_nobody(&models);
    let o = g.load(&models, &work);
    assert_refused(&o, 10, &["registry.ollama.ai", "symlink"]);
    assert_eq!(
        std::fs::metadata(&private).unwrap().mode() & 0o777,
        0o700,
        "the link's target was chmod'ed"
    );
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);
    assert!(
        !g.path("svc").exists(),
        "files were written by a refused load"
    );
    assert_victim_intact(&victim);

    // The files target root is a symlink the attacker made: refused, nothing written there.
    let fresh = g.path("models2");
    let elsewhere = g.nobody_dir("elsewhere");
    // The attacker's link, in a directory the attacker owns.
    let hostile = g.nobody_dir("hostile");
    let o = as_nobody(
        "import os,sys; os.symlink(sys.argv[1], sys.argv[2])",
        &[&elsewhere, &hostile.join("svc")],
    )
    .output()
    .unwrap();
    assert_ok(&o);
    let resigned = resign_files_root(&g, &hostile.join("svc"));
    let o = g.load_plain(&resigned, &fresh, &work);
    assert_refused(&o, 10, &["svc", "symlink owned by uid 65534"]);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert!(
        !fresh.join("manifests").exists(),
        "a refused load restored the model"
    );

    // The same through a link root made in a directory only root can write: followed.
    let real = g.path("real-svc");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, g.path("svc-by-root")).unwrap();
    let resigned = resign_files_root(&g, &g.path("svc-by-root"));
    let o = g.load_plain(&resigned, &fresh, &work);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(real.join("secret.env")).unwrap(),
        SECRET
    );

    // A symlink to a directory below the target root (no record for it): refused.
    let svc = g.nobody_dir("svc3");
    let outside = g.nobody_dir("outside");
    let o = as_nobody(
        "import os,sys; os.symlink(sys.argv[1], sys.argv[2])",
        &[&outside, &svc.join("conf")],
    )
    .output()
    .unwrap();
    assert_ok(&o);
    let resigned = resign(&g.w, &plain_of(&g), |h| {
        for f in h["files"].as_array_mut().unwrap() {
            f["target"] = serde_json::json!({ "path": svc.to_str().unwrap() });
            let p = f["path"].as_str().unwrap().to_string();
            f["path"] = serde_json::Value::String(format!("conf/{p}"));
        }
    });
    let bundle = write_variant(&g.w, "below.airlock", &resigned);
    let o = g.load_plain(&bundle, &g.path("models3"), &work);
    assert_refused(&o, 10, &["conf", "symlink"]);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

/// The world's bundle again, unencrypted, for re-signing.
fn plain_of(g: &Gap) -> PathBuf {
    let plain = g.w.path("plain.airlock");
    if !plain.exists() {
        let mut args = g.w.build_args(&plain, true);
        args.push("--quiet".into());
        assert_ok(&g.w.pack_offline(&g.w.path("store"), &args));
    }
    plain
}

/// The bundle with its files bound for `root` instead, re-signed with the real key.
fn resign_files_root(g: &Gap, root: &Path) -> PathBuf {
    let bytes = resign(&g.w, &plain_of(g), |h| {
        for f in h["files"].as_array_mut().unwrap() {
            f["target"] = serde_json::json!({ "path": root.to_str().unwrap() });
        }
    });
    let name = format!(
        "root-{}.airlock",
        root.file_name().unwrap().to_string_lossy()
    );
    write_variant(&g.w, &name, &bytes)
}

/// Tries, as the attacker, to read every file below `dir` and prints what it could read.
const READ_ALL: &str = r#"
import os, sys, time
root, stop, got = sys.argv[1], sys.argv[2], set()
end = time.time() + 300
while time.time() < end and not os.path.exists(stop):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                with open(os.path.join(d, f), "rb") as fh:
                    if b"DB_PASSWORD" in fh.read(1 << 16):
                        got.add(os.path.join(d, f))
            except OSError:
                pass
print(len(got), *sorted(got))
"#;

/// Waits until `pred` or `limit`.
fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Whether the tree below `dir` holds a file (any depth).
fn has_file(dir: &Path) -> bool {
    walk(dir).iter().any(|p| p.is_file())
}

/// Whether a file over 1 MiB whose path contains `mark` is below `dir`: a blob streaming.
fn has_big_file(dir: &Path, mark: &str) -> bool {
    walk(dir).iter().any(|p| {
        p.to_string_lossy().contains(mark)
            && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 1 << 20)
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn spools_are_private_while_loading_and_after_a_kill_and_swept_next_time() {
    let g = Gap::new(96);
    // A work dir like /var/tmp: everyone may write it.
    let work = g.path("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let models = g.path("models");

    // The attacker reads whatever it can under the work dir during a whole load.
    let stop = g.path("stop-reading");
    let reader = as_nobody(READ_ALL, &[&work, &stop])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut load = g.load_cmd(&models, &work).spawn().unwrap();
    // Kill it while the model's layer streams (its manifest is spooled by then: it comes
    // first in the bundle).
    let streaming = wait_for(Duration::from_secs(60), || {
        has_big_file(&models.join("blobs"), "-partial-airlock-")
    });
    assert!(streaming, "the model layer never started streaming");
    assert!(
        has_file(&work),
        "nothing was spooled under {}",
        work.display()
    );
    let killed_pid = load.id();
    load.kill().unwrap();
    load.wait().unwrap();
    let spools: Vec<PathBuf> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(spools.len(), 1, "{spools:?}");
    let spool = &spools[0];
    assert!(spool
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!(".airlock-spool-{killed_pid}-")));
    assert_eq!(std::fs::metadata(spool).unwrap().mode() & 0o777, 0o700);
    for f in walk(spool) {
        assert_eq!(
            std::fs::metadata(&f).unwrap().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    // A killed load left temp blobs in the models directory: private too.
    let partials: Vec<PathBuf> = walk(&models.join("blobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-partial-airlock-"))
        .collect();
    for p in &partials {
        assert_eq!(std::fs::metadata(p).unwrap().mode() & 0o777, 0o600);
    }
    std::fs::write(&stop, b"").unwrap();
    let out = reader.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("0"),
        "the unprivileged user read decrypted secrets: {said}"
    );

    // The next load removes the dead load's spool and temp blobs, and succeeds.
    assert_ok(&g.load(&models, &work));
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "spool left");
    for p in &partials {
        assert!(!p.exists(), "{} left after the next load", p.display());
    }
}

#[test]
fn extract_is_private_until_done_keeps_secret_modes_and_sweeps_killed_runs() {
    let g = Gap::new(96);
    let parent = g.path("out");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dest = parent.join("x");
    let extract = || {
        let mut c = Command::new("unshare");
        c.arg("-n")
            .arg(unpack_bin())
            .arg("extract")
            .arg(&g.bundle)
            .arg("--trust")
            .arg(g.w.path("pack-keys/airlock.pub"))
            .arg("--identity")
            .arg(g.w.path("host/host.key"))
            .arg("--to")
            .arg(&dest)
            .arg("--quiet");
        c
    };
    let stop = g.path("stop-reading");
    let reader = as_nobody(READ_ALL, &[&parent, &stop])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = extract().spawn().unwrap();
    assert!(wait_for(Duration::from_secs(60), || has_big_file(
        &parent, ""
    )));
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(!dest.exists(), "a killed extract made its destination");
    let temps: Vec<PathBuf> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(temps.len(), 1, "{temps:?}");
    assert_eq!(std::fs::metadata(&temps[0]).unwrap().mode() & 0o777, 0o700);

    // The next extract removes the leftover and completes.
    assert_ok(&extract().output().unwrap());
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["x".to_string()]);
    // The secret's blob keeps the secret's mode; the view too.
    let secret_digest = airlock_bundle::Digest::of(SECRET.as_bytes());
    let blob = dest.join(secret_digest.blob_path());
    assert_eq!(std::fs::metadata(&blob).unwrap().mode() & 0o777, 0o600);
    let view = dest.join(format!(
        "files/path/{}/secret.env",
        g.path("svc").to_str().unwrap().trim_start_matches('/')
    ));
    assert_eq!(std::fs::read_to_string(&view).unwrap(), SECRET);
    assert_eq!(std::fs::metadata(&view).unwrap().mode() & 0o777, 0o600);
    // Everything else is readable as before: the layout is for skopeo and friends.
    assert_eq!(
        std::fs::metadata(dest.join("index.json")).unwrap().mode() & 0o777,
        0o644
    );
    std::fs::write(&stop, b"").unwrap();
    let out = reader.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("0"),
        "the unprivileged user read decrypted secrets: {said}"
    );
}

#[test]
fn inventory_output_is_never_written_through_a_symlink() {
    let base = tempfile::tempdir().unwrap();
    let victim = base.path().join("victim");
    std::fs::write(&victim, VICTIM).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = base.path().join("host.inventory");
    symlink(&victim, &out).unwrap();
    let models = base.path().join("models");
    std::fs::create_dir_all(models.join("blobs")).unwrap();
    let inventory = || {
        Command::new("unshare")
            .arg("-n")
            .arg(unpack_bin())
            .args(["inventory", "--no-engine", "--ollama-models"])
            .arg(&models)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert_refused(&inventory(), 7, &["inventory", "symbolic link"]);
    assert_victim_intact(&victim);
    std::fs::remove_file(&out).unwrap();
    assert_ok(&inventory());
    assert!(std::fs::symlink_metadata(&out).unwrap().is_file());
}
