//! Credentials for the target registry, as the user stored them
//! ([`airlock_registry_auth::stored_credential`]). A `Basic` challenge is answered
//! with them; a `Bearer` challenge with a token from the realm, which must be on the
//! registry's own host: push never contacts any other.

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
        airlock_registry_auth::stored_credential(registry)
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

impl From<airlock_registry_auth::DockerCredential> for Credentials {
    fn from(c: airlock_registry_auth::DockerCredential) -> Credentials {
        match c {
            airlock_registry_auth::DockerCredential::UsernamePassword(user, password) => {
                Credentials::Basic { user, password }
            }
            airlock_registry_auth::DockerCredential::IdentityToken(t) => {
                Credentials::IdentityToken(t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
