//! Bearer token validation (DESIGN §3, §5 "Failure"): signature by the issuer's JWKS, the
//! accepted algorithms, issuer / audience / expiry / tenant rules, the claims an identity is
//! made of, key rotation and the verified-token cache.
//!
//! Every refusal asserts the exact [`TokenError`] variant. Keys are real RSA-2048 keys generated
//! once per test binary; time is a [`ManualClock`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use grantflow_core::clock::ManualClock;
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::jwks::{JwksError, JwksSource, KeySet, StaticJwks};
use grantflow_core::token::{TokenError, TokenRules, TokenValidator};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// "Now", in seconds since the epoch.
const NOW: i64 = 1_750_000_000;
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0b3c1a9e-5d4f-4c2b-9a8e-7f6d5c4b3a21";
const USER: &str = "00000000-0000-0000-66f3-3332eca7ea81";
const SID: &str = "00b3f2a1-8c7d-4e6f-9a0b-1c2d3e4f5a6b";
const AUD: &str = "api://grantflow-test";
const LEEWAY: i64 = 60;

struct TestKey {
    kid: &'static str,
    encoding: EncodingKey,
    /// The public JWK, with `kid` and `alg: RS256`.
    jwk: Jwk,
    /// The public key as X.509 SubjectPublicKeyInfo DER, and as PEM.
    public_der: Vec<u8>,
    public_pem: String,
}

struct Keys {
    /// The issuer's signing key, `kid` "k1".
    main: TestKey,
    /// Someone else's key that claims the same `kid` "k1".
    impostor: TestKey,
    /// The issuer's next key after a rotation, `kid` "k2".
    rotated: TestKey,
}

/// RSA key generation is slow: once per test binary.
static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
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

fn jwk_set(keys: &[&TestKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    }
}

/// Base64 (standard alphabet with padding, or URL-safe without), to hand-craft tokens and PEM.
fn b64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

fn b64url(bytes: &[u8]) -> String {
    b64(bytes, true)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der, false);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn v1_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

fn v2_issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}

