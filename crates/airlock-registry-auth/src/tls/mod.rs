//! TLS trust for reaching a registry, the way docker and podman set it up per registry: the
//! system store, plus the CA certificates and client certificate found in the registry's
//! `certs.d` directory (or `--cert-dir`), plus `--ca-cert` and `--client-cert`/`--client-key`.
//! [`files`] reads those files (controlled by root or this user, bounded); [`diagnose`]
//! names what went wrong when a handshake fails.
//!
//! Lookup, as containers/image does it (`containers-certs.d(5)`): the first of
//! `~/.config/containers/certs.d/HOST:PORT`, `/etc/containers/certs.d/HOST:PORT` and
//! `/etc/docker/certs.d/HOST:PORT` that exists is the registry's directory (only one is
//! read); `--cert-dir DIR` replaces the lookup, as skopeo's does. In that directory every
//! `*.crt` is a CA certificate, added to the system store; every `*.cert` is a client
//! certificate whose key is the `*.key` of the same name (docker's `client.cert` +
//! `client.key`), and a `.cert` without its `.key` (or the reverse) is an error.

use std::path::{Path, PathBuf};

mod diagnose;
mod files;

pub use diagnose::{diagnose, TlsProblem};
pub use files::{read_cert_dir, CertDir, TlsFileError, MAX_CERT_FILE};

use files::{read_ca, read_identity};

/// What the command line said about TLS (both binaries take the same flags).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--ca-cert FILE`, repeatable: CA certificates trusted besides the system store.
    pub ca_certs: Vec<PathBuf>,
    /// `--cert-dir DIR`: a certs.d-style directory used instead of the lookup.
    pub cert_dir: Option<PathBuf>,
    /// `--client-cert FILE` and `--client-key FILE` (both or neither).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A PEM file of one or more certificates, read and checked, with where it came from.
#[derive(Debug, Clone)]
pub struct PemCerts {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl PemCerts {
    /// Each certificate's DER (for clients that take one certificate at a time).
    pub fn ders(&self) -> Vec<Vec<u8>> {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::pem_slice_iter(&self.pem)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect()
    }
}

/// A client certificate (chain) and its private key, both PEM, for mutual TLS.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate(s) then the key, as `reqwest::Identity::from_pem` takes them.
    pem: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("ClientIdentity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What a client trusts and presents for one registry (or, on the pack side, for every
/// registry one client talks to).
#[derive(Debug, Clone, Default)]
pub struct TlsMaterial {
    /// CA certificates trusted besides the system store.
    pub roots: Vec<PemCerts>,
    /// The client certificate presented when the registry asks for one.
    pub identity: Option<ClientIdentity>,
    /// The certs.d directories read.
    pub dirs: Vec<PathBuf>,
}

/// The per-registry directories looked for, in order; the first that exists is used.
pub fn certs_d_candidates(host_port: &str) -> Vec<PathBuf> {
    // A registry name is `host[:port]`: anything that could leave the certs.d root is no
    // registry's directory.
    if host_port.is_empty() || host_port.starts_with('.') || host_port.contains(['/', '\\', '\0']) {
        return Vec::new();
    }
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        roots.push(Path::new(&home).join(".config/containers/certs.d"));
    }
    roots.push(PathBuf::from("/etc/containers/certs.d"));
    roots.push(PathBuf::from("/etc/docker/certs.d"));
    roots.into_iter().map(|r| r.join(host_port)).collect()
}

/// The first of `candidates` that exists. One that cannot be looked at for lack of
/// permission is skipped, as containers/image does; any other failure is an error.
pub fn first_existing(candidates: &[PathBuf]) -> Result<Option<PathBuf>, TlsFileError> {
    for c in candidates {
        match std::fs::metadata(c) {
            Ok(_) => return Ok(Some(c.clone())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) => {}
            Err(source) => {
                return Err(TlsFileError::Io {
                    path: c.clone(),
                    source,
                })
            }
        }
    }
    Ok(None)
}

impl TlsOptions {
    /// Whether any TLS flag was given.
    pub fn is_empty(&self) -> bool {
        self.ca_certs.is_empty()
            && self.cert_dir.is_none()
            && self.client_cert.is_none()
            && self.client_key.is_none()
    }

    /// The trust for the registry `host_port` (as named in references: `host[:port]`).
    pub fn material(&self, host_port: &str) -> Result<TlsMaterial, TlsFileError> {
        self.material_for(&[host_port])
    }

    /// The trust one client uses for all of `hosts`: the flags, and the certs.d directory
    /// of each host (the CA certificates of all of them; the client certificate of the one
    /// that has one; several are an error, the flags choose then).
    pub fn material_for(&self, hosts: &[&str]) -> Result<TlsMaterial, TlsFileError> {
        let mut m = TlsMaterial::default();
        let mut dirs = Vec::new();
        match &self.cert_dir {
            Some(d) => dirs.push(d.clone()),
            None => {
                for h in hosts {
                    if let Some(d) = first_existing(&certs_d_candidates(h))? {
                        if !dirs.contains(&d) {
                            dirs.push(d);
                        }
                    }
                }
            }
        }
        let flagged_identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some(read_identity(c, k)?),
            (None, None) => None,
            (c, _) => {
                return Err(TlsFileError::Bad {
                    path: c
                        .clone()
                        .or_else(|| self.client_key.clone())
                        .unwrap_or_default(),
                    problem: "--client-cert and --client-key go together".into(),
                })
            }
        };
        for d in &dirs {
            let found = read_cert_dir(d)?;
            m.roots.extend(found.roots);
            if let (Some(id), None) = (found.identity, &flagged_identity) {
                if let Some(prev) = &m.identity {
                    return Err(TlsFileError::Bad {
                        path: d.clone(),
                        problem: format!(
                            "a second client certificate (after {}), and one client serves these registries: choose with --client-cert and --client-key",
                            prev.cert.display()
                        ),
                    });
                }
                m.identity = Some(id);
            }
        }
        for p in &self.ca_certs {
            m.roots.push(read_ca(p)?);
        }
        if flagged_identity.is_some() {
            m.identity = flagged_identity;
        }
        m.dirs = dirs;
        Ok(m)
    }
}

impl TlsMaterial {
    /// What is trusted and presented, for messages: "the system store + a.crt + b.crt".
    pub fn describe(&self) -> String {
        let mut s = String::from("the system store");
        for r in &self.roots {
            s.push_str(" + ");
            s.push_str(&r.path.display().to_string());
        }
        if let Some(id) = &self.identity {
            s.push_str(&format!("; client certificate {}", id.cert.display()));
        }
        s
    }

    /// A reqwest client builder with these CA certificates added to the system store and
    /// this client certificate, if any.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsFileError> {
        let mut certs = Vec::new();
        for r in &self.roots {
            certs.extend(reqwest::Certificate::from_pem_bundle(&r.pem).map_err(|e| {
                TlsFileError::Bad {
                    path: r.path.clone(),
                    problem: format!("not a PEM certificate: {e}"),
                }
            })?);
        }
        if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(id) = &self.identity {
            let identity = reqwest::Identity::from_pem(&id.pem).map_err(|e| TlsFileError::Bad {
                path: id.cert.clone(),
                problem: format!(
                    "with {}: not a client certificate and key: {e}",
                    id.key.display()
                ),
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests;
