//! Answering the registry's challenges: which scheme it wants (learnt from its first
//! `401`), `Basic` with the stored credentials, or `Bearer` tokens fetched from its token
//! service, cached by scope. The token service gets the user's credentials, so its origin
//! is checked first ([`check_realm`]).

use std::time::Duration;

use airlock_bundle::text::escape;
use airlock_registry_auth::{parse_challenge, Challenge};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, Url};

use super::answer::{body_excerpt, read_capped};
use super::{same_origin, Client};
use crate::push::auth::Credentials;
use crate::UnpackError;

/// A token service's answer longer than this is not a token.
const TOKEN_BODY_CAP: usize = 1 << 20;
const TOKEN_BODY_TIME: Duration = Duration::from_secs(60);

/// How the registry wants to be authenticated, learnt from its first challenge.
#[derive(Debug, Clone)]
pub(super) enum AuthMode {
    /// No challenge seen yet: requests go out without credentials.
    Unknown,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

/// Whether the registry at `base` may send the user's credentials to the token service at
/// `realm`; `named` is the origin the operator allowed with `--token-realm`. `Err` says why
/// not.
fn check_realm(base: &Url, realm: &Url, named: Option<&Url>) -> Result<(), &'static str> {
    if !matches!(realm.scheme(), "http" | "https") {
        return Err("not an http or https URL");
    }
    // An https registry's credentials never travel in clear text, named or not.
    if base.scheme() == "https" && realm.scheme() != "https" {
        return Err("plain http for an https registry");
    }
    if same_origin(realm, base) || named.is_some_and(|n| same_origin(realm, n)) {
        return Ok(());
    }
    // Another port of the registry's own host is another service, except where TLS still
    // proves it is the host the operator named.
    if base.scheme() == "https" && realm.host_str() == base.host_str() {
        return Ok(());
    }
    Err("not at the registry's origin (scheme, host and port)")
}

