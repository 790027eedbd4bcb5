//! Pulling Ollama models from an Ollama registry (`registry.ollama.ai`, `hf.co`, or any
//! distribution registry holding Ollama-format manifests).
//!
//! The protocol is a subset of the OCI distribution API, with two twists this module owns:
//! manifests are kept as the exact bytes served (Ollama's model ID is their sha256), and blob
//! GETs may answer `307` to a presigned URL on another host, which is followed **without** the
//! `Authorization` header. Large blobs are fetched as parallel `Range` parts into a partial
//! file in the blob cache, so an interrupted pull resumes where it stopped; the whole blob is
//! hashed in order while later parts are still arriving, and gets its real name only after
//! its sha256 checked.
//!
//! This file is the registry client ([`OllamaRegistry`]: URLs, credentials and token
//! challenges, hand-followed redirects, manifests, and the HTTP side of each blob part);
//! `ranged` owns the partial file, its journal, the in-order hashing and [`Follow`].

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_bundle::oci::DOCKER_MANIFEST;
use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use airlock_registry_auth::{parse_challenge, Challenge};
use futures::StreamExt as _;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use crate::cache::BlobCache;
use crate::registry::retry;
use crate::{BoxError, PackError};

mod ranged;

pub use ranged::Follow;
use ranged::{Download, Fetched};

const MAX_REDIRECTS: usize = 5;

#[derive(Clone)]
pub struct OllamaRegistry {
    client: reqwest::Client,
    insecure: BTreeSet<String>,
    /// Bearer tokens obtained from a registry's token service, per host.
    tokens: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

impl std::fmt::Debug for OllamaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OllamaRegistry")
    }
}

fn reg_err(name: &ModelName, what: &str, e: impl Into<BoxError>) -> PackError {
    PackError::registry(name, what, e)
}