/// The claims of a typical Entra ID v1 access token with the optional `sid`/`auth_time`.
fn claims() -> Value {
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

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn sign_as(key: &TestKey, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing")
}

/// Signed by the issuer's current key, RS256, `kid` "k1".
fn sign(claims: &Value) -> String {
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
struct Down;

#[async_trait]
impl JwksSource for Down {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        Err(JwksError::Fetch {
            what: "the JWKS",
            reason: "connection refused".into(),
        })
    }
}

struct Harness {
    clock: ManualClock,
    jwks: StaticJwks,
    fetches: Arc<AtomicUsize>,
    validator: TokenValidator,
}

impl Harness {
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    async fn ok(&self, token: &str) -> Arc<Identity> {
        match self.validator.validate(token).await {
            Ok(identity) => identity,
            Err(error) => panic!("expected the token to be accepted, got {error:?}"),
        }
    }

    async fn err(&self, token: &str) -> TokenError {
        match self.validator.validate(token).await {
            Ok(identity) => panic!("expected the token to be refused, got {identity:?}"),
            Err(error) => error,
        }
    }
}

fn rules() -> TokenRules {
    TokenRules::entra(vec![AUD.to_owned()])
}

/// A validator over a JWKS publishing the "k1" key, loaded once; unknown `kid`s may refetch
/// once per `refetch_interval`.
async fn harness_with(rules: TokenRules, refetch_interval: Duration) -> Harness {
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

async fn harness(rules: TokenRules) -> Harness {
    harness_with(rules, Duration::from_secs(3600)).await
}

// ---------------------------------------------------------------------------------------------
// Valid tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn entra_v1_token_becomes_an_identity() {
    let h = harness(rules()).await;
    let id = h.ok(&sign(&claims())).await;
    assert_eq!(
        *id,
        Identity {
            tenant: TENANT.into(),
            user: USER.into(),
            display_name: Some("ada@contoso.example".into()),
            session: SessionKey {
                id: SID.into(),
                anchor: SessionAnchor::Sid
            },
            auth_time: Some(NOW - 300),
            issued_at: Some(NOW - 10),
            not_before: Some(NOW - 10),
            expires_at: NOW + 3600,
            roles: vec!["GrantFlow.SessionAdmin".into(), "Reader".into()],
        }
    );
}

#[tokio::test]
async fn entra_v2_token_becomes_an_identity() {
    let h = harness(rules()).await;
    let c = with(claims(), "iss", json!(v2_issuer(TENANT)));
    let c = with(c, "ver", json!("2.0"));
    let c = with(c, "scp", json!("access_as_user"));
    let c = without(c, "auth_time");
    let id = h.ok(&sign(&c)).await;
    assert_eq!(id.tenant, TENANT);
    assert_eq!(id.user, USER);
    assert_eq!(
        id.session,
        SessionKey {
            id: SID.into(),
            anchor: SessionAnchor::Sid
        }
    );
    assert_eq!(id.display_name.as_deref(), Some("ada@contoso.example"));
    assert_eq!(id.roles, ["GrantFlow.SessionAdmin", "Reader"]);
    assert_eq!(id.auth_time, None);
    assert_eq!(id.issued_at, Some(NOW - 10));
}

#[tokio::test]
async fn display_name_falls_back_to_upn_then_name_and_drops_control_characters() {
    let h = harness(rules()).await;
    let c = without(claims(), "preferred_username");
    let c = with(c, "upn", json!("ada@upn.example"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("ada@upn.example")
    );
    let c = without(c, "upn");
    let c = with(c, "name", json!("Ada\r\nX-Evil: 1\u{7}"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("Ada  X-Evil: 1")
    );
    let c = without(c, "name");
    assert_eq!(h.ok(&sign(&c)).await.display_name, None);
    let c = without(c, "roles");
    assert!(h.ok(&sign(&c)).await.roles.is_empty());
}

#[tokio::test]
async fn display_name_loses_format_characters() {
    let h = harness(rules()).await;
    // A right-to-left override makes "moc.live@nimda" read "admin@evil.com"; zero-width
    // characters make two names that look the same differ (or one hide inside another).
    let c = with(
        claims(),
        "preferred_username",
        json!("\u{202e}moc.live@nimda\u{202c}\u{200b}\u{200d}\u{2066}x\u{2069}\u{feff}"),
    );
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("moc.live@nimdax")
    );
    // Nothing visible left: the next name claim is used.
    let c = with(
        claims(),
        "preferred_username",
        json!("\u{200b}\u{202e} \u{0}"),
    );
    let c = with(c, "upn", json!("ada@upn.example"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("ada@upn.example")
    );
    let c = without(c, "upn");
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("Ada Lovelace")
    );
    let c = without(c, "name");
    assert_eq!(h.ok(&sign(&c)).await.display_name, None);
}

#[tokio::test]
async fn audience_as_string_or_array() {
    let h = harness(rules()).await;
    h.ok(&sign(&with(claims(), "aud", json!(AUD)))).await;
    h.ok(&sign(&with(claims(), "aud", json!(["api://other", AUD]))))
        .await;
    assert_eq!(
        h.err(&sign(&with(
            claims(),
            "aud",
            json!(["api://other", "api://third"])
        )))
        .await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "aud", json!("api://other"))))
            .await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "aud", json!([])))).await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&without(claims(), "aud"))).await,
        TokenError::WrongAudience
    );
    // Several accepted audiences: any one of them will do.
    let mut r = rules();
    r.audiences.push("api://second".into());
    let h = harness(r).await;
    h.ok(&sign(&with(claims(), "aud", json!("api://second"))))
        .await;
}

// ---------------------------------------------------------------------------------------------
// Signatures and algorithms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn signature_by_another_key_with_the_same_kid_is_refused() {
    let h = harness(rules()).await;
    let forged = sign_as(&KEYS.impostor, Some("k1"), Algorithm::RS256, &claims());
    assert_eq!(h.err(&forged).await, TokenError::BadSignature);
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let h = harness(rules()).await;
    let token = sign(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let evil = b64url(
        with(claims(), "oid", json!("attacker"))
            .to_string()
            .as_bytes(),
    );
    parts[1] = &evil;
    assert_eq!(h.err(&parts.join(".")).await, TokenError::BadSignature);
    // Signature stripped.
    let unsigned = format!("{}.{}.", parts[0], token.split('.').nth(1).unwrap());
    assert_eq!(h.err(&unsigned).await, TokenError::BadSignature);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let h = harness(rules()).await;
    let header = b64url(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let payload = b64url(claims().to_string().as_bytes());
    // jsonwebtoken has no `none` algorithm at all, so the header does not even parse.
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::Malformed
    );
    let header = b64url(br#"{"alg":"None","typ":"JWT","kid":"k1"}"#);
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::Malformed
    );
    // An algorithm name jsonwebtoken knows but the validator never accepts.
    let header = b64url(br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    // RFC 7515 §4.1.11: a recipient that does not understand an extension listed in `crit`
    // must refuse the JWS. This validator implements none.
    let h = harness(rules()).await;
    let signed = |crit: Vec<&str>| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEYS.main.kid.to_owned());
        header.crit = Some(crit.into_iter().map(str::to_owned).collect());
        header.extras.insert("urn:example:must-check", true);
        jsonwebtoken::encode(&header, &claims(), &KEYS.main.encoding).expect("signing")
    };
    assert_eq!(
        h.err(&signed(vec!["urn:example:must-check"])).await,
        TokenError::CriticalHeader
    );
    assert_eq!(
        h.err(&signed(vec!["b64"])).await,
        TokenError::CriticalHeader
    );
    // An empty list is forbidden by the RFC.
    assert_eq!(h.err(&signed(vec![])).await, TokenError::CriticalHeader);
    // A `crit` that is not a list of names does not parse.
    let header = b64url(br#"{"alg":"RS256","typ":"JWT","kid":"k1","crit":"exp"}"#);
    let payload = b64url(claims().to_string().as_bytes());
    assert_eq!(
        h.err(&format!("{header}.{payload}.c2ln")).await,
        TokenError::Malformed
    );
    // The same token without `crit` is fine.
    h.ok(&sign(&claims())).await;
}

