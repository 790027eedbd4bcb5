//! Provenance on the gap host: the policy's `[[verify]]` rules at verify, load and push, and
//! `inspect --provenance` / `--sbom`.
//!
//! The connected side signs a fixture image with skopeo 1.18 (a cosign key pair it made),
//! attaches cosign `.att`/`.sbom` and an OCI referrer to it, pushes a BuildKit-style index
//! with an SPDX attestation manifest beside it, and packs both with a `[[verify]]` rule for
//! the signed one. The gap side runs inside `unshare -n` and checks the carried signatures
//! against its own policy: the vendor's key passes, another key and a required rule for the
//! unsigned image refuse with exit code 14 before anything loads or is pushed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_bundle::Digest;
use airlock_testkit::cosign::sign_copy;
use airlock_testkit::provenance::{
    push_buildkit_index, push_cosign_attachments, push_referrer, BuildkitIndex, CosignAttachments,
    Referrer, SbomPackage, CYCLONEDX_PREDICATE, REFERRER_ARTIFACT_TYPE, SPDX_PREDICATE,
};
use airlock_testkit::{CosignKey, ImageSpec, TestRegistry};
use airlock_tests::*;
use base64::Engine as _;
use serde_json::Value;

/// A packed bundle with a signed image (with attachments and a referrer) and an unsigned
/// BuildKit index, and the keys and fixtures the gap side compares with.
struct Signed {
    w: World,
    bundle: PathBuf,
    /// `ADDR/vendor/hello:v1`, signed by `vendor`.
    signed: String,
    signed_digest: Digest,
    /// `ADDR/vendor/bk:v1`, a BuildKit index, unsigned.
    unsigned: String,
    vendor: CosignKey,
    other: CosignKey,
    attachments: CosignAttachments,
    referrer: Referrer,
    buildkit: BuildkitIndex,
}

/// `sha256:<hex>` of the DER inside a PEM public key: its fingerprint, computed here apart
/// from airlock.
fn fingerprint(pem_path: &Path) -> String {
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Digest::of(&der).to_string()
}

impl Signed {
    fn new() -> Signed {
        let w = World::new();
        let addr = w.registry.addr.clone();
        let keys = w.path("vendor-keys");
        let vendor = CosignKey::generate(&keys, "vendor");
        let other = CosignKey::generate(&keys, "other");
        let signed = format!("{addr}/vendor/hello:v1");
        let signed_digest = sign_copy(
            &format!("docker://{}", w.hello),
            &format!("docker://{signed}"),
            &vendor,
        );
        let attachments = push_cosign_attachments(&addr, "vendor/hello", &signed_digest);
        let referrer = push_referrer(&addr, "vendor/hello", &signed_digest);
        let spec = ImageSpec::new(vec![w.busybox_layer.clone()], &["/bin/busybox", "true"]);
        let buildkit = push_buildkit_index(&addr, "vendor/bk", "v1", &spec);
        let unsigned = format!("{addr}/vendor/bk:v1");
        // The connected side's own [[verify]] rule, with the vendor's key beside the spec.
        std::fs::copy(&vendor.public_key, w.path("vendor.pub")).unwrap();
        w.write_spec(&["linux/amd64"], &[&signed, &unsigned]);
        let mut spec_text = std::fs::read_to_string(w.spec()).unwrap();
        spec_text.push_str(&format!(
            "\n[[verify]]\nmatch = \"{addr}/vendor/hello\"\nkey = \"vendor.pub\"\n"
        ));
        std::fs::write(w.spec(), spec_text).unwrap();
        w.lock();
        let bundle = w.build("signed.airlock", false);
        Signed {
            w,
            bundle,
            signed,
            signed_digest,
            unsigned,
            vendor,
            other,
            attachments,
            referrer,
            buildkit,
        }
    }

