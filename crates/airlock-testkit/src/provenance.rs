//! Provenance fixtures in a loopback registry, written the way the real producers write
//! them, so that airlock's discovery, carrying and `inspect --sbom` are tested on their
//! shapes: a BuildKit image index with an attestation manifest (an SPDX SBOM as an in-toto
//! statement), cosign's `.att` (a DSSE envelope around a CycloneDX statement) and `.sbom`
//! (raw SPDX) attachments, and an OCI 1.1 referrer found through the referrers tag schema
//! (the test registry, distribution 2.8, has no referrers API).
//!
//! Each fixture has its own package list, returned to the test, so that a test can tell
//! which SBOM it is shown and compare names, versions and purls.

use airlock_bundle::{oci, Digest};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::distribution::{self as dist};
use crate::fixtures::ImageSpec;

/// BuildKit's index annotation naming what an attestation manifest is.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// BuildKit's index annotation naming the manifest an attestation is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const IN_TOTO_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// cosign's layer annotation on an attestation.
pub const COSIGN_PREDICATE_TYPE: &str = "predicateType";
pub const SPDX_JSON_COSIGN: &str = "text/spdx+json";
pub const SPDX_JSON: &str = "application/spdx+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const REFERRER_ARTIFACT_TYPE: &str = "application/vnd.example.sbom";

/// A package as an SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPackage {
    pub name: String,
    pub version: String,
    pub purl: String,
}

fn packages(list: &[(&str, &str, &str)]) -> Vec<SbomPackage> {
    list.iter()
        .map(|(name, version, purl)| SbomPackage {
            name: name.to_string(),
            version: version.to_string(),
            purl: purl.to_string(),
        })
        .collect()
}

/// An SPDX 2.3 JSON document listing `packages` (name, versionInfo, a purl external ref).
pub fn spdx_document(name: &str, packages: &[SbomPackage]) -> Value {
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://airlock.invalid/spdx/{name}"),
        "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: airlock-testkit"]},
        "packages": packages.iter().enumerate().map(|(i, p)| json!({
            "name": p.name,
            "SPDXID": format!("SPDXRef-Package-{i}"),
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl}],
        })).collect::<Vec<_>>(),
    })
}

/// A CycloneDX 1.5 JSON BOM listing `packages` as library components.
pub fn cyclonedx_bom(packages: &[SbomPackage]) -> Value {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "components": packages.iter().map(|p| json!({
            "type": "library", "name": p.name, "version": p.version, "purl": p.purl,
        })).collect::<Vec<_>>(),
    })
}

/// An in-toto v0.1 statement about one subject (`name`, sha256 `digest`).
pub fn in_toto_statement(
    predicate_type: &str,
    subject_name: &str,
    subject: &Digest,
    predicate: Value,
) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": subject_name, "digest": {"sha256": subject.hex()}}],
        "predicate": predicate,
    })
}

/// Pushes a single-platform image by HTTP (layers, config, manifest) under `reference` (a
/// tag; `None`: by digest only); the manifest's digest and size.
pub fn push_image(
    addr: &str,
    repo: &str,
    reference: Option<&str>,
    spec: &ImageSpec,
) -> (Digest, u64) {
    for l in &spec.layers {
        dist::push_blob_file(addr, repo, &l.path, &l.digest, l.size);
    }
    let config = spec.config_bytes();
    let cd = dist::push_blob(addr, repo, &config);
    let manifest = spec.manifest(&cd, config.len() as u64);
    dist::push_json_manifest(addr, repo, reference, oci::OCI_MANIFEST, &manifest)
}

/// What [`push_buildkit_index`] pushed.
#[derive(Debug, Clone)]
pub struct BuildkitIndex {
    /// The index the tag points at.
    pub index: Digest,
    /// The linux/amd64 image manifest.
    pub image: Digest,
    /// The attestation manifest (platform unknown/unknown).
    pub attestation: Digest,
    /// Its one layer: the in-toto statement with the SPDX predicate.
    pub statement: Digest,
    /// What the SPDX document lists.
    pub packages: Vec<SbomPackage>,
}

