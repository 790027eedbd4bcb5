//! A registry that wants bearer tokens: Debian's `docker-registry` configured with `auth:
//! token:` and a small token service on loopback that issues ES256 JWTs (signed with a key
//! made for the occasion, its self-signed certificate as the registry's root bundle) to one
//! user and password, for whatever repository scope it is asked. The registry checks every
//! token itself; nothing about the protocol is mocked on the registry's side.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::http::{answer, read_head};
use crate::registry::TestRegistry;

pub const SERVICE: &str = "airlock-test-registry";
const ISSUER: &str = "airlock-test-issuer";

/// The token service (a thread serving loopback HTTP) and the registry that trusts it.
#[derive(Debug)]
pub struct TokenRegistry {
    pub registry: TestRegistry,
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn openssl(args: &[&str]) {
    crate::tools::run(Command::new("openssl").args(args));
}

impl TokenRegistry {
    /// Starts both; the token service hands tokens only to `user`/`password` (Basic).
    pub fn start(user: &str, password: &str) -> TokenRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        std::fs::write(dir.path().join("key.der"), pkcs8.as_ref()).unwrap();
        openssl(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &p("key.der"),
            "-out",
            &p("key.pem"),
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &p("key.pem"),
            "-subj",
            "/CN=airlock-token",
            "-days",
            "2",
            "-out",
            &p("cert.pem"),
        ]);
        openssl(&[
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ]);
        let cert = std::fs::read(dir.path().join("cert.der")).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let expected = format!("Basic {}", crate::http::basic_token(user, password));
        let x5c = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&cert)
        };
        let header = b64(
            serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]})
                .to_string()
                .as_bytes(),
        );
        let count = issued.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let Ok((line, headers)) = read_head(&mut reader) else {
                    continue;
                };
                let auth = headers
                    .into_iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let access: Vec<serde_json::Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .filter_map(|s| {
                        let s = percent_decode(s);
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({
                            "type": kind, "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let reply = if auth.as_deref() != Some(expected.as_str()) {
                    answer(401, "Unauthorized", "text/plain", "")
                } else {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let claims = b64(serde_json::json!({
                        "iss": ISSUER, "sub": "gap", "aud": SERVICE,
                        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
                        "jti": format!("airlock-{n}"), "access": access,
                    })
                    .to_string()
                    .as_bytes());
                    let input = format!("{header}.{claims}");
                    let rng = ring::rand::SystemRandom::new();
                    let sig = key.sign(&rng, input.as_bytes()).unwrap();
                    let body =
                        serde_json::json!({"token": format!("{input}.{}", b64(sig.as_ref()))})
                            .to_string();
                    answer(200, "OK", "application/json", &body)
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        let registry = TestRegistry::start_with_auth_yaml(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            Path::new(&p("cert.pem")).display()
        ));
        TokenRegistry {
            registry,
            realm,
            issued,
            _dir: dir,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
