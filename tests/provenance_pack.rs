//! Provenance on the pack side: `[[verify]]` rules at lock and build, and what build carries.
//! Real registry, images signed by skopeo 1.18 (`airlock_testkit::cosign`), fixtures written
//! as BuildKit, cosign and OCI 1.1 write them (`airlock_testkit::provenance`); the bundle's
//! header is read straight from the (plain) bundle's tar.

use std::io::Read as _;
use std::path::Path;

use airlock_bundle::header::HEADER_PATH;
use airlock_bundle::lock::Lock;
use airlock_bundle::Digest;
use airlock_testkit::cosign::{self, CosignKey};
use airlock_testkit::distribution as dist;
use airlock_testkit::provenance as fx;
use airlock_testkit::ImageSpec;
use airlock_tests::*;
use base64::Engine as _;
use serde_json::Value;

/// A `[[verify]]` rule as the spec writes it.
struct Rule<'a> {
    pattern: &'a str,
    key: &'a str,
    require: bool,
}

/// Writes the spec for `images` (linux/amd64) with `rules` appended.
fn spec_with(w: &World, images: &[&str], rules: &[Rule<'_>]) {
    w.write_spec(&["linux/amd64"], images);
    let mut s = std::fs::read_to_string(w.spec()).unwrap();
    for r in rules {
        s.push_str(&format!(
            "\n[[verify]]\nmatch = \"{}\"\nkey = \"{}\"\nrequire = {}\n",
            r.pattern, r.key, r.require
        ));
    }
    std::fs::write(w.spec(), s).unwrap();
}

/// `registry/repository` of a reference `registry/repository:tag`.
fn repo_of(reference: &str) -> &str {
    reference.rsplit_once(':').unwrap().0
}

/// The repository path inside the registry (`e2e/hello`).
fn path_of<'a>(w: &World, reference: &'a str) -> &'a str {
    repo_of(reference)
        .strip_prefix(&format!("{}/", w.registry.addr))
        .unwrap()
}

/// The key's fingerprint as airlock names keys: sha256 of the DER SubjectPublicKeyInfo.
fn fingerprint(key: &CosignKey) -> String {
    let pem = key.public_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    Digest::of(&der).to_string()
}

/// The signature manifest skopeo pushed for `digest` in `reference`'s repository.
fn sig_manifest(w: &World, reference: &str, digest: &Digest) -> dist::Manifest {
    dist::get_manifest(
        &w.registry.addr,
        path_of(w, reference),
        &cosign::signature_tag(digest),
    )
    .expect("a signature manifest")
}

/// The current manifest digest of a tag.
fn digest_of(w: &World, reference: &str) -> Digest {
    let tag = reference.rsplit_once(':').unwrap().1;
    Digest::of(
        &dist::get_manifest(&w.registry.addr, path_of(w, reference), tag)
            .unwrap()
            .bytes,
    )
}

/// The signed header of a plain bundle.
fn header(bundle: &Path) -> Value {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == HEADER_PATH {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            return serde_json::from_slice(&data).unwrap();
        }
    }
    panic!("{}: no header", bundle.display());
}

fn records<'a>(h: &'a Value, kind: &str) -> Vec<&'a Value> {
    h["provenance"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["kind"] == kind).collect())
        .unwrap_or_default()
}

fn carried(h: &Value, digest: &str) -> bool {
    h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["digest"] == digest)
}

fn docker(reference: &str) -> String {
    format!("docker://{reference}")
}

