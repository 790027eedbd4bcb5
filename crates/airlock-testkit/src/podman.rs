//! A throwaway Podman engine: Debian's `podman` with private storage (`--root`, `--runroot`
//! in a temp dir) serving its Docker-compatible API on a temp unix socket
//! (`podman system service --time=0`), killed when dropped, plus its CLI on the same storage
//! to check what the engine stored. Rootful, like `/run/podman/podman.sock`.
//!
//! Containers cannot start under some sandboxes' rlimits (runc's `setrlimit` is refused), so
//! tests check stored content (`image inspect`, `volume export`, `save`) rather than run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `podman` with the storage of `root` (`root/storage`, `root/run`) and `driver`.
pub fn cli(root: &Path, driver: &str) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", driver])
        // No registries.conf search or short-name prompt can get in the way.
        .env("CONTAINERS_REGISTRIES_CONF", root.join("registries.conf"))
        .stdin(Stdio::null());
    c
}

#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
    child: Child,
    pub socket: PathBuf,
}

impl Podman {
    /// Starts the service and waits until `GET /_ping` answers.
    pub fn start() -> Podman {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("registries.conf"), "").unwrap();
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = cli(dir.path(), "overlay")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman must be installed (apt-get install podman)");
        let mut p = Podman { dir, child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.ping() {
            if let Ok(Some(s)) = p.child.try_wait() {
                panic!("podman system service exited with {s}: {}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "podman system service did not answer on {}: {}",
                p.socket.display(),
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// `DOCKER_HOST` for this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `podman` on this engine's storage.
    pub fn cli(&self) -> Command {
        cli(self.dir.path(), "overlay")
    }

    /// Runs `podman ARGS` on this engine's storage, panicking if it fails; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        crate::tools::run(self.cli().args(args))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The overlay driver mounts its storage (and the layers of created containers);
        // those mounts would keep the temp dir from being removed.
        unmount_below(self.dir.path());
    }
}

/// Unmounts (lazily, deepest first) every mount point below `dir`: best effort.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).output();
    }
}
