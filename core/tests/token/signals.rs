//! Back-channel logout tokens and Security Event Tokens (`grantflow_core::signals`): what they
//! end, and every refusal by its exact error.

use std::time::Duration;

use grantflow_core::audit::{ActorKind, Source};
use grantflow_core::clock::ManualClock;
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::revocation::RevocationTarget;
use grantflow_core::signals::{
    BACKCHANNEL_LOGOUT_EVENT, CAEP_CREDENTIAL_CHANGE, CAEP_SESSION_REVOKED, LogoutValidator,
    SetValidator, Signal, SignalError, Transmitter, max_signal_age,
};
use grantflow_core::token::{TokenError, TokenRules};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use crate::harness::{KEYS, NOW, OTHER_TENANT, SID, TENANT, TestKey, USER, jwk_set, v2_issuer};

const CLIENT: &str = "client-app-1";
const TRANSMITTER: &str = "https://ssf.example.test";
const RECEIVER: &str = "https://grantflow.example.test/ssf";

fn signed(key: &TestKey, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.to_owned());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing")
}

fn logout_claims() -> Value {
    json!({
        "iss": v2_issuer(TENANT),
        "aud": CLIENT,
        "iat": NOW - 5,
        "jti": "logout-1",
        "sub": USER,
        "sid": SID,
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    })
}

fn set_claims(kind: &str, subject: Value) -> Value {
    json!({
        "iss": TRANSMITTER,
        "aud": RECEIVER,
        "iat": NOW - 5,
        "jti": "set-1",
        "events": { kind: { "subject": subject, "event_timestamp": NOW - 6 } },
    })
}

async fn keys() -> KeySet {
    let keys = KeySet::new(
        StaticJwks::new(jwk_set(&[&KEYS.main])),
        Duration::from_secs(3600),
    );
    keys.refresh().await.expect("JWKS");
    keys
}

async fn logout(token: &str) -> Result<Signal, SignalError> {
    let rules = TokenRules::entra(vec!["api://x".into()]);
    let keys = keys().await;
    let clock = ManualClock::new(NOW * 1000);
    let audiences = [CLIENT.to_owned()];
    LogoutValidator {
        rules: &rules,
        keys: &keys,
        audiences: &audiences,
        clock: &clock,
    }
    .validate(token)
    .await
}

async fn set(token: &str) -> Result<Signal, SignalError> {
    let rules = TokenRules::entra(vec!["api://x".into()]);
    let keys = keys().await;
    let clock = ManualClock::new(NOW * 1000);
    let transmitter = Transmitter {
        issuer: TRANSMITTER.into(),
        audiences: vec![RECEIVER.into()],
    };
    SetValidator {
        transmitter: &transmitter,
        keys: &keys,
        rules: &rules,
        clock: &clock,
    }
    .validate(token)
    .await
}

fn edit(mut claims: Value, name: &str, value: Option<Value>) -> Value {
    match value {
        Some(value) => claims[name] = value,
        None => {
            claims.as_object_mut().unwrap().remove(name);
        }
    }
    claims
}

#[tokio::test]
async fn a_logout_token_with_sid_ends_that_session() {
    let signal = logout(&signed(&KEYS.main, Some("logout+jwt"), &logout_claims()))
        .await
        .unwrap();
    let revocation = signal.revocation;
    assert_eq!(signal.issuer, v2_issuer(TENANT));
    assert_eq!(revocation.tenant, TENANT);
    assert_eq!(revocation.target, RevocationTarget::Session(SID.into()));
    assert_eq!(revocation.source, Source::BackchannelLogout);
    assert_eq!(revocation.actor.kind, ActorKind::System);
    assert_eq!(revocation.actor.id, v2_issuer(TENANT));
    let key = revocation.idempotency_key.unwrap();
    assert!(
        key.starts_with("backchannel:") && !key.contains("logout-1"),
        "{key}"
    );
}

