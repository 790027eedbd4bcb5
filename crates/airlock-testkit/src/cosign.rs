//! Cosign signatures made and checked by an independent tool, skopeo 1.18
//! ([`crate::skopeo118`]): key pairs in cosign's encrypted format, images signed while they
//! are copied into a loopback registry (the signature lands under cosign's
//! `sha256-<hex>.sig` tag), and copies checked against a `policy.json` that requires
//! `sigstoreSigned` by a key — so what airlock verifies and carries is judged by code that
//! is not airlock's.
//!
//! Every call writes its own `registries.d` (in a temp dir) turning on
//! `use-sigstore-attachments` for the registries of the references it is given: without
//! it skopeo neither writes nor reads cosign's tags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_bundle::Digest;
use serde_json::json;

use crate::skopeo118::Skopeo118;

/// A cosign-format key pair made by `skopeo generate-sigstore-key`: the private key is
/// encrypted ("ENCRYPTED SIGSTORE PRIVATE KEY", scrypt + nacl secretbox) under the
/// passphrase in `passphrase_file`; the public key is a PEM `PUBLIC KEY` (ECDSA P-256).
#[derive(Debug, Clone)]
pub struct CosignKey {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub passphrase_file: PathBuf,
}

impl CosignKey {
    /// `DIR/NAME.private`, `DIR/NAME.pub` and `DIR/NAME.passphrase` (a random one).
    pub fn generate(dir: &Path, name: &str) -> CosignKey {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let prefix = dir.join(name);
        let key = CosignKey {
            private_key: dir.join(format!("{name}.private")),
            public_key: dir.join(format!("{name}.pub")),
            passphrase_file: dir.join(format!("{name}.passphrase")),
        };
        std::fs::write(
            &key.passphrase_file,
            hex::encode(rand::random::<[u8; 16]>()),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", key.passphrase_file.display()));
        Skopeo118::get().run(&[
            "generate-sigstore-key",
            "--output-prefix",
            path_str(&prefix),
            "--passphrase-file",
            path_str(&key.passphrase_file),
        ]);
        for p in [&key.private_key, &key.public_key] {
            assert!(
                p.is_file(),
                "skopeo generate-sigstore-key did not write {}",
                p.display()
            );
        }
        key
    }

    /// The public key's PEM text.
    pub fn public_pem(&self) -> String {
        std::fs::read_to_string(&self.public_key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.public_key.display()))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
}

/// `HOST[:PORT]` of a `docker://HOST/…` reference; `None` for other transports.
fn docker_host(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("docker://")
        .and_then(|r| r.split('/').next())
}

/// A temp `registries.d` turning sigstore attachments on for the registries of these
/// references (dropped with the returned dir).
fn registries_d(references: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("registries.d temp dir");
    let mut yaml = String::from("docker:\n");
    let mut hosts: Vec<&str> = references.iter().filter_map(|r| docker_host(r)).collect();
    hosts.sort_unstable();
    hosts.dedup();
    for h in &hosts {
        yaml.push_str(&format!("  {h}:\n    use-sigstore-attachments: true\n"));
    }
    if hosts.is_empty() {
        yaml = String::new();
    }
    std::fs::write(dir.path().join("airlock-test.yaml"), yaml).expect("registries.d yaml");
    dir
}

/// `--src-tls-verify=false` / `--dest-tls-verify=false` for loopback registries (plain
/// HTTP); the flags only exist for the docker transport.
fn plain_http(c: &mut Command, src: &str, dst: &str) {
    if docker_host(src).is_some() {
        c.arg("--src-tls-verify=false");
    }
    if docker_host(dst).is_some() {
        c.arg("--dest-tls-verify=false");
    }
}

/// A destination given as a plain path is a `dir:` one.
fn with_transport(reference: &str) -> String {
    if reference.contains(':') && !reference.starts_with('/') && !reference.starts_with('.') {
        reference.to_string()
    } else {
        format!("dir:{reference}")
    }
}

/// `skopeo copy --sign-by-sigstore-private-key KEY SRC DST` (skopeo transport references,
/// e.g. `docker://127.0.0.1:5000/repo:tag`): the manifest is copied unchanged
/// (`--preserve-digests`; with `--all` an index keeps all its instances) and a cosign
/// signature of DST's identity and the manifest's digest is pushed under
/// `sha256-<hex>.sig` in DST's repository. Returns the digest of the signed manifest.
pub fn sign_copy(src_ref: &str, dst_ref: &str, key: &CosignKey) -> Digest {
    copy(Some(key), src_ref, dst_ref)
}

/// `skopeo copy --all --preserve-digests SRC DST` with sigstore attachments on for both
/// sides, so the signatures SRC has are copied with it (as a mirror into the gap would).
/// Returns the digest of the copied manifest.
pub fn copy_with_signatures(src_ref: &str, dst_ref: &str) -> Digest {
    copy(None, src_ref, dst_ref)
}

fn copy(sign: Option<&CosignKey>, src_ref: &str, dst_ref: &str) -> Digest {
    let dst = with_transport(dst_ref);
    let rd = registries_d(&[src_ref, &dst]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let digest_file = tmp.path().join("digest");
    let mut c = Skopeo118::get().command();
    c.arg("--registries.d")
        .arg(rd.path())
        .args(["copy", "--quiet", "--all", "--preserve-digests"]);
    plain_http(&mut c, src_ref, &dst);
    if let Some(key) = sign {
        c.arg("--sign-by-sigstore-private-key")
            .arg(&key.private_key)
            .arg("--sign-passphrase-file")
            .arg(&key.passphrase_file);
    }
    c.arg("--digestfile")
        .arg(&digest_file)
        .arg(src_ref)
        .arg(&dst);
    crate::tools::run(&mut c);
    let text = std::fs::read_to_string(&digest_file)
        .unwrap_or_else(|e| panic!("skopeo copy wrote no --digestfile: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("skopeo's digest file says {text:?}: {e:?}"))
}

/// Signs an image where it is: copies `docker://…` onto itself with signing (skopeo
/// finds every blob and the manifest present and only adds the signature). Returns the
/// digest of the signed manifest.
pub fn sign_existing(reference: &str, key: &CosignKey) -> Digest {
    assert!(
        docker_host(reference).is_some(),
        "sign_existing signs an image in a registry: docker://…, not {reference:?}"
    );
    sign_copy(reference, reference, key)
}

/// `skopeo --policy POLICY copy SRC DST` with sigstore attachments read from SRC's registry:
/// skopeo refuses the copy unless SRC satisfies the policy. DST is a skopeo reference or
/// a plain path (then `dir:PATH`, its parent created). From an index, skopeo copies (and
/// checks) the instance for this machine; [`verify_copy_all`] checks every instance. The
/// output is returned whatever the outcome, for the test to assert on (`status`, and
/// skopeo's message on stderr: "A signature was required, but no signature exists",
/// "invalid signature when validating ASN.1 encoded signature", …).
pub fn verify_copy(src_ref: &str, dst: &str, policy_json: &Path) -> Output {
    verify(src_ref, dst, policy_json, false)
}

/// [`verify_copy`] with `--all`: an index and every instance in it must satisfy the policy.
pub fn verify_copy_all(src_ref: &str, dst: &str, policy_json: &Path) -> Output {
    verify(src_ref, dst, policy_json, true)
}

fn verify(src_ref: &str, dst: &str, policy_json: &Path, all: bool) -> Output {
    let dst = with_transport(dst);
    if let Some(path) = dst.strip_prefix("dir:") {
        // skopeo makes the dir but not its parents.
        if let Some(parent) = Path::new(path).parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
    }
    let rd = registries_d(&[src_ref, &dst]);
    let mut c = Skopeo118::get().bare_command();
    c.arg("--policy")
        .arg(policy_json)
        .arg("--registries.d")
        .arg(rd.path())
        .args(["copy", "--quiet"]);
    if all {
        c.arg("--all");
    }
    if docker_host(&dst).is_none() {
        // An OCI layout cannot hold sigstore signatures ("Pushing signatures for OCI
        // images is not supported"); the policy is still checked on the source.
        c.arg("--remove-signatures");
    }
    plain_http(&mut c, src_ref, &dst);
    c.arg(src_ref).arg(&dst);
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// How a `sigstoreSigned` requirement matches the signed identity.
#[derive(Debug, Clone)]
pub enum Identity<'a> {
    /// The signature must name the repository the image is read from.
    MatchRepository,
    /// Read from `prefix…`, the signature must name `signed_prefix…` (an image signed
    /// upstream, read from a mirror in the gap).
    Remap {
        prefix: &'a str,
        signed_prefix: &'a str,
    },
}

/// Writes `path`: a `policy.json` that rejects everything except images read over the
/// `docker` transport that carry a sigstore signature by `public_key` for `identity`.
/// Returns `path`.
pub fn sigstore_policy(path: &Path, public_key: &Path, identity: Identity) -> PathBuf {
    let signed_identity = match identity {
        Identity::MatchRepository => json!({"type": "matchRepository"}),
        Identity::Remap {
            prefix,
            signed_prefix,
        } => json!({"type": "remapIdentity", "prefix": prefix, "signedPrefix": signed_prefix}),
    };
    let policy = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {"": [{
            "type": "sigstoreSigned",
            "keyPath": public_key,
            "signedIdentity": signed_identity,
        }]}},
    });
    std::fs::write(path, serde_json::to_vec_pretty(&policy).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_path_buf()
}

/// The tag cosign (and skopeo) put a digest's signature under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}
