//! A throwaway OCI registry: Debian's `docker-registry` on a free 127.0.0.1 port with its
//! storage in a temp dir, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TestRegistry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(None, None)
    }

    /// A registry that requires HTTP basic auth (htpasswd with a bcrypt hash).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((user, password)), None)
    }

    /// A registry with this `auth:` section of the configuration (e.g. `auth: token: …`).
    pub fn start_with_auth_yaml(auth_yaml: &str) -> TestRegistry {
        Self::start_with(None, Some(auth_yaml))
    }

    fn start_with(auth: Option<(&str, &str)>, auth_yaml: Option<&str>) -> TestRegistry {
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
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
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
            };
            if reg.wait_ready() {
                return reg;
            }
        }
        panic!("docker-registry did not come up");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if matches!(http_status(&self.addr, "/v2/"), Some(200 | 401)) {
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