#[tokio::test]
async fn id_tokens_are_refused() {
    // The API's own app registration signs users in too: its ID tokens have the client id as
    // `aud`, which is an accepted audience (v2 access tokens carry the same).
    let h = harness(rules()).await;
    let v2 = || {
        let c = with(claims(), "iss", json!(v2_issuer(TENANT)));
        let c = with(c, "ver", json!("2.0"));
        without(c, "uti")
    };
    // An Entra v2 ID token of an administrator: `nonce`, app roles, no `scp`, no `azp`.
    let id_token = with(v2(), "nonce", json!("n-0S6_WzA2Mj"));
    assert_eq!(
        h.err(&sign(&id_token)).await,
        TokenError::NotAnAccessToken("nonce")
    );
    // The same without `nonce` (a sign-in that sent none): no scopes, no calling app.
    assert_eq!(
        h.err(&sign(&without(id_token, "nonce"))).await,
        TokenError::NotAnAccessToken("scp")
    );
    let no_roles = without(v2(), "roles");
    assert_eq!(
        h.err(&sign(&no_roles)).await,
        TokenError::NotAnAccessToken("scp")
    );
    assert_eq!(
        h.err(&sign(&with(v2(), "scp", json!(" ")))).await,
        TokenError::NotAnAccessToken("scp")
    );
    assert_eq!(
        h.err(&sign(&with(no_roles.clone(), "azp", json!("client-app"))))
            .await,
        TokenError::NotAnAccessToken("scp"),
        "a calling app without roles"
    );
    // v1 tokens (and tokens of other issuers) may carry `nonce` in no case.
    assert_eq!(
        h.err(&sign(&with(claims(), "nonce", json!("abc")))).await,
        TokenError::NotAnAccessToken("nonce")
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "nonce", json!(null)))).await,
        TokenError::NotAnAccessToken("nonce")
    );
    // `idtyp` (optional access-token claim) is `user` or `app`; anything else is refused.
    for idtyp in [
        json!("id"),
        json!("access"),
        json!("User"),
        json!(1),
        json!(null),
    ] {
        assert_eq!(
            h.err(&sign(&with(claims(), "idtyp", idtyp.clone()))).await,
            TokenError::NotAnAccessToken("idtyp"),
            "idtyp = {idtyp}"
        );
    }

    // Access tokens pass: delegated (v2 with `scp`, with or without roles; `idtyp` user) and
    // app-only (v2 with `roles` and the calling app `azp`; `idtyp` app); v1 as before.
    let delegated = with(v2(), "scp", json!("access_as_user Sessions.Read"));
    h.ok(&sign(&delegated)).await;
    h.ok(&sign(&with(delegated, "idtyp", json!("user")))).await;
    h.ok(&sign(&with(no_roles, "scp", json!("access_as_user"))))
        .await;
    let app = with(without(v2(), "sid"), "azp", json!("client-app"));
    h.ok(&sign(&app)).await;
    h.ok(&sign(&with(app, "idtyp", json!("app")))).await;
    h.ok(&sign(&claims())).await;
    h.ok(&sign(&without(claims(), "roles"))).await;
}