#[tokio::test]
async fn a_logout_token_without_sid_ends_the_users_sessions_by_oid_else_sub() {
    let claims = edit(logout_claims(), "sid", None);
    let signal = logout(&signed(&KEYS.main, None, &claims)).await.unwrap();
    let user = |user: &str| RevocationTarget::User {
        user: user.into(),
        lock_until: None,
        message: None,
    };
    assert_eq!(signal.revocation.target, user(USER));
    let claims = edit(claims, "oid", Some(json!("the-oid")));
    let signal = logout(&signed(&KEYS.main, Some("JWT"), &claims))
        .await
        .unwrap();
    assert_eq!(signal.revocation.target, user("the-oid"));
    // With a tenant claim, it must be the tenant the issuer names.
    let claims = edit(claims, "tid", Some(json!(OTHER_TENANT)));
    assert!(matches!(
        logout(&signed(&KEYS.main, None, &claims)).await,
        Err(SignalError::Token(TokenError::InvalidTenant(_)))
    ));
}

#[tokio::test]
async fn logout_tokens_that_break_a_rule_are_refused() {
    let good = logout_claims();
    let cases: Vec<(Value, Option<&str>, SignalError)> = vec![
        (
            edit(good.clone(), "nonce", Some(json!("n"))),
            None,
            SignalError::Nonce,
        ),
        (
            edit(good.clone(), "events", None),
            None,
            SignalError::NoEvent,
        ),
        (
            edit(good.clone(), "events", Some(json!({ "other": {} }))),
            None,
            SignalError::NoEvent,
        ),
        (
            edit(good.clone(), "aud", Some(json!("someone-else"))),
            None,
            TokenError::WrongAudience.into(),
        ),
        (
            edit(good.clone(), "iss", Some(json!("https://evil.example/"))),
            None,
            TokenError::MissingTenant("tid".into()).into(),
        ),
        (
            edit(good.clone(), "jti", None),
            None,
            TokenError::MissingClaim("jti").into(),
        ),
        (
            edit(good.clone(), "iat", None),
            None,
            TokenError::MissingClaim("iat").into(),
        ),
        (
            edit(good.clone(), "iat", Some(json!(NOW + 3600))),
            None,
            TokenError::NotYetValid.into(),
        ),
        (
            edit(
                good.clone(),
                "iat",
                Some(json!(
                    NOW - max_signal_age(Duration::from_secs(60)).as_secs() as i64 - 1
                )),
            ),
            None,
            SignalError::TooOld,
        ),
        (
            edit(good.clone(), "exp", Some(json!(NOW - 120))),
            None,
            TokenError::Expired.into(),
        ),
        (
            edit(edit(good.clone(), "sid", None), "sub", None),
            None,
            SignalError::NoSubject,
        ),
        (
            edit(good.clone(), "sid", Some(json!("a b"))),
            None,
            TokenError::InvalidClaim("sid").into(),
        ),
        (good.clone(), Some("at+jwt"), SignalError::WrongType),
        (good.clone(), Some("secevent+jwt"), SignalError::WrongType),
    ];
    for (claims, typ, expected) in cases {
        let refused = logout(&signed(&KEYS.main, typ, &claims)).await;
        assert_eq!(refused, Err(expected.clone()), "{claims} {typ:?}");
    }
    // Forged: another key under the issuer's `kid`.
    let forged = signed(&KEYS.impostor, None, &good);
    assert_eq!(logout(&forged).await, Err(TokenError::BadSignature.into()));
}

#[test]
fn signals_older_than_the_idempotency_window_cannot_be_replayed_after_it() {
    let leeway = Duration::from_secs(60);
    assert!(max_signal_age(leeway) + leeway * 2 < grantflow_core::revocation::IDEMPOTENCY_TTL);
}

