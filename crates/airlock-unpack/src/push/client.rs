//! A small client for the distribution API's push side (HEAD and PUT of manifests, HEAD,
//! mount and monolithic upload of blobs), speaking only to the one registry named on the
//! command line.
//!
//! Requests that carry no stream are retried with back-off on connection errors, 429 and
//! 5xx. A blob body streamed from the bundle cannot be replayed, so its PUT is tried once;
//! a re-run skips what arrived (every blob is HEADed first). Redirects are never followed,
//! and an upload `Location` on another origin is refused: credentials and content go to
//! the named registry only.
//!
//! A `Bearer` challenge's token service (its realm) gets the user's credentials, so it must
//! be the registry's own origin (scheme, host and port), or https on the registry's host
//! when the registry is https, or the origin the operator named with `--token-realm`; plain
//! http never, when the registry is https. Whatever the registry answers is read with a
//! cap (a few KiB of an error body, 1 MiB of a token) and shown escaped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use airlock_bundle::oci::MANIFEST_ACCEPT;
use airlock_bundle::text::{escape, escape_bytes};
use airlock_bundle::Digest;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

use super::auth::Credentials;
use crate::UnpackError;
use airlock_registry_auth::{parse_challenge, Challenge};

/// How often a request without a streamed body is tried, and the first pause.
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);
/// How much of an error body is read and shown: distribution's errors fit many times over.
pub const ERROR_BODY_CAP: usize = 4 << 10;
/// A token service's answer longer than this is not a token.
const TOKEN_BODY_CAP: usize = 1 << 20;
/// How long an error body may take to arrive, however little of it is read.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);
const TOKEN_BODY_TIME: Duration = Duration::from_secs(60);

/// How the registry wants to be authenticated, learnt from its first challenge.
#[derive(Debug, Clone)]
enum AuthMode {
    /// No challenge seen yet: requests go out without credentials.
    Unknown,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// `host[:port]` as given on the command line.
    pub registry: String,
    creds: Credentials,
    /// `--token-realm`: a token service the operator named, on another origin.
    token_realm: Option<Url>,
    mode: Mutex<AuthMode>,
    /// Bearer tokens by the scopes they were asked for.
    tokens: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and passwords stay out of debug output.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

/// Scopes a request needs: the repository it writes to, and the one a mount reads from.
fn scopes(repo: &str, from: Option<&str>) -> Vec<String> {
    let mut s = vec![format!("repository:{repo}:pull,push")];
    if let Some(f) = from {
        s.push(format!("repository:{f}:pull"));
    }
    s
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether the registry at `base` may send the user's credentials to the token service at
/// `realm`; `named` is the origin the operator allowed with `--token-realm`. `Err` says why
/// not.
fn check_realm(base: &Url, realm: &Url, named: Option<&Url>) -> Result<(), &'static str> {
    if !matches!(realm.scheme(), "http" | "https") {
        return Err("not an http or https URL");
    }
    // An https registry's credentials never travel in clear text, named or not.
    if base.scheme() == "https" && realm.scheme() != "https" {
        return Err("plain http for an https registry");
    }
    if same_origin(realm, base) || named.is_some_and(|n| same_origin(realm, n)) {
        return Ok(());
    }
    // Another port of the registry's own host is another service, except where TLS still
    // proves it is the host the operator named.
    if base.scheme() == "https" && realm.host_str() == base.host_str() {
        return Ok(());
    }
    Err("not at the registry's origin (scheme, host and port)")
}

fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

impl Client {
    /// A client for `registry` (`host[:port]`): https, or http when `insecure`.
    /// `token_realm` is a token service on another origin that the operator trusts with the
    /// registry's credentials (`--token-realm URL`).
    pub fn new(
        registry: &str,
        insecure: bool,
        token_realm: Option<&str>,
    ) -> Result<Client, UnpackError> {
        let scheme = if insecure { "http" } else { "https" };
        let base = Some(registry)
            .filter(|r| !r.is_empty() && !r.contains(['/', '@', '?', '#']))
            .and_then(|r| Url::parse(&format!("{scheme}://{r}/")).ok())
            .filter(|u| u.path() == "/" && u.host_str().is_some())
            .ok_or_else(|| {
                UnpackError::Usage(format!(
                    "--registry {registry:?}: expected HOST or HOST:PORT (no scheme, no path)"
                ))
            })?;
        let token_realm = match token_realm {
            None => None,
            Some(t) => {
                let u = Url::parse(t)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| {
                        UnpackError::Usage(format!(
                            "--token-realm {}: expected an http:// or https:// URL",
                            escape(t)
                        ))
                    })?;
                if base.scheme() == "https" && u.scheme() != "https" {
                    return Err(UnpackError::Usage(format!(
                        "--token-realm {u}: plain http for an https registry would send its credentials in clear text"
                    )));
                }
                Some(u)
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("airlock-unpack/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UnpackError::Environment(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            registry: registry.to_string(),
            creds: Credentials::lookup(registry),
            token_realm,
            mode: Mutex::new(AuthMode::Unknown),
            tokens: Mutex::default(),
        })
    }

