//! Registry credentials for the pulls, from what the user stored
//! ([`airlock_registry_auth::stored_credential`]; Docker Hub under docker's key).
//! No credentials means anonymous access (with the bearer-token dance where required).

use oci_client::secrets::RegistryAuth;

/// The key docker's config uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

pub fn credentials_for(registry: &str) -> RegistryAuth {
    let server = if registry == airlock_bundle::reference::DOCKER_HUB {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    airlock_registry_auth::stored_credential(server)
        .map(to_auth)
        .unwrap_or(RegistryAuth::Anonymous)
}

fn to_auth(c: airlock_registry_auth::DockerCredential) -> RegistryAuth {
    match c {
        airlock_registry_auth::DockerCredential::UsernamePassword(u, p) => {
            RegistryAuth::Basic(u, p)
        }
        // An identity token is a refresh token for the registry's token service; oci-client
        // takes it as a bearer credential.
        airlock_registry_auth::DockerCredential::IdentityToken(t) => RegistryAuth::Bearer(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_registry_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        // "user:secret" in base64
        std::fs::write(
            &p,
            r#"{"auths":{"127.0.0.1:5999":{"auth":"dXNlcjpzZWNyZXQ="}}}"#,
        )
        .unwrap();
        // Environment is process-wide; this is the only test in the crate that sets it.
        std::env::set_var("REGISTRY_AUTH_FILE", &p);
        let a = credentials_for("127.0.0.1:5999");
        std::env::remove_var("REGISTRY_AUTH_FILE");
        match a {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("user", "secret")),
            other => panic!("expected basic auth, got {other:?}"),
        }
    }
}