#[tokio::test]
async fn a_session_revoked_set_ends_the_session_else_the_user() {
    let complex = json!({
        "format": "complex",
        "user": { "format": "iss_sub", "iss": v2_issuer(TENANT), "sub": USER },
        "session": { "format": "opaque", "id": SID },
    });
    let claims = set_claims(CAEP_SESSION_REVOKED, complex);
    let claims = edit(
        claims,
        "events",
        Some(json!({ CAEP_SESSION_REVOKED: {
            "subject": { "format": "complex",
                "user": { "format": "iss_sub", "iss": v2_issuer(TENANT), "sub": USER },
                "session": { "format": "opaque", "id": SID } },
            "reason_admin": { "en": "Landspeed policy violation" },
        }})),
    );
    let signal = set(&signed(&KEYS.main, Some("secevent+jwt"), &claims))
        .await
        .unwrap();
    let revocation = signal.revocation;
    assert_eq!(revocation.tenant, TENANT);
    assert_eq!(revocation.target, RevocationTarget::Session(SID.into()));
    assert_eq!(revocation.reason, "Landspeed policy violation");
    assert_eq!(revocation.source, Source::Ssf);
    assert_eq!(revocation.actor.id, TRANSMITTER);
    // A user by an opaque id, the tenant by the complex subject's tenant.
    let claims = set_claims(
        CAEP_SESSION_REVOKED,
        json!({ "format": "complex", "user": { "format": "opaque", "id": USER },
                "tenant": { "format": "opaque", "id": TENANT } }),
    );
    let signal = set(&signed(&KEYS.main, Some("secevent+jwt"), &claims))
        .await
        .unwrap();
    assert_eq!(
        signal.revocation.target,
        RevocationTarget::User {
            user: USER.into(),
            lock_until: None,
            message: None,
        }
    );
    assert_eq!(signal.revocation.reason, "CAEP session revoked");
}

#[tokio::test]
async fn a_credential_change_set_ends_every_session_of_the_user() {
    let mut claims = set_claims(
        CAEP_CREDENTIAL_CHANGE,
        json!({ "format": "iss_sub", "iss": v2_issuer(TENANT), "sub": USER }),
    );
    claims["events"][CAEP_CREDENTIAL_CHANGE]["reason_admin"] = json!("password reset");
    let signal = set(&signed(&KEYS.main, Some("secevent+jwt"), &claims))
        .await
        .unwrap();
    assert_eq!(
        signal.revocation.target,
        RevocationTarget::User {
            user: USER.into(),
            lock_until: None,
            message: None,
        }
    );
    assert_eq!(signal.revocation.reason, "password reset");
    assert!(
        signal
            .revocation
            .idempotency_key
            .unwrap()
            .starts_with("ssf:")
    );
}

#[tokio::test]
async fn sets_that_break_a_rule_are_refused_with_their_rfc_8935_code() {
    let good = set_claims(
        CAEP_CREDENTIAL_CHANGE,
        json!({ "format": "iss_sub", "iss": v2_issuer(TENANT), "sub": USER }),
    );
    let typ = Some("secevent+jwt");
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (good.clone(), None, "invalid_request"),
        (good.clone(), Some("logout+jwt"), "invalid_request"),
        (
            edit(good.clone(), "iss", Some(json!("https://other.example"))),
            typ,
            "invalid_issuer",
        ),
        (
            edit(good.clone(), "aud", Some(json!("https://other.example"))),
            typ,
            "invalid_audience",
        ),
        (edit(good.clone(), "jti", None), typ, "invalid_request"),
        (edit(good.clone(), "events", None), typ, "invalid_request"),
        (
            edit(
                good.clone(),
                "events",
                Some(json!({ "https://example/other": {} })),
            ),
            typ,
            "invalid_request",
        ),
        (
            set_claims(
                CAEP_CREDENTIAL_CHANGE,
                json!({ "format": "email", "email": "ada@contoso.example" }),
            ),
            typ,
            "invalid_request",
        ),
        (
            set_claims(
                CAEP_CREDENTIAL_CHANGE,
                json!({ "format": "iss_sub", "iss": "https://evil.example/", "sub": USER }),
            ),
            typ,
            "invalid_request",
        ),
    ];
    for (claims, typ, code) in cases {
        let refused = set(&signed(&KEYS.main, typ, &claims)).await.unwrap_err();
        assert_eq!(
            refused.set_error_code(),
            code,
            "{claims} {typ:?}: {refused:?}"
        );
    }
    let forged = set(&signed(&KEYS.impostor, typ, &good)).await.unwrap_err();
    assert_eq!(forged.set_error_code(), "invalid_key");
}

#[tokio::test]
async fn a_set_issuer_is_never_taken_for_the_access_token_issuer() {
    // Same keys, but a logout token is not a SET and a SET is not a logout token.
    let mut claims = logout_claims();
    claims["aud"] = json!(RECEIVER);
    claims["iss"] = json!(TRANSMITTER);
    assert!(
        set(&signed(&KEYS.main, Some("logout+jwt"), &claims))
            .await
            .is_err()
    );
}
