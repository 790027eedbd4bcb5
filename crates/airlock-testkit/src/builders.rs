//! Fixture images made by real builders, not by our own generator: `docker build` and
//! `docker push` (Docker schema 2, gzip) with the system's Docker engine, and `podman build`
//! and `podman push` (OCI manifests, a zstd-compressed layer, a two-architecture index made
//! with `podman manifest`), all `FROM scratch` with the static busybox (no `RUN`, so the
//! arm64 image needs no emulation).
//!
//! Building is slow, so it happens once per test process ([`built`]): the builders push into
//! a registry of their own, whose content `skopeo copy --all --preserve-digests` keeps as
//! exact copies (`dir:` directories, every byte the builder pushed); [`Built::publish`]
//! copies them, still byte for byte, into each test's registry. The Docker engine ends as it
//! started: the built images are removed from it after the push.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::tools::run;
use crate::TestRegistry;

/// One built image, as pushed by its builder.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `repo:tag` it is published under (without a registry).
    pub name: &'static str,
    /// Its exact copy (`skopeo` `dir:` transport).
    pub dir: PathBuf,
    /// The top manifest (or index) digest, as the builder's push gave it.
    pub digest: String,
    /// The text a container of it would print (`CMD`), for content checks.
    pub marker: String,
}

/// Every builder-made fixture.
#[derive(Debug)]
pub struct Built {
    /// `docker build` + `docker push`: a Docker schema 2 manifest, gzip layer.
    pub docker: BuiltImage,
    /// `podman build --format oci` + `podman push`: an OCI manifest, gzip layer.
    pub podman: BuiltImage,
    /// Like `podman`, with one more layer of its own pushed `--compression-format zstd`.
    pub zstd: BuiltImage,
    /// `podman manifest create/add` + `push --all`: an OCI index of linux/amd64 and
    /// linux/arm64.
    pub multi: BuiltImage,
}

/// The fixtures, built on first use. The first call builds and removes images in the
/// system Docker engine: call it where tests that compare the engine's image list cannot
/// run at the same time (under the tests' Docker lock).
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

impl Built {
    /// The images in the order tests list them.
    pub fn all(&self) -> [&BuiltImage; 4] {
        [&self.docker, &self.podman, &self.zstd, &self.multi]
    }

    /// Copies every image, byte for byte, into `registry` (`HOST:PORT`, plain HTTP).
    pub fn publish(&self, registry: &str) {
        for i in self.all() {
            i.publish(registry);
        }
    }
}

impl BuiltImage {
    /// `registry/name`.
    pub fn reference(&self, registry: &str) -> String {
        format!("{registry}/{}", self.name)
    }

    /// Copies this image, byte for byte, to `registry/name`.
    pub fn publish(&self, registry: &str) {
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("dir:{}", self.dir.display()),
            &format!("docker://{}", self.reference(registry)),
        ]));
    }
}

/// Where the process's copies live: a directory per process under the system temp dir,
/// those of dead test processes removed first.
fn store() -> PathBuf {
    let base = std::env::temp_dir().join("airlock-testkit-built");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A build context: the static busybox, `extra` files, and a Dockerfile.
fn context(dir: &Path, extra: &[(&str, &str)], cmd: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(crate::tools::busybox_path(), dir.join("busybox")).unwrap();
    let mut df = String::from("FROM scratch\nCOPY busybox /bin/busybox\n");
    for (name, content) in extra {
        std::fs::write(dir.join(name), content).unwrap();
        df.push_str(&format!("COPY {name} /{name}\n"));
    }
    df.push_str(&format!(
        "CMD [{}]\n",
        cmd.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(",")
    ));
    std::fs::write(dir.join("Dockerfile"), df).unwrap();
    dir.to_path_buf()
}

/// The digest of what `reference` (in a plain-HTTP registry) serves.
fn remote_digest(reference: &str) -> String {
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    airlock_bundle::Digest::of(raw.as_bytes()).to_string()
}

/// Keeps an exact copy of `reference` in `dir`.
fn keep(reference: &str, dir: &Path, name: &'static str, marker: String) -> BuiltImage {
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", dir.display()),
    ]));
    BuiltImage {
        name,
        dir: dir.to_path_buf(),
        digest: remote_digest(reference),
        marker,
    }
}