    /// A policy on the gap host: everything allowed, plus `verify` tables; its keys copied
    /// into the policy's directory (0644, as an operator would).
    fn policy(&self, name: &str, rules: &[(&str, &CosignKey, bool)]) -> PathBuf {
        let dir = self.w.path(&format!("gap-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("images = [\"*\"]\nfiles = [\"*\"]\nvolumes = [\"*\"]\n");
        for (i, (pattern, key, require)) in rules.iter().enumerate() {
            let file = format!("key{i}.pub");
            std::fs::copy(&key.public_key, dir.join(&file)).unwrap();
            std::fs::set_permissions(dir.join(&file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            text.push_str(&format!(
                "\n[[verify]]\nmatch = \"{pattern}\"\nkey = \"{file}\"\nrequire = {require}\n"
            ));
        }
        let p = dir.join("policy.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn repo(&self, r: &str) -> String {
        r.rsplit_once(':').unwrap().0.to_string()
    }

    /// `airlock-unpack CMD BUNDLE --policy POLICY EXTRA…` inside `unshare -n`.
    fn gap(&self, cmd: &str, policy: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["--policy", policy.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.w.unpack(cmd, &self.bundle, &args)
    }
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn names(list: &[SbomPackage]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.purl.clone()))
        .collect();
    v.sort();
    v
}

fn shown(sbom: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
            (s("name"), s("version"), s("purl"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn gap_host_checks_carried_signatures_and_shows_provenance() {
    let s = Signed::new();
    let vendor_fp = fingerprint(&s.vendor.public_key);
    let other_fp = fingerprint(&s.other.public_key);
    let signed_repo = s.repo(&s.signed);
    let unsigned_repo = s.repo(&s.unsigned);

    // The vendor's key verifies the carried signature, offline.
    let good = s.policy("good", &[(&signed_repo, &s.vendor, true)]);
    let o = s.gap("verify", &good, &[]);
    assert_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let key0 = good.parent().unwrap().join("key0.pub");
    assert!(
        err.contains(&format!(
            "upstream signature of {} verified with {} ({vendor_fp})",
            s.signed,
            key0.display()
        )),
        "{}",
        text(&o)
    );

    // Another key: refused, naming image, digest, key and what was found.
    let other = s.policy("other", &[(&signed_repo, &s.other, true)]);
    let o = s.gap("verify", &other, &[]);
    assert_refused(
        &o,
        14,
        &[
            &format!("image {} ({})", s.signed, s.signed_digest),
            "no upstream signature verifies with key",
            &other_fp,
            "not signed by this key",
        ],
    );

    // A required rule for the image without a signature.
    let unsigned = s.policy("unsigned", &[(&unsigned_repo, &s.vendor, true)]);
    let o = s.gap("verify", &unsigned, &[]);
    assert_refused(
        &o,
        14,
        &[&format!("image {}", s.unsigned), "no signature found"],
    );
    // Not required: passes, and inspect says what is missing.
    let optional = s.policy("optional", &[(&unsigned_repo, &s.vendor, false)]);
    assert_ok(&s.gap("verify", &optional, &[]));

    // A key file others may write is no key at all: refused as a broken policy.
    let loose = s.policy("loose", &[(&signed_repo, &s.vendor, true)]);
    let loose_key = loose.parent().unwrap().join("key0.pub");
    std::fs::set_permissions(&loose_key, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_refused(
        &s.gap("verify", &loose, &[]),
        2,
        &["key0.pub", "mode 0666 lets group or others write it"],
    );

    inspect_provenance(&s, &good, &vendor_fp);
    inspect_sboms(&s);
    load_refused_before_the_engine(&s, &other);
    load_reports_the_key(&s, &good, &vendor_fp);
    push_refused_before_the_registry(&s, &other);
}

/// `inspect --provenance --json` shows what the connected side put in.
fn inspect_provenance(s: &Signed, good: &Path, vendor_fp: &str) {
    let v = json_of(&s.gap("inspect", good, &["--provenance", "--json"]));
    let images = v["images"].as_array().unwrap();
    let find = |r: &str| {
        images
            .iter()
            .find(|i| i["ref"] == r)
            .unwrap_or_else(|| panic!("{r} not shown: {v:#}"))
    };
    let hello = find(&s.signed);
    assert_eq!(hello["digest"], s.signed_digest.to_string());
    let sig = &hello["signatures"][0]["signatures"][0];
    assert_eq!(sig["verified_at_pack_time_with"], vendor_fp, "{v:#}");
    assert_eq!(sig["here"], "verified", "{v:#}");
    assert_eq!(
        hello["upstream"],
        format!("signed, verified at pack time ({vendor_fp})")
    );
    let att = &hello["attestations"][0];
    assert_eq!(att["manifest"], s.attachments.att.to_string());
    assert_eq!(att["predicate_types"][0], CYCLONEDX_PREDICATE);
    assert_eq!(
        hello["sboms"][0]["manifest"],
        s.attachments.sbom.to_string()
    );
    assert_eq!(
        hello["referrers"][0]["manifest"],
        s.referrer.manifest.to_string()
    );
    assert_eq!(
        hello["referrers"][0]["artifact_type"],
        REFERRER_ARTIFACT_TYPE
    );
    let bk = find(&s.unsigned);
    assert_eq!(bk["digest"], s.buildkit.index.to_string());
    assert_eq!(bk["upstream"], "unverified upstream");
    let bka = &bk["buildkit_attestations"][0];
    assert_eq!(bka["manifest"], s.buildkit.attestation.to_string());
    assert_eq!(bka["subject"], s.buildkit.image.to_string());
    assert_eq!(bka["predicate_types"][0], SPDX_PREDICATE);
    // The text form says the same, per signature.
    let o = s.gap("inspect", good, &["--provenance"]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("verified at pack time with {vendor_fp}")),
        "{out}"
    );
    assert!(out.contains("verified here with"), "{out}");
    // Plain inspect: one line per image.
    let o = s.w.unpack("inspect", &s.bundle, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("unverified upstream"), "{out}");
    assert!(
        out.contains(&format!("signed, verified at pack time ({vendor_fp})")),
        "{out}"
    );
}

/// `inspect --sbom` lists the packages of the BuildKit SPDX statement, and of the cosign
/// `.sbom`, `.att` (CycloneDX in DSSE) and the referrer's SPDX.
fn inspect_sboms(s: &Signed) {
    let o =
        s.w.unpack("inspect", &s.bundle, &["--sbom", &s.unsigned, "--json"]);
    let v = json_of(&o);
    let sboms = v.as_array().unwrap();
    assert_eq!(sboms.len(), 1, "{v:#}");
    assert_eq!(sboms[0]["digest"], s.buildkit.statement.to_string());
    assert_eq!(sboms[0]["format"], "spdx");
    assert_eq!(shown(&sboms[0]), names(&s.buildkit.packages));

    let v = json_of(&s.w.unpack("inspect", &s.bundle, &["--sbom", &s.signed, "--json"]));
    let sboms = v.as_array().unwrap();
    let by_kind = |k: &str| {
        sboms
            .iter()
            .find(|x| x["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} SBOM: {v:#}"))
    };
    assert_eq!(shown(by_kind("sbom")), names(&s.attachments.sbom_packages));
    let att = by_kind("attestation");
    assert_eq!(att["format"], "cyclonedx");
    assert_eq!(att["digest"], s.attachments.envelope.to_string());
    assert_eq!(shown(att), names(&s.attachments.att_packages));
    let r = by_kind("referrer");
    assert_eq!(r["digest"], s.referrer.sbom.to_string());
    assert_eq!(shown(r), names(&s.referrer.packages));

    // The text form, and an image the bundle does not have.
    let o = s.w.unpack("inspect", &s.bundle, &["--sbom", &s.unsigned]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    for p in &s.buildkit.packages {
        assert!(out.contains(&p.name) && out.contains(&p.purl), "{out}");
    }
    assert_refused(
        &s.w.unpack("inspect", &s.bundle, &["--sbom", "busybox:9"]),
        2,
        &["the bundle has no such image", &s.signed],
    );
}

/// `load` with a policy naming another key: exit 14, and the engine's images unchanged.
fn load_refused_before_the_engine(s: &Signed, other: &Path) {
    let _guard = docker_lock();
    let before = docker_images();
    let state = s.w.fresh_state_dir();
    let o = s.w.unpack_env(
        "load",
        &s.bundle,
        &["--policy", other.to_str().unwrap()],
        &[("AIRLOCK_STATE_DIR", state.to_str().unwrap())],
    );
    assert_refused(&o, 14, &["nothing was loaded", &s.signed]);
    assert_eq!(docker_images(), before, "a refused load changed the engine");
    assert!(
        !state.join("state.json").exists(),
        "a refused load was recorded"
    );
}

/// A load the policy lets through records, per image, the key that verified it.
fn load_reports_the_key(s: &Signed, good: &Path, vendor_fp: &str) {
    let _guard = docker_lock();
    let report = s.w.path("load-report.json");
    let state = s.w.fresh_state_dir();
    let o = s.w.unpack_env(
        "load",
        &s.bundle,
        &[
            "--policy",
            good.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[("AIRLOCK_STATE_DIR", state.to_str().unwrap())],
    );
    docker_rmi(&[&s.signed, &s.unsigned]);
    assert_ok(&o);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let p = r["provenance"].as_array().unwrap();
    let hello = p.iter().find(|i| i["ref"] == s.signed.as_str()).unwrap();
    assert_eq!(hello["verified_with"][0]["fingerprint"], vendor_fp, "{r:#}");
    let bk = p.iter().find(|i| i["ref"] == s.unsigned.as_str()).unwrap();
    assert_eq!(bk["verified_with"], Value::Array(vec![]), "{r:#}");
}

/// `push` with a policy naming another key: exit 14 before the registry hears a thing.
fn push_refused_before_the_registry(s: &Signed, other: &Path) {
    let gap = TestRegistry::start();
    let o = Command::new(unpack_bin())
        .arg("push")
        .arg(&s.bundle)
        .args(["--registry", &gap.addr, "--insecure", "--policy"])
        .arg(other)
        .arg("--trust")
        .arg(s.w.path("pack-keys/airlock.pub"))
        .arg("--identity")
        .arg(s.w.path("host/host.key"))
        .env_remove("AIRLOCK_POLICY")
        .env_remove("AIRLOCK_TRUST_DIR")
        .output()
        .unwrap();
    assert_refused(&o, 14, &["nothing was loaded or pushed", &s.signed]);
    let status = |path: &str| airlock_testkit::registry::http_status(&gap.addr, path);
    assert_eq!(status("/v2/"), Some(200), "the gap registry is up");
    assert_eq!(
        status("/v2/vendor/hello/tags/list"),
        Some(404),
        "the refused push created the repository"
    );
}
