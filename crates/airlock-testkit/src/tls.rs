//! A test PKI made with the `openssl` CLI, for registries serving TLS: a CA, server
//! certificates signed by it (one for 127.0.0.1 and localhost, one for another name, one
//! expired), a client certificate signed by it (the registry's `clientcas` for mutual TLS),
//! and a client certificate from an unrelated CA (to be refused). Keys are P-256.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which server certificate a TLS registry presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// For IP 127.0.0.1 and DNS localhost, valid for two days.
    Good,
    /// For DNS elsewhere.invalid only.
    WrongName,
    /// For 127.0.0.1 and localhost, valid on 2020-01-01 only.
    Expired,
}

impl ServerCert {
    fn stem(self) -> &'static str {
        match self {
            ServerCert::Good => "server",
            ServerCert::WrongName => "wrong-name",
            ServerCert::Expired => "expired",
        }
    }
}

#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

/// The `days` of [`TestPki::leaf`] that asks for a certificate valid on 2020-01-01 only.
const EXPIRED: &str = "expired";

fn openssl(args: &[&str]) {
    crate::tools::run(Command::new("openssl").args(args));
}

impl TestPki {
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki { dir };
        pki.ca("ca", "/CN=airlock test CA");
        pki.ca("rogue-ca", "/CN=not the registry's CA");
        let server = "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n";
        let here = format!("subjectAltName=IP:127.0.0.1,DNS:localhost\n{server}");
        pki.leaf("server", "ca", "/CN=localhost", &here, "2");
        pki.leaf(
            "wrong-name",
            "ca",
            "/CN=elsewhere.invalid",
            &format!("subjectAltName=DNS:elsewhere.invalid\n{server}"),
            "2",
        );
        pki.leaf("expired", "ca", "/CN=localhost", &here, EXPIRED);
        let client = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
        pki.leaf("client", "ca", "/CN=airlock client", client, "2");
        pki.leaf("rogue-client", "rogue-ca", "/CN=rogue client", client, "2");
        pki
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// A file of the PKI: `ca.crt`, `server.crt`/`.key`, `client.cert`/`client.key`,
    /// `rogue-client.cert`/`.key`, `rogue-ca.crt`, ...
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, stem: &str, subject: &str) {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &self.p(&format!("{stem}.key")),
            "-out",
            &self.p(&format!("{stem}.crt")),
            "-subj",
            subject,
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A key and certificate signed by `ca`; client certificates end in `.cert` (the
    /// certs.d convention), server certificates in `.crt`.
    fn leaf(&self, stem: &str, ca: &str, subject: &str, ext: &str, days: &str) {
        let ext_file = self.path(&format!("{stem}.ext"));
        std::fs::write(&ext_file, ext).unwrap();
        let csr = self.p(&format!("{stem}.csr"));
        let cert = if stem.ends_with("client") {
            "cert"
        } else {
            "crt"
        };
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &self.p(&format!("{stem}.key")),
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        if days == EXPIRED {
            // `x509 -req` of openssl 3.0 cannot set a start date; `ca` can, with a minimal
            // configuration of its own.
            let ca_dir = self.path("ca-db");
            std::fs::create_dir_all(&ca_dir).unwrap();
            std::fs::write(ca_dir.join("index.txt"), "").unwrap();
            std::fs::write(ca_dir.join("serial"), "01\n").unwrap();
            let d = ca_dir.display();
            let cnf = ca_dir.join("ca.cnf");
            std::fs::write(
                &cnf,
                format!(
                    "[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
                     serial = {d}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
                ),
            )
            .unwrap();
            openssl(&[
                "ca",
                "-batch",
                "-notext",
                "-config",
                cnf.to_str().unwrap(),
                "-cert",
                &self.p(&format!("{ca}.crt")),
                "-keyfile",
                &self.p(&format!("{ca}.key")),
                "-in",
                &csr,
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-extfile",
                ext_file.to_str().unwrap(),
                "-out",
                &self.p(&format!("{stem}.{cert}")),
            ]);
            return;
        }
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.p(&format!("{ca}.crt")),
            "-CAkey",
            &self.p(&format!("{ca}.key")),
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            ext_file.to_str().unwrap(),
            "-out",
            &self.p(&format!("{stem}.{cert}")),
        ]);
    }

    /// The `tls:` part of a docker-registry `http:` section: `server`'s certificate, and
    /// when `mtls`, a client certificate signed by the CA required.
    pub fn http_yaml(&self, server: ServerCert, mtls: bool) -> String {
        let s = server.stem();
        let mut y = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.p(&format!("{s}.crt")),
            self.p(&format!("{s}.key"))
        );
        if mtls {
            y.push_str(&format!("    clientcas:\n      - {}\n", self.p("ca.crt")));
        }
        y
    }

    /// Fills `dir` (created) like `/etc/docker/certs.d/HOST:PORT/`: `ca.crt`, and with
    /// `client` docker's `client.cert` + `client.key`.
    pub fn certs_d(&self, dir: &Path, client: bool) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(self.path("ca.crt"), dir.join("ca.crt")).unwrap();
        if client {
            std::fs::copy(self.path("client.cert"), dir.join("client.cert")).unwrap();
            std::fs::copy(self.path("client.key"), dir.join("client.key")).unwrap();
        }
    }
}
