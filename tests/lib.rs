//! The end-to-end harness: builds the real binaries, starts a real registry with generated
//! images, and runs `airlock-pack` on the connected side and `airlock-unpack` inside
//! `unshare -n` (a network namespace with no network) on the "gap" side. Docker tests run
//! against each [`Engine`]: the system's (classic image store) and a Docker 26 with the
//! containerd image store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use std::io::Read as _;

use airlock_bundle::header::{HEADER_PATH, SIGNATURE_PATH};
use airlock_bundle::sign::SigningKey;
use airlock_bundle::tarfmt;
use airlock_testkit::docker26::Docker26;
use airlock_testkit::{fixtures, ImageSpec, Layer, TestRegistry};
use serde_json::Value;

/// Tests that load into or list the Docker engine take this, so that "the image list is the
/// same before and after" is not disturbed by another test's load.
pub fn docker_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Docker engine the Docker tests run against: each such test body runs for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The machine's engine (Docker 20.10, classic image store), at the default socket or
    /// the `DOCKER_HOST` the tests were started with.
    System,
    /// Docker 26 with the containerd image store, started once per test process on a
    /// socket of its own ([`airlock_testkit::docker26`]).
    Docker26,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::System, Engine::Docker26];

    pub fn name(self) -> &'static str {
        match self {
            Engine::System => "system docker",
            Engine::Docker26 => "docker 26 (containerd store)",
        }
    }

    /// `DOCKER_HOST` for `airlock-unpack`, when it is not the inherited one.
    pub fn host(self) -> Option<String> {
        match self {
            Engine::System => None,
            Engine::Docker26 => Some(Docker26::shared().host()),
        }
    }

    /// The environment that points `airlock-unpack` at this engine.
    pub fn env(self) -> Vec<(&'static str, String)> {
        self.host()
            .map(|h| ("DOCKER_HOST", h))
            .into_iter()
            .collect()
    }

    /// The `docker` CLI talking to this engine.
    pub fn docker(self) -> Command {
        match self {
            Engine::System => Command::new("docker"),
            Engine::Docker26 => Docker26::shared().command(),
        }
    }

    /// `docker ARGS…` on this engine, which must succeed; its stdout.
    pub fn run_docker(self, args: &[&str]) -> String {
        run_ok(self.docker().args(args))
    }

    /// Runs `image` with no network; its stdout.
    pub fn run(self, image: &str) -> String {
        self.run_docker(&["run", "--rm", "--network", "none", image])
    }

    /// Taken by tests that load into or list this engine (see [`docker_lock`]).
    pub fn lock(self) -> MutexGuard<'static, ()> {
        match self {
            Engine::System => docker_lock(),
            Engine::Docker26 => {
                static LOCK: Mutex<()> = Mutex::new(());
                LOCK.lock().unwrap_or_else(|p| p.into_inner())
            }
        }
    }

    /// Whether images are kept in containerd's image store (IDs are manifest digests).
    pub fn containerd_store(self) -> bool {
        self == Engine::Docker26
    }

    /// The ID this engine gives an image: its config digest in the classic store, its
    /// manifest digest in the containerd store.
    pub fn image_id<'a>(self, config: &'a str, manifest: &'a str) -> &'a str {
        if self.containerd_store() {
            manifest
        } else {
            config
        }
    }

    /// Every image ID and tag in the engine, sorted.
    pub fn images(self) -> Vec<String> {
        let out = self.run_docker(&[
            "image",
            "ls",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Removes images by tag or ID (best effort: cleanup).
    pub fn rmi(self, tags: &[&str]) {
        for t in tags {
            let _ = self.docker().args(["rmi", "-f", t]).output();
        }
    }
}

/// Builds the two binaries once per test process, in the profile the tests run in.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let release = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release");
        airlock_testkit::tools::build_binaries(release)
    })
}

pub fn pack_bin() -> PathBuf {
    bin_dir().join("airlock-pack")
}

pub fn unpack_bin() -> PathBuf {
    bin_dir().join("airlock-unpack")
}

/// A registry with fixture images, keys on both sides, a spec and its lock.
#[derive(Debug)]
pub struct World {
    pub registry: TestRegistry,
    pub dir: tempfile::TempDir,
    pub marker: String,
    /// Runs and prints `marker`.
    pub hello: String,
    /// Shares hello's busybox layer, adds one; prints its file.
    pub second: String,
    /// A two-platform index (amd64, arm64) with an attestation entry.
    pub multi: String,
    pub busybox_layer: Layer,
}