    pub fn err(&self, message: impl Into<String>) -> UnpackError {
        UnpackError::Registry {
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid URLs")
    }

    /// The `Authorization` header for `scopes`, fetching a token when the registry uses
    /// bearer tokens and none is cached for them.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>, UnpackError> {
        let mode = self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match mode {
            AuthMode::Unknown => Ok(None),
            AuthMode::Basic => Ok(self.creds.basic_header()),
            AuthMode::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if let Some(t) = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.token(&realm, service.as_deref(), scopes).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Learns the auth scheme from a 401's challenge. Returns whether a retry can succeed.
    fn learn(&self, resp: &Response, scopes: &[String]) -> Result<bool, UnpackError> {
        let header = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        match parse_challenge(header) {
            Some(Challenge::Basic) => {
                if self.creds.basic_header().is_none() {
                    return Err(self.err(format!(
                        "HTTP 401: the registry wants a user and password and none is configured for {} \
                         (REGISTRY_AUTH_FILE, or `auths` in $DOCKER_CONFIG/config.json or ~/.docker/config.json)",
                        self.registry
                    )));
                }
                let first = !matches!(*mode, AuthMode::Basic);
                *mode = AuthMode::Basic;
                Ok(first)
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let url = Url::parse(&realm)
                    .map_err(|e| self.err(format!("token realm {}: {e}", escape(&realm))))?;
                if let Err(why) = check_realm(&self.base, &url, self.token_realm.as_ref()) {
                    return Err(self.err(format!(
                        "the registry asks for credentials at the token service {}, which is {why}: nothing was sent there \
                         (the registry is {}; push contacts only the registry named on the command line; \
                         name a token service you trust with --token-realm URL)",
                        escape(&realm),
                        self.base.origin().ascii_serialization(),
                    )));
                }
                let realm = url;
                // A stale token for these scopes is dropped: the next attempt asks again.
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&scopes.join(" "));
                *mode = AuthMode::Bearer { realm, service };
                Ok(true)
            }
            None => Err(self.err(format!(
                "HTTP 401 with a challenge push cannot answer: {}",
                escape(header)
            ))),
        }
    }

    /// A token from the registry's token service for `scopes`.
    async fn token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, UnpackError> {
        let mut url = realm.clone();
        let mut form = Url::parse("http://form.invalid/").expect("static URL");
        {
            let mut q = form.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let req = match &self.creds {
            Credentials::IdentityToken(t) => {
                form.query_pairs_mut()
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", t)
                    .append_pair("client_id", "airlock");
                self.http
                    .post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.query().unwrap_or("").to_string())
            }
            creds => {
                url.set_query(form.query());
                let req = self.http.get(url);
                match creds.basic_header() {
                    Some(b) => req.header(AUTHORIZATION, b),
                    None => req,
                }
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(format!("token service {realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(self.err(format!(
                "token service {realm}: HTTP {}{}",
                resp.status(),
                body_excerpt(resp).await
            )));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let (body, short) = read_capped(resp, TOKEN_BODY_CAP, TOKEN_BODY_TIME).await;
        if let Some(why) = short {
            return Err(self.err(format!("token service {realm}: answer {why}")));
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|e| self.err(format!("token service {realm}: {e}")))?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| self.err(format!("token service {realm} sent no token")))
    }

    /// Sends a request without a streamed body, answering auth challenges and retrying
    /// transient failures. `what` names it in errors.
    async fn send(
        &self,
        what: &str,
        scopes: &[String],
        make: &(dyn Fn() -> RequestBuilder + Sync),
    ) -> Result<Response, UnpackError> {
        let mut delay = BACKOFF;
        let mut attempt = 1;
        let mut challenges = 0;
        loop {
            let mut req = make();
            if let Some(a) = self.authorization(scopes).await? {
                req = req.header(AUTHORIZATION, a);
            }
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && challenges < 2 => {
                    challenges += 1;
                    if self.learn(&resp, scopes)? {
                        continue;
                    }
                    return Ok(resp);
                }
                // Transient: 5xx, 429, connection errors; the pause doubles each time.
                Ok(resp) if retryable_status(resp.status()) && attempt < ATTEMPTS => {}
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < ATTEMPTS && !e.is_builder() => {}
                Err(e) => return Err(self.err(format!("{what}: {}", error_chain(&e)))),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    /// Whether `repo` has blob `digest`.
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, UnpackError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let what = format!("HEAD {repo} blob {digest}");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http.request(Method::HEAD, url.clone())
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.err(format!("{what}: HTTP {s}"))),
        }
    }

