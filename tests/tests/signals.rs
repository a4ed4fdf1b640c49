//! Sessions ended from outside, through the real Envoy with the real issuer: OpenID Connect
//! back-channel logout tokens and Shared Signals (CAEP) Security Event Tokens posted to the
//! admin listener. Each flow: a session allowed through Envoy, the signal arrives, the same
//! request is refused with the session-ended problem/page; the audit trail says who sent it.
//! On the memory store and on Redis.

use std::time::Duration;

use grantflow_core::audit::{Action, ActorKind, AuditRecord, Source};
use grantflow_core::clock::Clock;
use grantflow_core::signals::{
    BACKCHANNEL_LOGOUT_EVENT, CAEP_CREDENTIAL_CHANGE, CAEP_SESSION_REVOKED,
};
use grantflow_core::store::StoreConfig;
use grantflow_e2e::redis::RedisServer;
use grantflow_e2e::stack::{LOGOUT_CLIENT_ID, SSF_AUDIENCE, Stack, StackOptions, TENANT};
use grantflow_e2e::unique;
use serde_json::{Value, json};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// JWTs are URL-safe: `logout_token=<JWT>` needs no escaping.
const FORM: &str = "application/x-www-form-urlencoded";
/// The problem and page of a session ended by itself.
const SESSION_ENDED: (&str, &str) = (
    "https://grantflow.io/problems/session-revoked",
    "<h1>Your session was ended</h1>",
);
/// The problem and page of a session ended with every session of its user: a new sign-in
/// is needed.
const USER_ENDED: (&str, &str) = (
    "https://grantflow.io/problems/sign-in-again",
    "<h1>Sign in again</h1>",
);

fn entra_issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

async fn stack_on(store: StoreConfig) -> Stack {
    Stack::start_with(StackOptions {
        store,
        signals: true,
        ..StackOptions::default()
    })
    .await
}

/// Back-channel logout claims of the test issuer for `user`, with `sid` when given.
fn logout_claims(stack: &Stack, user: &str, sid: Option<&str>) -> Value {
    json!({
        "iss": entra_issuer(),
        "aud": LOGOUT_CLIENT_ID,
        "iat": stack.clock.now_secs(),
        "jti": format!("logout-{}", unique()),
        "sub": user,
        "sid": sid,
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    })
}

async fn logout_token(stack: &Stack, claims: Value) -> String {
    stack
        .issuer
        .mint(json!({ "claims": claims, "expires_in": 120, "typ": "logout+jwt" }))
        .await
}

/// Posts a logout token as the identity provider does: status, Cache-Control, body.
async fn post_logout(stack: &Stack, token: &str) -> (u16, String, String) {
    let response = stack
        .http
        .post(format!(
            "http://{}/oidc/backchannel-logout",
            stack.admin_addr(0)
        ))
        .header("content-type", FORM)
        .body(format!("logout_token={token}"))
        .send()
        .await
        .expect("the admin listener answers");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, response.text().await.unwrap())
}

/// A SET of the test issuer's transmitter with one event.
fn set_claims(stack: &Stack, kind: &str, event: Value) -> Value {
    json!({
        "iss": stack.issuer.ssf_issuer,
        "aud": SSF_AUDIENCE,
        "iat": stack.clock.now_secs(),
        "jti": format!("set-{}", unique()),
        "exp": null,
        "nbf": null,
        "events": { kind: event },
    })
}

async fn set_token(stack: &Stack, claims: Value) -> String {
    stack
        .issuer
        .mint(json!({ "claims": claims, "typ": "secevent+jwt", "signer": "ssf" }))
        .await
}

/// Pushes a SET as the transmitter does (RFC 8935): status and body.
async fn post_set(stack: &Stack, token: &str) -> (u16, String) {
    let response = stack
        .http
        .post(format!("http://{}/ssf/events", stack.admin_addr(0)))
        .header("content-type", "application/secevent+jwt")
        .body(token.to_owned())
        .send()
        .await
        .expect("the admin listener answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Refused through Envoy as a session that was ended: the problem for JSON, the page for a
/// browser.
async fn assert_ended(stack: &Stack, token: &str, (problem_type, heading): (&str, &str)) {
    let response = stack.get(Some(token), "application/json", &[]).await;
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], problem_type, "{problem}");
    let page = stack.get(Some(token), BROWSER_ACCEPT, &[]).await;
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains(heading));
}