#[tokio::test]
async fn hmac_signed_with_the_rsa_public_key_is_refused() {
    // The classic key-confusion attack: the public key is public, so an attacker can HMAC
    // with it and hope the verifier uses it as an HMAC secret.
    let h = harness(rules()).await;
    for secret in [
        KEYS.main.public_der.as_slice(),
        KEYS.main.public_pem.as_bytes(),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".into());
            let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
                .unwrap();
            assert_eq!(
                h.err(&token).await,
                TokenError::UnsupportedAlgorithm,
                "{alg:?}"
            );
        }
    }
    assert_eq!(h.fetches(), 1, "refused before any key lookup");
}

#[tokio::test]
async fn algorithm_other_than_the_one_the_jwk_pins_is_refused() {
    // A valid PS256 signature by the right key, but the JWK says RS256.
    let h = harness(rules()).await;
    let token = sign_as(&KEYS.main, Some("k1"), Algorithm::PS256, &claims());
    assert_eq!(h.err(&token).await, TokenError::UnsupportedAlgorithm);
}

#[tokio::test]
async fn token_without_kid_is_refused() {
    let h = harness(rules()).await;
    let token = sign_as(&KEYS.main, None, Algorithm::RS256, &claims());
    assert_eq!(h.err(&token).await, TokenError::UnknownKey);
}

// ---------------------------------------------------------------------------------------------
// Keys: rotation, refetch limits, keys not loaded
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval_and_follows_a_rotation() {
    // The refetch interval is measured with the real monotonic clock, so this test sleeps
    // (briefly) instead of moving the ManualClock.
    const INTERVAL: Duration = Duration::from_millis(1000);
    const PAST_INTERVAL: Duration = Duration::from_millis(1100);
    let h = harness_with(rules(), INTERVAL).await;
    assert_eq!(h.fetches(), 1);
    let new_token = sign_as(&KEYS.rotated, Some("k2"), Algorithm::RS256, &claims());

    // Before the rotation: "k2" is unknown even after the refetch it triggers.
    tokio::time::sleep(PAST_INTERVAL).await;
    assert_eq!(h.err(&new_token).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 2, "an unknown kid refetches");

    // The issuer rotates: "k2" is published next to "k1".
    h.jwks.publish(jwk_set(&[&KEYS.main, &KEYS.rotated]));
    // Inside the interval the new kid is still unknown: no refetch.
    assert_eq!(h.err(&new_token).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 2, "no refetch inside the minimum interval");

    tokio::time::sleep(PAST_INTERVAL).await;
    let id = h.ok(&new_token).await;
    assert_eq!(id.user, USER);
    assert_eq!(h.fetches(), 3, "the unknown kid refetched the rotated JWKS");

    // Known kids never fetch; the old key still verifies while published.
    h.ok(&sign(&with(claims(), "uti", json!("another-token"))))
        .await;
    let other = with(claims(), "uti", json!("yet-another"));
    h.ok(&sign_as(
        &KEYS.rotated,
        Some("k2"),
        Algorithm::RS256,
        &other,
    ))
    .await;
    assert_eq!(h.fetches(), 3);

    // A second unknown kid right after the refetch (e.g. a stream of forged kids) does not
    // hammer the issuer.
    let forged = sign_as(
        &KEYS.impostor,
        Some("k-forged"),
        Algorithm::RS256,
        &claims(),
    );
    for _ in 0..5 {
        assert_eq!(h.err(&forged).await, TokenError::UnknownKey);
    }
    assert_eq!(h.fetches(), 3, "no refetch inside the minimum interval");

    // The old key is withdrawn: once the keys are refetched, "k1" tokens (not yet cached) are
    // refused.
    h.jwks.publish(jwk_set(&[&KEYS.rotated]));
    tokio::time::sleep(PAST_INTERVAL).await;
    let old = sign(&with(
        claims(),
        "uti",
        json!("signed-with-the-withdrawn-key"),
    ));
    assert_eq!(h.err(&forged).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 4);
    assert_eq!(h.err(&old).await, TokenError::UnknownKey);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_withdrawn_or_replaced() {
    let h = harness(rules()).await;
    let token = sign(&claims());
    h.ok(&token).await;
    h.ok(&token).await;
    let keys = h.validator.keys();

    // The issuer withdraws "k1" (rotated out, or compromised); the hourly refresh sees it.
    h.jwks.publish(jwk_set(&[&KEYS.rotated]));
    keys.refresh().await.expect("refresh");
    assert_eq!(
        h.err(&token).await,
        TokenError::UnknownKey,
        "not served from the cache until exp"
    );

    // Back again: verified anew, and cached again.
    h.jwks.publish(jwk_set(&[&KEYS.main, &KEYS.rotated]));
    keys.refresh().await.expect("refresh");
    h.ok(&token).await;
    h.ok(&token).await;

    // Other key material published under the same kid: the signature no longer verifies.
    h.jwks.publish(jwk_set(&[&KEYS.impostor]));
    keys.refresh().await.expect("refresh");
    assert_eq!(h.err(&token).await, TokenError::BadSignature);

    // A failed refresh keeps the keys, so it does not refuse anything by itself.
    h.jwks.publish(jwk_set(&[&KEYS.main]));
    keys.refresh().await.expect("refresh");
    h.ok(&token).await;
    h.jwks.publish(JwkSet { keys: vec![] });
    assert!(keys.refresh().await.is_err());
    h.ok(&token).await;
}

#[tokio::test]
async fn keys_never_loaded_refuse_with_keys_unavailable() {
    let clock = ManualClock::new(NOW * 1000);
    let token = sign(&claims());

    // The JWKS endpoint is down.
    let keys = Arc::new(KeySet::new(Down, Duration::ZERO));
    assert!(keys.refresh().await.is_err());
    assert!(!keys.is_loaded());
    let v = TokenValidator::new(rules(), keys, Arc::new(clock.clone()));
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );

    // The JWKS holds no usable key (empty, or only a symmetric key).
    let jwks = StaticJwks::default();
    let keys = Arc::new(KeySet::new(jwks.clone(), Duration::ZERO));
    let v = TokenValidator::new(rules(), keys.clone(), Arc::new(clock.clone()));
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );
    let mut oct =
        Jwk::from_encoding_key(&EncodingKey::from_secret(b"s3cret"), Algorithm::HS256).unwrap();
    oct.common.key_id = Some("k1".into());
    jwks.publish(JwkSet { keys: vec![oct] });
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );
    assert!(!keys.is_loaded());

    // Once the issuer publishes, the unknown kid fetches them.
    jwks.publish(jwk_set(&[&KEYS.main]));
    assert_eq!(v.validate(&token).await.unwrap().user, USER);
    assert!(keys.is_loaded());

    // A later failed refresh keeps the old keys.
    jwks.publish(JwkSet { keys: vec![] });
    assert!(keys.refresh().await.is_err());
    let fresh = sign(&with(claims(), "uti", json!("not-cached-yet")));
    assert_eq!(v.validate(&fresh).await.unwrap().user, USER);
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn expiry_allows_the_leeway_and_no_more() {
    let h = harness(rules()).await;
    for (exp, expected) in [
        (NOW + 1, None),
        (NOW, None),
        (NOW - 30, None),
        (NOW - LEEWAY + 1, None),
        (NOW - LEEWAY, Some(TokenError::Expired)),
        (NOW - LEEWAY - 1, Some(TokenError::Expired)),
        (NOW - 86_400, Some(TokenError::Expired)),
    ] {
        let token = sign(&with(claims(), "exp", json!(exp)));
        match expected {
            None => assert_eq!(h.ok(&token).await.expires_at, exp),
            Some(error) => assert_eq!(h.err(&token).await, error, "exp = now{:+}", exp - NOW),
        }
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "exp"))).await,
        TokenError::MissingClaim("exp")
    );
}

