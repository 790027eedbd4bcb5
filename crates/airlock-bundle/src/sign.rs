//! minisign keys and signatures. Keys and signature files are byte-compatible with the
//! `minisign` CLI. Signing is deterministic (plain Ed25519, no random nonce) so that a
//! rebuilt bundle is byte-identical; verification goes through the `minisign` crate.
//!
//! Writing keys ([`KeyDir`], [`write_private`], [`write_public`]) is shared by both
//! binaries' `keygen`: key files are only ever created new, never through a symbolic link,
//! with their modes set on the open file whatever the umask. Secret key text and passwords
//! are held in [`Zeroizing`] buffers, wiped when dropped.

use std::fmt;
use std::fs;
use std::io::{Cursor, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use blake2::{Blake2b512, Digest as _};
use ed25519_dalek::Signer as _;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use zeroize::Zeroizing;

use crate::BundleError;

/// The trusted comment of every header signature (it is signed too).
pub const TRUSTED_COMMENT: &str = "airlock-bundle v1 header";

/// A minisign key id as minisign prints it: 16 uppercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl KeyId {
    fn from_slice(s: &[u8]) -> KeyId {
        let mut k = [0u8; 8];
        k.copy_from_slice(&s[..8]);
        KeyId(k)
    }
}

/// A secret key ready to sign. Clone (the secret is wiped on drop, as ed25519-dalek's key
/// is) for a second signature after the first use moved it (`build --with-unpacker`).
#[derive(Clone)]
pub struct SigningKey {
    key_id: KeyId,
    keynum: [u8; 8],
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

// Layout of minisign's decrypted secret key bytes: sig_alg(2) kdf_alg(2) chk_alg(2) salt(32)
// opslimit(8) memlimit(8) keynum(8) secret key(64 = seed || public) checksum(32).
const SK_KEYNUM: std::ops::Range<usize> = 54..62;
const SK_SEED: std::ops::Range<usize> = 62..94;

impl SigningKey {
    /// Loads a minisign secret key file; `password` is needed if the key is encrypted.
    pub fn load(
        path: &Path,
        password: Option<Zeroizing<String>>,
    ) -> Result<SigningKey, BundleError> {
        let key_err = |detail: String| BundleError::Key {
            path: path.to_path_buf(),
            detail,
        };
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?);
        let sk_box =
            minisign::SecretKeyBox::from_string(&text).map_err(|e| key_err(e.to_string()))?;
        let encrypted = sk_box
            .clone()
            .into_unencrypted_secret_key()
            .map(|k| k.is_encrypted())
            .unwrap_or(true);
        let sk = if encrypted {
            let pw = password.ok_or_else(|| {
                key_err(
                    "the key is password-protected: set AIRLOCK_KEY_PASSWORD or run interactively"
                        .into(),
                )
            })?;
            // minisign takes the password by value and does not wipe its copy.
            sk_box
                .into_secret_key(Some(String::clone(&pw)))
                .map_err(|e| key_err(format!("cannot decrypt ({e}); wrong password?")))?
        } else {
            sk_box
                .into_unencrypted_secret_key()
                .map_err(|e| key_err(e.to_string()))?
        };
        let bytes = Zeroizing::new(sk.to_bytes());
        if bytes.len() < SK_SEED.end {
            return Err(key_err("truncated secret key".into()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[SK_SEED]);
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&bytes[SK_KEYNUM]);
        Ok(SigningKey {
            key_id: KeyId(keynum),
            keynum,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A minisign signature file (prehashed `ED` algorithm) over a bundle header.
    pub fn sign(&self, data: &[u8]) -> String {
        self.sign_with(data, TRUSTED_COMMENT)
    }

    /// A minisign signature over `data` with `trusted_comment` (signed too, one line).
    pub fn sign_with(&self, data: &[u8], trusted_comment: &str) -> String {
        let prehash = Blake2b512::digest(data);
        let sig = self.key.sign(&prehash).to_bytes();
        let mut sig_line = Vec::with_capacity(74);
        sig_line.extend_from_slice(b"ED");
        sig_line.extend_from_slice(&self.keynum);
        sig_line.extend_from_slice(&sig);
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&sig);
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_sig = self.key.sign(&global).to_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        format!(
            "untrusted comment: signature from airlock secret key {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            self.key_id,
            b64.encode(&sig_line),
            b64.encode(global_sig)
        )
    }
}

/// Writes a fresh key pair as `dir/airlock.key` (mode 0600) and `dir/airlock.pub` (0644)
/// into [`KeyDir::create`]`(dir)`. With a password the secret key is encrypted the way
/// `minisign -G` does it.
pub fn generate_keypair(
    dir: &Path,
    password: Option<Zeroizing<String>>,
) -> Result<(PathBuf, PathBuf, KeyId), BundleError> {
    let keys = KeyDir::create(dir)?;
    keys.check_free(&["airlock.key", "airlock.pub"])?;
    let keypair = match &password {
        // minisign takes the password by value and does not wipe its copy.
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(String::clone(pw))),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| BundleError::Usage(format!("key generation failed: {e}")))?;
    let key_id = KeyId::from_slice(keypair.pk.keynum());
    let sk_text = Zeroizing::new(
        keypair
            .sk
            .to_box(Some(&format!("airlock secret key {key_id}")))
            .map_err(|e| BundleError::Usage(e.to_string()))?
            .into_string(),
    );
    let pk_text = keypair
        .pk
        .to_box()
        .map_err(|e| BundleError::Usage(e.to_string()))?
        .into_string();
    let (sk_path, pk_path) = keys.write_pair(
        ("airlock.key", sk_text.as_bytes()),
        ("airlock.pub", pk_text.as_bytes()),
    )?;
    Ok((sk_path, pk_path, key_id))
}

/// Mode of a directory `keygen` creates: it holds a secret key.
pub const KEY_DIR_MODE: u32 = 0o700;
/// Mode of a secret key file.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of a public key file.
pub const PUBLIC_MODE: u32 = 0o644;

/// The directory `keygen` writes into, held open: every key file is created in the
/// directory that was checked, whatever happens to its path meanwhile.
#[derive(Debug)]
pub struct KeyDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl KeyDir {
    /// Opens `path` for new keys. A missing directory is created with mode 0700, set on it
    /// whatever the umask (missing parents get 0755, less under a stricter umask). An existing one keeps its mode, but is
    /// refused when it is a symbolic link, not a directory, or writable by others: someone
    /// else could then replace the public key after it was written. The directories above it
    /// are the operator's to keep private.
    pub fn create(path: &Path) -> Result<KeyDir, BundleError> {
        let refuse = |why: &str| {
            BundleError::Usage(format!(
                "key directory {}: {why}; not writing keys there",
                path.display()
            ))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| BundleError::io(parent, e))?;
        }
        let created = match rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(KEY_DIR_MODE)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(BundleError::io(path, e.into())),
        };
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // Linux says ENOTDIR for a link with O_DIRECTORY|O_NOFOLLOW, ELOOP elsewhere.
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        refuse("it is a symbolic link")
                    }
                    _ => refuse("not a directory"),
                }
            }
            e => BundleError::io(path, e.into()),
        })?;
        if created {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(KEY_DIR_MODE))
                .map_err(|e| BundleError::io(path, e.into()))?;
        } else {
            let st = rustix::fs::fstat(&fd).map_err(|e| BundleError::io(path, e.into()))?;
            if st.st_mode & 0o002 != 0 {
                return Err(refuse(&format!(
                    "writable by others (mode {:o})",
                    st.st_mode & 0o7777
                )));
            }
        }
        Ok(KeyDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// `dir/name`, as shown to the user.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Refuses when anything at all is at one of `names`: a file, or a symbolic link even
    /// when it points nowhere (it would be written through).
    pub fn check_free(&self, names: &[&str]) -> Result<(), BundleError> {
        for name in names {
            match rustix::fs::statat(&self.fd, *name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(BundleError::io(self.join(name), e.into())),
                Ok(st) => {
                    let what = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                        " (a symbolic link)"
                    } else {
                        ""
                    };
                    return Err(BundleError::Usage(format!(
                        "{}{what} already exists; not overwriting a key",
                        self.join(name).display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates `name` (mode 0600) holding `data`; never replaces anything.
    pub fn write_private(&self, name: &str, data: &[u8]) -> Result<PathBuf, BundleError> {
        let path = self.join(name);
        create_new_at(self.fd.as_fd(), Path::new(name), &path, data, PRIVATE_MODE)?;
        Ok(path)
    }

    /// Creates `name` (mode 0644) holding `data`; never replaces anything.
    pub fn write_public(&self, name: &str, data: &[u8]) -> Result<PathBuf, BundleError> {
        let path = self.join(name);
        create_new_at(self.fd.as_fd(), Path::new(name), &path, data, PUBLIC_MODE)?;
        Ok(path)
    }

    /// Writes a secret key and its public half: both, or neither (the secret one is removed
    /// again when the public one cannot be written).
    pub fn write_pair(
        &self,
        secret: (&str, &[u8]),
        public: (&str, &[u8]),
    ) -> Result<(PathBuf, PathBuf), BundleError> {
        let sk = self.write_private(secret.0, secret.1)?;
        match self.write_public(public.0, public.1) {
            Ok(pk) => Ok((sk, pk)),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.fd, secret.0, AtFlags::empty());
                Err(e)
            }
        }
    }
}

/// Creates `path` (mode 0600) holding `data`: a new file only, never through a symbolic
/// link, 0600 whatever the umask.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), BundleError> {
    create_new_at(CWD, path, path, data, PRIVATE_MODE)
}

/// Creates `path` (mode 0644) holding `data`: a new file only, never through a symbolic
/// link, 0644 whatever the umask.
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), BundleError> {
    create_new_at(CWD, path, path, data, PUBLIC_MODE)
}

/// `O_CREAT|O_EXCL|O_NOFOLLOW` at `name` in `dir`, then `fchmod` to `mode` (the umask only
/// ever takes bits away) before anything is written. `shown` names it in errors.
fn create_new_at(
    dir: BorrowedFd<'_>,
    name: &Path,
    shown: &Path,
    data: &[u8],
    mode: u32,
) -> Result<(), BundleError> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(PRIVATE_MODE),
    )
    .map_err(|e| match e {
        // A dangling symbolic link is "there" for O_EXCL: refused, not followed.
        rustix::io::Errno::EXIST => BundleError::Usage(format!(
            "{} already exists; not overwriting a key",
            shown.display()
        )),
        e => BundleError::io(shown, e.into()),
    })?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| BundleError::io(shown, e.into()))?;
    let mut f = fs::File::from(fd);
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| BundleError::io(shown, e))
}

