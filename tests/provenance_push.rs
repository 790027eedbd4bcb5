//! Provenance through `push`: signatures, attestations and SBOMs written under the conventions cosign and skopeo read.
//!
//! Upstream (the test registry), skopeo 1.18 signs two images with a cosign key; one of them
//! also gets cosign `.att` and `.sbom` attachments and an OCI 1.1 referrer (tag-schema
//! fallback), and a third image is a BuildKit index with an SPDX attestation manifest. The
//! bundle built from them is pushed from inside `unshare -n` into a second registry started
//! in that namespace (the gap registry, distribution 2.8: no referrers API). There, the
//! same skopeo with a `policy.json` requiring `sigstoreSigned` by the public key is the
//! independent judge: it copies the pushed images out, and refuses one whose signature tag
//! the test re-points at another image's signature, and one whose signature it deletes.
//!
//! The gap side is this test binary again (`gap_side`, ignored on its own), run by the
//! outer test inside the namespace with what it needs in a JSON file, so it uses the test
//! kit's skopeo helpers directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_bundle::Digest;
use airlock_testkit::cosign::{self, CosignKey, Identity};
use airlock_testkit::distribution as dist;
use airlock_testkit::provenance;
use airlock_testkit::{ImageSpec, TestRegistry};
use airlock_tests::*;
use serde_json::{json, Value};

/// Names the parameters file of the gap side.
const GAP_ENV: &str = "AIRLOCK_PROVENANCE_PUSH_GAP";

fn digest(v: &Value) -> Digest {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a digest: {v}"))
}

#[test]
fn push_keeps_signatures_attestations_and_sboms_verifiable_in_the_gap() {
    let w = World::new();
    let up = &w.registry.addr;
    let vendor = CosignKey::generate(&w.path("cosign"), "vendor");
    let hello = cosign::sign_existing(&format!("docker://{}", w.hello), &vendor);
    let second = cosign::sign_existing(&format!("docker://{}", w.second), &vendor);
    let sig_of = |repo: &str, d: &Digest| {
        dist::get_manifest(up, repo, &cosign::signature_tag(d))
            .unwrap_or_else(|| panic!("skopeo left no signature for {repo}@{d}"))
            .digest
    };
    let hello_sig = sig_of("e2e/hello", &hello);
    let second_sig = sig_of("e2e/second", &second);
    let attachments = provenance::push_cosign_attachments(up, "e2e/hello", &hello);
    let referrer = provenance::push_referrer(up, "e2e/hello", &hello);
    let bk = provenance::push_buildkit_index(
        up,
        "e2e/bk",
        "v1",
        &ImageSpec::new(vec![w.busybox_layer.clone()], &["/bin/busybox", "true"]),
    );
    let bk_ref = format!("{up}/e2e/bk:v1");
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second, &bk_ref]);
    let bundle = w.build("provenance.airlock", true);

    let params = w.path("gap-params.json");
    std::fs::write(
        &params,
        serde_json::to_vec_pretty(&json!({
            "bundle": bundle,
            "unpack": unpack_bin(),
            "trust": w.path("pack-keys/airlock.pub"),
            "identity": w.path("host/host.key"),
            "work": w.path("gap"),
            "upstream": up,
            "vendor_pub": vendor.public_key,
            "hello": hello.to_string(),
            "hello_sig": hello_sig.to_string(),
            "second": second.to_string(),
            "second_sig": second_sig.to_string(),
            "att": attachments.att.to_string(),
            "sbom": attachments.sbom.to_string(),
            "referrer": referrer.manifest.to_string(),
            "bk_attestation": bk.attestation.to_string(),
            "bk_image": bk.image.to_string(),
        }))
        .unwrap(),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let o = Command::new("unshare")
        .arg("-n")
        .arg(exe)
        .args(["--exact", "gap_side", "--ignored", "--nocapture"])
        .env(GAP_ENV, &params)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("1 passed"),
        "the gap side failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What the outer test handed over.
struct Gap {
    p: Value,
    registry: TestRegistry,
    work: PathBuf,
}

impl Gap {
    fn path(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }

    fn d(&self, key: &str) -> Digest {
        digest(&self.p[key])
    }

    /// `airlock-unpack push BUNDLE --prefix PREFIX --json`: its report.
    fn push(&self, prefix: &str) -> Value {
        let p = &self.p;
        let o = Command::new(p["unpack"].as_str().unwrap())
            .arg("push")
            .arg(p["bundle"].as_str().unwrap())
            .args([
                "--registry",
                &self.registry.addr,
                "--insecure",
                "--prefix",
                prefix,
            ])
            .args(["--trust", p["trust"].as_str().unwrap()])
            .args(["--identity", p["identity"].as_str().unwrap()])
            .args(["--json", "--quiet"])
            .env_remove("AIRLOCK_TRUST_DIR")
            .env_remove("AIRLOCK_POLICY")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", self.path("no-docker-config"))
            .output()
            .unwrap();
        assert_ok(&o);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The digest `repo:reference` names in the gap registry.
    fn at(&self, repo: &str, reference: &str) -> Option<Digest> {
        dist::get_manifest(&self.registry.addr, repo, reference).map(|m| m.digest)
    }

    /// A `policy.json` requiring a signature by `key` for `identity`.
    fn policy(&self, name: &str, key: &Path, identity: Identity) -> PathBuf {
        cosign::sigstore_policy(&self.path(name), key, identity)
    }

    fn verify(&self, image: &str, policy: &Path, out: &str) -> std::process::Output {
        cosign::verify_copy(
            &format!("docker://{}/{image}", self.registry.addr),
            self.path(out).to_str().unwrap(),
            policy,
        )
    }
}

fn image<'a>(report: &'a Value, repo_suffix: &str) -> &'a Value {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repository"].as_str().unwrap().ends_with(repo_suffix))
        .unwrap_or_else(|| panic!("{repo_suffix} not in the report: {report:#}"))
}

