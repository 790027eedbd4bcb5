//! Credentials for the target registry and the `WWW-Authenticate` challenges it answers
//! with.
//!
//! Credentials are looked up the way docker and podman do: `REGISTRY_AUTH_FILE`, then the
//! docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) with its
//! `auths` and credential helpers. A `Basic` challenge is answered with them; a `Bearer`
//! challenge with a token from the realm, which must be on the registry's own host: push
//! never contacts any other.

use std::collections::BTreeMap;

/// What the user has for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    /// A docker config `identitytoken`: a refresh token for the registry's token service.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, …)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(…)"),
        }
    }
}

impl Credentials {
    /// Looks up `registry` (`host[:port]`) in `REGISTRY_AUTH_FILE`, then the docker config.
    pub fn lookup(registry: &str) -> Credentials {
        if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
            if let Ok(f) = std::fs::File::open(&path) {
                if let Ok(c) = docker_credential::get_credential_from_reader(f, registry) {
                    return c.into();
                }
            }
        }
        docker_credential::get_credential(registry)
            .map(Into::into)
            .unwrap_or(Credentials::Anonymous)
    }

    /// The `Authorization` value for a `Basic` challenge, if there is a user and password.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { user, password } => {
                use base64::Engine as _;
                let enc =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {enc}"))
            }
            _ => None,
        }
    }
}

impl From<docker_credential::DockerCredential> for Credentials {
    fn from(c: docker_credential::DockerCredential) -> Credentials {
        match c {
            docker_credential::DockerCredential::UsernamePassword(user, password) => {
                Credentials::Basic { user, password }
            }
            docker_credential::DockerCredential::IdentityToken(t) => Credentials::IdentityToken(t),
        }
    }
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

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic_header().as_deref(), Some("Basic dTpodW50ZXIy"));
    }
}
