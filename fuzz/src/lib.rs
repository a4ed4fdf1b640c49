//! What the fuzz targets share: a test issuer (a P-256 key generated at start, so no private
//! key is committed), its JWKS, the tenant and audience the validator accepts, the fixed
//! "now", a single-threaded Tokio runtime, and a small arbitrary JSON value.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantflow_core::clock::ManualClock;
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::token::{TokenRules, TokenValidator};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

pub const AUDIENCE: &str = "api://grantflow-fuzz";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const OTHER_TENANT: &str = "11111111-2222-4333-8444-555555555555";
pub const KID: &str = "fuzz-key";
/// 2026-09-21T14:13:20Z, in milliseconds.
pub const START_MS: i64 = 1_790_000_000_000;
pub const NOW: i64 = START_MS / 1000;

/// A single-threaded runtime with timers (the admin API's store deadline).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// An ES256 issuer: signs whatever header and claims bytes it is given.
pub struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The JWKS that publishes the key (`kid` [`KID`], `alg` ES256).
    pub jwks: JwkSet,
    /// The public key as an uncompressed point: the "secret" of an HS256 confusion attempt.
    pub public_point: Vec<u8>,
}

impl Default for Issuer {
    fn default() -> Self {
        Self::new()
    }
}

impl Issuer {
    pub fn new() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
        let point = key.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let jwks: JwkSet = serde_json::from_value(json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                "kid": KID,
                "use": "sig",
                "alg": "ES256",
            }]
        }))
        .expect("a JWKS");
        Self {
            key,
            rng: SystemRandom::new(),
            jwks,
            public_point: point,
        }
    }

    /// The ES256 signature of `input` (the JWS signing input).
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        self.key
            .sign(&self.rng, input)
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    }

    /// A compact JWS of these header and claims bytes, signed by this issuer.
    pub fn sign_bytes(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = URL_SAFE_NO_PAD.encode(self.signature(input.as_bytes()));
        format!("{input}.{signature}")
    }

    /// A compact JWS with the usual header (`ES256`, [`KID`]).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        self.sign_bytes(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Claims of a valid access token of [`TENANT`] for `user`, an admin when `admin`.
    pub fn claims(&self, user: &str, admin: bool) -> Value {
        let mut claims = json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": AUDIENCE,
            "tid": TENANT,
            "oid": user,
            "sid": format!("sid-{user}"),
            "scp": "access",
            "azp": "fuzz-client",
            "ver": "2.0",
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 3600,
        });
        if admin {
            claims["roles"] = json!([grantflow_extauthz::config::DEFAULT_ADMIN_ROLE]);
        }
        claims
    }

    /// A loaded key set publishing this issuer's key (the refetch interval is long: a
    /// forged `kid` costs no fetch).
    pub fn key_set(&self, runtime: &tokio::runtime::Runtime) -> Arc<KeySet> {
        let keys = Arc::new(KeySet::new(
            StaticJwks::new(self.jwks.clone()),
            Duration::from_secs(3600),
        ));
        runtime
            .block_on(keys.refresh())
            .expect("the static JWKS loads");
        keys
    }
}

/// The clock every target uses: [`START_MS`].
pub fn clock() -> ManualClock {
    ManualClock::new(START_MS)
}

/// A validator over `keys` with Entra rules for [`AUDIENCE`].
pub fn validator(keys: Arc<KeySet>, clock: &ManualClock) -> TokenValidator {
    TokenValidator::new(
        TokenRules::entra(vec![AUDIENCE.into()]),
        keys,
        Arc::new(clock.clone()),
    )
}

/// A small JSON value built by the fuzzer (depth-limited by the input's length).
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// How deeply arrays and objects nest (serde_json refuses more than 128 levels).
    pub fn depth(&self) -> usize {
        match self {
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(fields) => 1 + fields.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => json!(i),
            Json::Float(f) => json!(f),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}