fn artifact<'a>(item: &'a Value, kind: &str, manifest: &Digest) -> &'a Value {
    item["artifacts"]
        .as_array()
        .unwrap_or_else(|| panic!("no artifacts: {item:#}"))
        .iter()
        .find(|a| a["kind"] == kind && a["manifest"] == manifest.to_string())
        .unwrap_or_else(|| panic!("no {kind} {manifest} in {item:#}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
#[ignore = "the gap side of push_keeps_signatures_attestations_and_sboms_verifiable_in_the_gap, which runs it inside `unshare -n`"]
fn gap_side() {
    let params = std::env::var(GAP_ENV).expect("run by the outer test, which sets the parameters");
    let p: Value = serde_json::from_slice(&std::fs::read(params).unwrap()).unwrap();
    // A new network namespace has loopback down: nothing at all is reachable until it is up,
    // and then only this namespace's own registry.
    run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
    let up = p["upstream"].as_str().unwrap().to_string();
    assert!(
        std::net::TcpStream::connect(&up).is_err(),
        "the upstream registry {up} is reachable from the gap"
    );
    let work = PathBuf::from(p["work"].as_str().unwrap());
    std::fs::create_dir_all(&work).unwrap();
    let g = Gap {
        registry: TestRegistry::start(),
        work,
        p,
    };
    let gap = g.registry.addr.clone();
    let vendor_pub = PathBuf::from(g.p["vendor_pub"].as_str().unwrap());
    let (hello, second) = (g.d("hello"), g.d("second"));

    let first = g.push("gap/");
    // The cosign tags hold the upstream manifests, byte for byte.
    let h = image(&first, "gap/e2e/hello");
    for (kind, tag, manifest) in [
        (
            "signature",
            format!("sha256-{}.sig", hello.hex()),
            g.d("hello_sig"),
        ),
        (
            "attestation",
            format!("sha256-{}.att", hello.hex()),
            g.d("att"),
        ),
        ("sbom", format!("sha256-{}.sbom", hello.hex()), g.d("sbom")),
    ] {
        assert_eq!(g.at("gap/e2e/hello", &tag), Some(manifest), "{tag}");
        let a = artifact(h, kind, &manifest);
        assert_eq!(a["status"], "pushed", "{a:#}");
        assert_eq!(a["reference"], format!("{gap}/gap/e2e/hello:{tag}"));
    }
    let s = image(&first, "gap/e2e/second");
    assert_eq!(
        g.at("gap/e2e/second", &cosign::signature_tag(&second)),
        Some(g.d("second_sig"))
    );
    assert_eq!(
        artifact(s, "signature", &g.d("second_sig"))["status"],
        "pushed"
    );

    // The referrer: by digest, and listed in the tag-schema index (no referrers API here).
    let referrer = g.d("referrer");
    assert_eq!(g.at("gap/e2e/hello", &referrer.to_string()), Some(referrer));
    let r = artifact(h, "referrer", &referrer);
    assert_eq!(
        r["referrers_tag"],
        format!("{gap}/gap/e2e/hello:sha256-{}", hello.hex())
    );
    let fallback = dist::get_manifest(&gap, "gap/e2e/hello", &format!("sha256-{}", hello.hex()))
        .expect("no referrers tag-schema index in the gap");
    let listed = fallback.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == referrer.to_string())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the referrer is not in the fallback index: {:#}",
                fallback.json()
            )
        });
    assert_eq!(listed["artifactType"], "application/vnd.example.sbom");

    // The BuildKit attestation manifest: by digest, and in the index pushed under the tag,
    // as BuildKit writes it.
    let att = g.d("bk_attestation");
    assert_eq!(g.at("gap/e2e/bk", &att.to_string()), Some(att));
    let bk = image(&first, "gap/e2e/bk");
    assert_eq!(
        artifact(bk, "buildkit-attestation", &att)["status"],
        "pushed"
    );
    let index = dist::get_manifest(&gap, "gap/e2e/bk", "v1").expect("gap/e2e/bk:v1");
    assert_eq!(index.digest, digest(&bk["manifest"]));
    let entries = index.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0]["digest"], g.p["bk_image"]);
    assert_eq!(entries[1]["digest"], att.to_string());
    assert_eq!(
        entries[1]["platform"],
        json!({"architecture": "unknown", "os": "unknown"})
    );
    assert_eq!(
        entries[1]["annotations"],
        json!({"vnd.docker.reference.digest": g.p["bk_image"], "vnd.docker.reference.type": "attestation-manifest"})
    );

    // skopeo 1.18 requiring the vendor's signature (signed for the upstream name) copies
    // both signed images out of the gap.
    let vendor_policy = g.policy(
        "vendor-policy.json",
        &vendor_pub,
        Identity::Remap {
            prefix: &format!("{gap}/gap/e2e"),
            signed_prefix: &format!("{up}/e2e"),
        },
    );
    for (img, out) in [
        ("gap/e2e/hello:v1", "out-hello"),
        ("gap/e2e/second:v1", "out-second"),
    ] {
        let o = g.verify(img, &vendor_policy, out);
        assert!(o.status.success(), "skopeo refuses {img}: {}", stderr(&o));
    }

    // Again: nothing sent, every artifact unchanged.
    let again = g.push("gap/");
    assert_eq!(again["blobs_uploaded"], 0, "{again:#}");
    for it in again["images"].as_array().unwrap() {
        for a in it["artifacts"].as_array().unwrap() {
            assert_eq!(a["status"], "unchanged", "{a:#}");
        }
    }

    // second's signature tag re-pointed at hello's signature (its blobs copied across, so
    // the registry takes it): a signature of another digest, refused.
    let hello_sig =
        dist::get_manifest(&gap, "gap/e2e/hello", &g.d("hello_sig").to_string()).unwrap();
    for d in std::iter::once(&hello_sig.json()["config"])
        .chain(hello_sig.json()["layers"].as_array().unwrap())
        .map(digest_of_descriptor)
    {
        let b = dist::get_blob(&gap, "gap/e2e/hello", &d).unwrap();
        dist::push_blob(&gap, "gap/e2e/second", &b);
    }
    dist::push_manifest(
        &gap,
        "gap/e2e/second",
        &cosign::signature_tag(&second),
        &hello_sig.media_type,
        &hello_sig.bytes,
    );
    let o = g.verify("gap/e2e/second:v1", &vendor_policy, "out-second-swapped");
    assert!(
        !o.status.success(),
        "skopeo copied second with hello's signature"
    );
    // hello's signature deleted: no signature, refused.
    dist::delete_manifest(&gap, "gap/e2e/hello", &g.d("hello_sig"));
    assert_eq!(g.at("gap/e2e/hello", &cosign::signature_tag(&hello)), None);
    let o = g.verify("gap/e2e/hello:v1", &vendor_policy, "out-hello-unsigned");
    assert!(
        !o.status.success(),
        "skopeo copied hello without a signature"
    );
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));

    merge_with_the_gap_registrys_own_signature(&g);
}

