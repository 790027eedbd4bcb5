use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::*;

/// A self-signed P-256 CA certificate (made with openssl; its key is not kept).
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIUdCGTLlF2f4dS487AdriEFvCpvpUwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPYWlybG9jay10ZXN0LWNhMB4XDTI2MTIwMTAxNDgwM1oXDTI2
MTIwMzAxNDgwM1owGjEYMBYGA1UEAwwPYWlybG9jay10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEM1It+NYRJ5vAbtAkpplAWNQQ1SM49GfU20KXGakP
4tNHP3UXDAJq1RokDIEEHVmSOB4xYODJyZS97WuJoHEVyaNjMGEwHQYDVR0OBBYE
FOUfWjHjHHJGavwlbeQjpRj3NavxMB8GA1UdIwQYMBaAFOUfWjHjHHJGavwlbeQj
pRj3NavxMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49
BAMCA0gAMEUCIQDW4gg4uNVqxKwPIm62pmGURzUPEv5pPsmXPOobi+/9mQIgBFyH
bjtjWb0dRRLznSVsp5lloJOLhDcCBgr9IZ7NxM4=
-----END CERTIFICATE-----
";
/// PEM framing without a certificate in it.
const NOT_X509: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn certs_d(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (n, t) in files {
        write(d.path(), n, t);
    }
    d
}

fn err(r: Result<impl std::fmt::Debug, TlsFileError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn a_certs_d_directory_by_docker_rules() {
    let d = certs_d(&[
        ("ca.crt", CERT),
        ("other.crt", CERT),
        ("client.cert", CERT),
        ("client.key", KEY),
        ("README", "not a certificate, ignored"),
    ]);
    let found = read_cert_dir(d.path()).unwrap();
    let names: Vec<_> = found
        .roots
        .iter()
        .map(|r| r.path.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["ca.crt", "other.crt"]);
    let id = found.identity.unwrap();
    assert_eq!(id.cert, d.path().join("client.cert"));
    assert_eq!(id.key, d.path().join("client.key"));
    // The key is in the identity's PEM, and not in its debug output.
    assert!(!format!("{id:?}").contains("PRIVATE KEY"));

    let e = err(read_cert_dir(certs_d(&[("client.cert", CERT)]).path()));
    assert!(e.contains("without its key client.key"), "{e}");
    let e = err(read_cert_dir(certs_d(&[("client.key", KEY)]).path()));
    assert!(
        e.contains("without its client certificate client.cert"),
        "{e}"
    );
    let e = err(read_cert_dir(certs_d(&[("ca.crt", "hello")]).path()));
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = err(read_cert_dir(
        certs_d(&[("ca.crt", &format!("{CERT}{NOT_X509}"))]).path(),
    ));
    assert!(
        e.contains("ca.crt: certificate 2: not a CA certificate"),
        "{e}"
    );
    let e = err(read_cert_dir(
        certs_d(&[("a.cert", CERT), ("a.key", CERT)]).path(),
    ));
    assert!(e.contains("no PEM private key"), "{e}");
}

#[test]
fn files_others_can_write_are_refused() {
    let d = certs_d(&[("ca.crt", CERT)]);
    let ca = d.path().join("ca.crt");
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o664)).unwrap();
    let e = err(read_cert_dir(d.path()));
    assert!(e.contains("mode 0664") && e.contains("ca.crt"), "{e}");
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = err(read_cert_dir(d.path()));
    assert!(e.contains("mode 0777"), "{e}");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(read_cert_dir(d.path()).unwrap().roots.len(), 1);
    // A directory named as a CA file is not one.
    std::fs::create_dir(d.path().join("dir.crt")).unwrap();
    assert!(err(read_cert_dir(d.path())).contains("not a regular file"));
}

#[test]
fn lookup_takes_the_first_existing_host_directory() {
    let c = certs_d_candidates("registry.gap:5000");
    assert!(c.ends_with(&[
        "/etc/containers/certs.d/registry.gap:5000".into(),
        "/etc/docker/certs.d/registry.gap:5000".into(),
    ]));
    for bad in ["", "..", "../etc", "a/b", ".hidden"] {
        assert!(certs_d_candidates(bad).is_empty(), "{bad:?}");
    }
    let root = tempfile::tempdir().unwrap();
    let cand: Vec<_> = ["containers", "docker"]
        .iter()
        .map(|r| root.path().join(r).join("reg:5000"))
        .collect();
    assert_eq!(first_existing(&cand).unwrap(), None);
    std::fs::create_dir_all(&cand[1]).unwrap();
    assert_eq!(first_existing(&cand).unwrap(), Some(cand[1].clone()));
    std::fs::create_dir_all(&cand[0]).unwrap();
    assert_eq!(first_existing(&cand).unwrap(), Some(cand[0].clone()));
}

