//! A throwaway containerd: Debian's `containerd` (1.6) with its own root, state dir and
//! socket under a temp dir, the CRI plugin off (it is not needed and slows the start), killed
//! when dropped; and `ctr` against it. Tests never touch the containerd Docker runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TestContainerd {
    pub socket: PathBuf,
    /// `overlayfs` where this kernel mounts it, else `native`.
    pub snapshotter: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl TestContainerd {
    pub fn start() -> TestContainerd {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                sock = socket.display(),
            ),
        )
        .expect("write containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd must be installed (apt-get install containerd)");
        let snapshotter = if overlay_mounts(dir.path()) {
            "overlayfs"
        } else {
            "native"
        }
        .to_string();
        let mut c = TestContainerd {
            socket,
            snapshotter,
            child,
            dir,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() && self.ctr("default", &["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up:\n{}", self.log());
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK -n NS ARGS`.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", namespace])
            .args(args)
            .output()
            .expect("ctr must be installed (apt-get install containerd)")
    }

    /// [`TestContainerd::ctr`] that must succeed; its stdout.
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> String {
        let o = self.ctr(namespace, args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The first column of `ctr … ls -q`-style listings: image names, content digests,
    /// snapshot keys.
    pub fn names(&self, namespace: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = self
            .ctr_ok(namespace, args)
            .lines()
            .skip_while(|l| l.starts_with("REF") || l.starts_with("DIGEST") || l.starts_with("KEY"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Makes the garbage collector run now, so tests see what survives without waiting for
    /// its scheduler: a lease of our own is deleted with `--sync`, which collects everything
    /// no image, lease or label reaches before it returns.
    pub fn collect_garbage(&self, namespace: &str) {
        let out = self.ctr_ok(namespace, &["leases", "create"]);
        let id = out
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("ctr leases create printed no id: {out}"))
            .to_string();
        self.ctr_ok(namespace, &["leases", "rm", "--sync", &id]);
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted (an interrupted unpack); unmount what lies under
        // our root so the temp dir can go.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().to_string_lossy().into_owned();
            for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if m.starts_with(&root) {
                    let _ = Command::new("umount").arg(m).status();
                }
            }
        }
    }
}

/// Whether an overlay mount works here (it does not in every sandbox).
fn overlay_mounts(dir: &Path) -> bool {
    let p = dir.join("overlay-probe");
    for d in ["l", "u", "w", "m"] {
        if std::fs::create_dir_all(p.join(d)).is_err() {
            return false;
        }
    }
    let ok = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            p.join("l").display(),
            p.join("u").display(),
            p.join("w").display()
        ))
        .arg(p.join("m"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("umount").arg(p.join("m")).status();
    }
    let _ = std::fs::remove_dir_all(&p);
    ok
}