#[tokio::test]
async fn not_before_in_the_future_is_refused_beyond_the_leeway() {
    let h = harness(rules()).await;
    for (nbf, ok) in [
        (NOW + 30, true),
        (NOW + LEEWAY, true),
        (NOW + LEEWAY + 1, false),
        (NOW + 3600, false),
    ] {
        let token = sign(&with(claims(), "nbf", json!(nbf)));
        if ok {
            h.ok(&token).await;
        } else {
            assert_eq!(
                h.err(&token).await,
                TokenError::NotYetValid,
                "nbf = now+{}",
                nbf - NOW
            );
        }
    }
    // No nbf at all is fine.
    h.ok(&sign(&without(claims(), "nbf"))).await;
}

#[tokio::test]
async fn cached_token_still_expires_when_the_clock_passes_exp() {
    let h = harness(rules()).await;
    let token = sign(&with(claims(), "exp", json!(NOW + 120)));
    let first = h.ok(&token).await;
    let second = h.ok(&token).await;
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second validation is served from the cache"
    );

    h.clock
        .advance(Duration::from_secs(120 + LEEWAY as u64 - 1));
    h.ok(&token).await;
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.err(&token).await, TokenError::Expired);
    assert_eq!(h.err(&token).await, TokenError::Expired);
}