fn digest_of_descriptor(d: &Value) -> Digest {
    digest(&d["digest"])
}

/// The gap registry already has second signed by its own key under the `.sig` tag: push adds
/// the vendor's signature to it, and both keys verify.
fn merge_with_the_gap_registrys_own_signature(g: &Gap) {
    let gap = &g.registry.addr;
    let up = g.p["upstream"].as_str().unwrap();
    let own = CosignKey::generate(&g.path("own-key"), "gap");
    // second without signatures (a dir: copy), then signed by the gap's key into merge/ …
    let plain = g.path("hello-plain");
    let accept = g.path("accept.json");
    std::fs::write(
        &accept,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let o = cosign::verify_copy(
        &format!("docker://{gap}/gap/e2e/second:v1"),
        plain.to_str().unwrap(),
        &accept,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let signed = cosign::sign_copy(
        &format!("dir:{}", plain.display()),
        &format!("docker://{gap}/merge/e2e/second:v1"),
        &own,
    );
    let second = g.d("second");
    assert_eq!(signed, second);
    let tag = cosign::signature_tag(&second);
    let own_sig = g
        .at("merge/e2e/second", &tag)
        .expect("the gap's own signature");

    let report = g.push("merge/");
    let s = image(&report, "merge/e2e/second");
    let a = artifact(s, "signature", &g.d("second_sig"));
    assert_eq!(a["status"], "merged", "{a:#}");
    let merged = g.at("merge/e2e/second", &tag).unwrap();
    assert_eq!(a["merged_into"], merged.to_string());
    assert_ne!(merged, own_sig);
    let m = dist::get_manifest(gap, "merge/e2e/second", &tag)
        .unwrap()
        .json();
    let layers = m["layers"].as_array().unwrap();
    let own_m = dist::get_manifest(gap, "merge/e2e/second", &own_sig.to_string())
        .unwrap()
        .json();
    assert_eq!(layers.len(), 2, "{m:#}");
    assert_eq!(
        layers[0], own_m["layers"][0],
        "the gap's own signature is not first"
    );

    let vendor_pub = PathBuf::from(g.p["vendor_pub"].as_str().unwrap());
    let vendor_policy = g.policy(
        "vendor-merge-policy.json",
        &vendor_pub,
        Identity::Remap {
            prefix: &format!("{gap}/merge/e2e"),
            signed_prefix: &format!("{up}/e2e"),
        },
    );
    let own_policy = g.policy(
        "own-policy.json",
        &own.public_key,
        Identity::MatchRepository,
    );
    for (policy, out) in [
        (&vendor_policy, "out-merged-vendor"),
        (&own_policy, "out-merged-own"),
    ] {
        let o = g.verify("merge/e2e/second:v1", policy, out);
        assert!(o.status.success(), "{}: {}", policy.display(), stderr(&o));
    }
    // And again: the merge is found in place.
    let again = g.push("merge/");
    let a = artifact(
        image(&again, "merge/e2e/second"),
        "signature",
        &g.d("second_sig"),
    );
    assert_eq!(a["status"], "unchanged", "{a:#}");
    assert_eq!(a["merged_into"], merged.to_string());
}
