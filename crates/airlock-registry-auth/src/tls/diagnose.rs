//! Naming why a TLS handshake with a registry failed, from the error reqwest returns: its
//! source chain is walked down to the `rustls::Error` (which hyper and tokio-rustls carry
//! inside `io::Error`s), and the certificate problem said in words with what to do about
//! it. The names a certificate presents come from the server and are shown escaped.

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{AlertDescription, CertificateError};

/// What was wrong with the TLS connection to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// Its certificate chains to no CA this client trusts.
    UnknownIssuer,
    /// Its certificate does not name the host it was reached as.
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
    /// Its certificate expired at `not_after`; this host's clock said `now`.
    Expired {
        not_after: SystemTime,
        now: SystemTime,
    },
    /// Its certificate is valid only from `not_before`.
    NotYetValid {
        not_before: SystemTime,
        now: SystemTime,
    },
    /// It asked for a client certificate and this client had none to present.
    ClientCertRequired { alert: String },
    /// It refused the client certificate presented.
    ClientCertRefused { alert: String },
    /// It refused the handshake over a client certificate: required, or the one presented
    /// refused (for a caller that cannot tell which it presented).
    ClientCert { alert: String },
    /// Another certificate problem, in rustls's words.
    Certificate(String),
}

fn time(t: rustls::pki_types::UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// The `rustls::Error` in `err`'s source chain, if any. `io::Error::source` skips the error
/// it wraps, so each `io::Error`'s inner error is looked at too.
fn find_rustls<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    // A chain is a handful of links; the bound only stops a cycle.
    for _ in 0..32 {
        let e = cur?;
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            cur = Some(inner);
            continue;
        }
        cur = e.source();
    }
    None
}

/// The certificate problem behind `err`, if it is one. `presented_identity`: whether this
/// client had a client certificate to present (a registry's refusal then means that one),
/// `None` when the caller cannot tell.
pub fn diagnose(
    err: &(dyn Error + 'static),
    presented_identity: Option<bool>,
) -> Option<TlsProblem> {
    use CertificateError as C;
    let now = SystemTime::now();
    Some(match find_rustls(err)? {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => TlsProblem::UnknownIssuer,
            C::NotValidForNameContext {
                expected,
                presented,
            } => TlsProblem::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.clone(),
            },
            C::NotValidForName => TlsProblem::NameMismatch {
                expected: String::new(),
                presented: Vec::new(),
            },
            C::ExpiredContext { time: t, not_after } => TlsProblem::Expired {
                not_after: time(*not_after),
                now: time(*t),
            },
            C::NotValidYetContext {
                time: t,
                not_before,
            } => TlsProblem::NotYetValid {
                not_before: time(*not_before),
                now: time(*t),
            },
            C::Expired => TlsProblem::Expired {
                not_after: UNIX_EPOCH,
                now,
            },
            other => TlsProblem::Certificate(format!("{other:?}")),
        },
        rustls::Error::AlertReceived(a) => {
            let alert = format!("{a:?}");
            let about_client_cert = matches!(
                a,
                AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied
                    | AlertDescription::HandshakeFailure
            );
            match (about_client_cert, presented_identity) {
                (false, _) => return None,
                (true, Some(false)) => TlsProblem::ClientCertRequired { alert },
                (true, Some(true)) => TlsProblem::ClientCertRefused { alert },
                (true, None) => TlsProblem::ClientCert { alert },
            }
        }
        _ => return None,
    })
}

/// A name the certificate presents, as rustls words it (`DnsName("a.b")`,
/// `IpAddress(10.0.0.1)`), in the form of openssl's listing (`DNS:a.b`, `IP:10.0.0.1`); the
/// name comes from the server, so anything unprintable in it is escaped.
fn presented_name(p: &str) -> String {
    let (kind, inner) = if let Some(d) = p
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        ("DNS:", d)
    } else if let Some(ip) = p
        .strip_prefix("IpAddress(")
        .and_then(|r| r.strip_suffix(')'))
    {
        ("IP:", ip)
    } else {
        ("", p)
    };
    format!("{kind}{}", inner.escape_debug())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl TlsProblem {
    /// The problem in a sentence, with what to do about it. `registry`: `host[:port]` as
    /// the command line named it, for the certs.d paths.
    pub fn explain(&self, registry: &str) -> String {
        let reg = if registry.is_empty() {
            "HOST:PORT"
        } else {
            registry
        };
        match self {
            TlsProblem::UnknownIssuer => format!(
                "TLS: the registry's certificate is signed by a CA this host does not trust (unknown issuer); \
                 put the registry's CA certificate in /etc/docker/certs.d/{reg}/ca.crt or \
                 /etc/containers/certs.d/{reg}/ca.crt, or pass --ca-cert FILE (or --cert-dir DIR)"
            ),
            TlsProblem::NameMismatch { expected, presented } if presented.is_empty() => format!(
                "TLS: the registry's certificate is not valid for {expected:?} (name mismatch)"
            ),
            TlsProblem::NameMismatch { expected, presented } => format!(
                "TLS: the registry's certificate is not valid for {expected:?} (name mismatch): it is for {}; \
                 reach the registry by one of those names, or have its certificate reissued for {expected:?}",
                presented
                    .iter()
                    .map(|p| presented_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TlsProblem::Expired { not_after, now } if *not_after == UNIX_EPOCH => format!(
                "TLS: the registry's certificate has expired (this host's clock says {})",
                rfc3339(*now)
            ),
            TlsProblem::Expired { not_after, now } => format!(
                "TLS: the registry's certificate expired at {} (this host's clock says {}); \
                 the registry needs a renewed certificate",
                rfc3339(*not_after),
                rfc3339(*now)
            ),
            TlsProblem::NotYetValid { not_before, now } => format!(
                "TLS: the registry's certificate is not valid before {} (this host's clock says {}: is it right?)",
                rfc3339(*not_before),
                rfc3339(*now)
            ),
            TlsProblem::ClientCertRequired { alert } => format!(
                "TLS: the registry requires a client certificate and none was presented (alert {alert}); \
                 put client.cert and client.key in /etc/docker/certs.d/{reg}/ (or --cert-dir DIR), \
                 or pass --client-cert FILE --client-key FILE"
            ),
            TlsProblem::ClientCertRefused { alert } => format!(
                "TLS: the registry refused the client certificate presented (alert {alert}): \
                 is it signed by a CA the registry trusts, and still valid?"
            ),
            TlsProblem::ClientCert { alert } => format!(
                "TLS: the registry refused the handshake over a client certificate (alert {alert}): \
                 it requires one (client.cert and client.key in /etc/docker/certs.d/{reg}/, or \
                 --client-cert FILE --client-key FILE), or refused the one presented"
            ),
            TlsProblem::Certificate(what) => {
                format!("TLS: the registry's certificate was refused: {what}")
            }
        }
    }
}
