//! The test kit's signer, verifier and provenance fixtures, checked against a real registry
//! and the real skopeo 1.18: what the airlock tests build on must itself be right, or a
//! passing airlock test proves nothing. Nothing is skipped: without skopeo 1.18 (fetched
//! from Debian 13 on first use) these tests fail with the reason.

use airlock_bundle::Digest;
use airlock_testkit::cosign::{self, Identity};
use airlock_testkit::distribution as dist;
use airlock_testkit::provenance::{self, SbomPackage};
use airlock_testkit::{CosignKey, ImageSpec, Layer, TestRegistry};
use base64::Engine as _;
use serde_json::Value;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

fn image(dir: &std::path::Path, marker: &str) -> ImageSpec {
    let layer = Layer::files(
        &dir.join("layers"),
        &[("etc/marker", marker.as_bytes(), 0o644)],
    );
    ImageSpec::new(vec![layer], &["/bin/true"])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn blob_json(addr: &str, repo: &str, digest: &str) -> Value {
    let d: Digest = digest.parse().unwrap();
    let bytes = dist::get_blob(addr, repo, &d).unwrap_or_else(|| panic!("{repo}: no blob {d}"));
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_signed_copy_verifies_under_its_key_and_no_other() {
    let reg = TestRegistry::start();
    let addr = &reg.addr;
    let dir = tempfile::tempdir().unwrap();
    let key = CosignKey::generate(dir.path(), "vendor");
    let other = CosignKey::generate(dir.path(), "other");
    assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_ne!(key.public_pem(), other.public_pem());
    let private = std::fs::read_to_string(&key.private_key).unwrap();
    assert!(
        private.starts_with("-----BEGIN ENCRYPTED"),
        "not cosign's encrypted format: {private}"
    );

    let (digest, _) =
        provenance::push_image(addr, "upstream/app", Some("v1"), &image(dir.path(), "a"));
    let signed = cosign::sign_copy(
        &format!("docker://{addr}/upstream/app:v1"),
        &format!("docker://{addr}/vendor/app:v1"),
        &key,
    );
    assert_eq!(signed, digest, "the signed copy changed the manifest");

    // The signature is where cosign puts it, in cosign's shape.
    let sig_tag = cosign::signature_tag(&digest);
    assert!(dist::tags(addr, "vendor/app").contains(&sig_tag));
    assert!(!dist::tags(addr, "upstream/app").contains(&sig_tag));
    let sig = dist::get_manifest(addr, "vendor/app", &sig_tag).unwrap();
    let sig_json = sig.json();
    let layer = &sig_json["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING);
    let b64 = layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap();
    assert!(!base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
        .is_empty());
    let payload = blob_json(addr, "vendor/app", layer["digest"].as_str().unwrap());
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.to_string()
    );
    let identity = payload["critical"]["identity"]["docker-reference"]
        .as_str()
        .unwrap();
    assert!(
        identity.starts_with(&format!("{addr}/vendor/app")),
        "signed identity {identity:?}"
    );

    let out = dir.path().join("out");
    let good = cosign::sigstore_policy(
        &dir.path().join("good.json"),
        &key.public_key,
        Identity::MatchRepository,
    );
    let bad = cosign::sigstore_policy(
        &dir.path().join("bad.json"),
        &other.public_key,
        Identity::MatchRepository,
    );
    let signed_ref = format!("docker://{addr}/vendor/app:v1");
    let o = cosign::verify_copy(&signed_ref, out.join("good").to_str().unwrap(), &good);
    assert!(o.status.success(), "right key refused: {}", stderr(&o));
    let copied = std::fs::read(out.join("good/manifest.json")).unwrap();
    assert_eq!(Digest::of(&copied), digest);

    let o = cosign::verify_copy(&signed_ref, out.join("bad").to_str().unwrap(), &bad);
    assert!(!o.status.success(), "another key accepted");
    assert!(
        stderr(&o).contains("invalid signature when validating ASN.1 encoded signature"),
        "{}",
        stderr(&o)
    );

    let unsigned_ref = format!("docker://{addr}/upstream/app:v1");
    let o = cosign::verify_copy(&unsigned_ref, out.join("unsigned").to_str().unwrap(), &good);
    assert!(!o.status.success(), "an unsigned image accepted");
    assert!(
        stderr(&o).contains("A signature was required, but no signature exists"),
        "{}",
        stderr(&o)
    );

    // A mirror keeps the signature; its identity is the vendor's, so only a remap accepts.
    cosign::copy_with_signatures(&signed_ref, &format!("docker://{addr}/mirror/app:v1"));
    assert!(dist::tags(addr, "mirror/app").contains(&sig_tag));
    let mirror_ref = format!("docker://{addr}/mirror/app:v1");
    let o = cosign::verify_copy(&mirror_ref, out.join("strict").to_str().unwrap(), &good);
    assert!(
        !o.status.success(),
        "a mirror accepted under matchRepository"
    );
    let remap = cosign::sigstore_policy(
        &dir.path().join("remap.json"),
        &key.public_key,
        Identity::Remap {
            prefix: &format!("{addr}/mirror"),
            signed_prefix: &format!("{addr}/vendor"),
        },
    );
    let o = cosign::verify_copy(&mirror_ref, out.join("remap").to_str().unwrap(), &remap);
    assert!(
        o.status.success(),
        "remapped identity refused: {}",
        stderr(&o)
    );

    // With its signature deleted, the mirror's image is refused again.
    let sig_digest = dist::get_manifest(addr, "mirror/app", &sig_tag)
        .unwrap()
        .digest;
    dist::delete_manifest(addr, "mirror/app", &sig_digest);
    let o = cosign::verify_copy(&mirror_ref, out.join("gone").to_str().unwrap(), &remap);
    assert!(!o.status.success(), "accepted without its signature");
    assert!(
        stderr(&o).contains("A signature was required, but no signature exists"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sign_existing_signs_an_index_in_place() {
    let reg = TestRegistry::start();
    let addr = &reg.addr;
    let dir = tempfile::tempdir().unwrap();
    let key = CosignKey::generate(dir.path(), "k");
    let bk = provenance::push_buildkit_index(addr, "bk/app", "v1", &image(dir.path(), "b"));
    let reference = format!("docker://{addr}/bk/app:v1");
    let signed = cosign::sign_existing(&reference, &key);
    assert_eq!(signed, bk.index, "signing in place changed the index");
    // With `--all`, skopeo signs the index and each instance in it.
    let tags = dist::tags(addr, "bk/app");
    for d in [&bk.index, &bk.image, &bk.attestation] {
        assert!(tags.contains(&cosign::signature_tag(d)), "{d}: {tags:?}");
    }
    let policy = cosign::sigstore_policy(
        &dir.path().join("p.json"),
        &key.public_key,
        Identity::MatchRepository,
    );
    let out = dir.path().join("oci");
    let o = cosign::verify_copy_all(&reference, &format!("oci:{}:x", out.display()), &policy);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every instance is checked: one whose signature is gone fails the whole copy.
    let att_sig = dist::get_manifest(addr, "bk/app", &cosign::signature_tag(&bk.attestation))
        .unwrap()
        .digest;
    dist::delete_manifest(addr, "bk/app", &att_sig);
    let o = cosign::verify_copy_all(&reference, &format!("oci:{}:y", out.display()), &policy);
    assert!(!o.status.success(), "an unsigned instance accepted");
    assert!(
        stderr(&o).contains("A signature was required, but no signature exists"),
        "{}",
        stderr(&o)
    );
}

/// Name, version and purl of every package of an SPDX document.
fn spdx_packages(doc: &Value) -> Vec<SbomPackage> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| SbomPackage {
            name: p["name"].as_str().unwrap().into(),
            version: p["versionInfo"].as_str().unwrap().into(),
            purl: p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .into(),
        })
        .collect()
}

#[test]
fn provenance_fixtures_have_the_producers_shapes() {
    let reg = TestRegistry::start();
    let addr = &reg.addr;
    let dir = tempfile::tempdir().unwrap();
    let bk = provenance::push_buildkit_index(addr, "bk/app", "v1", &image(dir.path(), "c"));

    // (a) BuildKit: the index, its attestation entry, the statement and its SPDX packages.
    let index = dist::get_manifest(addr, "bk/app", "v1").unwrap();
    assert_eq!(index.digest, bk.index);
    let ij = index.json();
    let entries = ij["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["digest"], bk.image.to_string());
    assert_eq!(entries[1]["digest"], bk.attestation.to_string());
    assert_eq!(entries[1]["platform"]["os"], "unknown");
    assert_eq!(
        entries[1]["annotations"][provenance::REFERENCE_TYPE],
        "attestation-manifest"
    );
    assert_eq!(
        entries[1]["annotations"][provenance::REFERENCE_DIGEST],
        bk.image.to_string()
    );
    let att = dist::get_manifest(addr, "bk/app", &bk.attestation.to_string())
        .unwrap()
        .json();
    assert_eq!(att["layers"][0]["mediaType"], provenance::IN_TOTO);
    assert_eq!(
        att["layers"][0]["annotations"]["in-toto.io/predicate-type"],
        "https://spdx.dev/Document"
    );
    let statement = blob_json(addr, "bk/app", &bk.statement.to_string());
    assert_eq!(statement["subject"][0]["digest"]["sha256"], bk.image.hex());
    assert_eq!(spdx_packages(&statement["predicate"]), bk.packages);
    assert!(bk.packages.len() >= 2);
    // An independent reader takes the index whole, attestation included.
    let skopeo = airlock_testkit::Skopeo118::get();
    let raw = skopeo.run(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/bk/app:v1"),
    ]);
    assert_eq!(raw.as_bytes(), index.bytes.as_slice());
    skopeo.run(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{addr}/bk/app:v1"),
        &format!("oci:{}:bk", dir.path().join("layout").display()),
    ]);

    // (b) cosign attachments of the index.
    let c = provenance::push_cosign_attachments(addr, "bk/app", &bk.index);
    let tags = dist::tags(addr, "bk/app");
    let hex = bk.index.hex();
    for t in [format!("sha256-{hex}.att"), format!("sha256-{hex}.sbom")] {
        assert!(tags.contains(&t), "{t} not in {tags:?}");
    }
    let att = dist::get_manifest(addr, "bk/app", &format!("sha256-{hex}.att")).unwrap();
    assert_eq!(att.digest, c.att);
    let layer = &att.json()["layers"][0];
    assert_eq!(layer["mediaType"], provenance::DSSE);
    assert_eq!(
        layer["annotations"]["predicateType"],
        "https://cyclonedx.org/bom"
    );
    let envelope = blob_json(addr, "bk/app", &c.envelope.to_string());
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    // The DSSE signature is real: it verifies over the pre-authentication encoding.
    let sig = b64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let pem_body: String = c
        .att_public_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let spki = b64.decode(pem_body).unwrap();
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        provenance::IN_TOTO.len(),
        provenance::IN_TOTO,
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &spki[26..])
        .verify(&pae, &sig)
        .expect("the DSSE signature verifies");
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(statement["predicateType"], "https://cyclonedx.org/bom");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
    let components: Vec<SbomPackage> = statement["predicate"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| SbomPackage {
            name: p["name"].as_str().unwrap().into(),
            version: p["version"].as_str().unwrap().into(),
            purl: p["purl"].as_str().unwrap().into(),
        })
        .collect();
    assert_eq!(components, c.att_packages);
    let sbom = dist::get_manifest(addr, "bk/app", &format!("sha256-{hex}.sbom"))
        .unwrap()
        .json();
    assert_eq!(sbom["layers"][0]["mediaType"], "text/spdx+json");
    let doc = blob_json(
        addr,
        "bk/app",
        sbom["layers"][0]["digest"].as_str().unwrap(),
    );
    assert_eq!(spdx_packages(&doc), c.sbom_packages);

    // (c) an OCI 1.1 referrer, found through the tag schema.
    let r = provenance::push_referrer(addr, "bk/app", &bk.index);
    let fallback = dist::get_manifest(addr, "bk/app", &format!("sha256-{hex}")).unwrap();
    assert_eq!(fallback.digest, r.index);
    let listed = &fallback.json()["manifests"][0];
    assert_eq!(listed["digest"], r.manifest.to_string());
    assert_eq!(listed["artifactType"], provenance::REFERRER_ARTIFACT_TYPE);
    let m = dist::get_manifest(addr, "bk/app", &r.manifest.to_string())
        .unwrap()
        .json();
    assert_eq!(m["subject"]["digest"], bk.index.to_string());
    assert_eq!(m["subject"]["mediaType"], airlock_bundle::oci::OCI_INDEX);
    assert_eq!(m["artifactType"], provenance::REFERRER_ARTIFACT_TYPE);
    let doc = blob_json(addr, "bk/app", &r.sbom.to_string());
    assert_eq!(spdx_packages(&doc), r.packages);
}
