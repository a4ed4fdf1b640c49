//! Development mode: a built-in token issuer so GrantFlow can be tried without an Entra ID
//! tenant. It signs Entra-shaped RS256 tokens with a key made at start-up and publishes the
//! matching JWKS to the validator directly. Never enable it in production.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use grantflow_core::identity::is_guid;

use crate::config::{DEV_AUDIENCE, DEV_TENANT};

pub struct DevIssuer {
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
}

/// What a development token should say.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DevTokenRequest {
    /// User name; `oid` is derived from it [default: alice].
    pub user: Option<String>,
    /// The `sid` claim; omit for a fresh one, or pass `none` for a token without `sid`.
    pub session: Option<String>,
    /// Grant the admin app role (`GrantFlow.SessionAdmin`).
    #[serde(default)]
    pub admin: bool,
    /// Token lifetime in seconds [default: 3600].
    pub lifetime: Option<i64>,
    /// The `auth_time` claim: `now` (a fresh sign-in), or seconds since the epoch; omit for
    /// a token without it (as Entra ID issues until the optional claim is configured).
    pub auth_time: Option<String>,
    /// The tenant (a GUID): the `tid` claim and the tenant in `iss` [default: the development
    /// tenant]. Development mode accepts every tenant unless `allowed_tenants` says otherwise.
    pub tenant: Option<String>,
}

impl DevTokenRequest {
    /// The tenant the token is for: `tenant` when it is a GUID, else the development tenant;
    /// an error (for a 400) when `tenant` is given and is not a GUID.
    pub fn tenant(&self) -> Result<&str, String> {
        match self.tenant.as_deref().map(str::trim) {
            None | Some("") => Ok(DEV_TENANT),
            Some(tenant) if is_guid(tenant) => Ok(tenant),
            Some(_) => Err(
                "tenant must be a GUID (8-4-4-4-12 hex digits, like an Entra ID tenant id), e.g. \
                 tenant=00000000-0000-4000-8000-000000000002"
                    .into(),
            ),
        }
    }
}

impl DevIssuer {
    pub fn generate() -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8 export");
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a fresh RSA key");
        let kid = format!("grantflow-dev-{}", uuid::Uuid::new_v4().simple());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("public JWK");
        jwk.common.key_id = Some(kid.clone());
        Self {
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
        }
    }

    pub fn jwks(&self) -> JwkSet {
        self.jwks.clone()
    }

    /// Signs a token for `request` at `now` (seconds); an error (for a 400) when the request
    /// names a tenant that is not a GUID.
    pub fn mint(&self, request: &DevTokenRequest, now: i64) -> Result<String, String> {
        let tenant = request.tenant()?;
        let user = request.user.clone().unwrap_or_else(|| "alice".into());
        let user: String = user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(32)
            .collect();
        let user = if user.is_empty() {
            "alice".to_string()
        } else {
            user
        };
        let oid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, user.as_bytes()).to_string();
        let mut claims: HashMap<&str, Value> = HashMap::from([
            (
                "iss",
                json!(format!("https://login.microsoftonline.com/{tenant}/v2.0")),
            ),
            ("aud", json!(DEV_AUDIENCE)),
            ("tid", json!(tenant)),
            ("oid", json!(oid)),
            ("sub", json!(oid)),
            (
                "preferred_username",
                json!(format!("{user}@dev.grantflow.invalid")),
            ),
            ("name", json!(user)),
            ("iat", json!(now)),
            ("nbf", json!(now)),
            (
                "exp",
                json!(now + request.lifetime.unwrap_or(3600).clamp(1, 86_400)),
            ),
            ("uti", json!(uuid::Uuid::new_v4().simple().to_string())),
            ("ver", json!("2.0")),
            // A v2 access token carries its delegated scopes (an ID token does not).
            ("scp", json!("access_as_user")),
        ]);
        match request.session.as_deref() {
            Some("none") => {}
            Some(sid) => {
                claims.insert("sid", json!(sid));
            }
            None => {
                claims.insert("sid", json!(uuid::Uuid::new_v4().to_string()));
            }
        }
        match request.auth_time.as_deref().map(str::trim) {
            None | Some("") => {}
            Some("now") => {
                claims.insert("auth_time", json!(now));
            }
            Some(secs) => {
                if let Ok(secs) = secs.parse::<i64>() {
                    claims.insert("auth_time", json!(secs.min(now)));
                }
            }
        }
        if request.admin {
            claims.insert("roles", json!(["GrantFlow.SessionAdmin"]));
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(encode(&header, &claims, &self.key).expect("signing with a valid key"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use grantflow_core::clock::{Clock, SystemClock};
    use grantflow_core::jwks::{KeySet, StaticJwks};
    use grantflow_core::token::{TokenRules, TokenValidator};

    use super::*;

    const OTHER_TENANT: &str = "7d3c1e52-9a4b-4c1d-8e2f-0123456789ab";

    async fn tenant_of(issuer: &DevIssuer, token: &str) -> String {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let keys = Arc::new(KeySet::new(
            StaticJwks::new(issuer.jwks()),
            Duration::from_secs(1),
        ));
        let validator =
            TokenValidator::new(TokenRules::entra(vec![DEV_AUDIENCE.into()]), keys, clock);
        validator
            .validate(token)
            .await
            .expect("a valid development token")
            .tenant
            .clone()
    }

    #[tokio::test]
    async fn tokens_are_for_the_development_tenant_unless_another_guid_is_asked_for() {
        let issuer = DevIssuer::generate();
        let now = SystemClock.now_secs();
        let token = issuer.mint(&DevTokenRequest::default(), now).unwrap();
        assert_eq!(tenant_of(&issuer, &token).await, DEV_TENANT);
        let other = DevTokenRequest {
            tenant: Some(OTHER_TENANT.into()),
            ..DevTokenRequest::default()
        };
        let token = issuer.mint(&other, now).unwrap();
        assert_eq!(tenant_of(&issuer, &token).await, OTHER_TENANT);
        let blank = DevTokenRequest {
            tenant: Some(String::new()),
            ..DevTokenRequest::default()
        };
        assert_eq!(blank.tenant(), Ok(DEV_TENANT));
    }

    #[test]
    fn a_tenant_that_is_not_a_guid_is_refused_with_a_clear_message() {
        let issuer = DevIssuer::generate();
        for tenant in [
            "contoso",
            "common",
            "7d3c1e52-9a4b-4c1d-8e2f-0123456789a",
            "../x",
        ] {
            let request = DevTokenRequest {
                tenant: Some(tenant.into()),
                ..DevTokenRequest::default()
            };
            let error = issuer.mint(&request, 0).unwrap_err();
            assert!(error.contains("tenant must be a GUID"), "{tenant}: {error}");
        }
    }
}
