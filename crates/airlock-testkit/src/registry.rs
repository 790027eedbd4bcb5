//! A throwaway OCI registry: Debian's `docker-registry` on a free 127.0.0.1 port with its
//! storage in a temp dir (or another registry's, to serve the same content over TLS),
//! killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TestRegistry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
    storage: PathBuf,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(None, None, None)
    }

    /// A registry serving HTTPS with `pki`'s `server` certificate, requiring a client
    /// certificate signed by its CA when `mtls`, on `storage`'s content when given (the
    /// storage of a plain registry images were pushed to: see [`TestRegistry::storage`]).
    pub fn start_tls(
        pki: &crate::tls::TestPki,
        server: crate::tls::ServerCert,
        mtls: bool,
        storage: Option<&Path>,
    ) -> TestRegistry {
        Self::start_with(None, None, Some((pki.http_yaml(server, mtls), storage)))
    }

    /// Where this registry keeps its content.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// A registry that requires HTTP basic auth (htpasswd with a bcrypt hash).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((user, password)), None, None)
    }

    /// A registry with this `auth:` section of the configuration (e.g. `auth: token: …`).
    pub fn start_with_auth_yaml(auth_yaml: &str) -> TestRegistry {
        Self::start_with(None, Some(auth_yaml), None)
    }

    fn start_with(
        auth: Option<(&str, &str)>,
        auth_yaml: Option<&str>,
        tls: Option<(String, Option<&Path>)>,
    ) -> TestRegistry {
        // A free port from the kernel can be taken by another process before the registry
        // binds it: try a few times.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            let storage = match &tls {
                Some((_, Some(s))) => s.to_path_buf(),
                _ => dir.path().join("data"),
            };
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            );
            if let Some((http_tls, _)) = &tls {
                yaml.push_str(http_tls);
            }
            if let Some((user, password)) = auth {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 4).unwrap();
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: airlock-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            if let Some(a) = auth_yaml {
                yaml.push_str(a);
            }
            std::fs::write(&config, yaml).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry must be installed (apt-get install docker-registry)");
            let mut reg = TestRegistry {
                addr,
                child,
                _dir: dir,
                storage,
            };
            // Plain HTTP to an HTTPS port gets Go's 400: the server is up.
            if reg.wait_ready(if tls.is_some() { 400 } else { 200 }) {
                return reg;
            }
        }
        panic!("docker-registry did not come up");
    }

    fn wait_ready(&mut self, up: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if matches!(http_status(&self.addr, "/v2/"), Some(s) if s == up || s == 401) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// Status code of a plain HTTP/1.0 GET (enough to probe a loopback registry).
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