/// Same origin (scheme, host, port): the only place credentials may be sent again.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl OllamaRegistry {
    /// A client; registries in `insecure` are spoken to over plain HTTP; `tls` adds CA
    /// certificates to the system store and a client certificate. Fails only when the TLS
    /// backend cannot be set up with them.
    pub fn new(
        insecure: &BTreeSet<String>,
        tls: &airlock_registry_auth::tls::TlsMaterial,
    ) -> Result<OllamaRegistry, PackError> {
        let builder = reqwest::Client::builder()
            // Redirects are followed by hand: the Authorization header must not travel to
            // another origin, and every hop is checked.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("airlock-pack/", env!("CARGO_PKG_VERSION")));
        let client = tls
            .apply(builder)
            .map_err(|e| PackError::Usage(e.to_string()))?
            .build()
            .map_err(|source| PackError::HttpClient { source })?;
        Ok(OllamaRegistry {
            client,
            insecure: insecure.clone(),
            tokens: Arc::default(),
        })
    }

    fn url(&self, name: &ModelName, tail: &str) -> Result<Url, PackError> {
        let scheme = if self.insecure.contains(&name.host) {
            "http"
        } else {
            "https"
        };
        let s = format!("{scheme}://{}/v2/{}/{tail}", name.host, name.repository());
        Url::parse(&s).map_err(|e| reg_err(name, "bad URL", e))
    }

    fn authorization(&self, name: &ModelName) -> Option<String> {
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.host)
        {
            return Some(format!("Bearer {t}"));
        }
        match crate::auth::credentials_for(&name.host) {
            RegistryAuth::Basic(u, p) => {
                use base64::Engine as _;
                let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(format!("Basic {enc}"))
            }
            RegistryAuth::Bearer(t) => Some(format!("Bearer {t}")),
            RegistryAuth::Anonymous => None,
        }
    }

    /// Answers a Bearer challenge with a token from the registry's token service (with the
    /// docker credentials for the host, if any). Returns whether a token was obtained.
    async fn login(&self, name: &ModelName, challenge: &str) -> Result<bool, PackError> {
        let Some(Challenge::Bearer {
            realm,
            service,
            scope,
        }) = parse_challenge(challenge)
        else {
            return Ok(false);
        };
        let mut url = Url::parse(&realm).map_err(|e| reg_err(name, "token realm", e))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", name.repository()));
            q.append_pair("scope", &scope);
        }
        let mut req = self.client.get(url);
        if let RegistryAuth::Basic(u, p) = crate::auth::credentials_for(&name.host) {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| reg_err(name, "token service", e))?;
        if !resp.status().is_success() {
            return Err(PackError::registry_said(
                name,
                format!("token service: {}", resp.status()),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = resp
            .json()
            .await
            .map_err(|e| reg_err(name, "token service", e))?;
        let Some(t) = t.token.or(t.access_token) else {
            return Ok(false);
        };
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.host.clone(), t);
        Ok(true)
    }

    /// A GET that follows redirects by hand, dropping credentials when the origin changes,
    /// and answers one auth challenge. Returns the final response (any status).
    async fn get(
        &self,
        name: &ModelName,
        url: Url,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, PackError> {
        let mut relogged = false;
        'auth: loop {
            let origin = url.clone();
            let mut at = url.clone();
            let auth = self.authorization(name);
            for _ in 0..=MAX_REDIRECTS {
                let mut req = self.client.get(at.clone()).headers(headers.clone());
                if same_origin(&origin, &at) {
                    if let Some(a) = &auth {
                        req = req.header(AUTHORIZATION, a);
                    }
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| reg_err(name, &format!("GET {at}"), e))?;
                let status = resp.status();
                if status.is_redirection() {
                    let loc = resp
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            PackError::registry_said(
                                name,
                                format!("GET {at}: redirect without a Location"),
                            )
                        })?;
                    at = at
                        .join(loc)
                        .map_err(|e| reg_err(name, "redirect Location", e))?;
                    continue;
                }
                if status == StatusCode::UNAUTHORIZED && !relogged && same_origin(&origin, &at) {
                    let challenge = resp
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    relogged = true;
                    if self.login(name, &challenge).await? {
                        continue 'auth;
                    }
                }
                return Ok(resp);
            }
            return Err(PackError::registry_said(
                name,
                format!("GET: more than {MAX_REDIRECTS} redirects"),
            ));
        }
    }

    /// The manifest a tag points to, as raw bytes, with their sha256.
    pub async fn manifest(&self, name: &ModelName) -> Result<(Vec<u8>, Digest), PackError> {
        let url = self.url(name, &format!("manifests/{}", name.tag))?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(DOCKER_MANIFEST));
        let bytes = retry(|| async {
            let resp = self.get(name, url.clone(), h.clone()).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(PackError::registry_refused(
                    name,
                    "the registry has no such model (404)",
                ));
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(PackError::registry_refused(
                    name,
                    format!(
                        "the registry refused access ({status}); check the credentials for {}",
                        name.host
                    ),
                ));
            }
            if !status.is_success() {
                return Err(PackError::registry_said(
                    name,
                    format!("fetching manifest: {status}"),
                ));
            }
            let b = resp
                .bytes()
                .await
                .map_err(|e| reg_err(name, "fetching manifest", e))?;
            if b.len() > 4 << 20 {
                return Err(PackError::registry_said(
                    name,
                    "fetching manifest: larger than 4 MiB",
                ));
            }
            Ok(b.to_vec())
        })
        .await?;
        let digest = Digest::of(&bytes);
        Ok((bytes, digest))
    }

    /// Fetches a blob into the cache: one stream for small blobs, parallel `Range` parts
    /// (at most `jobs` at once) for large ones, resumable across runs. Verified before it
    /// gets its real name. `on_follow` receives a handle to read the blob in order while it
    /// arrives.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_blob(
        &self,
        name: &ModelName,
        digest: Digest,
        size: u64,
        cache: &BlobCache,
        jobs: usize,
        on_bytes: &(dyn Fn(i64) + Sync),
        on_follow: Option<&(dyn Fn(Arc<Follow>) + Sync)>,
    ) -> Result<(), PackError> {
        let fetch = || self.fetch_blob_once(name, digest, size, cache, jobs, on_bytes, on_follow);
        // Parts kept from an earlier run that did not add up (a crash lost bytes the journal
        // claimed) are gone by now: fetch once more, from scratch, which resumes nothing.
        if let Fetched::StaleResume = fetch().await? {
            fetch().await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob_once(
        &self,
        name: &ModelName,
        digest: Digest,
        size: u64,
        cache: &BlobCache,
        jobs: usize,
        on_bytes: &(dyn Fn(i64) + Sync),
        on_follow: Option<&(dyn Fn(Arc<Follow>) + Sync)>,
    ) -> Result<Fetched, PackError> {
        let url = self.url(name, &format!("blobs/{digest}"))?;
        let mut part = ranged::part_size(size);
        // A server without Range support would send the whole blob for every part: ask it
        // for one byte first, and fetch in one piece if it does not answer 206.
        if part < size && !retry(|| self.ranges_supported(name, &url)).await? {
            part = size;
        }
        let download = Download::open(cache, digest, size, part)?;
        on_bytes(download.resumed as i64);
        // Only a fresh download is followed: bytes kept from an earlier run are checked by the
        // whole-blob hash first (a stale journal means fetching again). A followed blob is
        // hashed by the bundle writer, which commits it to the cache once it verified: one
        // sha256 pass instead of two.
        let following = on_follow.is_some() && download.resumed == 0;
        if let (Some(on_follow), true) = (on_follow, following) {
            on_follow(download.follow());
        }
        let hasher = (!following).then(|| download.spawn_hasher());
        let first_err = self
            .fetch_parts(name, &url, &download, jobs, on_bytes)
            .await;
        if first_err.is_some() {
            download.progress.fail();
        }
        let computed = match hasher {
            Some(h) => h
                .join()
                .map_err(|_| PackError::WorkerPanicked { what: "hashing" })?,
            None => Ok(None),
        };
        if let Some(e) = first_err {
            // Finished parts stay in the journal: the next run resumes from them.
            return Err(match e {
                e @ PackError::Registry { .. } => PackError::RegistryBlob {
                    subject: name.to_string(),
                    blob: digest,
                    source: Box::new(e),
                },
                o => o,
            });
        }
        if following {
            return Ok(Fetched::Handed);
        }
        download.verify_and_commit(name, cache, computed, on_bytes)
    }

    /// Fetches the parts not done yet, at most `jobs` at once, each with its retries.
    /// Returns the first failure once every started part has ended.
    async fn fetch_parts(
        &self,
        name: &ModelName,
        url: &Url,
        download: &Download,
        jobs: usize,
        on_bytes: &(dyn Fn(i64) + Sync),
    ) -> Option<PackError> {
        let parts = &download.parts;
        let todo: Vec<usize> = (0..parts.len())
            .filter(|i| !download.progress.is_done(*i))
            .collect();
        let results = futures::stream::iter(todo)
            .map(|i| async move {
                let (start, end) = parts[i];
                let r = retry(|| async {
                    self.fetch_part(
                        name,
                        url,
                        download.file(),
                        (start, end),
                        parts.len() == 1,
                        on_bytes,
                        &|n| download.progress.fill(i, n),
                    )
                    .await
                })
                .await;
                download.part_ended(i, r)
            })
            .buffer_unordered(jobs.max(1))
            .collect::<Vec<_>>()
            .await;
        results.into_iter().find_map(Result::err)
    }

    /// Whether the blob at `url` is served in ranges (`206` for `bytes=0-0`).
    async fn ranges_supported(&self, name: &ModelName, url: &Url) -> Result<bool, PackError> {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        let resp = self.get(name, url.clone(), h).await?;
        // Whatever else comes back (an error included) is for the real request to report.
        Ok(resp.status() == StatusCode::PARTIAL_CONTENT)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_part(
        &self,
        name: &ModelName,
        url: &Url,
        file: &File,
        (start, end): (u64, u64),
        whole: bool,
        on_bytes: &(dyn Fn(i64) + Sync),
        on_filled: &(dyn Fn(u64) + Sync),
    ) -> Result<(), PackError> {
        on_filled(0);
        let mut reported = 0u64;
        let mut h = HeaderMap::new();
        if !whole {
            let r = format!("bytes={start}-{}", end - 1);
            let r = HeaderValue::try_from(r).map_err(|e| reg_err(name, "Range", e))?;
            h.insert(RANGE, r);
        }
        let resp = self.get(name, url.clone(), h).await?;
        let status = resp.status();
        let mut at = start;
        let mut skip = 0u64;
        match status {
            StatusCode::PARTIAL_CONTENT if !whole => {}
            StatusCode::OK => {
                // The server ignored Range: read from the start and keep only our part.
                skip = start;
            }
            // Not worth retrying.
            s if s.is_client_error() => {
                return Err(PackError::registry_refused("", format!("GET {url}: {s}")));
            }
            s => return Err(PackError::registry_said("", format!("GET {url}: {s}"))),
        }
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        let result: Result<(), PackError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| PackError::registry("", "download interrupted", e))?;
                let mut c: &[u8] = &chunk;
                if skip > 0 {
                    let n = (skip as usize).min(c.len());
                    c = &c[n..];
                    skip -= n as u64;
                }
                let room = (end - at) as usize;
                if c.len() > room {
                    c = &c[..room];
                }
                if c.is_empty() {
                    if at == end {
                        break;
                    }
                    continue;
                }
                file.write_all_at(c, at)
                    .map_err(|source| PackError::PartWrite { start, end, source })?;
                at += c.len() as u64;
                got += c.len() as u64;
                // Tell a follower every MiB, not every network chunk.
                if at - start >= reported + (1 << 20) || at == end {
                    reported = at - start;
                    on_filled(reported);
                }
                on_bytes(c.len() as i64);
                if at == end {
                    break;
                }
            }
            if at != end {
                return Err(PackError::registry_said(
                    "",
                    format!(
                        "download ended early: {} of {} bytes of part {start}-{end}",
                        at - start,
                        end - start
                    ),
                ));
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            on_bytes(-(got as i64));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_origins() {
        let Some(Challenge::Bearer { realm, service, .. }) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        ) else {
            panic!("not a bearer challenge")
        };
        assert_eq!(realm, "https://auth.example/token");
        assert_eq!(service.as_deref(), Some("registry.example"));
        assert!(!matches!(
            parse_challenge("Basic realm=x"),
            Some(Challenge::Bearer { .. })
        ));
        let a = Url::parse("http://127.0.0.1:5000/v2/x").unwrap();
        assert!(same_origin(
            &a,
            &Url::parse("http://127.0.0.1:5000/other").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("http://127.0.0.1:5001/v2/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("https://127.0.0.1:5000/v2/x").unwrap()
        ));
        let r = Url::parse("https://registry.ollama.ai/v2/library/x").unwrap();
        assert!(same_origin(
            &r,
            &Url::parse("https://registry.ollama.ai:443/y").unwrap()
        ));
        assert!(!same_origin(
            &r,
            &Url::parse("https://r2.cloudflarestorage.com/y").unwrap()
        ));
    }
}
