//! Reading the certificate files a client trusts or presents: each a regular file that
//! root or this user controls alone (`airlock-unpack push` runs as root on a host where
//! others may write: a CA someone else can replace would let them impersonate the
//! registry), at most [`MAX_CERT_FILE`] bytes, and PEM of the expected kind. A certs.d
//! directory is held to the same rule, and read up to [`MAX_DIR_ENTRIES`] entries.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{ClientIdentity, PemCerts};

/// A CA bundle is a few KiB per certificate; the whole system store is a few hundred.
pub const MAX_CERT_FILE: u64 = 1 << 20;
/// A certs.d directory holds a handful of files.
const MAX_DIR_ENTRIES: usize = 256;

/// A certificate file or directory that cannot be used, named.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{}: {problem}", path.display())]
    Bad { path: PathBuf, problem: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn bad(path: &Path, problem: impl Into<String>) -> TlsFileError {
    TlsFileError::Bad {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Refuses what anyone but root or this user could change: the trust would be theirs.
fn check_controlled(path: &Path, meta: &std::fs::Metadata) -> Result<(), TlsFileError> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(bad(
            path,
            format!(
                "owned by uid {}, neither root nor this user: its owner could choose whom this host trusts",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(
            path,
            format!(
                "mode {:04o} lets group or others write it, and so choose whom this host trusts (chmod go-w)",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The bytes of a regular, controlled file of at most [`MAX_CERT_FILE`] bytes (symbolic
/// links are followed, as docker does; the file they lead to is what is checked).
fn read_controlled(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let io = |source| TlsFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    check_controlled(path, &meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_CERT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CERT_FILE {
        return Err(bad(
            path,
            format!("larger than {MAX_CERT_FILE} bytes: not a certificate file"),
        ));
    }
    Ok(bytes)
}

/// How many PEM certificates `pem` holds; an error when none, or one is broken.
fn count_certs(path: &Path, pem: &[u8]) -> Result<usize, TlsFileError> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| bad(path, format!("unreadable PEM: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad(
            path,
            "no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(n)
}

/// A file of CA certificates (`--ca-cert`, a certs.d `*.crt`), each one checked to be an
/// X.509 certificate a trust anchor can be made of (else the client would fail to build
/// later, without saying which file).
pub(super) fn read_ca(path: &Path) -> Result<PemCerts, TlsFileError> {
    let pem = read_controlled(path)?;
    count_certs(path, &pem)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let c = c.map_err(|e| bad(path, format!("unreadable PEM: {e}")))?;
        store.add(c).map_err(|e| {
            bad(
                path,
                format!("certificate {}: not a CA certificate: {e}", i + 1),
            )
        })?;
    }
    Ok(PemCerts {
        path: path.to_path_buf(),
        pem,
    })
}

/// A client certificate (chain) and its private key.
pub(super) fn read_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, TlsFileError> {
    let c = read_controlled(cert)?;
    count_certs(cert, &c)?;
    let k = zeroize::Zeroizing::new(read_controlled(key)?);
    PrivateKeyDer::from_pem_slice(&k)
        .map_err(|e| bad(key, format!("no PEM private key in it: {e}")))?;
    let mut pem = zeroize::Zeroizing::new(Vec::with_capacity(c.len() + k.len() + 1));
    pem.extend_from_slice(&c);
    pem.push(b'\n');
    pem.extend_from_slice(&k);
    Ok(ClientIdentity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        pem,
    })
}

/// What a certs.d directory holds.
#[derive(Debug, Default)]
pub struct CertDir {
    /// Every `*.crt`, in name order.
    pub roots: Vec<PemCerts>,
    /// The first `*.cert` + `*.key` pair in name order (a client presents one).
    pub identity: Option<ClientIdentity>,
}

/// Reads a certs.d directory by docker's and containers/image's rules: `*.crt` are CA
/// certificates, `*.cert` client certificates with their `*.key`; other files are ignored.
pub fn read_cert_dir(dir: &Path) -> Result<CertDir, TlsFileError> {
    let io = |source| TlsFileError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(bad(dir, "not a directory"));
    }
    check_controlled(dir, &meta)?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        if names.len() == MAX_DIR_ENTRIES {
            return Err(bad(
                dir,
                format!("more than {MAX_DIR_ENTRIES} entries: not a certs.d directory"),
            ));
        }
        // A name that is not UTF-8 cannot end in .crt, .cert or .key as docker means them.
        if let Ok(n) = e.file_name().into_string() {
            names.push(n);
        }
    }
    names.sort();
    let has = |n: &str| names.iter().any(|x| x == n);
    let mut out = CertDir::default();
    for n in &names {
        let path = dir.join(n);
        if n.ends_with(".crt") {
            out.roots.push(read_ca(&path)?);
        } else if let Some(stem) = n.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            if !has(&key) {
                return Err(bad(
                    &path,
                    format!(
                        "client certificate without its key {key} (CA certificates end in .crt)"
                    ),
                ));
            }
            let id = read_identity(&path, &dir.join(key))?;
            out.identity.get_or_insert(id);
        } else if let Some(stem) = n.strip_suffix(".key") {
            if !has(&format!("{stem}.cert")) {
                return Err(bad(
                    &path,
                    format!("key without its client certificate {stem}.cert"),
                ));
            }
        }
    }
    Ok(out)
}