fn assert_record(
    record: &AuditRecord,
    actor: &str,
    action: Action,
    source: Source,
    user: Option<&str>,
    session: Option<&str>,
) {
    assert_eq!(record.actor.kind, ActorKind::System, "{record:?}");
    assert_eq!(record.actor.id, actor, "{record:?}");
    assert_eq!(record.action, action, "{record:?}");
    assert_eq!(record.source, source, "{record:?}");
    assert_eq!(record.target.user.as_deref(), user, "{record:?}");
    assert_eq!(record.target.session.as_deref(), session, "{record:?}");
}

/// By `sid`: that session ends, the user's other session stays; a replay is refused; by
/// `sub` only: every session of the user ends, other users stay.
async fn backchannel_logout_ends_sessions(stack: Stack) {
    let laptop = stack.token("user-alice", "sid-alice-laptop").await;
    let phone = stack.token("user-alice", "sid-alice-phone").await;
    let bob = stack.token("user-bob", "sid-bob").await;
    for token in [&laptop, &phone, &bob] {
        assert_eq!(stack.status(token).await, 200);
    }

    let claims = logout_claims(&stack, "user-alice", Some("sid-alice-laptop"));
    let logout = logout_token(&stack, claims).await;
    let started = std::time::Instant::now();
    let answer = post_logout(&stack, &logout).await;
    // Measured, not asserted: how long the identity provider waits for the answer.
    eprintln!("back-channel logout answered in {:?}", started.elapsed());
    assert_eq!(answer, (200, "no-store".into(), String::new()));
    assert_ended(&stack, &laptop, SESSION_ENDED).await;
    assert_eq!(stack.status(&phone).await, 200);

    let (status, _, body) = post_logout(&stack, &logout).await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"error":"invalid_request"}"#)
    );

    stack.clock.advance(Duration::from_secs(1));
    let claims = logout_claims(&stack, "user-alice", None);
    let logout = logout_token(&stack, claims).await;
    assert_eq!(post_logout(&stack, &logout).await.0, 200);
    assert_ended(&stack, &phone, USER_ENDED).await;
    assert_eq!(stack.status(&bob).await, 200, "other users are untouched");

    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "one record per applied logout: {audit:?}");
    let issuer = entra_issuer();
    assert_record(
        &audit[0],
        &issuer,
        Action::UserRevoke,
        Source::BackchannelLogout,
        Some("user-alice"),
        None,
    );
    assert_eq!(audit[0].sessions_revoked, Some(1));
    assert_record(
        &audit[1],
        &issuer,
        Action::SessionRevoke,
        Source::BackchannelLogout,
        Some("user-alice"),
        Some("sid-alice-laptop"),
    );
    let line = serde_json::to_value(&audit[1]).unwrap();
    assert_eq!(line["source"], "backchannel-logout");
    assert_eq!(line["actor"]["kind"], "system");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_on_the_memory_store() {
    backchannel_logout_ends_sessions(stack_on(StoreConfig::Memory).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_on_redis() {
    let redis = RedisServer::start().await;
    let stack = stack_on(StoreConfig::Redis(redis.settings(Duration::from_secs(2)))).await;
    backchannel_logout_ends_sessions(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logout_tokens_answer_400_and_end_nothing() {
    let stack = stack_on(StoreConfig::Memory).await;
    let session = stack.token("user-carol", "sid-carol").await;
    assert_eq!(stack.status(&session).await, 200);
    let good = || logout_claims(&stack, "user-carol", Some("sid-carol"));
    let with = |name: &str, value: Value| {
        let mut claims = good();
        claims[name] = value;
        claims
    };
    let now = stack.clock.now_secs();
    let mut cases: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            logout_token(&stack, with("aud", json!("another-client"))).await,
        ),
        (
            "nonce",
            logout_token(&stack, with("nonce", json!("n-0S6_WzA2Mj"))).await,
        ),
        (
            "no events",
            logout_token(&stack, with("events", Value::Null)).await,
        ),
        (
            "another event",
            logout_token(&stack, with("events", json!({ CAEP_SESSION_REVOKED: {} }))).await,
        ),
        (
            "issued two days ago",
            logout_token(&stack, with("iat", json!(now - 2 * 24 * 3600))).await,
        ),
        (
            "another issuer",
            logout_token(&stack, with("iss", json!("https://evil.example.test/"))).await,
        ),
        (
            "no sid, no sub",
            logout_token(&stack, {
                let mut claims = with("sid", Value::Null);
                claims["sub"] = Value::Null;
                claims
            })
            .await,
        ),
    ];
    cases.push((
        "expired",
        stack
            .issuer
            .mint(json!({ "claims": good(), "expires_in": -600, "typ": "logout+jwt" }))
            .await,
    ));
    cases.push((
        "typ at+jwt",
        stack
            .issuer
            .mint(json!({ "claims": good(), "typ": "at+jwt" }))
            .await,
    ));
    cases.push((
        "signed by the transmitter's key",
        stack
            .issuer
            .mint(json!({ "claims": good(), "typ": "logout+jwt", "signer": "ssf" }))
            .await,
    ));
    // Forged: a valid token's payload swapped for another user's; the signature stays.
    let valid = logout_token(&stack, good()).await;
    let other = logout_token(&stack, logout_claims(&stack, "user-dan", Some("sid-dan"))).await;
    let parts: Vec<&str> = valid.split('.').collect();
    let forged_payload = other.split('.').nth(1).unwrap();
    cases.push((
        "forged signature",
        format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
    ));
    cases.push(("not a JWT", "not.a.jwt".into()));
    for (case, token) in &cases {
        let (status, cache, body) = post_logout(&stack, token).await;
        assert_eq!(status, 400, "{case}");
        assert_eq!(cache, "no-store", "{case}");
        assert_eq!(body, r#"{"error":"invalid_request"}"#, "{case}");
    }
    // A form without the token, and another content type.
    let url = format!("http://{}/oidc/backchannel-logout", stack.admin_addr(0));
    let response = stack
        .http
        .post(&url)
        .header("content-type", FORM)
        .body("x=y")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = stack
        .http
        .post(&url)
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    assert_eq!(stack.status(&session).await, 200, "nothing was ended");
    assert!(stack.store.audit(TENANT, 10).await.unwrap().is_empty());
    // The valid one still works afterwards.
    assert_eq!(post_logout(&stack, &valid).await.0, 200);
    assert_ended(&stack, &session, SESSION_ENDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_fails_closed_when_the_store_fails() {
    let mut redis = RedisServer::start().await;
    let stack = stack_on(StoreConfig::Redis(redis.settings(Duration::from_secs(1)))).await;
    let session = stack.token("user-erin", "sid-erin").await;
    assert_eq!(stack.status(&session).await, 200);
    let logout = logout_token(&stack, logout_claims(&stack, "user-erin", Some("sid-erin"))).await;
    redis.stop().await;
    let (status, _, _) = post_logout(&stack, &logout).await;
    assert_eq!(status, 503, "not 200: the identity provider must retry");
    redis.restart().await;
    // The retry is applied: the failed attempt left no idempotency key behind.
    let mut status = 0;
    for _ in 0..50 {
        status = post_logout(&stack, &logout).await.0;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(stack.status(&session).await, 401);
    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|record| record.source == Source::BackchannelLogout
                && record.target.session.as_deref() == Some("sid-erin")),
        "{audit:?}"
    );
}

/// `session-revoked` by `sid` ends that session; a duplicate `jti` answers 202 once more and
/// is audited once; `credential-change` ends every session of the user.
async fn ssf_events_end_sessions(stack: Stack) {
    let laptop = stack.token("user-fay", "sid-fay-laptop").await;
    let phone = stack.token("user-fay", "sid-fay-phone").await;
    let gus = stack.token("user-gus", "sid-gus").await;
    for token in [&laptop, &phone, &gus] {
        assert_eq!(stack.status(token).await, 200);
    }
    let event = json!({
        "subject": {
            "format": "complex",
            "user": { "format": "iss_sub", "iss": entra_issuer(), "sub": "user-fay" },
            "session": { "format": "opaque", "id": "sid-fay-laptop" },
        },
        "event_timestamp": stack.clock.now_secs(),
        "initiating_entity": "policy",
        "reason_admin": { "en": "Landspeed policy violation" },
    });
    let set = set_token(&stack, set_claims(&stack, CAEP_SESSION_REVOKED, event)).await;
    let started = std::time::Instant::now();
    let answer = post_set(&stack, &set).await;
    // Measured, not asserted: how long the transmitter waits for the answer.
    eprintln!("security event answered in {:?}", started.elapsed());
    assert_eq!(answer, (202, String::new()));
    assert_ended(&stack, &laptop, SESSION_ENDED).await;
    assert_eq!(stack.status(&phone).await, 200);
    assert_eq!(
        post_set(&stack, &set).await.0,
        202,
        "a duplicate is accepted"
    );
    assert_eq!(stack.store.audit(TENANT, 10).await.unwrap().len(), 1);

    stack.clock.advance(Duration::from_secs(1));
    let event = json!({
        "subject": { "format": "iss_sub", "iss": entra_issuer(), "sub": "user-fay" },
        "credential_type": "password",
        "change_type": "update",
        "event_timestamp": stack.clock.now_secs(),
    });
    let set = set_token(&stack, set_claims(&stack, CAEP_CREDENTIAL_CHANGE, event)).await;
    assert_eq!(post_set(&stack, &set).await.0, 202);
    assert_ended(&stack, &phone, USER_ENDED).await;
    assert_eq!(stack.status(&gus).await, 200);

    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    let transmitter = stack.issuer.ssf_issuer.clone();
    assert_record(
        &audit[0],
        &transmitter,
        Action::UserRevoke,
        Source::Ssf,
        Some("user-fay"),
        None,
    );
    assert_eq!(audit[0].reason.as_deref(), Some("CAEP credential change"));
    assert_record(
        &audit[1],
        &transmitter,
        Action::SessionRevoke,
        Source::Ssf,
        Some("user-fay"),
        Some("sid-fay-laptop"),
    );
    assert_eq!(
        audit[1].reason.as_deref(),
        Some("Landspeed policy violation")
    );
    assert_eq!(serde_json::to_value(&audit[1]).unwrap()["source"], "ssf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssf_events_on_the_memory_store() {
    ssf_events_end_sessions(stack_on(StoreConfig::Memory).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssf_events_on_redis() {
    let redis = RedisServer::start().await;
    let stack = stack_on(StoreConfig::Redis(redis.settings(Duration::from_secs(2)))).await;
    ssf_events_end_sessions(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sets_answer_400_with_the_rfc_8935_error() {
    let stack = stack_on(StoreConfig::Memory).await;
    let session = stack.token("user-hal", "sid-hal").await;
    assert_eq!(stack.status(&session).await, 200);
    let event = json!({
        "subject": { "format": "iss_sub", "iss": entra_issuer(), "sub": "user-hal" },
    });
    let good = || set_claims(&stack, CAEP_CREDENTIAL_CHANGE, event.clone());
    let with = |name: &str, value: Value| {
        let mut claims = good();
        claims[name] = value;
        claims
    };
    let cases = [
        (
            "another issuer",
            set_token(&stack, with("iss", json!("https://evil.example.test"))).await,
            "invalid_issuer",
        ),
        (
            "another audience",
            set_token(&stack, with("aud", json!("https://elsewhere.example.test"))).await,
            "invalid_audience",
        ),
        (
            "typ JWT",
            stack
                .issuer
                .mint(json!({ "claims": good(), "signer": "ssf" }))
                .await,
            "invalid_request",
        ),
        (
            "signed by the access-token issuer",
            stack
                .issuer
                .mint(json!({ "claims": good(), "typ": "secevent+jwt" }))
                .await,
            "invalid_key",
        ),
        (
            "an unknown event",
            set_token(
                &stack,
                with("events", json!({ "https://example.test/other": {} })),
            )
            .await,
            "invalid_request",
        ),
        ("not a JWT", "garbage".to_owned(), "invalid_request"),
    ];
    for (case, token, code) in &cases {
        let (status, body) = post_set(&stack, token).await;
        assert_eq!(status, 400, "{case}");
        let error: Value = serde_json::from_str(&body).expect("RFC 8935 error JSON");
        assert_eq!(error["err"], *code, "{case}: {error}");
        assert!(error["description"].is_string(), "{case}: {error}");
        assert!(
            !body.contains("user-hal"),
            "{case}: no token content echoed"
        );
    }
    assert_eq!(stack.status(&session).await, 200, "nothing was ended");
    assert!(stack.store.audit(TENANT, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_are_off_unless_configured() {
    let stack = Stack::start().await;
    let admin = stack.admin_addr(0);
    for path in ["/oidc/backchannel-logout", "/ssf/events"] {
        let response = stack
            .http
            .post(format!("http://{admin}{path}"))
            .header("content-type", FORM)
            .body("logout_token=x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