/// Pushes `repo:tag` as BuildKit writes an image built with `--sbom=true`: an OCI index of
/// the linux/amd64 image from `spec` and an attestation manifest (platform
/// `unknown/unknown`, annotations `vnd.docker.reference.type: attestation-manifest` and
/// `vnd.docker.reference.digest: <amd64 manifest>`) whose layer is an in-toto statement
/// (`application/vnd.in-toto+json`, annotation `in-toto.io/predicate-type:
/// https://spdx.dev/Document`) carrying an SPDX 2.3 document.
pub fn push_buildkit_index(addr: &str, repo: &str, tag: &str, spec: &ImageSpec) -> BuildkitIndex {
    let spec = spec.clone().arch("amd64");
    let (image, image_size) = push_image(addr, repo, None, &spec);
    let packages = packages(&[
        (
            "busybox",
            "1.36.1",
            "pkg:deb/debian/busybox@1.36.1?arch=amd64",
        ),
        ("musl", "1.2.5", "pkg:apk/alpine/musl@1.2.5?arch=x86_64"),
        ("zlib", "1.3.1", "pkg:generic/zlib@1.3.1"),
    ]);
    let statement = in_toto_statement(
        SPDX_PREDICATE,
        &format!("pkg:docker/{repo}@{tag}?platform=linux%2Famd64"),
        &image,
        spdx_document("buildkit-sbom", &packages),
    );
    let statement_bytes = serde_json::to_vec(&statement).unwrap();
    let statement_digest = dist::push_blob(addr, repo, &statement_bytes);
    // BuildKit's attestation config: an image config for an unknown platform whose one
    // "layer" is the statement.
    let config = serde_json::to_vec(&json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [statement_digest.to_string()]},
    }))
    .unwrap();
    let config_digest = dist::push_blob(addr, repo, &config);
    let attestation = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": IN_TOTO,
            "digest": statement_digest.to_string(),
            "size": statement_bytes.len(),
            "annotations": {IN_TOTO_PREDICATE_TYPE: SPDX_PREDICATE},
        }],
    });
    let (att, att_size) =
        dist::push_json_manifest(addr, repo, None, oci::OCI_MANIFEST, &attestation);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [
            {"mediaType": oci::OCI_MANIFEST, "digest": image.to_string(), "size": image_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": oci::OCI_MANIFEST, "digest": att.to_string(), "size": att_size,
             "annotations": {REFERENCE_DIGEST: image.to_string(), REFERENCE_TYPE: ATTESTATION_MANIFEST},
             "platform": {"architecture": "unknown", "os": "unknown"}},
        ],
    });
    let (index, _) = dist::push_json_manifest(addr, repo, Some(tag), oci::OCI_INDEX, &index);
    BuildkitIndex {
        index,
        image,
        attestation: att,
        statement: statement_digest,
        packages,
    }
}

/// What [`push_cosign_attachments`] pushed.
#[derive(Debug, Clone)]
pub struct CosignAttachments {
    /// The manifest under `sha256-<hex>.att`.
    pub att: Digest,
    /// Its DSSE envelope layer.
    pub envelope: Digest,
    /// What the CycloneDX predicate lists.
    pub att_packages: Vec<SbomPackage>,
    /// The PEM public key the DSSE envelope is signed with (ECDSA P-256).
    pub att_public_key: String,
    /// The manifest under `sha256-<hex>.sbom`.
    pub sbom: Digest,
    /// What that SPDX document lists.
    pub sbom_packages: Vec<SbomPackage>,
}

/// cosign's attachment manifest: an OCI manifest whose config is a minimal image config
/// and whose one layer is `layer` (media type, bytes, annotations).
fn push_attachment(
    addr: &str,
    repo: &str,
    tag: &str,
    layer_type: &str,
    layer: &[u8],
    annotations: Value,
) -> (Digest, Digest) {
    let layer_digest = dist::push_blob(addr, repo, layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    }))
    .unwrap();
    let config_digest = dist::push_blob(addr, repo, &config);
    let mut l =
        json!({"mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer.len()});
    if annotations.as_object().is_some_and(|a| !a.is_empty()) {
        l["annotations"] = annotations;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [l],
    });
    let (digest, _) = dist::push_json_manifest(addr, repo, Some(tag), oci::OCI_MANIFEST, &manifest);
    (digest, layer_digest)
}