#[tokio::test]
async fn cached_token_is_not_served_before_its_nbf() {
    // Verified once (clock at NOW), then presented when the clock reads earlier than nbf.
    let h = harness(rules()).await;
    let token = sign(&with(claims(), "nbf", json!(NOW)));
    h.ok(&token).await;
    h.clock.set((NOW - LEEWAY - 1) * 1000);
    assert_eq!(h.err(&token).await, TokenError::NotYetValid);
}

#[tokio::test]
async fn extreme_numeric_claims_do_not_panic() {
    let h = harness(rules()).await;
    let c = with(claims(), "exp", json!(i64::MAX));
    let c = with(c, "nbf", json!(i64::MIN));
    let c = with(c, "iat", json!(i64::MIN));
    let c = with(c, "auth_time", json!(i64::MAX));
    let id = h.ok(&sign(&c)).await;
    assert_eq!(id.expires_at, i64::MAX);
    let c = with(claims(), "exp", json!(i64::MIN));
    assert_eq!(h.err(&sign(&c)).await, TokenError::Expired);
    let c = with(claims(), "nbf", json!(i64::MAX));
    assert_eq!(h.err(&sign(&c)).await, TokenError::NotYetValid);
    // Out of i64 range, fractional or of the wrong type: not a token we understand.
    for exp in [
        json!(u64::MAX),
        json!(1.75e9),
        json!("1750003600"),
        json!(null),
    ] {
        let c = with(claims(), "exp", exp.clone());
        let expected = if exp.is_null() {
            TokenError::MissingClaim("exp")
        } else {
            TokenError::Malformed
        };
        assert_eq!(h.err(&sign(&c)).await, expected, "exp = {exp}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issuer and tenant
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let h = harness(rules()).await;
    for iss in [
        "https://evil.example/".to_owned(),
        format!("https://sts.windows.net/{TENANT}"),
        format!("https://login.microsoftonline.com/{TENANT}/v2.0/"),
        format!("http://sts.windows.net/{TENANT}/"),
        String::new(),
    ] {
        let token = sign(&with(claims(), "iss", json!(iss)));
        assert_eq!(
            h.err(&token).await,
            TokenError::WrongIssuer,
            "iss = {iss:?}"
        );
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "iss"))).await,
        TokenError::MissingClaim("iss")
    );
}

#[tokio::test]
async fn tid_must_be_the_tenant_the_issuer_names_and_a_guid() {
    let h = harness(rules()).await;
    // The issuer names another tenant than `tid`.
    let c = with(claims(), "iss", json!(v1_issuer(OTHER_TENANT)));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    let c = with(claims(), "iss", json!(v2_issuer(OTHER_TENANT)));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    // An Entra-shaped issuer whose tenant slot holds something else is refused the same way.
    let c = with(
        claims(),
        "iss",
        json!(format!(
            "https://login.microsoftonline.com/{TENANT}/oauth2/v2.0"
        )),
    );
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    // Consistent, but not a GUID.
    for tid in [
        "contoso",
        "72f988bf86f141af91ab2d7cd011db47",
        "common",
        "a/b",
    ] {
        let c = with(claims(), "tid", json!(tid));
        let c = with(c, "iss", json!(v1_issuer(tid)));
        assert_eq!(
            h.err(&sign(&c)).await,
            TokenError::InvalidTenant("tid".into()),
            "tid = {tid}"
        );
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "tid"))).await,
        TokenError::MissingTenant("tid".into())
    );
    let c = with(claims(), "tid", json!(42));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::MissingTenant("tid".into())
    );
}

#[tokio::test]
async fn allowed_tenants_restrict_who_gets_in() {
    let mut r = rules();
    r.allowed_tenants = vec![OTHER_TENANT.into()];
    let h = harness(r).await;
    assert_eq!(h.err(&sign(&claims())).await, TokenError::TenantNotAllowed);
    let c = with(claims(), "tid", json!(OTHER_TENANT));
    let c = with(c, "iss", json!(v2_issuer(OTHER_TENANT)));
    assert_eq!(h.ok(&sign(&c)).await.tenant, OTHER_TENANT);
}