    /// The digest `reference` (a tag or digest) resolves to in `repo`, if it exists.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, UnpackError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let what = format!("HEAD {repo} manifest {reference}");
        let accept = MANIFEST_ACCEPT.join(", ");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http
                    .request(Method::HEAD, url.clone())
                    .header(ACCEPT, accept.clone())
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.err(format!("{what}: HTTP {s}"))),
        }
    }

    /// The absolute upload URL a `Location` header names, on this registry only.
    fn location(&self, headers: &HeaderMap, what: &str) -> Result<Url, UnpackError> {
        let loc = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err(format!("{what}: no Location in the answer")))?;
        let url = self
            .base
            .join(loc)
            .map_err(|e| self.err(format!("{what}: Location {loc:?}: {e}")))?;
        if !same_origin(&url, &self.base) {
            return Err(self.err(format!(
                "{what}: the registry sent the upload to {url}, another origin: refused"
            )));
        }
        Ok(url)
    }

    /// Starts an upload session in `repo`; returns its URL.
    async fn start_upload(&self, repo: &str, digest: &Digest) -> Result<Url, UnpackError> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        let what = format!("POST {repo} upload of {digest}");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.err(format!(
                "{what}: HTTP {}{}",
                resp.status(),
                body_excerpt(resp).await
            )));
        }
        self.location(resp.headers(), &what)
    }

    /// Uploads a blob whose bytes arrive on `body` (exactly `size` of them): POST for a
    /// session, then one monolithic PUT with a Content-Length (no chunked encoding).
    pub async fn upload(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), UnpackError> {
        let mut url = self.start_upload(repo, digest).await?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let what = format!("PUT {repo} blob {digest} ({size} bytes)");
        let mut req = self
            .http
            .put(url)
            .header(CONTENT_LENGTH, size)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = self.authorization(&scopes(repo, None)).await? {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(format!("{what}: {}", error_chain(&e))))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.err(format!(
                "{what}: HTTP {}{}",
                resp.status(),
                body_excerpt(resp).await
            )));
        }
        Ok(())
    }

    /// Copies blob `digest` from `from` into `repo` through this client, for a registry
    /// that refused to mount it: a GET streamed into a monolithic upload (never in memory),
    /// checked by the registry against `digest`. A download redirected elsewhere (object
    /// storage) is not followed.
    pub async fn copy_blob(
        &self,
        repo: &str,
        from: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), UnpackError> {
        let url = self.url(&format!("v2/{from}/blobs/{digest}"));
        let what = format!("GET {from} blob {digest} (to copy it into {repo})");
        let resp = self
            .send(&what, &scopes(repo, Some(from)), &|| {
                self.http.get(url.clone())
            })
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.err(format!(
                "{what}: HTTP {}{}",
                resp.status(),
                resp.headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|l| format!(" to {l}: not followed, push talks to this registry only"))
                    .unwrap_or_default()
            )));
        }
        self.upload(
            repo,
            digest,
            size,
            reqwest::Body::wrap_stream(resp.bytes_stream()),
        )
        .await
    }

    /// Mounts `digest` from `from` into `repo`. `Ok(false)` when the registry refused the
    /// mount (it answered 202 with an upload session instead, which is cancelled).
    pub async fn mount(
        &self,
        repo: &str,
        from: &str,
        digest: &Digest,
    ) -> Result<bool, UnpackError> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let what = format!("mount of {digest} from {from} into {repo}");
        let sc = scopes(repo, Some(from));
        let resp = self
            .send(&what, &sc, &|| {
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(session) = self.location(resp.headers(), &what) {
                    let _ = self
                        .send(&what, &sc, &|| self.http.delete(session.clone()))
                        .await;
                }
                Ok(false)
            }
            s => Err(self.err(format!("{what}: HTTP {s}{}", body_excerpt(resp).await))),
        }
    }

    /// PUTs a manifest (or index) under `reference` (a tag or its digest) and checks the
    /// digest the registry computed.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), UnpackError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let expected = Digest::of(&bytes);
        let what = format!("PUT {repo}:{reference} manifest {expected} ({media_type})");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.err(format!(
                "{what}: HTTP {}{}",
                resp.status(),
                body_excerpt(resp).await
            )));
        }
        let got = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match got {
            Some(g) if g != expected.to_string() => Err(self.err(format!(
                "{what}: the registry stored it as {g}, expected {expected}"
            ))),
            _ => Ok(()),
        }
    }
}

