//! How airlock reaches a registry, on both sides (`airlock-pack` pulling, `airlock-unpack
//! push`): the credentials a user has stored for it, the `WWW-Authenticate` challenges
//! registries answer with, and whom to trust over TLS ([`tls`]: certs.d directories, CA and
//! client certificate files, and what a failed handshake means). Parsing and file lookup
//! only: the clients that use this do the network.

use std::collections::BTreeMap;

#[cfg(feature = "tls")]
pub mod tls;

pub use docker_credential::DockerCredential;

/// The credential stored for `server` (a registry `host[:port]`, or the key docker uses for
/// Docker Hub), looked up the way docker and podman do: `REGISTRY_AUTH_FILE` first, then the
/// docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) with its
/// `auths` and credential helpers.
pub fn stored_credential(server: &str) -> Option<DockerCredential> {
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        if let Ok(f) = std::fs::File::open(&path) {
            if let Ok(c) = docker_credential::get_credential_from_reader(f, server) {
                return Some(c);
            }
        }
    }
    docker_credential::get_credential(server).ok()
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// `realm`, optional `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"` (scheme
/// case-insensitive, quoted values may contain commas, as scopes with several actions do).
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest)?;
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k=v` or `k="v, with commas"` pairs separated by commas; keys lowercased.
fn parse_params(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if key.is_empty() {
            return None;
        }
        out.insert(key, value);
        rest = tail.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://reg.lab/service/token",service="harbor-registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://reg.lab/service/token".into(),
                service: Some("harbor-registry".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://r/t, service="s""#),
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: Some("s".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="airlock-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        // A Bearer challenge without a realm cannot be answered.
        assert_eq!(parse_challenge(r#"Bearer service="s""#), None);
        // An unterminated quote is not a challenge.
        assert_eq!(parse_challenge(r#"Bearer realm="https://r/t"#), None);
    }
}
