//! A second Docker engine for tests and bench: Docker 26.1 (Debian 13's `docker.io`) with the
//! containerd image store, started beside the machine's own engine on a private socket.
//!
//! Nothing is installed: the package is fetched once with `apt-get download` through a
//! private apt configuration that adds only the `trixie` suite, unpacked with `dpkg-deb -x`
//! into `$CARGO_TARGET_DIR/engines/docker-26` (so a fresh clone fetches once, and every
//! later test run and CI step reuses it), and its `dockerd` runs with private data, exec and
//! socket paths under the temp dir. That `dockerd` starts its own managed `containerd` (the
//! host's `containerd` binary from PATH, with a config of its own), so the system engine and
//! its containerd are never touched.
//!
//! A daemon must not outlive the test process that started it, and a static's `Drop` never
//! runs: each `dockerd` is started through `setpriv --pdeathsig TERM` from a keeper thread
//! that lives as long as the daemon should, so the daemon is told to shut down (cleanly:
//! it unmounts its data root and stops its containerd) when its owner goes away however it
//! goes. Run dirs whose owner died anyway are removed by the next start.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The Debian 13 package the engine comes from.
const PACKAGE: &str = "docker.io";
/// What `dockerd --version` must say, so that a changed suite cannot swap the engine the
/// tests claim to cover.
const VERSION_PREFIX: &str = "Docker version 26.";
/// The daemon configuration: the containerd image store, no bridge and no iptables (the
/// system engine owns the host's networking; containers here run with `--network none`),
/// and the `native` snapshotter, which needs no overlayfs.
const DAEMON_JSON: &str = r#"{"features":{"containerd-snapshotter":true},"bridge":"none","iptables":false,"ip6tables":false,"storage-driver":"native"}"#;
/// Prefix of the per-daemon run dirs in the temp dir: `PREFIX<owner pid>-<n>`.
const RUN_PREFIX: &str = "airlock-docker26-";

/// A running Docker 26 daemon with the containerd image store.
#[derive(Debug)]
pub struct Docker26 {
    run: PathBuf,
    pid: u32,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    keeper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where the unpacked engine is kept: `$CARGO_TARGET_DIR/engines/docker-26` (see
/// [`crate::trixie`]).
pub fn cache_dir() -> PathBuf {
    crate::trixie::cache_dir("docker-26")
}

/// The unpacked package (its `usr/sbin/dockerd`), fetching it first when missing, once
/// for all parallel callers (see [`crate::trixie::fetch`]).
pub fn fetch() -> Result<PathBuf, String> {
    crate::trixie::fetch(
        "docker-26",
        &[PACKAGE],
        |root| dockerd(root).is_file(),
        |root| {
            let version = crate::trixie::checked(Command::new(dockerd(root)).arg("--version"))?;
            if version.starts_with(VERSION_PREFIX) {
                Ok(())
            } else {
                Err(format!(
                    "{PACKAGE}/{} says {:?}, expected {VERSION_PREFIX}…",
                    crate::trixie::SUITE,
                    version.trim()
                ))
            }
        },
    )
}

fn dockerd(root: &Path) -> PathBuf {
    root.join("usr/sbin/dockerd")
}

impl Docker26 {
    /// One daemon for the whole test process, started on first use. It is told to stop when
    /// the process exits (see the module docs).
    pub fn shared() -> &'static Docker26 {
        static SHARED: OnceLock<Docker26> = OnceLock::new();
        SHARED.get_or_init(Docker26::start)
    }

    /// A daemon of its own, stopped when dropped (or when the process exits).
    pub fn start() -> Docker26 {
        let root = fetch().unwrap_or_else(|e| panic!("cannot fetch Docker 26: {e}"));
        remove_stale_runs();
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = std::env::temp_dir().join(format!("{RUN_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        for d in ["data", "exec"] {
            std::fs::create_dir_all(run.join(d)).expect("Docker 26 run dir");
        }
        std::fs::write(run.join("daemon.json"), DAEMON_JSON).expect("daemon.json");
        let log = std::fs::File::create(run.join("dockerd.log")).expect("dockerd.log");
        let path = format!(
            "{}:{}:{}",
            root.join("usr/sbin").display(),
            root.join("usr/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "TERM", "--"])
            .arg(dockerd(&root))
            .arg("--config-file")
            .arg(run.join("daemon.json"))
            .arg("--data-root")
            .arg(run.join("data"))
            .arg("--exec-root")
            .arg(run.join("exec"))
            .arg("--pidfile")
            .arg(run.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", run.join("docker.sock").display()))
            .env("PATH", path)
            // Never the system engine's settings.
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);

        // The parent-death signal fires when the *thread* that started the daemon ends, so
        // a keeper thread starts it and lives until the daemon is to stop.
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let sock = run.join("docker.sock");
        let run_for_keeper = run.clone();
        let keeper = std::thread::Builder::new()
            .name("docker26-keeper".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot run setpriv/dockerd: {e}")));
                        return;
                    }
                };
                let ready = wait_ready(&mut child, &sock);
                let failed = ready.is_err();
                let _ = ready_tx.send(ready.map(|()| child.id()));
                if !failed {
                    // Until told to stop; for the shared daemon, until the process exits.
                    let _ = stop_rx.recv();
                }
                stop(&mut child);
                let _ = std::fs::remove_dir_all(&run_for_keeper);
            })
            .expect("keeper thread");
        match ready_rx.recv() {
            Ok(Ok(pid)) => Docker26 {
                run,
                pid,
                stop: Mutex::new(Some(stop_tx)),
                keeper: Mutex::new(Some(keeper)),
            },
            Ok(Err(e)) => {
                let _ = keeper.join();
                panic!("Docker 26 did not start: {e}")
            }
            Err(_) => panic!("Docker 26 keeper thread ended"),
        }
    }

    /// `unix://…`, for `DOCKER_HOST` and `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.run.join("docker.sock").display())
    }

    /// The socket of the containerd this daemon started and manages (for `ctr --address`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.run.join("exec/containerd/containerd.sock")
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The system `docker` CLI talking to this daemon.
    pub fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.host()).env_remove("DOCKER_HOST");
        c
    }

    /// `docker -H HOST ARGS…`, which must succeed; its stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        crate::tools::run(self.command().args(args))
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Docker26 {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        if let Some(k) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = k.join();
        }
    }
}

/// Waits for `GET /_ping` to answer 200; fails with the daemon's log if it exits or takes
/// more than a minute.
fn wait_ready(child: &mut Child, sock: &Path) -> Result<(), String> {
    let log = || {
        let p = sock.with_file_name("dockerd.log");
        let s = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dockerd exited with {status}:\n{}", log()));
        }
        if ping(sock) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(child);
    Err(format!(
        "dockerd did not answer /_ping within 60 s:\n{}",
        log()
    ))
}

fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

/// SIGTERM (dockerd then unmounts its data root and stops its containerd), SIGKILL after
/// 30 s.
fn stop(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes the run dirs of test processes that are gone and whose daemon is gone too (a
/// daemon killed without its clean shutdown leaves its data root mounted: unmount first).
fn remove_stale_runs() {
    let tmp = std::env::temp_dir();
    let Ok(rd) = std::fs::read_dir(&tmp) else {
        return;
    };
    let alive = |pid: &str| !pid.is_empty() && Path::new("/proc").join(pid).exists();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(RUN_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        let run = e.path();
        let daemon = std::fs::read_to_string(run.join("docker.pid")).unwrap_or_default();
        if alive(owner) || alive(daemon.trim()) {
            continue;
        }
        let _ = Command::new("umount")
            .arg(run.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&run);
    }
}