#[test]
fn signed_images_lock_and_build_and_the_header_names_the_key_that_verified() {
    let w = World::new();
    let key = CosignKey::generate(&w.path("cosign"), "upstream");
    let signed = cosign::sign_existing(&docker(&w.hello), &key);
    assert_eq!(signed, digest_of(&w, &w.hello));
    spec_with(
        &w,
        &[&w.hello],
        &[Rule {
            pattern: repo_of(&w.hello),
            key: "cosign/upstream.pub",
            require: true,
        }],
    );
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    assert_ok(&o);
    let sig = sig_manifest(&w, &w.hello, &signed);
    let sig_digest = Digest::of(&sig.bytes);
    let lock = Lock::load(&Lock::path_for(&w.spec())).unwrap();
    assert_eq!(lock.images[0].digest, signed);
    assert_eq!(lock.images[0].signatures, vec![sig_digest], "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("signature {sig_digest} verified")),
        "{}",
        text(&o)
    );

    let bundle = w.build("signed.airlock", true);
    let h = header(&bundle);
    let sigs = records(&h, "signature");
    assert_eq!(sigs.len(), 1, "{h:#}");
    let rec = sigs[0];
    assert_eq!(rec["subject"], signed.to_string());
    assert_eq!(rec["manifest"], sig_digest.to_string());
    assert!(carried(&h, &sig_digest.to_string()));
    let one = &rec["signatures"][0];
    assert_eq!(one["verified_with"], fingerprint(&key), "{rec:#}");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(one["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(one["payload_digest"], Digest::of(&payload).to_string());
    assert!(
        String::from_utf8_lossy(&payload).contains(&signed.to_string()),
        "the carried payload is the simple-signing claim for the image"
    );
    for b in rec["blobs"].as_array().unwrap() {
        assert!(carried(&h, b.as_str().unwrap()), "{b} not carried");
    }
    // The independent verifier agrees with the carried claim.
    let policy = cosign::sigstore_policy(
        &w.path("policy.json"),
        &key.public_key,
        cosign::Identity::MatchRepository,
    );
    let v = cosign::verify_copy(&docker(&w.hello), w.path("copy").to_str().unwrap(), &policy);
    assert!(v.status.success(), "{}", text(&v));

    // Without provenance: no records, no artifact blobs; the rule still holds.
    let (plain, o) = {
        let out = w.path("bare.airlock");
        let mut args = w.build_args(&out, true);
        args.push("--no-provenance".into());
        (out.clone(), w.pack(&args))
    };
    assert_ok(&o);
    let h = header(&plain);
    assert!(
        h.get("provenance")
            .is_none_or(|p| p.as_array().unwrap().is_empty()),
        "{h:#}"
    );
    assert!(!carried(&h, &sig_digest.to_string()));
}

#[test]
fn lock_refuses_an_unsigned_image_another_key_and_another_digest_with_14() {
    let w = World::new();
    let ours = CosignKey::generate(&w.path("cosign"), "ours");
    let theirs = CosignKey::generate(&w.path("cosign"), "theirs");
    let rule = |r: &'static str| Rule {
        pattern: r,
        key: "cosign/ours.pub",
        require: true,
    };
    let hello_repo: &'static str = Box::leak(repo_of(&w.hello).to_string().into_boxed_str());
    let second_repo: &'static str = Box::leak(repo_of(&w.second).to_string().into_boxed_str());

    // Unsigned.
    spec_with(&w, &[&w.second], &[rule(second_repo)]);
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    let second = digest_of(&w, &w.second);
    assert_refused(
        &o,
        14,
        &[
            &w.second,
            &second.to_string(),
            "ours.pub",
            &fingerprint(&ours),
            "no signature found",
        ],
    );
    assert!(
        !Lock::path_for(&w.spec()).exists(),
        "a refused lock is not written"
    );

    // Signed, by another key.
    let hello = cosign::sign_existing(&docker(&w.hello), &theirs);
    spec_with(&w, &[&w.hello], &[rule(hello_repo)]);
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    assert_refused(
        &o,
        14,
        &[&w.hello, &fingerprint(&ours), "not signed by this key"],
    );

    // By our key, for another image: hello's signature manifest (signed by ours) put
    // under second's signature tag.
    let hello = {
        let d = cosign::sign_existing(&docker(&w.hello), &ours);
        assert_eq!(d, hello);
        d
    };
    let sig = sig_manifest(&w, &w.hello, &hello);
    let m = sig.json();
    let (from, to) = (path_of(&w, &w.hello), path_of(&w, &w.second));
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let digest: Digest = d["digest"].as_str().unwrap().parse().unwrap();
        let bytes = dist::get_blob(&w.registry.addr, from, &digest).unwrap();
        dist::push_blob(&w.registry.addr, to, &bytes);
    }
    dist::push_manifest(
        &w.registry.addr,
        to,
        &cosign::signature_tag(&second),
        &sig.media_type,
        &sig.bytes,
    );
    spec_with(&w, &[&w.second], &[rule(second_repo)]);
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    assert_refused(
        &o,
        14,
        &[
            &w.second,
            &second.to_string(),
            &format!("by this key, but for {hello}"),
        ],
    );

    // require = false: locked, the signature recorded only where it verifies, a warning.
    spec_with(
        &w,
        &[&w.second],
        &[Rule {
            pattern: second_repo,
            key: "cosign/ours.pub",
            require: false,
        }],
    );
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("require = false"),
        "{}",
        text(&o)
    );
    let lock = Lock::load(&Lock::path_for(&w.spec())).unwrap();
    assert!(lock.images[0].signatures.is_empty());

    // A key file that is not a key: a usage error naming it.
    std::fs::write(w.path("cosign/junk.pub"), "junk").unwrap();
    spec_with(
        &w,
        &[&w.hello],
        &[Rule {
            pattern: hello_repo,
            key: "cosign/junk.pub",
            require: true,
        }],
    );
    let o = w.pack(["lock", w.spec().to_str().unwrap()]);
    assert_refused(&o, 2, &["junk.pub"]);
}