#[tokio::test]
async fn explicit_issuer_with_a_custom_tenant_claim() {
    let mut r = rules();
    r.issuers = vec!["https://idp.example.com".into()];
    r.tenant_claim = "org".into();
    let h = harness(r).await;
    let custom = json!({
        "iss": "https://idp.example.com",
        "aud": AUD,
        "exp": NOW + 600,
        "iat": NOW,
        "org": "acme",
        "oid": "user-17",
        "jti": "jti-1",
    });
    let id = h.ok(&sign(&custom)).await;
    assert_eq!(
        id.tenant, "acme",
        "a non-GUID tenant is fine for an explicit issuer"
    );
    assert_eq!(id.user, "user-17");
    assert_eq!(id.session.anchor, SessionAnchor::TokenId);

    // Entra tokens are not accepted by a validator for another issuer. (The tenant claim is
    // read before the issuer is compared, so a token without it says so first.)
    let c = with(claims(), "org", json!("acme"));
    assert_eq!(h.err(&sign(&c)).await, TokenError::WrongIssuer);
    assert_eq!(
        h.err(&sign(&claims())).await,
        TokenError::MissingTenant("org".into()),
        "the error names the configured claim"
    );
    // The tenant comes from the configured claim only: `tid` does not count.
    let c = with(without(custom.clone(), "org"), "tid", json!(TENANT));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::MissingTenant("org".into())
    );
    // The tenant must still be a safe identifier.
    for org in ["acme corp", "acme\r\nx: 1", "", &"a".repeat(129)] {
        let c = with(custom.clone(), "org", json!(org));
        assert_eq!(
            h.err(&sign(&c)).await,
            TokenError::InvalidTenant("org".into()),
            "org = {org:?}"
        );
    }

    // An explicit issuer template with the tenant placeholder requires a GUID tenant.
    let mut r = rules();
    r.issuers = vec!["https://idp.example.com/{tenantid}".into()];
    r.tenant_claim = "org".into();
    let h = harness(r).await;
    let c = with(custom.clone(), "org", json!(TENANT));
    let c = with(c, "iss", json!(format!("https://idp.example.com/{TENANT}")));
    assert_eq!(h.ok(&sign(&c)).await.tenant, TENANT);
    let c = with(c, "org", json!("acme"));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("org".into())
    );
}

// ---------------------------------------------------------------------------------------------
// User and session claims
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oid_must_be_present_and_safe() {
    let h = harness(rules()).await;
    assert_eq!(
        h.err(&sign(&without(claims(), "oid"))).await,
        TokenError::MissingClaim("oid")
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "oid", json!(null)))).await,
        TokenError::MissingClaim("oid")
    );
    for oid in [
        "a b",
        "abc\r\nx-grantflow-user: admin",
        "abc\n",
        "\tabc",
        "",
        "ü",
    ] {
        let token = sign(&with(claims(), "oid", json!(oid)));
        assert_eq!(
            h.err(&token).await,
            TokenError::InvalidClaim("oid"),
            "oid = {oid:?}"
        );
    }
    assert_eq!(
        h.err(&sign(&with(claims(), "oid", json!(12)))).await,
        TokenError::Malformed
    );
}

#[tokio::test]
async fn sid_must_be_safe_when_present() {
    let h = harness(rules()).await;
    for sid in ["a b", "x\r\ny", ""] {
        let token = sign(&with(claims(), "sid", json!(sid)));
        assert_eq!(
            h.err(&token).await,
            TokenError::InvalidClaim("sid"),
            "sid = {sid:?}"
        );
    }
}

#[tokio::test]
async fn require_sid_refuses_tokens_without_sid_else_the_token_anchors_the_session() {
    let strict = {
        let mut r = rules();
        r.require_sid = true;
        harness(r).await
    };
    let lax = harness(rules()).await;

    // With sid, both accept it and the session is the sid.
    let with_sid = sign(&claims());
    assert_eq!(
        strict.ok(&with_sid).await.session.anchor,
        SessionAnchor::Sid
    );

    // Without sid but with `uti`: refused when sid is required, else one session per token.
    let no_sid = sign(&without(claims(), "sid"));
    assert_eq!(strict.err(&no_sid).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&no_sid).await;
    assert_eq!(
        id.session,
        SessionKey::derive(None, Some("AbCdEfGhIjKlMnOp"), &no_sid)
    );
    assert_eq!(id.session.anchor, SessionAnchor::TokenId);
    assert!(!id.session.id.contains("AbCdEf"), "the token id is hashed");

    // `jti` when there is no `uti`.
    let jti_only = sign(&with(
        without(without(claims(), "sid"), "uti"),
        "jti",
        json!("j-1"),
    ));
    assert_eq!(strict.err(&jti_only).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&jti_only).await;
    assert_eq!(id.session, SessionKey::derive(None, Some("j-1"), &jti_only));

    // Neither: a hash of the whole token.
    let bare = sign(&without(without(claims(), "sid"), "uti"));
    assert_eq!(strict.err(&bare).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&bare).await;
    assert_eq!(id.session, SessionKey::derive(None, None, &bare));
    assert_eq!(id.session.anchor, SessionAnchor::Token);
    assert!(!id.session.id.contains(&bare[..20]));
}

