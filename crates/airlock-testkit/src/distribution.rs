//! The OCI distribution API by hand, for fixtures no tool writes as needed (BuildKit
//! attestation manifests, cosign attachments, OCI 1.1 referrers) and for tests that look
//! at what a registry holds: blobs pushed in one monolithic upload, manifests put under a
//! tag or a digest, manifests and tag lists read back. Plain HTTP on a loopback registry
//! without auth, through [`crate::http`].

use std::path::Path;

use airlock_bundle::{oci, Digest};

use crate::http::{self, Body};

/// A manifest as the registry serves it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The registry's `Docker-Content-Digest` (checked against the bytes).
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!("manifest {} is not JSON: {e}", self.digest);
        })
    }
}

/// Uploads `data` as a blob of `repo` (POST, then PUT with the digest); its digest.
pub fn push_blob(addr: &str, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    upload(addr, repo, &digest, Body::Bytes(data));
    digest
}

/// Uploads a file already hashed (a [`crate::Layer`]) as a blob of `repo`.
pub fn push_blob_file(addr: &str, repo: &str, path: &Path, digest: &Digest, size: u64) {
    upload(addr, repo, digest, Body::File(path, size));
}

fn upload(addr: &str, repo: &str, digest: &Digest, body: Body) {
    let start = http::request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Body::Empty,
    );
    if start.status != 202 {
        start.fail(&format!("starting an upload to {repo}"), addr);
    }
    let location = start
        .header("location")
        .unwrap_or_else(|| panic!("upload to {addr}/{repo}: 202 without Location"))
        .to_string();
    let (host, path) = http::split_location(&location, addr);
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = http::request(
        &host,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        body,
    );
    if put.status != 201 {
        put.fail(&format!("uploading blob {digest} to {repo}"), addr);
    }
}

/// PUTs a manifest under `reference` (a tag, or its own digest); its digest.
pub fn push_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let digest = Digest::of(bytes);
    let r = http::request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        Body::Bytes(bytes),
    );
    if r.status != 201 {
        r.fail(&format!("putting manifest {repo}:{reference}"), addr);
    }
    digest
}

/// [`push_manifest`] of a JSON value, serialised once (the digest is of those bytes).
pub fn push_json_manifest(
    addr: &str,
    repo: &str,
    reference: Option<&str>,
    media_type: &str,
    manifest: &serde_json::Value,
) -> (Digest, u64) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let digest = Digest::of(&bytes);
    let reference = reference.map_or_else(|| digest.to_string(), str::to_string);
    push_manifest(addr, repo, &reference, media_type, &bytes);
    (digest, bytes.len() as u64)
}

/// GETs a manifest (any of the OCI and Docker media types); `None` on 404.
pub fn get_manifest(addr: &str, repo: &str, reference: &str) -> Option<Manifest> {
    let accept = oci::MANIFEST_ACCEPT.join(", ");
    let r = http::request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", accept.as_str())],
        Body::Empty,
    );
    match r.status {
        200 => {}
        404 => return None,
        _ => r.fail(&format!("getting manifest {repo}:{reference}"), addr),
    }
    let digest = Digest::of(&r.body);
    if let Some(said) = r.header("docker-content-digest") {
        assert_eq!(
            said,
            digest.to_string(),
            "{addr}/{repo}:{reference}: Docker-Content-Digest disagrees with the body"
        );
    }
    Some(Manifest {
        digest,
        media_type: r.header("content-type").unwrap_or_default().to_string(),
        bytes: r.body,
    })
}

/// GETs a blob; `None` on 404.
pub fn get_blob(addr: &str, repo: &str, digest: &Digest) -> Option<Vec<u8>> {
    let mut target = format!("/v2/{repo}/blobs/{digest}");
    let mut host = addr.to_string();
    // The registry may redirect to its storage; follow a few.
    for _ in 0..3 {
        let r = http::request(&host, "GET", &target, &[], Body::Empty);
        match r.status {
            200 => {
                assert_eq!(
                    Digest::of(&r.body),
                    *digest,
                    "{addr}/{repo}: blob bytes do not hash to {digest}"
                );
                return Some(r.body);
            }
            404 => return None,
            301 | 302 | 307 | 308 => {
                let loc = r.header("location").unwrap_or_default();
                (host, target) = http::split_location(loc, &host);
            }
            _ => r.fail(&format!("getting blob {digest} of {repo}"), addr),
        }
    }
    panic!("{addr}/{repo}: blob {digest}: too many redirects")
}

/// The tags of `repo` (empty when it has none or does not exist).
pub fn tags(addr: &str, repo: &str) -> Vec<String> {
    let r = http::request(
        addr,
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[],
        Body::Empty,
    );
    match r.status {
        200 => {}
        404 => return Vec::new(),
        _ => r.fail(&format!("listing tags of {repo}"), addr),
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// DELETEs a manifest by digest (the test registry has deletes enabled): how a test
/// removes a signature.
pub fn delete_manifest(addr: &str, repo: &str, digest: &Digest) {
    let r = http::request(
        addr,
        "DELETE",
        &format!("/v2/{repo}/manifests/{digest}"),
        &[],
        Body::Empty,
    );
    if r.status != 202 {
        r.fail(&format!("deleting manifest {repo}@{digest}"), addr);
    }
}
