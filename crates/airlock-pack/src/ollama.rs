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

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use airlock_bundle::oci::DOCKER_MANIFEST;
use airlock_bundle::ollama::ModelName;
use airlock_bundle::Digest;
use airlock_registry_auth::{parse_challenge, Challenge};
use futures::StreamExt as _;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use sha2::Digest as _;

use crate::cache::BlobCache;
use crate::registry::retry;
use crate::PackError;

const MAX_REDIRECTS: usize = 5;
/// Parts are size/16, within these bounds (Ollama itself uses 100 MB – 1 GB; smaller parts
/// keep resume fine-grained on slow links at a negligible cost in requests).
const MIN_PART: u64 = 8 << 20;
const MAX_PART: u64 = 1 << 30;

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

fn reg_err(name: &ModelName, what: &str, e: impl std::fmt::Display) -> PackError {
    PackError::Registry(format!("{name}: {what}: {e}"))
}

/// Same origin (scheme, host, port): the only place credentials may be sent again.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl OllamaRegistry {
    pub fn new(insecure: &BTreeSet<String>) -> OllamaRegistry {
        let client = reqwest::Client::builder()
            // Redirects are followed by hand: the Authorization header must not travel to
            // another origin, and every hop is checked.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("airlock-pack/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        OllamaRegistry {
            client,
            insecure: insecure.clone(),
            tokens: Arc::default(),
        }
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
            return Err(reg_err(name, "token service", resp.status()));
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
                            reg_err(name, &format!("GET {at}"), "redirect without a Location")
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
            return Err(reg_err(
                name,
                "GET",
                format!("more than {MAX_REDIRECTS} redirects"),
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
                return Err(PackError::Usage(format!(
                    "{name}: the registry has no such model (404)"
                )));
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(PackError::Usage(format!(
                    "{name}: the registry refused access ({status}); check the credentials for {}",
                    name.host
                )));
            }
            if !status.is_success() {
                return Err(reg_err(name, "fetching manifest", status));
            }
            let b = resp
                .bytes()
                .await
                .map_err(|e| reg_err(name, "fetching manifest", e))?;
            if b.len() > 4 << 20 {
                return Err(reg_err(name, "fetching manifest", "larger than 4 MiB"));
            }
            Ok(b.to_vec())
        })
        .await
        .map_err(|e| match e {
            PackError::Usage(m) => PackError::Registry(m),
            o => o,
        })?;
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
        let mut part = (size / 16).clamp(MIN_PART, MAX_PART);
        // A server without Range support would send the whole blob for every part: ask it
        // for one byte first, and fetch in one piece if it does not answer 206.
        if part < size && !retry(|| self.ranges_supported(name, &url)).await? {
            part = size;
        }
        let partial = cache.partial_path(&digest);
        let env = |e: std::io::Error| PackError::Environment(format!("{}: {e}", partial.display()));
        let parts: Vec<(u64, u64)> = (0..size.div_ceil(part).max(1))
            .map(|i| (i * part, ((i + 1) * part).min(size)))
            .collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(env)?;
        if file.metadata().map_err(env)?.len() != size {
            file.set_len(size).map_err(env)?;
        }
        let journal = Journal::open(&partial, parts.len(), size, part).map_err(env)?;
        let resumed: u64 = journal
            .done_parts()
            .iter()
            .map(|&i| parts[i].1 - parts[i].0)
            .sum();
        on_bytes(resumed as i64);
        let file = Arc::new(file);
        let progress = Arc::new(Progressive::new(parts.len(), &journal));
        // Only a fresh download is followed: bytes kept from an earlier run are checked by the
        // whole-blob hash first (a stale journal means fetching again). A followed blob is
        // hashed by the bundle writer, which commits it to the cache once it verified: one
        // sha256 pass instead of two.
        let following = on_follow.is_some() && resumed == 0;
        if let (Some(on_follow), true) = (on_follow, following) {
            on_follow(Arc::new(Follow {
                digest,
                file: file.clone(),
                parts: parts.clone(),
                progress: progress.clone(),
                partial: partial.clone(),
                journal: journal.path.clone(),
                dest: cache.path(&digest),
            }));
        }
        let hasher = (!following).then(|| {
            let (file, progress, parts) = (file.clone(), progress.clone(), parts.clone());
            std::thread::spawn(move || hash_in_order(&file, &parts, &progress))
        });
        let todo: Vec<usize> = (0..parts.len()).filter(|i| !progress.is_done(*i)).collect();
        let results = futures::stream::iter(todo)
            .map(|i| {
                let (url, file, journal, progress, parts) =
                    (&url, &file, &journal, &progress, &parts);
                async move {
                    let (start, end) = parts[i];
                    let r = retry(|| async {
                        self.fetch_part(
                            name,
                            url,
                            file,
                            (start, end),
                            parts.len() == 1,
                            on_bytes,
                            &|n| progress.fill(i, n),
                        )
                        .await
                    })
                    .await
                    .map_err(|e| match e {
                        PackError::Usage(m) => PackError::Registry(m),
                        o => o,
                    });
                    match r {
                        Ok(()) => {
                            journal.record(i).map_err(env)?;
                            progress.finish(i);
                            Ok(())
                        }
                        Err(e) => {
                            progress.fail();
                            Err(e)
                        }
                    }
                }
            })
            .buffer_unordered(jobs.max(1))
            .collect::<Vec<_>>()
            .await;
        let first_err = results.into_iter().find_map(Result::err);
        if first_err.is_some() {
            progress.fail();
        }
        let computed = match hasher {
            Some(h) => h
                .join()
                .map_err(|_| PackError::Environment("hashing thread panicked".into()))?,
            None => Ok(None),
        };
        if let Some(e) = first_err {
            // Finished parts stay in the journal: the next run resumes from them.
            return Err(match e {
                PackError::Registry(m) => {
                    PackError::Registry(format!("{name}: blob {digest}: {m}"))
                }
                o => o,
            });
        }
        if following {
            return Ok(Fetched::Handed);
        }
        let computed = computed.map_err(env)?;
        if computed != Some(digest) {
            journal.remove();
            let _ = std::fs::remove_file(&partial);
            on_bytes(-(size as i64));
            if resumed > 0 {
                return Ok(Fetched::StaleResume);
            }
            return Err(PackError::Integrity(format!(
                "{name}: digest mismatch for blob {digest} from the registry: computed {}",
                computed.map(|d| d.to_string()).unwrap_or_default()
            )));
        }
        journal.remove();
        cache.commit(&partial, &digest).map_err(env)?;
        Ok(Fetched::Done)
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
            h.insert(RANGE, HeaderValue::from_str(&r).expect("ascii"));
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
            // Not worth retrying: report as a registry error after the retry loop.
            s if s.is_client_error() => {
                return Err(PackError::Usage(format!("GET {url}: {s}")));
            }
            s => return Err(PackError::Registry(format!("GET {url}: {s}"))),
        }
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        let result: Result<(), PackError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| PackError::Registry(format!("download interrupted: {e}")))?;
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
                    .map_err(|e| PackError::Environment(format!("writing blob part: {e}")))?;
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
                return Err(PackError::Registry(format!(
                    "download ended early: {} of {} bytes of part {start}-{end}",
                    at - start,
                    end - start
                )));
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