// ---------------------------------------------------------------------------------------------
// Garbage and size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_is_malformed() {
    let h = harness(rules()).await;
    let valid = sign(&claims());
    let random: String =
        String::from_utf8_lossy(&(0..200u32).map(|i| (i * 97 + 13) as u8).collect::<Vec<_>>())
            .into_owned();
    let huge_header = format!("{}.e30.", "A".repeat(12 * 1024));
    let header_of = |json: &str| b64url(json.as_bytes());
    let cases = vec![
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c".into(),
        "...".into(),
        "a.b.c.d".into(),
        format!("{valid}.x"),
        format!(".{valid}"),
        format!("Bearer {valid}"),
        random,
        huge_header,
        "\u{0}\u{0}.\u{0}.\u{0}".into(),
        // Header is not JSON / not an object / lacks alg.
        format!("{}.e30.", header_of("not json")),
        format!("{}.e30.", header_of("[]")),
        format!("{}.e30.", header_of(r#"{"typ":"JWT","kid":"k1"}"#)),
        format!("{}.e30.", header_of(r#"{"alg":"RS999","kid":"k1"}"#)),
    ];
    for token in cases {
        assert_eq!(
            h.err(&token).await,
            TokenError::Malformed,
            "token = {:?}",
            token.chars().take(60).collect::<String>()
        );
    }
    assert_eq!(h.fetches(), 1, "garbage never makes the key set refetch");
}

#[tokio::test]
async fn validly_signed_non_object_claims_are_malformed() {
    let h = harness(rules()).await;
    for claims in [json!("hello"), json!([1, 2]), json!(42), json!(null)] {
        assert_eq!(
            h.err(&sign(&claims)).await,
            TokenError::Malformed,
            "claims = {claims}"
        );
    }
    // Claims of the wrong type.
    let c = with(claims(), "roles", json!("GrantFlow.SessionAdmin"));
    assert_eq!(h.err(&sign(&c)).await, TokenError::Malformed);
}

#[tokio::test]
async fn oversized_token_is_too_large() {
    let mut r = rules();
    r.max_token_bytes = 4096;
    let h = harness(r).await;
    assert_eq!(h.err(&"A".repeat(4097)).await, TokenError::TooLarge);
    assert_eq!(
        h.err(&"A".repeat(4096)).await,
        TokenError::Malformed,
        "at the limit: parsed"
    );
    // A validly signed token over the limit is refused unverified.
    let padded = sign(&with(claims(), "padding", json!("x".repeat(4096))));
    assert_eq!(h.err(&padded).await, TokenError::TooLarge);
    // The default limit is 16 KiB.
    let h = harness(rules()).await;
    assert_eq!(
        h.err(&"A".repeat(16 * 1024 + 1)).await,
        TokenError::TooLarge
    );
    let big = sign(&with(claims(), "padding", json!("x".repeat(8 * 1024))));
    h.ok(&big).await;
}

#[tokio::test]
async fn error_labels_are_bounded() {
    let errors = [
        (TokenError::TooLarge, "too_large"),
        (TokenError::Malformed, "malformed"),
        (TokenError::UnsupportedAlgorithm, "unsupported_algorithm"),
        (TokenError::UnknownKey, "unknown_key"),
        (TokenError::KeysUnavailable, "keys_unavailable"),
        (TokenError::BadSignature, "bad_signature"),
        (TokenError::Expired, "expired"),
        (TokenError::NotYetValid, "not_yet_valid"),
        (TokenError::WrongAudience, "wrong_audience"),
        (TokenError::WrongIssuer, "wrong_issuer"),
        (TokenError::TenantNotAllowed, "tenant_not_allowed"),
        (TokenError::MissingClaim("oid"), "missing_claim"),
        (TokenError::InvalidClaim("oid"), "invalid_claim"),
        (TokenError::CriticalHeader, "critical_header"),
        (TokenError::NotAnAccessToken("nonce"), "not_access_token"),
        (TokenError::NotAnAccessToken("scp"), "not_access_token"),
    ];
    for (error, label) in errors {
        assert_eq!(error.label(), label);
    }
}