#[test]
fn flags_add_to_the_directory_and_choose_the_client_certificate() {
    let dir = certs_d(&[("ca.crt", CERT), ("client.cert", CERT), ("client.key", KEY)]);
    let flags = certs_d(&[("mine.pem", CERT), ("me.pem", CERT), ("me.key", KEY)]);
    let f = |n: &str| flags.path().join(n);
    let opts = TlsOptions {
        ca_certs: vec![f("mine.pem")],
        cert_dir: Some(dir.path().to_path_buf()),
        client_cert: Some(f("me.pem")),
        client_key: Some(f("me.key")),
    };
    let m = opts.material("ignored:1").unwrap();
    assert_eq!(m.roots.len(), 2);
    assert_eq!(m.identity.as_ref().unwrap().cert, f("me.pem"));
    assert_eq!(m.dirs, [dir.path().to_path_buf()]);
    let d = m.describe();
    assert!(
        d.starts_with("the system store + ") && d.contains("mine.pem"),
        "{d}"
    );

    let half = TlsOptions {
        client_cert: Some(f("me.pem")),
        ..Default::default()
    };
    assert!(err(half.material("r")).contains("go together"));
    let missing = TlsOptions {
        cert_dir: Some(dir.path().join("nope")),
        ..Default::default()
    };
    assert!(err(missing.material("r")).contains("nope"));
}

#[derive(Debug)]
struct Wrapper(std::io::Error);
impl std::fmt::Display for Wrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error (Connect)")
    }
}
impl std::error::Error for Wrapper {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A rustls error as hyper hands it up: inside an `io::Error`, under another error.
fn wrapped(e: rustls::Error) -> Wrapper {
    Wrapper(std::io::Error::other(e))
}

#[test]
fn handshake_failures_are_named() {
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{AlertDescription, CertificateError as C, Error as E};
    let d = |e: E, id: bool| diagnose(&wrapped(e), Some(id));

    let p = d(E::InvalidCertificate(C::UnknownIssuer), false).unwrap();
    assert_eq!(p, TlsProblem::UnknownIssuer);
    let s = p.explain("reg.gap:5000");
    assert!(s.contains("unknown issuer"), "{s}");
    assert!(s.contains("/etc/docker/certs.d/reg.gap:5000/ca.crt") && s.contains("--ca-cert"));

    let p = d(
        E::InvalidCertificate(C::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["DnsName(\"other.example\")".into(), "evil\u{1b}[2J".into()],
        }),
        false,
    )
    .unwrap();
    let s = p.explain("127.0.0.1:5000");
    assert!(s.contains("not valid for \"127.0.0.1\""), "{s}");
    assert!(
        s.contains("it is for DNS:other.example, evil\\u{1b}[2J;"),
        "{s}"
    );
    // A name from the server cannot drive the terminal.
    assert!(!s.contains('\u{1b}'), "{s}");

    let p = d(
        E::InvalidCertificate(C::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        }),
        false,
    )
    .unwrap();
    let s = p.explain("r");
    assert!(s.contains("expired at 2023-11-14T22:13:20Z"), "{s}");
    assert!(s.contains("clock says 2027-01-15T08:00:00Z"), "{s}");

    let alert = E::AlertReceived(AlertDescription::CertificateRequired);
    let s = d(alert.clone(), false).unwrap().explain("r:1");
    assert!(
        s.contains("requires a client certificate") && s.contains("--client-cert"),
        "{s}"
    );
    let s = d(alert, true).unwrap().explain("r:1");
    assert!(s.contains("refused the client certificate"), "{s}");
    let s = diagnose(&wrapped(alert_again()), None)
        .unwrap()
        .explain("r:1");
    assert!(
        s.contains("requires one") && s.contains("or refused the one presented"),
        "{s}"
    );

    // Not a certificate problem, or no TLS at all: nothing to say.
    assert_eq!(
        d(E::AlertReceived(AlertDescription::ProtocolVersion), false),
        None
    );
    assert_eq!(
        diagnose(&Wrapper(std::io::Error::other("refused")), Some(false)),
        None
    );
}

use std::time::Duration;

fn alert_again() -> rustls::Error {
    rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
}
