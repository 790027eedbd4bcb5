//! Reading what the registry answers, bounded: at most a few KiB of an error body (shown
//! escaped), for at most a few seconds, and a reqwest error with its causes.

use std::time::Duration;

use airlock_bundle::text::escape_bytes;
use reqwest::Response;

/// How much of an error body is read and shown: distribution's errors fit many times over.
const ERROR_BODY_CAP: usize = 4 << 10;
/// How long an error body may take to arrive, however little of it is read.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);

/// A reqwest error with its causes (the connection error is usually the useful part).
pub(super) fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Reads at most `cap` bytes of a body, chunk by chunk, for at most `time`. Returns what
/// arrived and, when that is not the whole body, why (the rest is never read: dropping the
/// response closes the connection).
pub(super) async fn read_capped(
    mut resp: Response,
    cap: usize,
    time: Duration,
) -> (Vec<u8>, Option<String>) {
    let deadline = tokio::time::Instant::now() + time;
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = cap - buf.len();
                if chunk.len() > room {
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf, Some(format!("truncated: more than {cap} bytes")));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return (buf, None),
            Ok(Err(e)) => return (buf, Some(format!("cut short: {}", error_chain(&e)))),
            Err(_) => return (buf, Some(format!("cut short: not complete after {time:?}"))),
        }
    }
}

/// The start of an error body (distribution sends `{"errors":[{"code":…,"message":…}]}`):
/// at most [`ERROR_BODY_CAP`] bytes, escaped.
pub(super) async fn body_excerpt(resp: Response) -> String {
    let (body, short) = read_capped(resp, ERROR_BODY_CAP, ERROR_BODY_TIME).await;
    let text = body.trim_ascii();
    match (text.is_empty(), short) {
        (true, None) => String::new(),
        (false, None) => format!(": {}", escape_bytes(text)),
        (_, Some(why)) => format!(": {} [{why}]", escape_bytes(text)),
    }
}
