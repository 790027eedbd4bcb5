//! [`RedirectRegistry`]: a loopback stand-in for registry.ollama.ai. Its front serves the
//! model's manifest (optionally behind basic auth) and answers blob requests with a 307 to a
//! second "CDN" listener, which serves blobs with Range support; every request is recorded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use airlock_bundle::hashing::{copy_large, COPY_BUF};
use airlock_bundle::Digest;

use super::OllamaModel;
use crate::http::{basic_token, read_head};

/// Which listener of a [`RedirectRegistry`] saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The registry front: manifests, and 307s for blobs.
    Front,
    /// The "CDN" the 307s point to.
    Blobs,
}

/// One request as a [`RedirectRegistry`] listener saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub listener: Listener,
    pub method: String,
    /// The request target without its query (`/blob/sha256:<hex>`, not `…?sig=x`).
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    log: Mutex<Vec<Recorded>>,
    repository: String,
    tag: String,
    manifest: Vec<u8>,
    digest: Digest,
    blobs: HashMap<Digest, (PathBuf, u64)>,
    /// The base64 token the front wants after `Basic `.
    auth: Option<String>,
    blobs_addr: String,
    /// Answer every blob GET with the whole blob (200), like a server without `Range`.
    ignore_ranges: AtomicBool,
}

/// A loopback Ollama-style registry for one model, to test redirects and auth. The front
/// serves `GET /v2/<repo>/manifests/<tag or digest>` (raw bytes, `Content-Type: text/plain`
/// as registry.ollama.ai sends, plus `Docker-Content-Digest`) and answers
/// `GET /v2/<repo>/blobs/<digest>` with a 307 to `http://<blobs>/blob/<digest>?sig=x`; the
/// blobs listener serves the files with `Range` support and never asks for credentials,
/// like a presigned CDN URL. With `auth`, the front wants `Authorization: Basic …` on
/// every request and otherwise answers 401. Unknown paths are 404; every request on
/// either listener is recorded. Both listeners stop when this is dropped.
#[derive(Debug)]
pub struct RedirectRegistry {
    /// "127.0.0.1:PORT" of the registry front.
    pub front: String,
    /// "127.0.0.1:PORT" of the blob listener the redirects point to.
    pub blobs: String,
    shared: Arc<Shared>,
    accept_threads: Vec<JoinHandle<()>>,
}

impl RedirectRegistry {
    pub fn start(
        model: &OllamaModel,
        repository: &str,
        tag: &str,
        auth: Option<(&str, &str)>,
    ) -> RedirectRegistry {
        let front_l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let blobs_l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let front = front_l.local_addr().unwrap().to_string();
        let blobs = blobs_l.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            repository: repository.into(),
            tag: tag.into(),
            manifest: model.manifest.clone(),
            digest: model.digest,
            blobs: model
                .blobs()
                .into_iter()
                .map(|b| (b.digest, (b.path.clone(), b.size)))
                .collect(),
            auth: auth.map(|(u, p)| basic_token(u, p)),
            blobs_addr: blobs.clone(),
            ignore_ranges: AtomicBool::new(false),
        });
        let accept_threads = [(front_l, Listener::Front), (blobs_l, Listener::Blobs)]
            .into_iter()
            .map(|(l, which)| {
                let shared = shared.clone();
                std::thread::spawn(move || accept_loop(l, which, shared))
            })
            .collect();
        RedirectRegistry {
            front,
            blobs,
            shared,
            accept_threads,
        }
    }

    /// From now on, behave like a server that does not support `Range` (or stop again).
    pub fn ignore_ranges(&self, on: bool) {
        self.shared.ignore_ranges.store(on, Ordering::SeqCst);
    }

    /// Every request so far, in the order they were read.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for RedirectRegistry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // `accept` has no timeout: a connection of our own wakes each loop to see the flag.
        for addr in [&self.front, &self.blobs] {
            let _ = TcpStream::connect(addr);
        }
        for t in self.accept_threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, which: Listener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            // A client that connects and says nothing must not pin the thread forever.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = serve(&shared, which, stream);
        });
    }
}

/// An answer: status, extra headers, and the body (bytes, or a slice of a file).
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: AnswerBody,
}

enum AnswerBody {
    Bytes(Vec<u8>),
    File { path: PathBuf, start: u64, len: u64 },
}

impl Answer {
    fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: AnswerBody::Bytes(body.as_bytes().to_vec()),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Unknown",
    }
}

