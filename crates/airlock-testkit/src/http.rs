//! A minimal HTTP/1.1 for tests, over `std::net` with `Connection: close`: a client (one
//! request per connection) and the request-head parsing and answers the loopback servers
//! (the Ollama-style [`crate::ollama::RedirectRegistry`], the token service of
//! [`crate::token::TokenRegistry`]) share. A handful of requests does not justify an HTTP
//! stack, and hand-written requests let the tests see exactly what goes over the wire.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use airlock_bundle::hashing::{copy_large, COPY_BUF};

/// `Basic <base64(user:password)>`'s token.
pub fn basic_token(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A whole answer with a body, then the connection closes.
pub fn answer(status: u16, reason: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Debug)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path, u64),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn fail(&self, what: &str, addr: &str) -> ! {
        panic!(
            "{what} at {addr} failed with HTTP {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Splits a Location header into (host:port, path?query); relative ones stay on `addr`.
pub fn split_location(location: &str, addr: &str) -> (String, String) {
    if let Some(rest) = location.strip_prefix("http://") {
        match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.to_string(), "/".to_string()),
        }
    } else if location.starts_with('/') {
        (addr.to_string(), location.to_string())
    } else {
        panic!("unsupported Location {location:?} (only http:// and absolute paths)")
    }
}

pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Response {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let len = match body {
        Body::Empty => (method == "POST" || method == "PUT").then_some(0),
        Body::Bytes(b) => Some(b.len() as u64),
        Body::File(_, size) => Some(size),
    };
    if let Some(len) = len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    let sent = (|| -> io::Result<()> {
        let mut w = BufWriter::with_capacity(COPY_BUF, &stream);
        w.write_all(head.as_bytes())?;
        match body {
            Body::Empty => {}
            Body::Bytes(b) => w.write_all(b)?,
            Body::File(path, size) => {
                let mut f = File::open(path)?.take(size);
                let n = copy_large(&mut f, &mut w)?;
                if n != size {
                    return Err(io::Error::other(format!(
                        "{} has {n} bytes, expected {size}",
                        path.display()
                    )));
                }
            }
        }
        w.flush()
    })();
    // A server may answer (say 400) and close before the body is all sent: its answer
    // explains more than our broken pipe, so read it first.
    match (read_response(&stream, method == "HEAD"), sent) {
        (Ok(r), _) => r,
        (Err(re), Err(se)) => {
            panic!("{method} {addr}{target}: sending failed ({se}), no answer ({re})")
        }
        (Err(re), Ok(())) => panic!("{method} {addr}{target}: reading the answer: {re}"),
    }
}

/// Reads the status line and headers (names lowercased) up to the blank line.
pub fn read_head(r: &mut impl BufRead) -> io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    let mut headers = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        total += n;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in headers",
            ));
        }
        if total > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "headers over 64 KiB",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if first.is_empty() {
            if line.is_empty() {
                continue; // stray CRLF before a request line is allowed
            }
            first = line.to_string();
        } else if line.is_empty() {
            return Ok((first, headers));
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

pub fn read_response(stream: &TcpStream, head_only: bool) -> io::Result<Response> {
    let mut r = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut r)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        // No body by definition.
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let hex = line.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if n == 0 {
                break; // trailers ignored: the connection closes anyway
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        r.by_ref().take(len).read_to_end(&mut body)?;
        if body.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body shorter than Content-Length",
            ));
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