impl World {
    pub fn new() -> World {
        let registry = TestRegistry::start();
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("airlock-marker-{:016x}", rand_u64());
        let layers = dir.path().join("layers");
        let busybox = Layer::busybox(&layers);
        let extra = Layer::files(
            &layers,
            &[("marker.txt", format!("second {marker}\n").as_bytes(), 0o644)],
        );
        fixtures::push(
            &registry.addr,
            "e2e/hello:v1",
            &[ImageSpec::new(
                vec![busybox.clone()],
                &["/bin/busybox", "echo", &marker],
            )],
        );
        fixtures::push(
            &registry.addr,
            "e2e/second:v1",
            &[ImageSpec::new(
                vec![busybox.clone(), extra.clone()],
                &["/bin/busybox", "cat", "/marker.txt"],
            )],
        );
        fixtures::push(
            &registry.addr,
            "e2e/multi:v1",
            &[
                ImageSpec::new(
                    vec![busybox.clone()],
                    &["/bin/busybox", "echo", "multi", &marker],
                ),
                ImageSpec::new(
                    vec![busybox.clone(), extra],
                    &["/bin/busybox", "echo", "arm64"],
                )
                .arch("arm64"),
            ],
        );
        let w = World {
            hello: format!("{}/e2e/hello:v1", registry.addr),
            second: format!("{}/e2e/second:v1", registry.addr),
            multi: format!("{}/e2e/multi:v1", registry.addr),
            registry,
            dir,
            marker,
            busybox_layer: busybox,
        };
        w.write_spec(
            &["linux/amd64", "linux/arm64"],
            &[&w.hello, &w.second, &w.multi],
        );
        run_ok(
            Command::new(pack_bin())
                .args(["keygen", "-o"])
                .arg(w.path("pack-keys")),
        );
        run_ok(
            Command::new(unpack_bin())
                .args(["keygen", "-o"])
                .arg(w.path("host")),
        );
        w
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn spec(&self) -> PathBuf {
        self.path("e2e.toml")
    }

    pub fn write_spec(&self, platforms: &[&str], images: &[&str]) {
        let mut s = format!(
            "name = \"e2e\"\nplatforms = [{}]\n",
            platforms
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for i in images {
            s.push_str(&format!("\n[[image]]\nref = \"{i}\"\n"));
        }
        s.push_str(&format!(
            "\n[registries.\"{}\"]\ninsecure = true\n",
            self.registry.addr
        ));
        std::fs::write(self.spec(), s).unwrap();
    }

    /// `airlock-pack ARGS` with this world's cache.
    pub fn pack<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        Command::new(pack_bin())
            .args(args)
            .arg("--cache")
            .arg(self.path("cache"))
            .output()
            .unwrap()
    }

    /// `airlock-pack ARGS` with this world's cache, the models of the Ollama store `store`,
    /// and no network at all.
    pub fn pack_offline<S: AsRef<std::ffi::OsStr>>(
        &self,
        store: &Path,
        args: impl IntoIterator<Item = S>,
    ) -> Output {
        Command::new("unshare")
            .arg("-n")
            .arg(pack_bin())
            .args(args)
            .arg("--cache")
            .arg(self.path("cache"))
            .arg("--ollama-models")
            .arg(store)
            .output()
            .unwrap()
    }

    /// `build SPEC -o OUT --sign-key KEY`, plus `--recipients-file host.pub` unless `plain`:
    /// what every build of this world starts with.
    pub fn build_args(&self, out: &Path, plain: bool) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "build".into(),
            self.spec().into(),
            "-o".into(),
            out.into(),
            "--sign-key".into(),
            self.path("pack-keys/airlock.key").into(),
        ];
        if !plain {
            args.extend([
                "--recipients-file".into(),
                self.path("host/host.pub").into(),
            ]);
        }
        args
    }

    /// Writes the spec for `images` and locks it.
    pub fn lock_images(&self, platforms: &[&str], images: &[&str]) {
        self.write_spec(platforms, images);
        self.lock();
    }

    pub fn lock(&self) {
        let spec = self.spec();
        assert_ok(&self.pack(["lock", spec.to_str().unwrap()]));
    }

    /// Runs `airlock-pack build` for `name` (encrypted to the host unless `plain`).
    pub fn try_build(&self, name: &str, plain: bool) -> (PathBuf, Output) {
        let out = self.path(name);
        let mut args = self.build_args(&out, plain);
        args.push("--quiet".into());
        let o = self.pack(&args);
        (out, o)
    }

    /// Builds `name`, which must succeed.
    pub fn build(&self, name: &str, plain: bool) -> PathBuf {
        let (out, o) = self.try_build(name, plain);
        assert_ok(&o);
        out
    }

    /// `airlock-unpack CMD BUNDLE --trust pack.pub --identity host.key EXTRA…`, run with no
    /// network at all.
    pub fn unpack(&self, cmd: &str, bundle: &Path, extra: &[&str]) -> Output {
        self.unpack_env(cmd, bundle, extra, &[])
    }

    /// An anti-rollback record of its own for one load (`AIRLOCK_STATE_DIR`): for tests that
    /// load re-signed variants of one bundle (one name and time, other content) and are about
    /// something else. [`World::unpack`] keeps one record per world.
    pub fn fresh_state_dir(&self) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.path(&format!("airlock-state-{n}"))
    }

    /// [`World::unpack`] against `engine` (`DOCKER_HOST` set for it).
    pub fn unpack_on(&self, engine: Engine, cmd: &str, bundle: &Path, extra: &[&str]) -> Output {
        self.unpack_on_env(engine, cmd, bundle, extra, &[])
    }

    /// [`World::unpack_env`] against `engine`; `env` may still override `DOCKER_HOST`.
    pub fn unpack_on_env(
        &self,
        engine: Engine,
        cmd: &str,
        bundle: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let host = engine.env();
        let mut all: Vec<(&str, &str)> = host.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(env);
        self.unpack_env(cmd, bundle, extra, &all)
    }

    /// [`World::unpack`] with extra environment variables.
    pub fn unpack_env(
        &self,
        cmd: &str,
        bundle: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut c = Command::new("unshare");
        // Each world has its own anti-rollback record and no policy file, unless a test
        // says otherwise: loads in one test must not decide what another may load.
        c.env("AIRLOCK_STATE_DIR", self.path("airlock-state"))
            .env_remove("AIRLOCK_POLICY");
        c.envs(env.iter().copied());
        c.arg("-n")
            .arg(unpack_bin())
            .arg(cmd)
            .arg(bundle)
            .arg("--trust")
            .arg(self.path("pack-keys/airlock.pub"))
            .arg("--identity")
            .arg(self.path("host/host.key"))
            .args(extra)
            .env_remove("AIRLOCK_TRUST_DIR");
        c.output().unwrap()
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "command failed: {}", text(o));
}

