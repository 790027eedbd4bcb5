//! Talking to OCI registries through `oci-client`: resolving tags to digests, fetching raw
//! manifests, and streaming blobs into the cache with bounded retries. Every byte that comes
//! back is checked against the digest it was asked for; nothing is trusted on the registry's
//! word.

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_bundle::hashing::HashingWriter;
use airlock_bundle::oci::{Descriptor, MANIFEST_ACCEPT};
use airlock_bundle::{Digest, ImageRef};
use airlock_registry_auth::tls::TlsMaterial;
use futures::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use std::io::Write as _;

use crate::cache::BlobCache;
use crate::PackError;

/// How often a failed request is tried again, and the first back-off.
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Registry {
    client: oci_client::Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

fn to_oci_ref(r: &ImageRef) -> Reference {
    match (&r.tag, &r.digest) {
        (_, Some(d)) => {
            Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string())
        }
        (Some(t), None) => Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone()),
        (None, None) => {
            Reference::with_tag(r.registry.clone(), r.repository.clone(), "latest".into())
        }
    }
}

/// Artifact manifests (signatures, attestations, SBOMs, referrers) are OCI image manifests;
/// some tools write Docker's media type, and a referrer may be an index.
const ARTIFACT_ACCEPT: &[&str] = MANIFEST_ACCEPT;

/// Whether the registry said it has no such manifest (or repository).
fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code: 404, .. } => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, C::ManifestUnknown | C::NameUnknown)),
        _ => false,
    }
}