/// Pushes cosign's attachments for `subject` (a manifest in `repo`): `sha256-<hex>.att`
/// (layer `application/vnd.dsse.envelope.v1+json`, annotation `predicateType`, a DSSE
/// envelope signed with a fresh ECDSA P-256 key around an in-toto statement with a
/// CycloneDX predicate) and `sha256-<hex>.sbom` (layer `text/spdx+json`, raw SPDX JSON).
pub fn push_cosign_attachments(addr: &str, repo: &str, subject: &Digest) -> CosignAttachments {
    let att_packages = packages(&[
        (
            "openssl",
            "3.0.15",
            "pkg:deb/debian/openssl@3.0.15?arch=amd64",
        ),
        (
            "ca-certificates",
            "20240203",
            "pkg:deb/debian/ca-certificates@20240203",
        ),
    ]);
    let statement = in_toto_statement(
        CYCLONEDX_PREDICATE,
        &format!("{addr}/{repo}"),
        subject,
        cyclonedx_bom(&att_packages),
    );
    let (envelope_json, att_public_key) = dsse_envelope(&serde_json::to_vec(&statement).unwrap());
    let (att, envelope) = push_attachment(
        addr,
        repo,
        &format!("sha256-{}.att", subject.hex()),
        DSSE,
        &envelope_json,
        json!({COSIGN_PREDICATE_TYPE: CYCLONEDX_PREDICATE}),
    );
    let sbom_packages = packages(&[
        ("tzdata", "2025a", "pkg:deb/debian/tzdata@2025a"),
        ("libc6", "2.36", "pkg:deb/debian/libc6@2.36?arch=amd64"),
    ]);
    let sbom_doc = serde_json::to_vec(&spdx_document("cosign-sbom", &sbom_packages)).unwrap();
    let (sbom, _) = push_attachment(
        addr,
        repo,
        &format!("sha256-{}.sbom", subject.hex()),
        SPDX_JSON_COSIGN,
        &sbom_doc,
        json!({}),
    );
    CosignAttachments {
        att,
        envelope,
        att_packages,
        att_public_key,
        sbom,
        sbom_packages,
    }
}

/// A DSSE envelope (`payloadType` in-toto) around `payload`, signed over DSSE's
/// pre-authentication encoding with a fresh ECDSA P-256 key; the envelope and the key's
/// PEM.
fn dsse_envelope(payload: &[u8]) -> (Vec<u8>, String) {
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), payload.len()).into_bytes();
    pae.extend_from_slice(payload);
    let sig = key.sign(&rng, &pae).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope = json!({
        "payloadType": IN_TOTO,
        "payload": b64.encode(payload),
        "signatures": [{"keyid": "", "sig": b64.encode(sig.as_ref())}],
    });
    // SubjectPublicKeyInfo for id-ecPublicKey on prime256v1, then the uncompressed point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(key.public_key().as_ref());
    let body = b64.encode(&spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    (serde_json::to_vec(&envelope).unwrap(), pem)
}

/// What [`push_referrer`] pushed.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The artifact manifest (pushed by digest, `subject` = the image).
    pub manifest: Digest,
    /// Its SPDX layer.
    pub sbom: Digest,
    /// The referrers tag-schema index under `sha256-<hex>`.
    pub index: Digest,
    pub packages: Vec<SbomPackage>,
}

/// Pushes an OCI 1.1 referrer of `subject` (a manifest in `repo`): an artifact manifest
/// with `artifactType: application/vnd.example.sbom`, the empty config, one SPDX layer and
/// `subject`, pushed by digest; and, since the test registry has no referrers API, the
/// tag-schema fallback: an index listing it under the tag `sha256-<hex>`.
pub fn push_referrer(addr: &str, repo: &str, subject: &Digest) -> Referrer {
    let subject_manifest = dist::get_manifest(addr, repo, &subject.to_string())
        .unwrap_or_else(|| panic!("{addr}/{repo}@{subject}: no such manifest to refer to"));
    let packages = packages(&[("curl", "8.5.0", "pkg:deb/debian/curl@8.5.0?arch=amd64")]);
    let doc = serde_json::to_vec(&spdx_document("referrer-sbom", &packages)).unwrap();
    let sbom = dist::push_blob(addr, repo, &doc);
    let empty = dist::push_blob(addr, repo, b"{}");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "artifactType": REFERRER_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": empty.to_string(), "size": 2, "data": "e30="},
        "layers": [{"mediaType": SPDX_JSON, "digest": sbom.to_string(), "size": doc.len()}],
        "subject": {"mediaType": subject_manifest.media_type, "digest": subject.to_string(), "size": subject_manifest.bytes.len()},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    });
    let (manifest_digest, manifest_size) =
        dist::push_json_manifest(addr, repo, None, oci::OCI_MANIFEST, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [{
            "mediaType": oci::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_size,
            "artifactType": REFERRER_ARTIFACT_TYPE,
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        }],
    });
    let (index, _) = dist::push_json_manifest(
        addr,
        repo,
        Some(&format!("sha256-{}", subject.hex())),
        oci::OCI_INDEX,
        &index,
    );
    Referrer {
        manifest: manifest_digest,
        sbom,
        index,
        packages,
    }
}