pub fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert_ok(&o);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Decrypts `bundle` into `out` with the real `age` CLI and `identity`.
pub fn age_decrypt(identity: &Path, bundle: &Path, out: &Path) {
    run_ok(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(identity)
            .arg("-o")
            .arg(out)
            .arg(bundle),
    );
}

/// Every image ID and tag in the system engine, sorted ([`Engine::images`]).
pub fn docker_images() -> Vec<String> {
    Engine::System.images()
}

/// Removes images from the system engine by tag (best effort: cleanup).
pub fn docker_rmi(tags: &[&str]) {
    Engine::System.rmi(tags)
}

/// The unprivileged user the gap-host attack tests act as (through `setpriv`).
pub const NOBODY: u32 = 65534;

/// Gives `p` and everything below it to [`NOBODY`], as a directory another user owns.
pub fn chown_nobody(p: &Path) {
    let o = Command::new("chown")
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(p)
        .output()
        .unwrap();
    assert_ok(&o);
}

/// Asserts an exit code and that stderr mentions every needle.
pub fn assert_refused(o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "wrong exit code: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {}", text(o));
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

pub fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

pub fn write_variant(w: &World, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = w.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Rewrites a plain bundle with its header changed by `f` and re-signed with the real key:
/// a validly signed bundle from a newer or buggy writer.
pub fn resign(w: &World, plain: &Path, f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut archive = tar::Archive::new(std::fs::File::open(plain).unwrap());
    let mut out = Vec::new();
    let key = SigningKey::load(&w.path("pack-keys/airlock.key"), None).unwrap();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        match path.as_str() {
            HEADER_PATH => {
                let mut v: Value = serde_json::from_slice(&data).unwrap();
                f(&mut v);
                let bytes = serde_json::to_vec_pretty(&v).unwrap();
                tarfmt::write_small(&mut out, HEADER_PATH, &bytes).unwrap();
                tarfmt::write_small(&mut out, SIGNATURE_PATH, key.sign(&bytes).as_bytes()).unwrap();
            }
            SIGNATURE_PATH => {}
            p => tarfmt::write_small(&mut out, p, &data).unwrap(),
        }
    }
    tarfmt::write_end(&mut out).unwrap();
    out
}

/// Every file and directory under `root`: mode, and sha256 for files.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if meta.is_dir() {
            out.insert(rel, format!("{mode:o} dir"));
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            let d = airlock_bundle::Digest::of(&std::fs::read(&p).unwrap());
            out.insert(rel, format!("{mode:o} {d}"));
        }
    }
    out
}