/// Runs `f` until it succeeds, fails for good, or has failed `ATTEMPTS` times, doubling the
/// pause between attempts. Shared by the OCI and the Ollama registry clients.
pub(crate) async fn retry<T, F, Fut>(mut f: F) -> Result<T, PackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PackError>>,
{
    let mut delay = BACKOFF;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && e.is_retryable() => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Registry {
    /// A client; registries in `insecure` are spoken to over plain HTTP. `tls`: CA
    /// certificates trusted besides the system store. oci-client 0.18 has no client
    /// certificate setting, so `tls.identity` is not presented to image registries.
    pub fn new(insecure: &BTreeSet<String>, tls: &TlsMaterial) -> Result<Registry, PackError> {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.iter().cloned().collect()),
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            user_agent: concat!("airlock-pack/", env!("CARGO_PKG_VERSION")),
            extra_root_certificates: tls
                .roots
                .iter()
                .flat_map(|r| r.ders())
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Der,
                    data,
                })
                .collect(),
            ..Default::default()
        };
        // `Client::new` would fall back to a default client (without these CAs) on an
        // error; `try_from` says it.
        let client = oci_client::Client::try_from(config)
            .map_err(|e| PackError::Usage(format!("TLS setup ({}): {e}", tls.describe())))?;
        Ok(Registry { client })
    }

    fn auth(r: &ImageRef) -> RegistryAuth {
        crate::auth::credentials_for(&r.registry)
    }

    /// Fetches a manifest or index by tag or digest and returns its raw bytes with their
    /// digest (computed here, compared with what was asked for when pinned).
    pub async fn manifest(&self, r: &ImageRef) -> Result<(Vec<u8>, Digest), PackError> {
        let oref = to_oci_ref(r);
        let auth = Self::auth(r);
        let bytes = retry(|| async {
            self.client
                .pull_manifest_raw(&oref, &auth, MANIFEST_ACCEPT)
                .await
                .map(|(b, _)| b.to_vec())
                .map_err(|e| PackError::registry(r, "fetching manifest", e))
        })
        .await?;
        let digest = Digest::of(&bytes);
        if let Some(want) = r.digest {
            if want != digest {
                return Err(PackError::ManifestDigest {
                    reference: r.to_string(),
                    expected: want,
                    actual: digest,
                });
            }
        }
        Ok((bytes, digest))
    }

    /// Fetches a manifest that may not exist (a cosign `.sig`/`.att`/`.sbom` tag): `None`
    /// when the registry answers that it has no such manifest, at once and without retries
    /// (most images have none, and a retried 404 would cost seconds per image). Any other
    /// failure stays an error.
    pub async fn manifest_if_any(
        &self,
        r: &ImageRef,
    ) -> Result<Option<(Vec<u8>, Digest)>, PackError> {
        let oref = to_oci_ref(r);
        let auth = Self::auth(r);
        let bytes = retry(|| async {
            match self
                .client
                .pull_manifest_raw(&oref, &auth, ARTIFACT_ACCEPT)
                .await
            {
                Ok((b, _)) => Ok(Some(b.to_vec())),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(PackError::registry(r, "fetching manifest", e)),
            }
        })
        .await?;
        Ok(bytes.map(|b| {
            let d = Digest::of(&b);
            (b, d)
        }))
    }

    /// The OCI 1.1 referrers of `subject` in `r`'s repository: the referrers API, or where
    /// the registry has none (a 404, as distribution 2.8 answers), the
    /// `sha256-<hex>` tag schema; oci-client does both (`pull_referrers`).
    pub async fn referrers(
        &self,
        r: &ImageRef,
        subject: Digest,
    ) -> Result<Vec<Descriptor>, PackError> {
        let oref = to_oci_ref(&r.with_digest(subject));
        let auth = Self::auth(r);
        self.client
            .store_auth_if_needed(oref.resolve_registry(), &auth)
            .await;
        let index = retry(|| async {
            self.client
                .pull_referrers(&oref, None)
                .await
                .map_err(|e| PackError::registry(r, format!("referrers of {subject}"), e))
        })
        .await?;
        let mut out = Vec::new();
        for m in index.manifests {
            let digest = m.digest.parse().map_err(|e| {
                PackError::registry(
                    r,
                    format!("referrers of {subject}: digest {:?}", m.digest),
                    e,
                )
            })?;
            out.push(Descriptor {
                media_type: m.media_type,
                digest,
                size: u64::try_from(m.size).unwrap_or(0),
                platform: None,
                annotations: m.annotations.map(|a| a.into_iter().collect()),
            });
        }
        Ok(out)
    }

    /// The digest a tag points to now (HEAD, falling back to GET).
    pub async fn head_digest(&self, r: &ImageRef) -> Result<Digest, PackError> {
        let oref = to_oci_ref(r);
        let auth = Self::auth(r);
        let s = retry(|| async {
            self.client
                .fetch_manifest_digest(&oref, &auth)
                .await
                .map_err(|e| PackError::registry(r, "resolving tag", e))
        })
        .await?;
        s.parse()
            .map_err(|e| PackError::registry(r, format!("registry sent digest {s:?}"), e))
    }

    /// The reference and descriptor to fetch blob `digest` of `r` with, credentials stored.
    async fn blob_request(
        &self,
        r: &ImageRef,
        digest: Digest,
        size: u64,
        media_type: &str,
    ) -> (Reference, OciDescriptor) {
        let oref = to_oci_ref(r);
        self.client
            .store_auth_if_needed(oref.resolve_registry(), &Self::auth(r))
            .await;
        let desc = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        (oref, desc)
    }

    /// Streams a blob into the cache; verified before it gets its real name. `on_bytes`
    /// sees progress.
    pub async fn fetch_blob(
        &self,
        r: &ImageRef,
        digest: Digest,
        size: u64,
        media_type: &str,
        cache: &BlobCache,
        on_bytes: &(dyn Fn(i64) + Sync),
    ) -> Result<(), PackError> {
        let (_, desc) = self.blob_request(r, digest, size, media_type).await;
        retry(|| async {
            let tmp = cache.temp_path(&digest);
            let result = self
                .fetch_once(r, &desc, digest, size, &tmp, on_bytes)
                .await;
            match result {
                Ok(()) => cache
                    .commit(&tmp, &digest)
                    .map_err(|source| PackError::Io { path: tmp, source }),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| blob_error(r, digest, e))
    }

    /// Streams a blob into `pipe` (the bundle writer's end) instead of the cache: a cold
    /// build writes each layer once. The writer hashes what it reads against the digest;
    /// here only the length is held to `size`. An attempt that breaks off resumes where it
    /// stopped (a Range request; a registry that answers with the whole blob has what was
    /// delivered skipped), so no byte reaches the writer twice. Returns the bytes fetched.
    pub async fn fetch_blob_streamed(
        &self,
        r: &ImageRef,
        digest: Digest,
        size: u64,
        media_type: &str,
        pipe: &crate::pipe::PipeWriter,
        on_bytes: &(dyn Fn(i64) + Sync),
    ) -> Result<(), PackError> {
        let (oref, desc) = self.blob_request(r, digest, size, media_type).await;
        let delivered = std::sync::atomic::AtomicU64::new(0);
        let result = retry(|| async {
            let from = delivered.load(std::sync::atomic::Ordering::Relaxed);
            if from == size {
                return Ok(());
            }
            let (mut stream, mut skip) = match self
                .client
                .pull_blob_stream_partial(&oref, &desc, from, None)
                .await
                .map_err(|e| PackError::registry("", "", e))?
            {
                oci_client::client::BlobResponse::Full(s) => (s, from),
                oci_client::client::BlobResponse::Partial(s) => (s, 0),
            };
            while let Some(chunk) = stream.next().await {
                let mut chunk =
                    chunk.map_err(|e| PackError::registry("", "download interrupted", e))?;
                if skip > 0 {
                    let n = skip.min(chunk.len() as u64);
                    let _ = chunk.split_to(n as usize);
                    skip -= n;
                }
                let at = delivered.load(std::sync::atomic::Ordering::Relaxed);
                if at + chunk.len() as u64 > size {
                    return Err(PackError::BlobTooLong {
                        reference: r.to_string(),
                        blob: digest,
                        expected: size,
                    });
                }
                let n = chunk.len();
                if pipe.send(chunk).await.is_err() {
                    // The writer stopped; its own error says why.
                    return Err(PackError::WriterStopped);
                }
                delivered.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                on_bytes(n as i64);
            }
            let got = delivered.load(std::sync::atomic::Ordering::Relaxed);
            if got != size {
                return Err(PackError::registry_said(
                    "",
                    format!("download ended early: {got} of {size} bytes"),
                ));
            }
            Ok(())
        })
        .await
        .map_err(|e| blob_error(r, digest, e));
        if let Err(e) = &result {
            pipe.fail(e.to_string());
        }
        result
    }

    async fn fetch_once(
        &self,
        r: &ImageRef,
        desc: &OciDescriptor,
        digest: Digest,
        size: u64,
        tmp: &std::path::Path,
        on_bytes: &(dyn Fn(i64) + Sync),
    ) -> Result<(), PackError> {
        let env_err = |source: std::io::Error| PackError::Io {
            path: tmp.to_path_buf(),
            source,
        };
        let mut stream = self
            .client
            .pull_blob_stream(&to_oci_ref(r), desc)
            .await
            .map_err(|e| PackError::registry("", "", e))?;
        let file = std::fs::File::create(tmp).map_err(env_err)?;
        let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        let mut reported = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PackError::registry("", "download interrupted", e))?;
            if out.count() + chunk.len() as u64 > size {
                return Err(PackError::BlobTooLong {
                    reference: r.to_string(),
                    blob: digest,
                    expected: size,
                });
            }
            out.write_all(&chunk).map_err(env_err)?;
            on_bytes(chunk.len() as i64);
            reported += chunk.len() as u64;
        }
        let (actual, count, w) = out.finish();
        let result = if count != size {
            Err(PackError::registry_said(
                "",
                format!("download ended early: {count} of {size} bytes"),
            ))
        } else if actual != digest {
            Err(PackError::BlobDigest {
                reference: r.to_string(),
                expected: digest,
                actual,
            })
        } else {
            // No fsync: a cache entry lost to a crash is fetched again, and every cache
            // entry is re-hashed when a bundle is written.
            w.into_inner()
                .map(drop)
                .map_err(|e| env_err(e.into_error()))
        };
        if result.is_err() {
            // Give back the progress this attempt claimed, so a retry does not overshoot.
            on_bytes(-(reported as i64));
        }
        result
    }
}

/// A registry's refusal of a blob names the image and the blob.
fn blob_error(r: &ImageRef, digest: Digest, e: PackError) -> PackError {
    match e {
        e @ PackError::Registry { .. } => PackError::RegistryBlob {
            subject: r.to_string(),
            blob: digest,
            source: Box::new(e),
        },
        other => other,
    }
}