impl Client {
    /// The `Authorization` header for `scopes`, fetching a token when the registry uses
    /// bearer tokens and none is cached for them.
    pub(super) async fn authorization(
        &self,
        scopes: &[String],
    ) -> Result<Option<String>, UnpackError> {
        let mode = self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match mode {
            AuthMode::Unknown => Ok(None),
            AuthMode::Basic => Ok(self.creds.basic_header()),
            AuthMode::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if let Some(t) = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.token(&realm, service.as_deref(), scopes).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Learns the auth scheme from a 401's challenge. Returns whether a retry can succeed.
    pub(super) fn learn(&self, resp: &Response, scopes: &[String]) -> Result<bool, UnpackError> {
        let header = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        match parse_challenge(header) {
            Some(Challenge::Basic) => {
                if self.creds.basic_header().is_none() {
                    return Err(self.err(format!(
                        "HTTP 401: the registry wants a user and password and none is configured for {} \
                         (REGISTRY_AUTH_FILE, or `auths` in $DOCKER_CONFIG/config.json or ~/.docker/config.json)",
                        self.registry
                    )));
                }
                let first = !matches!(*mode, AuthMode::Basic);
                *mode = AuthMode::Basic;
                Ok(first)
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let url = Url::parse(&realm)
                    .map_err(|e| self.err(format!("token realm {}: {e}", escape(&realm))))?;
                if let Err(why) = check_realm(&self.base, &url, self.token_realm.as_ref()) {
                    return Err(self.err(format!(
                        "the registry asks for credentials at the token service {}, which is {why}: nothing was sent there \
                         (the registry is {}; push contacts only the registry named on the command line; \
                         name a token service you trust with --token-realm URL)",
                        escape(&realm),
                        self.base.origin().ascii_serialization(),
                    )));
                }
                let realm = url;
                // A stale token for these scopes is dropped: the next attempt asks again.
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&scopes.join(" "));
                *mode = AuthMode::Bearer { realm, service };
                Ok(true)
            }
            None => Err(self.err(format!(
                "HTTP 401 with a challenge push cannot answer: {}",
                escape(header)
            ))),
        }
    }

    /// A token from the registry's token service for `scopes`.
    async fn token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, UnpackError> {
        let mut url = realm.clone();
        let mut form = Url::parse("http://form.invalid/").expect("static URL");
        {
            let mut q = form.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let req = match &self.creds {
            Credentials::IdentityToken(t) => {
                form.query_pairs_mut()
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", t)
                    .append_pair("client_id", "airlock");
                self.http
                    .post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.query().unwrap_or("").to_string())
            }
            creds => {
                url.set_query(form.query());
                let req = self.http.get(url);
                match creds.basic_header() {
                    Some(b) => req.header(AUTHORIZATION, b),
                    None => req,
                }
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_err(&format!("token service {realm}"), &e))?;
        if !resp.status().is_success() {
            return Err(self.err(format!(
                "token service {realm}: HTTP {}{}",
                resp.status(),
                body_excerpt(resp).await
            )));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let (body, short) = read_capped(resp, TOKEN_BODY_CAP, TOKEN_BODY_TIME).await;
        if let Some(why) = short {
            return Err(self.err(format!("token service {realm}: answer {why}")));
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|e| self.err(format!("token service {realm}: {e}")))?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| self.err(format!("token service {realm} sent no token")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_to_the_registry_origin_only() {
        let u = |s: &str| Url::parse(s).unwrap();
        let https = u("https://reg.gap:5000/");
        let http = u("http://reg.gap:5000/");
        // The registry's own origin, any path.
        assert_eq!(
            check_realm(&https, &u("https://reg.gap:5000/token"), None),
            Ok(())
        );
        assert_eq!(
            check_realm(&http, &u("http://reg.gap:5000/auth"), None),
            Ok(())
        );
        // An https registry: https on its host, any port (TLS proves the host).
        assert_eq!(
            check_realm(&https, &u("https://reg.gap/service/token"), None),
            Ok(())
        );
        assert_eq!(
            check_realm(&https, &u("https://reg.gap:5001/auth"), None),
            Ok(())
        );
        for (base, realm) in [
            // Never clear text for an https registry.
            (&https, "http://reg.gap:5000/token"),
            (&https, "http://reg.gap/token"),
            // Another port over http is another service on that host.
            (&http, "http://reg.gap:5001/token"),
            (&http, "http://reg.gap/token"),
            (&http, "https://reg.gap/token"),
            // Another host.
            (&https, "https://auth.elsewhere/token"),
            (&https, "https://reg.gap.evil/token"),
            (&http, "http://127.0.0.1:5000/token"),
            (&https, "ftp://reg.gap/token"),
        ] {
            assert!(
                check_realm(base, &u(realm), None).is_err(),
                "{realm} accepted for {base}"
            );
        }
        // A token service the operator named is accepted at that origin only, and an https
        // registry's credentials still never go over http.
        let named = u("http://reg.gap:5001/");
        assert_eq!(
            check_realm(&http, &u("http://reg.gap:5001/token"), Some(&named)),
            Ok(())
        );
        assert!(check_realm(&http, &u("http://reg.gap:5002/token"), Some(&named)).is_err());
        assert!(check_realm(&https, &u("http://reg.gap:5001/token"), Some(&named)).is_err());
        let named = u("https://auth.lab/");
        assert_eq!(
            check_realm(&https, &u("https://auth.lab/jwt"), Some(&named)),
            Ok(())
        );
        assert!(Client::new(
            "reg.gap",
            false,
            Some("http://auth.lab/"),
            &super::super::no_tls()
        )
        .is_err());
        assert!(Client::new(
            "reg.gap",
            true,
            Some("http://auth.lab/"),
            &super::super::no_tls()
        )
        .is_ok());
        assert!(Client::new("reg.gap", true, Some("auth.lab"), &super::super::no_tls()).is_err());
    }
}
