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
//! TLS: the system store plus the registry's certs.d directory, `--ca-cert` and a client
//! certificate (see `airlock_registry_auth::tls`); a handshake that fails names the
//! certificate problem and is not retried (another attempt would meet the same
//! certificate).
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
use airlock_bundle::text::escape;
use airlock_bundle::Digest;
use airlock_registry_auth::tls::{diagnose, TlsOptions};
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

mod answer;
mod bearer;
mod get;

use super::auth::Credentials;
use crate::UnpackError;
use answer::{body_excerpt, error_chain};
use bearer::AuthMode;

/// How often a request without a streamed body is tried, and the first pause.
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);

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
    /// Whether a client certificate is presented, and what is trusted (for messages).
    identity: bool,
    trust: String,
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

fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

impl Client {
    /// A client for `registry` (`host[:port]`): https, or http when `insecure`.
    /// `token_realm` is a token service on another origin that the operator trusts with the
    /// registry's credentials (`--token-realm URL`). `tls`: the TLS flags, added to what
    /// the registry's certs.d directory holds.
    pub fn new(
        registry: &str,
        insecure: bool,
        token_realm: Option<&str>,
        tls: &TlsOptions,
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
        if insecure && !tls.is_empty() {
            return Err(UnpackError::Usage(
                "--insecure speaks plain HTTP: --ca-cert, --cert-dir and --client-cert have nothing to do with it"
                    .into(),
            ));
        }
        let material = if insecure {
            Default::default()
        } else {
            tls.material(registry)
                .map_err(|e| UnpackError::Usage(e.to_string()))?
        };
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("airlock-unpack/", env!("CARGO_PKG_VERSION")));
        let http = material
            .apply(builder)
            .map_err(|e| UnpackError::Usage(e.to_string()))?
            .build()
            .map_err(UnpackError::HttpClient)?;
        Ok(Client {
            http,
            base,
            registry: registry.to_string(),
            creds: Credentials::lookup(registry),
            token_realm,
            mode: Mutex::new(AuthMode::Unknown),
            tokens: Mutex::default(),
            identity: material.identity.is_some(),
            trust: material.describe(),
        })
    }

    /// A request that got no answer: the certificate problem when it is one (with what
    /// this client trusted), else the error and its causes.
    fn transport_err(&self, what: &str, e: &reqwest::Error) -> UnpackError {
        match diagnose(e, Some(self.identity)) {
            Some(p) => self.err(format!(
                "{what}: {} [trusted: {}]",
                p.explain(&self.registry),
                self.trust
            )),
            None => self.err(format!("{what}: {}", error_chain(e))),
        }
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
                Err(e)
                    if attempt < ATTEMPTS
                        && !e.is_builder()
                        && diagnose(&e, Some(self.identity)).is_none() => {}
                Err(e) => return Err(self.transport_err(what, &e)),
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
            .map_err(|e| self.transport_err(&what, &e))?;
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

#[cfg(test)]
pub(super) fn no_tls() -> TlsOptions {
    TlsOptions::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_a_host_and_port_only() {
        let c = Client::new("registry.gap:5000", false, None, &no_tls()).unwrap();
        assert_eq!(c.base.as_str(), "https://registry.gap:5000/");
        let c = Client::new("127.0.0.1:5000", true, None, &no_tls()).unwrap();
        assert_eq!(c.base.as_str(), "http://127.0.0.1:5000/");
        for bad in [
            "",
            "https://registry.gap",
            "registry.gap/path",
            "user@registry.gap",
            "registry.gap:notaport",
        ] {
            assert!(
                Client::new(bad, false, None, &no_tls()).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn upload_locations_stay_on_the_registry() {
        let c = Client::new("127.0.0.1:5000", true, None, &no_tls()).unwrap();
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
}