enum Fetched {
    Done,
    /// Every part arrived; the follower verifies and commits.
    Handed,
    StaleResume,
}

/// Which parts of a partial blob are complete: one line per finished part index, after a
/// first line naming the blob size and part size (a journal for another layout is ignored).
struct Journal {
    path: PathBuf,
    done: Vec<usize>,
    file: Mutex<File>,
}

impl Journal {
    fn open(partial: &Path, parts: usize, size: u64, part: u64) -> std::io::Result<Journal> {
        let path = partial.with_extension("parts");
        let head = format!("{size} {part}");
        let mut done = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            let mut lines = text.lines();
            if lines.next() == Some(head.as_str()) {
                done = lines
                    .filter_map(|l| l.parse::<usize>().ok())
                    .filter(|&i| i < parts)
                    .collect();
            }
        }
        let mut f = File::create(&path)?;
        writeln!(f, "{head}")?;
        for i in &done {
            writeln!(f, "{i}")?;
        }
        Ok(Journal {
            path,
            done,
            file: Mutex::new(f),
        })
    }

    fn done_parts(&self) -> &[usize] {
        &self.done
    }

    fn record(&self, i: usize) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // No fsync: after a power loss the journal may claim a part whose bytes never
        // reached the disk; the whole-blob sha256 then fails and the partial is discarded.
        writeln!(f, "{i}")
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parts finished so far, shared with the hashing thread and the bundle writer.
struct Progressive {
    state: Mutex<PartsState>,
    cv: Condvar,
}