fn build() -> Built {
    let store = store();
    let registry = TestRegistry::start();
    let reg = registry.addr.clone();
    let nonce = format!("{:016x}", rand::random::<u64>());

    // Docker: build, push, and leave the engine as it was.
    let marker = format!("docker-built {nonce}");
    let ctx = context(
        &store.join("ctx-docker"),
        &[("marker.txt", &format!("{marker}\n"))],
        &["/bin/busybox", "cat", "/marker.txt"],
    );
    let tag = format!("{reg}/built/docker:v1");
    let built = Command::new("docker")
        .args(["build", "--quiet", "--no-cache", "-t", &tag])
        .arg(&ctx)
        .output();
    let pushed = built.as_ref().map(|o| o.status.success()).unwrap_or(false)
        && Command::new("docker")
            .args(["push", &tag])
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(pushed, "docker build/push of {tag} failed: {built:?}");
    let docker = keep(&tag, &store.join("docker"), "built/docker:v1", marker);

    // Podman: private storage (vfs: no mounts to leave behind).
    let root = store.join("podman");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("registries.conf"), "").unwrap();
    let podman = |args: &[&str]| run(crate::podman::cli(&root, "vfs").args(args));
    let marker = format!("podman-built {nonce}");
    let ctx = context(
        &store.join("ctx-podman"),
        &[("marker.txt", &format!("{marker}\n"))],
        &["/bin/busybox", "cat", "/marker.txt"],
    );
    let ctx = ctx.to_str().unwrap();
    podman(&[
        "build",
        "--quiet",
        "--format",
        "oci",
        "-t",
        "localhost/built/podman:v1",
        ctx,
    ]);
    let tag = format!("{reg}/built/podman:v1");
    podman(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "localhost/built/podman:v1",
        &tag,
    ]);
    let podman_img = keep(&tag, &store.join("podman-img"), "built/podman:v1", marker);

    // zstd: podman 4.3 compresses with zstd only layers it has not pushed before, so this
    // image has a layer of its own on top of the (gzip, already pushed) busybox one.
    let marker = format!("zstd-built {nonce}");
    let ctx = context(
        &store.join("ctx-zstd"),
        &[("zstd.txt", &format!("{marker}\n"))],
        &["/bin/busybox", "cat", "/zstd.txt"],
    );
    let ctx = ctx.to_str().unwrap();
    podman(&[
        "build",
        "--quiet",
        "--format",
        "oci",
        "-t",
        "localhost/built/zstd:v1",
        ctx,
    ]);
    let tag = format!("{reg}/built/zstd:v1");
    podman(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "--compression-format",
        "zstd",
        "localhost/built/zstd:v1",
        &tag,
    ]);
    let zstd = keep(&tag, &store.join("zstd"), "built/zstd:v1", marker);

    // Two architectures: the arm64 build must not come from the amd64 one's cache.
    let marker = format!("multi-built {nonce}");
    let ctx = context(
        &store.join("ctx-multi"),
        &[("multi.txt", &format!("{marker}\n"))],
        &["/bin/busybox", "cat", "/multi.txt"],
    );
    let ctx = ctx.to_str().unwrap();
    for arch in ["amd64", "arm64"] {
        podman(&[
            "build",
            "--quiet",
            "--no-cache",
            "--format",
            "oci",
            "--arch",
            arch,
            "-t",
            &format!("localhost/built/multi-{arch}:v1"),
            ctx,
        ]);
    }
    podman(&["manifest", "create", "localhost/built/multi:v1"]);
    for arch in ["amd64", "arm64"] {
        podman(&[
            "manifest",
            "add",
            "localhost/built/multi:v1",
            &format!("containers-storage:localhost/built/multi-{arch}:v1"),
        ]);
    }
    let tag = format!("{reg}/built/multi:v1");
    podman(&[
        "manifest",
        "push",
        "--quiet",
        "--all",
        "--tls-verify=false",
        "localhost/built/multi:v1",
        &format!("docker://{tag}"),
    ]);
    let multi = keep(&tag, &store.join("multi"), "built/multi:v1", marker);
    // The builder's storage is not needed any more; the copies are.
    let _ = std::fs::remove_dir_all(&root);
    drop(registry);
    Built {
        docker,
        podman: podman_img,
        zstd,
        multi,
    }
}