#[test]
fn build_refuses_a_signature_that_changed_or_vanished_since_the_lock() {
    let w = World::new();
    let key = CosignKey::generate(&w.path("cosign"), "upstream");
    let hello = cosign::sign_existing(&docker(&w.hello), &key);
    spec_with(
        &w,
        &[&w.hello],
        &[Rule {
            pattern: repo_of(&w.hello),
            key: "cosign/upstream.pub",
            require: true,
        }],
    );
    w.lock();
    let locked = Digest::of(&sig_manifest(&w, &w.hello, &hello).bytes);
    // Signed again: skopeo adds a signature to the manifest under the same tag, which now
    // names another manifest.
    cosign::sign_existing(&docker(&w.hello), &key);
    let now = Digest::of(&sig_manifest(&w, &w.hello, &hello).bytes);
    assert_ne!(now, locked);
    let (_, o) = w.try_build("drift.airlock", true);
    assert_refused(
        &o,
        14,
        &[
            &w.hello,
            "signature changed since the lock",
            &format!("locked {locked}, now {now}"),
            "lock --update",
        ],
    );
    assert!(!w.path("drift.airlock").exists());

    // Vanished.
    dist::delete_manifest(&w.registry.addr, path_of(&w, &w.hello), &now);
    let (_, o) = w.try_build("gone.airlock", true);
    assert_refused(
        &o,
        14,
        &[&format!("locked {locked}, now nothing"), &w.hello],
    );
}

#[test]
fn attestations_sboms_and_referrers_are_carried_with_their_types() {
    let w = World::new();
    let addr = w.registry.addr.clone();
    let spec = ImageSpec::new(vec![w.busybox_layer.clone()], &["/bin/busybox", "true"]);
    let bk = fx::push_buildkit_index(&addr, "prov/bk", "v1", &spec);
    let att = fx::push_cosign_attachments(&addr, "prov/bk", &bk.image);
    let referrer = fx::push_referrer(&addr, "prov/bk", &bk.index);
    let reference = format!("{addr}/prov/bk:v1");
    spec_with(&w, &[&reference], &[]);
    w.lock();
    let bundle = w.build("prov.airlock", true);
    let h = header(&bundle);

    let bka = records(&h, "buildkit-attestation");
    assert_eq!(bka.len(), 1, "{h:#}");
    assert_eq!(bka[0]["manifest"], bk.attestation.to_string());
    assert_eq!(bka[0]["subject"], bk.image.to_string());
    assert_eq!(bka[0]["predicate_types"][0], fx::SPDX_PREDICATE);
    assert!(carried(&h, &bk.statement.to_string()));

    let a = records(&h, "attestation");
    assert_eq!(a.len(), 1, "{h:#}");
    assert_eq!(a[0]["manifest"], att.att.to_string());
    assert_eq!(a[0]["subject"], bk.image.to_string());
    assert_eq!(a[0]["predicate_types"][0], fx::CYCLONEDX_PREDICATE);
    assert!(carried(&h, &att.envelope.to_string()));

    let s = records(&h, "sbom");
    assert_eq!(s.len(), 1, "{h:#}");
    assert_eq!(s[0]["manifest"], att.sbom.to_string());
    assert_eq!(s[0]["predicate_types"][0], fx::SPDX_JSON_COSIGN);

    let r = records(&h, "referrer");
    assert_eq!(r.len(), 1, "{h:#}");
    assert_eq!(r[0]["manifest"], referrer.manifest.to_string());
    assert_eq!(r[0]["subject"], bk.index.to_string());
    assert_eq!(r[0]["artifact_type"], fx::REFERRER_ARTIFACT_TYPE);
    assert!(carried(&h, &referrer.sbom.to_string()));

    // Every record's manifest and blobs are entries, after the image's own blobs.
    let entries: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let pos = |d: &str| entries.iter().position(|e| *e == d).unwrap();
    let last_image_blob = h["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| pos(l.as_str().unwrap()))
        .max()
        .unwrap();
    for p in h["provenance"].as_array().unwrap() {
        let m = p["manifest"].as_str().unwrap();
        assert!(pos(m) > last_image_blob, "{m} before the image's blobs");
        for b in p["blobs"].as_array().unwrap() {
            pos(b.as_str().unwrap());
        }
    }
    // The bundle verifies on the gap host as it is.
    let o = w.unpack("verify", &bundle, &[]);
    assert_ok(&o);
}