struct PartsState {
    done: Vec<bool>,
    /// Bytes written so far from the start of each part (its current attempt).
    filled: Vec<u64>,
    failed: bool,
}

/// A blob still downloading, readable in order as far as its parts have arrived: the bundle
/// writer follows the download instead of waiting for its end. What it reads is hashed by
/// the writer itself (every bundle entry is), and only then is the blob committed to the
/// cache ([`Follow::commit`]), so following trusts nothing new.
pub struct Follow {
    /// The blob being followed.
    pub digest: Digest,
    file: Arc<File>,
    parts: Vec<(u64, u64)>,
    progress: Arc<Progressive>,
    partial: PathBuf,
    journal: PathBuf,
    dest: PathBuf,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follow")
    }
}

impl Follow {
    /// Moves the blob into the cache under its digest. Only for the follower, once what it
    /// read verified against the digest.
    pub fn commit(&self) -> std::io::Result<()> {
        std::fs::rename(&self.partial, &self.dest)?;
        let _ = std::fs::remove_file(&self.journal);
        Ok(())
    }

    /// Drops what was downloaded: the follower found it does not match the digest.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
        let _ = std::fs::remove_file(&self.journal);
    }

    /// A reader of the whole blob that blocks until the bytes it needs have arrived. What it
    /// yields is unverified until the reader's own hash says otherwise.
    pub fn reader(self: &Arc<Self>) -> FollowReader {
        FollowReader {
            follow: self.clone(),
            pos: 0,
        }
    }
}

#[derive(Debug)]
pub struct FollowReader {
    follow: Arc<Follow>,
    pos: u64,
}

impl std::io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let f = &self.follow;
        let size = f.parts.last().map(|p| p.1).unwrap_or(0);
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        // Read only bytes the part's download has written: the writer stays right behind
        // the first unfinished part instead of waiting for whole parts.
        let i = f
            .parts
            .iter()
            .position(|&(s, e)| s <= self.pos && self.pos < e)
            .expect("pos inside the blob");
        let (start, end) = f.parts[i];
        let Some(filled) = f.progress.wait_past(i, self.pos - start, end - start) else {
            return Err(std::io::Error::other("the download failed"));
        };
        let n = ((start + filled - self.pos) as usize).min(buf.len());
        f.file.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Progressive {
    fn new(n: usize, journal: &Journal) -> Progressive {
        let mut done = vec![false; n];
        for &i in journal.done_parts() {
            done[i] = true;
        }
        Progressive {
            state: Mutex::new(PartsState {
                done,
                filled: vec![0; n],
                failed: false,
            }),
            cv: Condvar::new(),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, PartsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn is_done(&self, i: usize) -> bool {
        self.lock().done[i]
    }
    fn finish(&self, i: usize) {
        self.lock().done[i] = true;
        self.cv.notify_all();
    }
    /// Part `i` holds `bytes` valid bytes from its start (a retry starts again from 0).
    fn fill(&self, i: usize, bytes: u64) {
        self.lock().filled[i] = bytes;
        self.cv.notify_all();
    }
    fn fail(&self) {
        self.lock().failed = true;
        self.cv.notify_all();
    }
    /// Waits for part `i`; false if the download failed first.
    fn wait(&self, i: usize) -> bool {
        let mut g = self.lock();
        loop {
            if g.done[i] {
                return true;
            }
            if g.failed {
                return false;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
    /// Waits until part `i` (of `len` bytes) holds more than `offset` bytes; returns how many
    /// it holds, or `None` if the download failed first.
    fn wait_past(&self, i: usize, offset: u64, len: u64) -> Option<u64> {
        let mut g = self.lock();
        loop {
            if g.done[i] {
                return Some(len);
            }
            if g.filled[i] > offset {
                return Some(g.filled[i]);
            }
            if g.failed {
                return None;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Hashes the partial file part by part, in order, as parts complete: the sha256 is ready
/// moments after the last byte arrives. `None` if the download failed.
fn hash_in_order(
    file: &File,
    parts: &[(u64, u64)],
    progress: &Progressive,
) -> std::io::Result<Option<Digest>> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, &(start, end)) in parts.iter().enumerate() {
        if !progress.wait(i) {
            return Ok(None);
        }
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(Some(Digest::from_bytes(h.finalize().into())))
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
