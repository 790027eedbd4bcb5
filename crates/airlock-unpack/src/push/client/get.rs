//! The few reads push makes to attach provenance: an existing manifest under a tag (a cosign
//! signature manifest to merge into, a referrers tag-schema index to add to), a small blob
//! (that manifest's config), and whether the registry has the OCI 1.1 referrers API. Every
//! answer is read with a cap and its digest checked where it has one.

use std::time::Duration;

use airlock_bundle::oci::MANIFEST_ACCEPT;
use airlock_bundle::Digest;
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::answer::{body_excerpt, read_capped};
use super::{scopes, Client};
use crate::UnpackError;

/// A manifest or index larger than this is not one (distribution's own limit is 4 MiB).
pub(crate) const MAX_MANIFEST: usize = 4 << 20;
/// How long such a small answer may take to arrive.
const SMALL_BODY_TIME: Duration = Duration::from_secs(60);

/// A manifest as the registry serves it.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) bytes: Bytes,
    pub(crate) media_type: Option<String>,
}

impl Client {
    /// The manifest `reference` (a tag or digest) names in `repo`, if any: at most
    /// [`MAX_MANIFEST`] bytes.
    pub(crate) async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Fetched>, UnpackError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let what = format!("GET {repo} manifest {reference}");
        let accept = MANIFEST_ACCEPT.join(", ");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http.get(url.clone()).header(ACCEPT, accept.clone())
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => {
                return Err(self.err(format!("{what}: HTTP {s}{}", body_excerpt(resp).await)));
            }
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (body, short) = read_capped(resp, MAX_MANIFEST, SMALL_BODY_TIME).await;
        if let Some(why) = short {
            return Err(self.err(format!("{what}: answer {why}")));
        }
        if let Ok(d) = reference.parse::<Digest>() {
            if Digest::of(&body) != d {
                return Err(self.err(format!(
                    "{what}: the registry served content with digest {}",
                    Digest::of(&body)
                )));
            }
        }
        Ok(Some(Fetched {
            bytes: body.into(),
            media_type,
        }))
    }

    /// Blob `digest` of `repo`, at most `cap` bytes, checked against its digest.
    pub(crate) async fn get_small_blob(
        &self,
        repo: &str,
        digest: &Digest,
        cap: usize,
    ) -> Result<Bytes, UnpackError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let what = format!("GET {repo} blob {digest}");
        let resp = self
            .send(&what, &scopes(repo, None), &|| self.http.get(url.clone()))
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.err(format!(
                "{what}: HTTP {} (a redirect is not followed: push talks to this registry only)",
                resp.status()
            )));
        }
        let (body, short) = read_capped(resp, cap, SMALL_BODY_TIME).await;
        if let Some(why) = short {
            return Err(self.err(format!("{what}: answer {why}")));
        }
        if Digest::of(&body) != *digest {
            return Err(self.err(format!(
                "{what}: the registry served content with digest {}",
                Digest::of(&body)
            )));
        }
        Ok(body.into())
    }

    /// Uploads a small blob held in memory (a merged signature manifest's config).
    pub(crate) async fn put_small_blob(
        &self,
        repo: &str,
        bytes: Bytes,
    ) -> Result<Digest, UnpackError> {
        let digest = Digest::of(&bytes);
        if !self.has_blob(repo, &digest).await? {
            let size = bytes.len() as u64;
            self.upload(repo, &digest, size, reqwest::Body::from(bytes))
                .await?;
        }
        Ok(digest)
    }

    /// Whether the registry answers the OCI 1.1 referrers API for `subject` in `repo`.
    /// A registry without it (distribution 2.8) answers 404; some answer 400 or 405 to a
    /// path they do not route.
    pub(crate) async fn has_referrers_api(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<bool, UnpackError> {
        let url = self.url(&format!("v2/{repo}/referrers/{subject}"));
        let what = format!("GET {repo} referrers of {subject}");
        let resp = self
            .send(&what, &scopes(repo, None), &|| {
                self.http
                    .request(Method::GET, url.clone())
                    .header(ACCEPT, airlock_bundle::oci::OCI_INDEX)
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => {
                Ok(false)
            }
            s => Err(self.err(format!("{what}: HTTP {s}{}", body_excerpt(resp).await))),
        }
    }
}
