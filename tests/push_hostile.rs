//! `airlock-unpack push` against a hostile registry: a small HTTP server on loopback,
//! written out by hand in the test because what it does is the attack (no real registry
//! answers like this). It asks for credentials to be sent to a token service on another
//! port, and answers an upload with an endless error body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_tests::*;

/// One request as the server saw it: the request line and the headers, lowercased names.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request's line and headers (and skips its body, if it says it has one).
fn read_request(conn: &TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let seen = Seen {
        line: line.trim().to_string(),
        headers,
    };
    let body: u64 = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut r.take(body), &mut std::io::sink()).ok()?;
    Some(seen)
}

/// Serves every connection on `listener` in a thread of its own, one request each
/// (`Connection: close`), recording what it saw; `answer` writes the response.
fn serve(
    listener: TcpListener,
    answer: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static,
) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (log, answer) = (log.clone(), answer.clone());
            std::thread::spawn(move || {
                if let Some(req) = read_request(&conn) {
                    log.lock().unwrap().push(req.clone());
                    answer(&req, &mut conn);
                }
            });
        }
    });
    seen
}

fn auth_file(w: &World, registry: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let auth = w.path("auth.json");
    let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-password");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{token}"}}}}}}"#),
    )
    .unwrap();
    auth
}

/// `airlock-unpack push BUNDLE --registry REGISTRY --insecure`, under `/usr/bin/time` so
/// that its peak RSS (KiB) is known.
fn push(w: &World, bundle: &Path, registry: &str, auth: &Path) -> (Output, u64, Duration) {
    let rss = w.path("maxrss");
    let started = Instant::now();
    let o = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(unpack_bin())
        .arg("push")
        .arg(bundle)
        .args(["--registry", registry, "--insecure", "--quiet", "--trust"])
        .arg(w.path("pack-keys/airlock.pub"))
        .env_remove("AIRLOCK_TRUST_DIR")
        .env("REGISTRY_AUTH_FILE", auth)
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let kib = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {}", text(&o)));
    (o, kib, took)
}

/// A 401 that sends the token request to another port of the same host: the password must
/// not go there (nor anywhere else), and push stops with exit 9 naming the realm.
#[test]
fn a_token_realm_on_another_port_gets_no_credentials() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("plain.airlock", true);

    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", elsewhere.local_addr().unwrap());
    let stolen = serve(elsewhere, |_, conn| {
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"token\":\"stolen\"}",
        );
    });
    let registry = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = registry.local_addr().unwrap().to_string();
    let challenge = format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"evil\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let asked = serve(registry, move |_, conn| {
        let _ = conn.write_all(challenge.as_bytes());
    });

    let auth = auth_file(&w, &addr);
    let (o, _, _) = push(&w, &bundle, &addr, &auth);
    assert_refused(&o, 9, &[&addr, &realm, "not at the registry's origin"]);
    assert!(
        !asked.lock().unwrap().is_empty(),
        "the registry was never asked: {}",
        text(&o)
    );
    let stolen = stolen.lock().unwrap();
    assert!(
        stolen.iter().all(|r| r.header("authorization").is_none()),
        "credentials were sent to the other port: {stolen:?}"
    );
    assert!(
        stolen.is_empty(),
        "push contacted a host:port it was not given: {stolen:?}"
    );
    for r in asked.lock().unwrap().iter() {
        assert!(
            r.header("authorization").is_none(),
            "credentials sent to the registry unasked: {r:?}"
        );
    }
}

/// An upload session refused with a 1 GiB error body, streamed as long as the client reads:
/// push reads a few KiB of it, shows them escaped, and fails at once with exit 9 in bounded
/// memory.
#[test]
fn an_endless_error_body_is_read_only_a_few_kib() {
    const BODY: u64 = 1 << 30;
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("plain.airlock", true);

    let registry = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = registry.local_addr().unwrap().to_string();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let seen = serve(registry, move |req, conn| {
        if !req.line.starts_with("POST ") {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        // The body starts like distribution's and carries a terminal escape; the rest is
        // filler, made as it is sent.
        let start =
            b"{\"errors\":[{\"code\":\"DENIED\",\"message\":\"no \x1b]0;PWNED\x07\x1b[2J\"}]}";
        let mut left = BODY;
        let _ = conn.write_all(start);
        left -= start.len() as u64;
        let filler = [b' '; 64 << 10];
        while left > 0 {
            let n = filler.len().min(left as usize);
            if conn.write_all(&filler[..n]).is_err() {
                break;
            }
            left -= n as u64;
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });

    let auth = auth_file(&w, &addr);
    let (o, peak_kib, took) = push(&w, &bundle, &addr, &auth);
    eprintln!("{}\npeak RSS {peak_kib} KiB, {took:?}", text(&o));
    assert_refused(&o, 9, &[&addr, "HTTP 400", "DENIED", "truncated"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J"),
        "the body is not shown escaped: {}",
        text(&o)
    );
    assert!(
        !err.contains('\u{1b}'),
        "a raw escape reached stderr: {}",
        text(&o)
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.line.starts_with("POST ")),
        "no upload was started: {}",
        text(&o)
    );
    assert!(
        peak_kib < 64 << 10,
        "peak RSS {peak_kib} KiB reading an error body"
    );
    assert!(took < Duration::from_secs(30), "push took {took:?}");
    let read = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read < 64 << 20,
        "{read} bytes of the error body were taken off the socket"
    );
}
