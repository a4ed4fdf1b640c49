//! Development mode: a built-in token issuer so GrantFlow can be tried without an Entra ID
//! tenant. It signs Entra-shaped RS256 tokens with a key made at start-up and publishes the
//! matching JWKS to the validator directly. Never enable it in production.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

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

    /// Signs a token for `request` at `now` (seconds).
    pub fn mint(&self, request: &DevTokenRequest, now: i64) -> String {
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
                json!(format!(
                    "https://login.microsoftonline.com/{DEV_TENANT}/v2.0"
                )),
            ),
            ("aud", json!(DEV_AUDIENCE)),
            ("tid", json!(DEV_TENANT)),
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
        encode(&header, &claims, &self.key).expect("signing with a valid key")
    }
}