/// A reqwest error with its causes (the connection error is usually the useful part).
fn error_chain(e: &reqwest::Error) -> String {
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
async fn read_capped(mut resp: Response, cap: usize, time: Duration) -> (Vec<u8>, Option<String>) {
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
async fn body_excerpt(resp: Response) -> String {
    let (body, short) = read_capped(resp, ERROR_BODY_CAP, ERROR_BODY_TIME).await;
    let text = body.trim_ascii();
    match (text.is_empty(), short) {
        (true, None) => String::new(),
        (false, None) => format!(": {}", escape_bytes(text)),
        (_, Some(why)) => format!(": {} [{why}]", escape_bytes(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_a_host_and_port_only() {
        let c = Client::new("registry.gap:5000", false, None).unwrap();
        assert_eq!(c.base.as_str(), "https://registry.gap:5000/");
        let c = Client::new("127.0.0.1:5000", true, None).unwrap();
        assert_eq!(c.base.as_str(), "http://127.0.0.1:5000/");
        for bad in [
            "",
            "https://registry.gap",
            "registry.gap/path",
            "user@registry.gap",
            "registry.gap:notaport",
        ] {
            assert!(Client::new(bad, false, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn upload_locations_stay_on_the_registry() {
        let c = Client::new("127.0.0.1:5000", true, None).unwrap();
        let loc = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(LOCATION, v.parse().unwrap());
            c.location(&h, "test")
        };
        assert_eq!(
            loc("/v2/a/blobs/uploads/u?_state=x").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert!(loc("http://127.0.0.1:5000/v2/a/blobs/uploads/u").is_ok());
        for elsewhere in [
            "http://127.0.0.1:5001/v2/a/blobs/uploads/u",
            "https://127.0.0.1:5000/v2/a/blobs/uploads/u",
            "http://storage.example/upload",
        ] {
            let e = loc(elsewhere).unwrap_err().to_string();
            assert!(e.contains("another origin"), "{elsewhere}: {e}");
        }
        assert!(c.location(&HeaderMap::new(), "test").is_err());
    }

    #[test]
    fn credentials_go_to_the_registry_origin_only() {
        let u = |s: &str| Url::parse(s).unwrap();
        let https = u("https://reg.gap:5000/");
        let http = u("http://reg.gap:5000/");
        // The registry's own origin, any path.
        assert_eq!(
            check_realm(&https, &u("https://reg.gap:5000/token"), None),
            Ok(())
        );
        assert_eq!(
            check_realm(&http, &u("http://reg.gap:5000/auth"), None),
            Ok(())
        );
        // An https registry: https on its host, any port (TLS proves the host).
        assert_eq!(
            check_realm(&https, &u("https://reg.gap/service/token"), None),
            Ok(())
        );
        assert_eq!(
            check_realm(&https, &u("https://reg.gap:5001/auth"), None),
            Ok(())
        );
        for (base, realm) in [
            // Never clear text for an https registry.
            (&https, "http://reg.gap:5000/token"),
            (&https, "http://reg.gap/token"),
            // Another port over http is another service on that host.
            (&http, "http://reg.gap:5001/token"),
            (&http, "http://reg.gap/token"),
            (&http, "https://reg.gap/token"),
            // Another host.
            (&https, "https://auth.elsewhere/token"),
            (&https, "https://reg.gap.evil/token"),
            (&http, "http://127.0.0.1:5000/token"),
            (&https, "ftp://reg.gap/token"),
        ] {
            assert!(
                check_realm(base, &u(realm), None).is_err(),
                "{realm} accepted for {base}"
            );
        }
        // A token service the operator named is accepted at that origin only, and an https
        // registry's credentials still never go over http.
        let named = u("http://reg.gap:5001/");
        assert_eq!(
            check_realm(&http, &u("http://reg.gap:5001/token"), Some(&named)),
            Ok(())
        );
        assert!(check_realm(&http, &u("http://reg.gap:5002/token"), Some(&named)).is_err());
        assert!(check_realm(&https, &u("http://reg.gap:5001/token"), Some(&named)).is_err());
        let named = u("https://auth.lab/");
        assert_eq!(
            check_realm(&https, &u("https://auth.lab/jwt"), Some(&named)),
            Ok(())
        );
        assert!(Client::new("reg.gap", false, Some("http://auth.lab/")).is_err());
        assert!(Client::new("reg.gap", true, Some("http://auth.lab/")).is_ok());
        assert!(Client::new("reg.gap", true, Some("auth.lab")).is_err());
    }
}