/// A public key the reader trusts, and where it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: KeyId,
    pub source: PathBuf,
    key: minisign::PublicKey,
}

impl TrustedKey {
    pub fn load(path: &Path) -> Result<TrustedKey, BundleError> {
        let text = fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
        let key = minisign::PublicKeyBox::from_string(&text)
            .and_then(|b| b.into_public_key())
            .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
            .map_err(|e| BundleError::Key {
                path: path.to_path_buf(),
                detail: format!("not a minisign public key: {e}"),
            })?;
        Ok(TrustedKey {
            id: KeyId::from_slice(key.keynum()),
            source: path.to_path_buf(),
            key,
        })
    }
}

/// The keys a reader accepts signatures from.
#[derive(Debug, Clone, Default)]
pub struct TrustSet {
    keys: Vec<TrustedKey>,
}

impl TrustSet {
    pub fn new(keys: Vec<TrustedKey>) -> TrustSet {
        TrustSet { keys }
    }

    /// Every `*.pub` file in `dir` (sorted, for stable messages).
    pub fn from_dir(dir: &Path) -> Result<TrustSet, BundleError> {
        let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(BundleError::io(dir, e)),
        };
        paths.sort();
        Ok(TrustSet {
            keys: paths
                .iter()
                .map(|p| TrustedKey::load(p))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        self.keys
            .iter()
            .map(|k| k.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks the header signature `sig_text` over `data`; returns the signer's key id. The
    /// trusted comment must be the header's ([`TRUSTED_COMMENT`]): the same key signs sums
    /// and reports, and a signature made as one of those does not vouch for a header.
    pub fn verify(&self, data: &[u8], sig_text: &str) -> Result<KeyId, BundleError> {
        let signer = self.verify_file(Path::new(crate::header::HEADER_PATH), data, sig_text)?;
        let comment = trusted_comment(sig_text).unwrap_or_default();
        if comment != TRUSTED_COMMENT {
            return Err(BundleError::BadSignature {
                key_id: signer.to_string(),
                file: crate::header::SIGNATURE_PATH.into(),
                detail: format!(
                    "not a header signature: its trusted comment is \"{}\", a header's is \"{TRUSTED_COMMENT}\"",
                    crate::text::Escaped(&comment)
                ),
            });
        }
        Ok(signer)
    }

    /// Checks `sig_text` over `data`, the content of `file` (named in errors).
    pub fn verify_file(
        &self,
        file: &Path,
        data: &[u8],
        sig_text: &str,
    ) -> Result<KeyId, BundleError> {
        let file = file.display().to_string();
        let sig = minisign::SignatureBox::from_string(sig_text).map_err(|e| {
            BundleError::BadSignature {
                key_id: "unknown".into(),
                file: file.clone(),
                detail: format!("unreadable signature: {e}"),
            }
        })?;
        let signer = KeyId::from_slice(sig.keynum());
        if self.keys.is_empty() {
            return Err(BundleError::NoTrustedKeys);
        }
        let key = self.keys.iter().find(|k| k.id == signer).ok_or_else(|| {
            BundleError::UntrustedSigner {
                key_id: signer.to_string(),
                trusted: self.ids(),
            }
        })?;
        minisign::verify(&key.key, &sig, Cursor::new(data), true, false, false).map_err(|e| {
            BundleError::BadSignature {
                key_id: signer.to_string(),
                file,
                detail: e.to_string(),
            }
        })?;
        Ok(signer)
    }
}

/// The trusted comment of a signature (only meaningful once the signature verified).
pub fn trusted_comment(sig_text: &str) -> Option<String> {
    minisign::SignatureBox::from_string(sig_text)
        .ok()
        .and_then(|s| s.trusted_comment().ok())
}

/// Reads the key id out of a signature without verifying it (for `--insecure-skip-signature`
/// reports).
pub fn signature_key_id(sig_text: &str) -> Option<KeyId> {
    minisign::SignatureBox::from_string(sig_text)
        .ok()
        .map(|s| KeyId::from_slice(s.keynum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk, id) = generate_keypair(dir.path(), None).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        assert_eq!(key.key_id(), id);
        let a = key.sign(b"hello");
        assert_eq!(a, key.sign(b"hello"), "signing must be deterministic");
        let trust = TrustSet::new(vec![TrustedKey::load(&pk).unwrap()]);
        assert_eq!(trust.verify(b"hello", &a).unwrap(), id);
        let err = trust.verify(b"hellp", &a).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_header_signature_must_carry_the_header_comment() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk, _) = generate_keypair(dir.path(), None).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        let trust = TrustSet::new(vec![TrustedKey::load(&pk).unwrap()]);
        for other in [
            "airlock-bundle sums v1 parts=1 total=1",
            "airlock-unpack report v1",
            "",
        ] {
            let sig = key.sign_with(b"x", other);
            // A valid signature by a trusted key, over the same bytes: still not a header's.
            trust
                .verify_file(Path::new("x"), b"x", &sig)
                .expect("valid as a signature");
            let e = trust.verify(b"x", &sig).unwrap_err();
            assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
            assert!(e.to_string().contains("not a header signature"), "{e}");
        }
        trust.verify(b"x", &key.sign(b"x")).unwrap();
    }

    #[test]
    fn encrypted_keys_need_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let pw = || Some(Zeroizing::new("pw".to_string()));
        let (sk, pk, _) = generate_keypair(dir.path(), pw()).unwrap();
        assert!(SigningKey::load(&sk, None).is_err());
        assert!(SigningKey::load(&sk, Some(Zeroizing::new("nope".into()))).is_err());
        let key = SigningKey::load(&sk, pw()).unwrap();
        let trust = TrustSet::new(vec![TrustedKey::load(&pk).unwrap()]);
        trust.verify(b"x", &key.sign(b"x")).unwrap();
    }

    #[test]
    fn keys_are_created_new_and_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, keys.join("airlock.pub")).unwrap();
        let err = generate_keypair(&keys, None).unwrap_err().to_string();
        assert!(
            err.contains("airlock.pub (a symbolic link) already exists"),
            "{err}"
        );
        assert!(!elsewhere.exists() && !keys.join("airlock.key").exists());
        // The link appearing after the check: O_EXCL refuses it all the same.
        let kd = KeyDir::create(&keys).unwrap();
        let err = kd
            .write_public("airlock.pub", b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(!elsewhere.exists());

        let fresh = dir.path().join("fresh");
        let (sk, pk, _) = generate_keypair(&fresh, None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode(&fresh), mode(&sk), mode(&pk)),
            (KEY_DIR_MODE, PRIVATE_MODE, PUBLIC_MODE)
        );
    }

    #[test]
    fn untrusted_and_empty_trust_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, _, _) = generate_keypair(&dir.path().join("a"), None).unwrap();
        let (_, other_pk, _) = generate_keypair(&dir.path().join("b"), None).unwrap();
        let sig = SigningKey::load(&sk, None).unwrap().sign(b"x");
        let trust = TrustSet::new(vec![TrustedKey::load(&other_pk).unwrap()]);
        assert!(matches!(
            trust.verify(b"x", &sig),
            Err(BundleError::UntrustedSigner { .. })
        ));
        assert!(matches!(
            TrustSet::default().verify(b"x", &sig),
            Err(BundleError::NoTrustedKeys)
        ));
    }
}
