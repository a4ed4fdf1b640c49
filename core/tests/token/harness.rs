//! What every token test uses: the tenant, user and audience, RSA keys generated once per test
//! binary, typical Entra claims and signing, JWKS sources that count fetches or are down, and
//! a [`Harness`] of a validator on a [`ManualClock`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use grantflow_core::clock::ManualClock;
use grantflow_core::identity::Identity;
use grantflow_core::jwks::{JwksError, JwksSource, KeySet, StaticJwks};
use grantflow_core::token::{TokenError, TokenRules, TokenValidator};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// "Now", in seconds since the epoch.
pub const NOW: i64 = 1_750_000_000;
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const OTHER_TENANT: &str = "0b3c1a9e-5d4f-4c2b-9a8e-7f6d5c4b3a21";
pub const USER: &str = "00000000-0000-0000-66f3-3332eca7ea81";
pub const SID: &str = "00b3f2a1-8c7d-4e6f-9a0b-1c2d3e4f5a6b";
pub const AUD: &str = "api://grantflow-test";
pub const LEEWAY: i64 = 60;

pub struct TestKey {
    pub kid: &'static str,
    pub encoding: EncodingKey,
    /// The public JWK, with `kid` and `alg: RS256`.
    pub jwk: Jwk,
    /// The public key as X.509 SubjectPublicKeyInfo DER, and as PEM.
    pub public_der: Vec<u8>,
    pub public_pem: String,
}

pub struct Keys {
    /// The issuer's signing key, `kid` "k1".
    pub main: TestKey,
    /// Someone else's key that claims the same `kid` "k1".
    pub impostor: TestKey,
    /// The issuer's next key after a rotation, `kid` "k2".
    pub rotated: TestKey,
}

/// RSA key generation is slow: once per test binary.
pub static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    main: rsa_key("k1"),
    impostor: rsa_key("k1"),
    rotated: rsa_key("k2"),
});

fn rsa_key(kid: &'static str) -> TestKey {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
    let pkcs8: Pkcs8V1Der<'static> = pair.as_der().expect("PKCS#8 export");
    // `EncodingKey::from_rsa_der` wants PKCS#1; the PEM loader unwraps PKCS#8 for us.
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .expect("PKCS#8 PEM accepted by jsonwebtoken");
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    let spki: PublicKeyX509Der<'static> = pair.public_key().as_der().expect("SPKI export");
    let public_der = spki.as_ref().to_vec();
    let public_pem = pem("PUBLIC KEY", &public_der);
    TestKey {
        kid,
        encoding,
        jwk,
        public_der,
        public_pem,
    }
}

pub fn jwk_set(keys: &[&TestKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    }
}

/// Unpadded base64url, as JWTs and JWKs write it.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

pub fn v1_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

pub fn v2_issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}

/// The claims of a typical Entra ID v1 access token with the optional `sid`/`auth_time`.
pub fn claims() -> Value {
    json!({
        "iss": v1_issuer(TENANT),
        "aud": AUD,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "auth_time": NOW - 300,
        "tid": TENANT,
        "oid": USER,
        "sid": SID,
        "uti": "AbCdEfGhIjKlMnOp",
        "preferred_username": "ada@contoso.example",
        "name": "Ada Lovelace",
        "roles": ["GrantFlow.SessionAdmin", "Reader"],
        "ver": "1.0",
    })
}

pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

pub fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

pub fn sign_as(key: &TestKey, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing")
}

/// Signed by the issuer's current key, RS256, `kid` "k1".
pub fn sign(claims: &Value) -> String {
    sign_as(&KEYS.main, Some(KEYS.main.kid), Algorithm::RS256, claims)
}

/// Counts fetches of the wrapped JWKS.
struct Counting {
    inner: StaticJwks,
    fetches: Arc<AtomicUsize>,
}

#[async_trait]
impl JwksSource for Counting {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch().await
    }
}

/// A JWKS endpoint that is down.
pub struct Down;

#[async_trait]
impl JwksSource for Down {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        Err(JwksError::Fetch {
            what: "the JWKS",
            reason: "connection refused".into(),
        })
    }
}

pub struct Harness {
    pub clock: ManualClock,
    pub jwks: StaticJwks,
    pub fetches: Arc<AtomicUsize>,
    pub validator: TokenValidator,
}

impl Harness {
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub async fn ok(&self, token: &str) -> Arc<Identity> {
        match self.validator.validate(token).await {
            Ok(identity) => identity,
            Err(error) => panic!("expected the token to be accepted, got {error:?}"),
        }
    }

    pub async fn err(&self, token: &str) -> TokenError {
        match self.validator.validate(token).await {
            Ok(identity) => panic!("expected the token to be refused, got {identity:?}"),
            Err(error) => error,
        }
    }
}

pub fn rules() -> TokenRules {
    TokenRules::entra(vec![AUD.to_owned()])
}

/// A validator over a JWKS publishing the "k1" key, loaded once; unknown `kid`s may refetch
/// once per `refetch_interval`.
pub async fn harness_with(rules: TokenRules, refetch_interval: Duration) -> Harness {
    let clock = ManualClock::new(NOW * 1000);
    let jwks = StaticJwks::new(jwk_set(&[&KEYS.main]));
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Counting {
        inner: jwks.clone(),
        fetches: fetches.clone(),
    };
    let keys = Arc::new(KeySet::new(source, refetch_interval));
    assert_eq!(keys.refresh().await.expect("initial JWKS load"), 1);
    let validator = TokenValidator::new(rules, keys, Arc::new(clock.clone()));
    Harness {
        clock,
        jwks,
        fetches,
        validator,
    }
}

pub async fn harness(rules: TokenRules) -> Harness {
    harness_with(rules, Duration::from_secs(3600)).await
}