fn serve(shared: &Shared, which: Listener, stream: TcpStream) -> io::Result<()> {
    let mut r = BufReader::new(&stream);
    let (line, headers) = read_head(&mut r)?;
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    shared.log.lock().unwrap().push(Recorded {
        listener: which,
        method: method.clone(),
        path: path.clone(),
        authorization: get("authorization"),
        range: get("range"),
    });
    let answer = if method != "GET" && method != "HEAD" {
        let mut a = Answer::text(405, "only GET and HEAD\n");
        a.headers.push(("Allow", "GET, HEAD".into()));
        a
    } else {
        match which {
            Listener::Front => front(shared, &path, get("authorization").as_deref()),
            Listener::Blobs => blobs(shared, &path, get("range").as_deref()),
        }
    };
    respond(&stream, &answer, method == "HEAD")
}

fn front(shared: &Shared, path: &str, authorization: Option<&str>) -> Answer {
    if let Some(want) = &shared.auth {
        let ok = authorization
            .and_then(|h| h.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("basic") && token.trim() == want
            });
        if !ok {
            let mut a = Answer::text(401, "unauthorized\n");
            a.headers
                .push(("WWW-Authenticate", r#"Basic realm="airlock-test""#.into()));
            return a;
        }
    }
    let Some(rest) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_prefix(shared.repository.as_str()))
    else {
        return Answer::text(404, "not found\n");
    };
    if let Some(reference) = rest.strip_prefix("/manifests/") {
        if reference == shared.tag || reference == shared.digest.to_string() {
            return Answer {
                status: 200,
                headers: vec![
                    ("Content-Type", "text/plain; charset=utf-8".into()),
                    ("Docker-Content-Digest", shared.digest.to_string()),
                ],
                body: AnswerBody::Bytes(shared.manifest.clone()),
            };
        }
    } else if let Some(d) = rest.strip_prefix("/blobs/") {
        if let Some(d) = d
            .parse::<Digest>()
            .ok()
            .filter(|d| shared.blobs.contains_key(d))
        {
            return Answer {
                status: 307,
                headers: vec![(
                    "Location",
                    format!("http://{}/blob/{d}?sig=x", shared.blobs_addr),
                )],
                body: AnswerBody::Bytes(Vec::new()),
            };
        }
    }
    Answer::text(404, "not found\n")
}

/// What a `Range` header asks of a `size`-byte body: `None` to ignore it and send it all
/// (malformed or multi-range, as RFC 9110 allows), `Some(Err)` when unsatisfiable (416),
/// else the inclusive byte range.
pub(super) fn parse_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let (unit, spec) = header.trim().split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size.saturating_sub(n), size - 1)));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        u64::MAX
    } else {
        let end: u64 = b.parse().ok()?;
        if end < start {
            return None;
        }
        end
    };
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok((start, end.min(size - 1))))
}

fn blobs(shared: &Shared, path: &str, range: Option<&str>) -> Answer {
    let Some((path, size)) = path
        .strip_prefix("/blob/")
        .and_then(|d| d.parse::<Digest>().ok())
        .and_then(|d| shared.blobs.get(&d))
    else {
        return Answer::text(404, "not found\n");
    };
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    let range = range.filter(|_| !shared.ignore_ranges.load(Ordering::SeqCst));
    let (status, start, len) = match range.and_then(|r| parse_range(r, *size)) {
        None => (200, 0, *size),
        Some(Ok((a, b))) => {
            headers.push(("Content-Range", format!("bytes {a}-{b}/{size}")));
            (206, a, b - a + 1)
        }
        Some(Err(())) => {
            let mut a = Answer::text(416, "range not satisfiable\n");
            a.headers.push(("Content-Range", format!("bytes */{size}")));
            return a;
        }
    };
    Answer {
        status,
        headers,
        body: AnswerBody::File {
            path: path.clone(),
            start,
            len,
        },
    }
}

fn respond(stream: &TcpStream, a: &Answer, head_only: bool) -> io::Result<()> {
    let len = match &a.body {
        AnswerBody::Bytes(b) => b.len() as u64,
        AnswerBody::File { len, .. } => *len,
    };
    let mut w = BufWriter::with_capacity(COPY_BUF, stream);
    write!(w, "HTTP/1.1 {} {}\r\n", a.status, reason(a.status))?;
    for (n, v) in &a.headers {
        write!(w, "{n}: {v}\r\n")?;
    }
    write!(w, "Content-Length: {len}\r\nConnection: close\r\n\r\n")?;
    if !head_only {
        match &a.body {
            AnswerBody::Bytes(b) => w.write_all(b)?,
            AnswerBody::File { path, start, len } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*start))?;
                let n = copy_large(&mut f.take(*len), &mut w)?;
                if n != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shrank",
                    ));
                }
            }
        }
    }
    w.flush()
}
