//! The admin API and dashboard, in process (`Router::oneshot`): tokens signed by a test key,
//! a memory store and a clock the test moves.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures::StreamExt;
use grantflow_core::audit::{Action, Source};
use grantflow_core::clock::{Clock, ManualClock, rfc3339};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::session::{AccessRequest, EndReason, Verdict};
use grantflow_core::store::{MemoryStore, SessionStore, StoreError, StoreReset};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_core::token::{TokenRules, TokenValidator};
use grantflow_extauthz::admin::{self, API_ROUTES, AdminState, OPENAPI_JSON};
use grantflow_extauthz::config::{
    AdminSettings, DEFAULT_ADMIN_ROLE, DEV_AUDIENCE, DEV_TENANT, DashboardSignIn,
};
use grantflow_extauthz::dev::DevIssuer;
use grantflow_extauthz::metrics::Metrics;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;

const AUDIENCE: &str = "api://grantflow-test";
const CONTOSO: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const FABRIKAM: &str = "11111111-2222-4333-8444-555555555555";
/// 2026-09-21T14:13:20Z.
const START: i64 = 1_790_000_000_000;
const CHROME_ON_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

struct Harness {
    app: Router,
    store: Arc<MemoryStore>,
    clock: ManualClock,
    key: EncodingKey,
}

fn harness() -> Harness {
    harness_with(None)
}

fn harness_with(sign_in: Option<DashboardSignIn>) -> Harness {
    harness_over(sign_in, |store| store)
}

/// A harness whose API sees the memory store through `wrap`.
fn harness_over(
    sign_in: Option<DashboardSignIn>,
    wrap: impl FnOnce(Arc<dyn SessionStore>) -> Arc<dyn SessionStore>,
) -> Harness {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("test-key".into());
    let clock = ManualClock::new(START);
    let keys = Arc::new(KeySet::new(
        StaticJwks::new(JwkSet { keys: vec![jwk] }),
        Duration::from_secs(1),
    ));
    let validator = Arc::new(TokenValidator::new(
        TokenRules::entra(vec![AUDIENCE.into()]),
        keys.clone(),
        Arc::new(clock.clone()),
    ));
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let state = AdminState {
        store: wrap(store.clone()),
        keys,
        validator,
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_millis(50),
        clock: Arc::new(clock.clone()),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in,
        }),
        dev: None,
    };
    Harness {
        app: admin::router(state),
        store,
        clock,
        key,
    }
}

impl Harness {
    fn claims(&self, tenant: &str, user: &str, sid: &str, admin: bool) -> Value {
        let now = self.clock.now_secs();
        let mut claims = json!({
            "iss": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            "aud": AUDIENCE,
            "tid": tenant,
            "oid": user,
            "sid": sid,
            "preferred_username": format!("{user}@{}.test", &tenant[..8]),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        });
        if admin {
            claims["roles"] = json!([DEFAULT_ADMIN_ROLE]);
        }
        claims
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-key".into());
        encode(&header, claims, &self.key).unwrap()
    }

    fn admin(&self, tenant: &str, user: &str) -> String {
        self.sign(&self.claims(tenant, user, &format!("sid-{user}"), true))
    }

    fn user(&self, tenant: &str, user: &str) -> String {
        self.sign(&self.claims(tenant, user, &format!("sid-{user}"), false))
    }

    /// A user's request through the request path: creates or touches session `sid`.
    async fn session(&self, tenant: &str, user: &str, sid: &str) -> Verdict {
        self.signed_in(tenant, user, sid, None).await
    }

    /// A user's request whose token says the user signed in at `auth_time` (seconds).
    async fn signed_in(
        &self,
        tenant: &str,
        user: &str,
        sid: &str,
        auth_time: Option<i64>,
    ) -> Verdict {
        let identity = Identity {
            tenant: tenant.into(),
            user: user.into(),
            display_name: Some(format!("{user}@example.test")),
            session: SessionKey::derive(Some(sid), None, ""),
            auth_time,
            issued_at: Some(self.clock.now_secs()),
            not_before: None,
            expires_at: self.clock.now_secs() + 3600,
            roles: vec![],
        };
        let request = AccessRequest {
            identity: Arc::new(identity),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some(CHROME_ON_LINUX.into()),
        };
        self.store.check(&request).await.unwrap()
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap()
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        read_json(self.call("GET", uri, token, None, &[]).await).await
    }

    async fn send(&self, method: &str, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        read_json(self.call(method, uri, Some(token), Some(body), &[]).await).await
    }
}

/// Status and JSON body; an error must be a problem document.
async fn read_json(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "errors are problem documents: {status} {value}"
        );
        assert_eq!(value["status"], status.as_u16());
    }
    (status, value)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn health_readiness_and_metrics_still_answer() {
    let h = harness();
    let readyz = h.call("GET", "/readyz", None, None, &[]).await;
    assert_eq!(
        readyz.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "keys not loaded yet"
    );
    let healthz = h.call("GET", "/healthz", None, None, &[]).await;
    assert_eq!(healthz.status(), StatusCode::OK);
    let metrics = h.call("GET", "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let dev = h.call("GET", "/dev/token", None, None, &[]).await;
    assert_eq!(
        dev.status(),
        StatusCode::NOT_FOUND,
        "only in development mode"
    );
}

#[tokio::test]
async fn callers_without_a_valid_admin_token_are_refused() {
    let h = harness();
    let (status, problem) = h.get("/api/v1/sessions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/unauthorized"
    );
    let response = h
        .call("GET", "/api/v1/sessions", Some("not.a.jwt"), None, &[])
        .await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(read_json(response).await.0, StatusCode::UNAUTHORIZED);

    // A valid token without the admin role: 403 everywhere, and no session is made for it.
    let user = h.user(CONTOSO, "user-mallory");
    let body = json!({"reason": "x", "maxSessionAgeSeconds": 3600});
    for (method, uri) in [
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/sid-x"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/policy"),
        ("GET", "/api/v1/events"),
        ("PUT", "/api/v1/policy"),
        ("POST", "/api/v1/sessions/sid-x/revoke"),
        ("POST", "/api/v1/users/user-bob/revoke"),
    ] {
        let response = h
            .call(method, uri, Some(&user), Some(body.clone()), &[])
            .await;
        let (status, problem) = read_json(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(
            problem["type"],
            "https://grantflow.io/problems/not-an-administrator"
        );
        assert!(detail(&problem).contains(DEFAULT_ADMIN_ROLE));
    }
    assert!(h.store.sessions(CONTOSO).await.unwrap().is_empty());
    assert!(h.store.audit(CONTOSO, 10).await.unwrap().is_empty());

    // An admin token for another audience, or expired, is not valid here.
    let mut claims = h.claims(CONTOSO, "admin-ann", "sid-ann", true);
    claims["aud"] = json!("api://someone-else");
    let (status, _) = h.get("/api/v1/me", Some(&h.sign(&claims))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let admin = h.admin(CONTOSO, "admin-ann");
    h.clock.advance(Duration::from_secs(2 * 3600));
    let (status, _) = h.get("/api/v1/me", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn me_names_the_caller_and_the_admin_session_obeys_the_session_layer() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, me) = h.get("/api/v1/me", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["tenant"], CONTOSO);
    assert_eq!(me["user"], "admin-ann");
    assert_eq!(me["displayName"], "admin-ann@72f988bf.test");
    assert_eq!(me["session"], "sid-admin-ann");
    // The administrator's own session is a session of the tenant like any other…
    let sessions = h.store.sessions(CONTOSO).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, "sid-admin-ann");
    // …so past the tenant's max age it ends, and the API refuses it.
    h.clock.advance(Duration::from_secs(16 * 60));
    let (status, problem) = h.get("/api/v1/me", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(detail(&problem).contains("expired"), "{problem}");
}

#[tokio::test]
async fn sessions_are_listed_per_tenant_filtered_sorted_and_paginated() {
    let h = harness();
    for (i, user) in ["user-a", "user-b", "user-a", "user-c", "user-a"]
        .iter()
        .enumerate()
    {
        h.session(CONTOSO, user, &format!("sid-{i}")).await;
        h.clock.advance(Duration::from_secs(1));
    }
    h.session(FABRIKAM, "user-a", "sid-fabrikam").await;
    let admin = h.admin(CONTOSO, "admin-ann");

    let (status, page) = h.get("/api/v1/sessions?limit=100", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    // Newest first by default; the admin's own session is the newest.
    assert_eq!(
        ids(&page),
        ["sid-admin-ann", "sid-4", "sid-3", "sid-2", "sid-1", "sid-0"]
    );
    assert_eq!(page["total"], 6);
    assert_eq!(page["nextOffset"], Value::Null);
    let newest = &page["items"][1];
    assert_eq!(newest["user"], "user-a");
    assert_eq!(newest["displayName"], "user-a@example.test");
    assert_eq!(newest["clientIp"], "203.0.113.7");
    assert_eq!(newest["clientLabel"], "Chrome on Linux");
    assert_eq!(newest["userAgent"], CHROME_ON_LINUX);
    assert_eq!(newest["anchor"], "sid");
    assert_eq!(newest["startedAt"], "2026-09-21T14:13:24.000Z");
    assert_eq!(newest["ageSeconds"], 1);

    let (_, page) = h
        .get(
            "/api/v1/sessions?user=user-a&sort=started&limit=2",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&page), ["sid-0", "sid-2"]);
    assert_eq!(page["total"], 3);
    assert_eq!(page["nextOffset"], 2);
    let (_, page) = h
        .get(
            "/api/v1/sessions?user=user-a&sort=started&limit=2&offset=2",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&page), ["sid-4"]);
    assert_eq!(page["nextOffset"], Value::Null);

    for bad in ["sort=user", "limit=0", "limit=x", "offset=-1", "tenant=x"] {
        let (status, _) = h
            .get(&format!("/api/v1/sessions?{bad}"), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Fabrikam's administrator sees Fabrikam only.
    h.clock.advance(Duration::from_secs(1));
    let other = h.admin(FABRIKAM, "admin-fay");
    let (_, page) = h.get("/api/v1/sessions", Some(&other)).await;
    assert_eq!(ids(&page), ["sid-admin-fay", "sid-fabrikam"]);
}

#[tokio::test]
async fn one_session_by_id_and_another_tenants_id_is_not_found() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-contoso").await;
    h.session(FABRIKAM, "user-f", "sid-fabrikam").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, session) = h.get("/api/v1/sessions/sid-contoso", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["user"], "user-a");
    for id in ["sid-fabrikam", "no-such-session", "bad%20id"] {
        let (status, problem) = h.get(&format!("/api/v1/sessions/{id}"), Some(&admin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    }
}

#[tokio::test]
async fn revoking_a_session_needs_a_reason_stays_in_the_tenant_and_is_audited() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    h.session(FABRIKAM, "user-f", "sid-f").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";

    for body in [json!({}), json!({"reason": "   "}), json!({"reason": null})] {
        let (status, problem) = h.send("POST", uri, &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(detail(&problem).contains("reason"), "{problem}");
    }
    let (status, _) = read_json(h.call("POST", uri, Some(&admin), None, &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no body");
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "x", "extra": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields");
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "x".repeat(501)}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "too long");

    // Another tenant's session: 404, and it stays live.
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-f/revoke",
            &admin,
            json!({"reason": "probe"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.store.sessions(FABRIKAM).await.unwrap().len(), 1);
    assert!(h.store.audit(FABRIKAM, 10).await.unwrap().is_empty());

    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "  lost laptop\n INC-7 "})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, result) = read_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["sessionsRevoked"], 1);
    assert_eq!(
        h.session(CONTOSO, "user-a", "sid-a").await,
        Verdict::Deny(EndReason::Revoked)
    );

    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    let record = &audit[0];
    assert_eq!(record.id, result["auditId"].as_str().unwrap());
    assert_eq!(record.action, Action::SessionRevoke);
    assert_eq!(record.actor.id, "admin-ann");
    assert_eq!(
        record.actor.name.as_deref(),
        Some("admin-ann@72f988bf.test")
    );
    assert_eq!(record.source, Source::Dashboard);
    assert_eq!(record.reason.as_deref(), Some("lost laptop  INC-7"));
    assert_eq!(record.target.session.as_deref(), Some("sid-a"));
    assert_eq!(record.target.user.as_deref(), Some("user-a"));

    // An ended session is no longer found.
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "again"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reasons_lose_control_and_format_characters() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";
    // Only invisible characters: no reason at all.
    let (status, problem) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "\u{200b}\u{202e}\u{feff} \u{0}"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("reason"), "{problem}");
    // A right-to-left override would make the audit trail read "offboarding" backwards from
    // here on; zero-width characters and NUL/CR/LF do not reach the trail either.
    let (status, _) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "\u{202e}gnidraobffo\u{202c} INC\u{200b}-9\u{0}\r\nok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit[0].reason.as_deref(), Some("gnidraobffo INC-9   ok"));
}

#[tokio::test]
async fn revoking_a_user_ends_every_session_optionally_locks_and_is_idempotent() {
    let h = harness();
    h.session(CONTOSO, "user-d", "sid-d-laptop").await;
    h.session(CONTOSO, "user-d", "sid-d-phone").await;
    h.session(CONTOSO, "user-e", "sid-e").await;
    h.session(FABRIKAM, "user-d", "sid-d-fabrikam").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/users/user-d/revoke";

    let (status, _) = h.send("POST", uri, &admin, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for lock in ["yesterday", "2020-01-01T00:00:00Z"] {
        let body = json!({"reason": "x", "lockUntil": lock});
        let (status, problem) = h.send("POST", uri, &admin, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{lock}");
        assert!(detail(&problem).contains("lockUntil"));
    }
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/bad%20user/revoke",
            &admin,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "x"})),
            &[("idempotency-key", "not ok")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let revoke = || async {
        let body = json!({"reason": "INC-2041", "lockUntil": "2026-09-22T00:00:00.000Z"});
        let response = h
            .call(
                "POST",
                uri,
                Some(&admin),
                Some(body),
                &[("idempotency-key", "inc-2041-1")],
            )
            .await;
        read_json(response).await
    };
    let (status, first) = revoke().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["sessionsRevoked"], 2);
    let (_, again) = revoke().await;
    assert_eq!(again, first, "a retry answers the first outcome");
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "one audit record");
    assert_eq!(audit[0].action, Action::UserLock);
    assert_eq!(audit[0].source, Source::Api);
    assert_eq!(audit[0].target.user.as_deref(), Some("user-d"));
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("locked until 2026-09-22T00:00:00.000Z")
    );

    // Locked: no new session, even a fresh sign-in; other users and tenants untouched.
    h.clock.advance(Duration::from_secs(5));
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Deny(EndReason::Revoked)
    );
    assert!(matches!(
        h.session(CONTOSO, "user-e", "sid-e").await,
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        h.session(FABRIKAM, "user-d", "sid-d-fabrikam").await,
        Verdict::Allow { .. }
    ));
}

#[tokio::test]
async fn the_audit_trail_is_per_tenant_filtered_and_paginated() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    for i in 0..5 {
        h.session(CONTOSO, &format!("user-{i}"), &format!("sid-{i}"))
            .await;
        let (status, _) = h
            .send(
                "POST",
                &format!("/api/v1/sessions/sid-{i}/revoke"),
                &admin,
                json!({"reason": format!("reason {i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        h.clock.advance(Duration::from_millis(10));
    }
    let user_1 = "/api/v1/users/user-1/revoke";
    let (status, _) = h
        .send("POST", user_1, &admin, json!({"reason": "all of user 1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Fabrikam's trail is its own.
    let other = h.admin(FABRIKAM, "admin-fay");
    let (status, _) = h
        .send("POST", user_1, &other, json!({"reason": "fabrikam"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, page) = h.get("/api/v1/audit?limit=4", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 6);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["items"][0]["action"], "user.revoke");
    assert_eq!(page["items"][0]["reason"], "all of user 1");
    assert_eq!(page["items"][0]["source"], "api");
    assert_eq!(
        page["items"][0]["actor"],
        json!({"kind": "admin", "id": "admin-ann", "name": "admin-ann@72f988bf.test"})
    );
    assert_eq!(page["items"][1]["reason"], "reason 4");
    assert_eq!(page["nextOffset"], 4);
    let (_, rest) = h.get("/api/v1/audit?limit=4&offset=4", Some(&admin)).await;
    let reasons: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["reason 1", "reason 0"]);
    assert_eq!(rest["nextOffset"], Value::Null);

    let (_, by_user) = h.get("/api/v1/audit?user=user-1", Some(&admin)).await;
    assert_eq!(by_user["total"], 2);
    let (_, by_action) = h
        .get("/api/v1/audit?action=session.revoke", Some(&admin))
        .await;
    assert_eq!(by_action["total"], 5);
    let (status, _) = h
        .get("/api/v1/audit?action=session.delete", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, theirs) = h.get("/api/v1/audit", Some(&other)).await;
    assert_eq!(theirs["total"], 1);
    assert_eq!(theirs["items"][0]["reason"], "fabrikam");
}

#[tokio::test]
async fn tenant_settings_are_edited_audited_applied_and_kubernetes_wins() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, policy) = h.get("/api/v1/policy", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        policy,
        json!({"maxSessionAgeSeconds": 900, "source": "default", "managedBy": null,
               "editable": true, "minSeconds": 60, "maxSeconds": 86400})
    );

    h.session(CONTOSO, "user-old", "sid-old").await;
    h.clock.advance(Duration::from_secs(5 * 60));
    let out_of_range = "between 1 minute and 24 hours";
    for (body, what) in [
        (json!({"maxSessionAgeSeconds": 120}), "reason"),
        (
            json!({"maxSessionAgeSeconds": 30, "reason": "x"}),
            out_of_range,
        ),
        (
            json!({"maxSessionAgeSeconds": 90000, "reason": "x"}),
            out_of_range,
        ),
        (json!({"reason": "x"}), "maxSessionAgeSeconds"),
        (
            json!({"maxSessionAgeSeconds": "2m", "reason": "x"}),
            "invalid type",
        ),
    ] {
        let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // The handler's own words in `detail`; what the JSON parser said in `parser`.
        let said = format!(
            "{} {}",
            detail(&problem),
            problem["parser"].as_str().unwrap_or("")
        );
        assert!(said.contains(what), "{body}: {problem}");
    }
    let response = h
        .call(
            "PUT",
            "/api/v1/policy",
            Some(&admin),
            Some(json!({"maxSessionAgeSeconds": 120, "reason": "CAB-12 tighten"})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, policy) = read_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy["maxSessionAgeSeconds"], 120);
    assert_eq!(policy["source"], "admin");
    // Applies at once: the 5-minute-old session is over the new age.
    assert_eq!(
        h.session(CONTOSO, "user-old", "sid-old").await,
        Verdict::Deny(EndReason::Expired)
    );
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit[0].action, Action::PolicyUpdate);
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("max session age 15m -> 2m")
    );
    assert_eq!(audit[0].reason.as_deref(), Some("CAB-12 tighten"));
    assert_eq!(audit[0].actor.id, "admin-ann");
    assert_eq!(audit[0].source, Source::Dashboard);
    // Fabrikam is untouched.
    assert_eq!(
        h.store.policy(FABRIKAM).await.unwrap().max_session_age,
        Duration::from_secs(900)
    );

    // A tenant managed by a Kubernetes SessionPolicy refuses edits.
    let managed = Policy {
        max_session_age: Duration::from_secs(600),
        source: PolicySource::Kubernetes("security/contoso".into()),
    };
    h.store
        .set_policy(CONTOSO, managed.clone(), None)
        .await
        .unwrap();
    // (The admin's session is 5 minutes old, past the 2 minutes set above: sign in again.)
    let admin = h.sign(&h.claims(CONTOSO, "admin-ann", "sid-admin-ann-2", true));
    let (_, policy) = h.get("/api/v1/policy", Some(&admin)).await;
    assert_eq!(policy["source"], "kubernetes");
    assert_eq!(policy["managedBy"], "security/contoso");
    assert_eq!(policy["editable"], false);
    let body = json!({"maxSessionAgeSeconds": 3600, "reason": "x"});
    let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["title"], "Managed by Kubernetes");
    assert!(detail(&problem).contains("security/contoso"));
    assert_eq!(h.store.policy(CONTOSO).await.unwrap(), managed);
}

/// Reads SSE events (`event`, parsed `data`) until `count` arrived, the stream ended or 5 s
/// passed.
async fn read_events(response: Response<Body>, count: usize) -> Vec<(String, Value)> {
    let mut body = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events.len() < count {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !name.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn live_events_carry_the_tenants_changes_only_and_end_with_the_callers_session() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let response = h
        .call("GET", "/api/v1/events", Some(&admin), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    h.session(FABRIKAM, "user-f", "sid-f").await;
    h.session(CONTOSO, "user-a", "sid-a").await;
    let bob = h.admin(CONTOSO, "admin-bob");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-a/revoke",
            &bob,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .send(
            "PUT",
            "/api/v1/policy",
            &bob,
            json!({"maxSessionAgeSeconds": 600, "reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Bob ends Ann's own session: her stream says so and closes.
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/admin-ann/revoke",
            &bob,
            json!({"reason": "offboarding"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let events = read_events(response, 100).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ready",
            "session.created",
            "session.created",
            "session.ended",
            "policy.changed",
            "session.ended",
            "end"
        ],
        "{events:?}"
    );
    assert_eq!(events[1].1["id"], "sid-a");
    assert_eq!(events[1].1["user"], "user-a");
    assert_eq!(events[1].1["clientLabel"], "Chrome on Linux");
    assert_eq!(events[2].1["id"], "sid-admin-bob");
    assert_eq!(
        events[3].1,
        json!({"id": "sid-a", "user": "user-a", "reason": "revoked"})
    );
    assert_eq!(events[4].1["maxSessionAgeSeconds"], 600);
    assert_eq!(events[5].1["id"], "sid-admin-ann");
    assert_eq!(events[6].1, json!({"reason": "session-ended"}));
    let all = format!("{events:?}");
    assert!(!all.contains(FABRIKAM) && !all.contains("sid-f"), "{all}");
}

#[tokio::test]
async fn the_event_stream_ends_when_the_callers_token_expires() {
    let h = harness();
    let mut claims = h.claims(CONTOSO, "admin-ann", "sid-ann", true);
    claims["exp"] = json!(h.clock.now_secs() + 1);
    let token = h.sign(&claims);
    let response = h
        .call("GET", "/api/v1/events", Some(&token), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = read_events(response, 2).await;
    assert_eq!(
        events,
        [
            ("ready".to_owned(), json!({})),
            ("end".to_owned(), json!({"reason": "token-expired"}))
        ]
    );
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_both_ways() {
    let h = harness();
    let (status, doc) = h.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::from_str::<Value>(OPENAPI_JSON).unwrap());
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let listed: BTreeSet<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, listed,
        "the OpenAPI document and API_ROUTES differ"
    );

    // Every listed operation is routed (the router answers neither 405 nor its own empty 404),
    // and answers a status its operation documents.
    let admin = h.admin(CONTOSO, "admin-ann");
    for (method, path) in API_ROUTES {
        let uri = path.replace("{id}", "sid-x").replace("{user}", "user-x");
        let body = (*method != "get")
            .then(|| json!({"reason": "route probe", "maxSessionAgeSeconds": 900}))
            .filter(|_| !path.contains("/sessions/"));
        let body = body.or_else(|| (*method != "get").then(|| json!({"reason": "route probe"})));
        let response = h
            .call(&method.to_uppercase(), &uri, Some(&admin), body, &[])
            .await;
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await;
            assert!(!bytes.unwrap().is_empty(), "{method} {path} is not routed");
        }
        let responses = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            responses.contains_key(status.as_str()),
            "{method} {path} answered {status}, which the document does not list"
        );
    }
    // Operations that are not listed are not served.
    let response = h
        .call("DELETE", "/api/v1/policy", Some(&admin), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// Whether any tag in `html` has an attribute starting with `on` (an inline event handler).
fn has_inline_handler(html: &str) -> bool {
    html.split('<').skip(1).any(|tag| {
        let tag = tag.split('>').next().unwrap_or("");
        tag.split_whitespace()
            .skip(1)
            .any(|attr| attr.to_ascii_lowercase().starts_with("on"))
    })
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_security_headers_and_no_inline_script() {
    let h = harness_with(Some(DashboardSignIn {
        authority: "https://login.microsoftonline.com/organizations/v2.0".into(),
        authority_origin: "https://login.microsoftonline.com".into(),
        client_id: "dashboard-client".into(),
        scope: "openid profile api://grantflow-test/.default".into(),
    }));
    let redirect = h.call("GET", "/admin", None, None, &[]).await;
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/admin/");

    for (path, content_type) in [
        ("/admin/", "text/html; charset=utf-8"),
        ("/admin/app.js", "text/javascript; charset=utf-8"),
        ("/admin/app.css", "text/css; charset=utf-8"),
        ("/admin/favicon.svg", "image/svg+xml"),
        ("/admin/config.json", "application/json"),
        ("/api/v1/openapi.json", "application/json"),
        ("/api/v1/me", "application/problem+json"),
    ] {
        let response = h.call("GET", path, None, None, &[]).await;
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' https://login.microsoftonline.com;"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers.get("set-cookie").is_none());
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    let response = h.call("GET", "/api/v1/me", None, None, &[]).await;
    assert_eq!(response.headers()["cache-control"], "no-store");

    let html = h.call("GET", "/admin/", None, None, &[]).await.into_body();
    let html = axum::body::to_bytes(html, 1 << 20).await.unwrap();
    let html = std::str::from_utf8(&html).unwrap();
    // No inline script, handler or style; nothing from another origin.
    let module = r#"<script type="module" src="/admin/app.js"></script>"#;
    assert_eq!(html.matches("<script").count(), 1);
    assert_eq!(html.matches(module).count(), 1);
    assert!(!html.contains(" style=") && !html.contains("<style"));
    assert!(
        !has_inline_handler(html),
        "inline event handler in index.html"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));

    let (_, config) = h.get("/admin/config.json", None).await;
    assert_eq!(config["signIn"]["clientId"], "dashboard-client");
    assert_eq!(
        config["signIn"]["authority"],
        "https://login.microsoftonline.com/organizations/v2.0"
    );
    assert_eq!(config["devSignIn"], false);
    assert_eq!(config["adminRole"], DEFAULT_ADMIN_ROLE);
}

/// Collects everything written to it.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON log lines of target `audit` of this whole test binary. A global subscriber, set
/// once: a thread-local one would race with callsites other tests register concurrently.
fn audit_log() -> Lines {
    static CAPTURED: OnceLock<Lines> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(move || writer.clone())
                .with_env_filter("audit=info")
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber");
            lines
        })
        .clone()
}

#[tokio::test]
async fn every_revocation_is_one_structured_log_line() {
    // A tenant of its own, so other tests' records are told apart.
    const TENANT: &str = "44444444-5555-4666-8777-888888888888";
    let lines = audit_log();
    let h = harness();
    h.session(TENANT, "user-a", "sid-a").await;
    let admin = h.admin(TENANT, "admin-ann");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-a/revoke",
            &admin,
            json!({"reason": "stolen token"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/user-b/revoke",
            &admin,
            json!({"reason": "offboarding"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["target"] == "audit")
        .map(|line| {
            serde_json::from_str::<Value>(line["fields"]["audit"].as_str().unwrap()).unwrap()
        })
        .filter(|record| record["tenant"] == TENANT)
        .collect();
    assert_eq!(records.len(), 2, "one line per revocation, not two: {text}");
    assert_eq!(records[0]["action"], "session.revoke");
    assert_eq!(records[0]["actor"]["id"], "admin-ann");
    assert_eq!(records[0]["target"]["session"], "sid-a");
    assert_eq!(records[0]["reason"], "stolen token");
    assert_eq!(records[0]["sessionsRevoked"], 1);
    assert_eq!(records[1]["action"], "user.revoke");
    assert_eq!(records[1]["target"]["user"], "user-b");
    assert_eq!(records[1]["sessionsRevoked"], 0);
}

#[tokio::test]
async fn development_mode_signs_the_dashboard_in_with_the_built_in_issuer() {
    let dev = Arc::new(DevIssuer::generate());
    let clock = ManualClock::new(START);
    let keys = Arc::new(KeySet::new(
        StaticJwks::new(dev.jwks()),
        Duration::from_secs(1),
    ));
    let validator = Arc::new(TokenValidator::new(
        TokenRules::entra(vec![DEV_AUDIENCE.into()]),
        keys.clone(),
        Arc::new(clock.clone()),
    ));
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let app = admin::router(AdminState {
        store,
        keys,
        validator,
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_millis(50),
        clock: Arc::new(clock),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in: None,
        }),
        dev: Some(dev),
    });
    let get = |uri: &str, token: Option<String>| {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {}", token.trim()));
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let text = |response: Response<Body>| async move {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };

    let (status, config) = read_json(get("/admin/config.json", None).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["devSignIn"], true);
    assert_eq!(config["signIn"], Value::Null);

    // The dashboard's development sign-in: an admin token from /dev/token.
    let admin = text(get("/dev/token?admin=true&user=admin", None).await.unwrap()).await;
    let (status, me) = read_json(get("/api/v1/me", Some(admin)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["tenant"], DEV_TENANT);
    assert_eq!(me["roles"], json!([DEFAULT_ADMIN_ROLE]));
    let user = text(get("/dev/token?user=bob", None).await.unwrap()).await;
    let (status, _) = read_json(get("/api/v1/me", Some(user)).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// `store` whose revocations take effect but are not confirmed by replicas (Redis `WAIT`
/// with a lagging replica): the first `times` of them, or every one.
fn unconfirmed_revocations(store: Arc<dyn SessionStore>, times: Option<u32>) -> FaultyStore {
    let fault = Fault::FailAfter(StoreError::NotReplicated {
        acknowledged: 0,
        wanted: 1,
    });
    let store = FaultyStore::new(store);
    match times {
        Some(times) => store.with_fault_times([Operation::Revoke], fault, times),
        None => store.with_fault([Operation::Revoke], fault),
    }
}

#[tokio::test]
async fn a_revocation_the_replicas_did_not_confirm_is_a_503_that_says_so() {
    let h = harness_over(None, |store| Arc::new(unconfirmed_revocations(store, None)));
    h.session(CONTOSO, "user-a", "sid-a").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, problem) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-a/revoke",
            &admin,
            json!({"reason": "INC-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/store-not-replicated"
    );
    assert!(detail(&problem).contains("in effect"), "{problem}");
    // It is in effect, and audited.
    assert_eq!(
        h.session(CONTOSO, "user-a", "sid-a").await,
        Verdict::Deny(EndReason::Revoked)
    );
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1);
}

/// A call's status, the `Idempotent-Replayed` header and the JSON body.
async fn keyed(
    h: &Harness,
    uri: &str,
    token: &str,
    body: Value,
    key: &str,
) -> (StatusCode, Option<String>, Value) {
    let response = h
        .call(
            "POST",
            uri,
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await;
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read_json(response).await;
    (status, replayed, body)
}

#[tokio::test]
async fn a_replayed_user_revocation_answers_the_first_outcome_and_a_reused_key_is_422() {
    let h = harness();
    h.session(CONTOSO, "user-d", "sid-d").await;
    h.session(CONTOSO, "user-e", "sid-e").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/users/user-d/revoke";
    let body = json!({"reason": "INC-2041"});

    let (status, replayed, first) = keyed(&h, uri, &admin, body.clone(), "inc-2041").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, None, "a first call is not marked");
    assert_eq!(first["sessionsRevoked"], 1);

    // The same request again: the first answer, marked; nothing new in the store.
    h.clock.advance(Duration::from_secs(60));
    let (status, replayed, again) = keyed(&h, uri, &admin, body.clone(), "inc-2041").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first, "the replay answers the first outcome");

    // The same key with another request: 422, and nothing changes.
    let before = h.store.blocked_users(CONTOSO).await.unwrap();
    for (uri, body) in [
        (uri, json!({"reason": "INC-2041 (second thoughts)"})),
        (
            uri,
            json!({"reason": "INC-2041", "lockUntil": "2026-10-01T00:00:00Z"}),
        ),
        ("/api/v1/users/user-e/revoke", body.clone()),
        ("/api/v1/sessions/sid-e/revoke", body.clone()),
    ] {
        let (status, replayed, problem) = keyed(&h, uri, &admin, body, "inc-2041").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {problem}");
        assert_eq!(replayed, None);
        assert_eq!(
            problem["type"],
            "https://grantflow.io/problems/idempotency-key-mismatch"
        );
        assert!(
            detail(&problem).contains("different request")
                && detail(&problem).contains("Nothing was changed"),
            "{problem}"
        );
    }
    assert_eq!(h.store.blocked_users(CONTOSO).await.unwrap(), before);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1);
    assert!(matches!(
        h.session(CONTOSO, "user-e", "sid-e").await,
        Verdict::Allow { .. }
    ));

    // Keys are the caller's: another administrator's same key is a request of its own.
    let bob = h.admin(CONTOSO, "admin-bob");
    let (status, replayed, other) = keyed(&h, uri, &bob, body, "inc-2041").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, None);
    assert_ne!(other["auditId"], first["auditId"]);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_replayed_session_revocation_answers_the_first_outcome_though_the_session_ended() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    h.session(CONTOSO, "user-b", "sid-b").await;
    h.session(FABRIKAM, "user-f", "sid-f").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";
    let body = json!({"reason": "lost laptop"});

    let (status, replayed, first) = keyed(&h, uri, &admin, body.clone(), "k-1").await;
    assert_eq!((status, replayed), (StatusCode::OK, None));
    assert_eq!(first["sessionsRevoked"], 1);
    let (status, replayed, again) = keyed(&h, uri, &admin, body.clone(), "k-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1);

    // Not a replay: the ended session is not found, with or without a (new) key…
    let (status, _) = h.send("POST", uri, &admin, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = keyed(&h, uri, &admin, json!({"reason": "other"}), "k-2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // …and so are another tenant's session and an unknown one: nothing is written.
    for id in ["sid-f", "sid-unknown"] {
        let uri = format!("/api/v1/sessions/{id}/revoke");
        let (status, _, _) = keyed(&h, &uri, &admin, body.clone(), "k-3").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
    }
    assert_eq!(h.store.sessions(FABRIKAM).await.unwrap().len(), 1);
    assert!(h.store.audit(FABRIKAM, 10).await.unwrap().is_empty());
    // The first key on a live session with another request: 422, the session stays live.
    let (status, _, problem) = keyed(
        &h,
        "/api/v1/sessions/sid-b/revoke",
        &admin,
        body.clone(),
        "k-1",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(matches!(
        h.session(CONTOSO, "user-b", "sid-b").await,
        Verdict::Allow { .. }
    ));
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_retry_after_an_unconfirmed_revocation_is_answered_as_a_replay() {
    // The dashboard's case: the first submit answers 503 (in effect, not confirmed by the
    // replicas); submitting again with the dialog's key answers the first outcome.
    let h = harness_over(None, |store| {
        Arc::new(unconfirmed_revocations(store, Some(1)))
    });
    h.session(CONTOSO, "user-a", "sid-a").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";
    let body = json!({"reason": "INC-7"});
    let (status, _, problem) = keyed(&h, uri, &admin, body.clone(), "dialog-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    let (status, replayed, answer) = keyed(&h, uri, &admin, body, "dialog-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(replayed.as_deref(), Some("true"));
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "one audit record");
    assert_eq!(answer["auditId"], audit[0].id.as_str());
    assert_eq!(answer["sessionsRevoked"], 1);
}

#[tokio::test]
async fn revoke_all_answers_what_the_user_must_do_to_get_back_in() {
    let h = harness();
    h.session(CONTOSO, "user-d", "sid-d").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, answer) = h
        .send(
            "POST",
            "/api/v1/users/user-d/revoke",
            &admin,
            json!({"reason": "INC-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let watermark = rfc3339(START);
    let holds = rfc3339(START + 90 * 24 * 3600 * 1000);
    assert_eq!(
        answer["blocked"],
        json!({"user": "user-d", "notBefore": watermark, "lockUntil": null, "holdsUntil": holds})
    );
    let next = answer["nextStep"].as_str().unwrap();
    assert!(
        next.starts_with("The user must sign in again interactively"),
        "{next}"
    );
    assert!(
        next.contains(&format!("auth_time is after {watermark}")),
        "{next}"
    );
    assert!(
        next.contains(&format!(
            "Tokens without auth_time (or with an earlier one) are refused until {holds}"
        )),
        "{next}"
    );
    assert!(
        next.contains("DELETE /api/v1/users/user-d/revocation"),
        "{next}"
    );
    // As it says: without auth_time, refused (sign in again); signed in before or at the
    // revocation, refused; signed in after it, allowed.
    h.clock.advance(Duration::from_secs(10));
    let at = START / 1000;
    assert_eq!(
        h.signed_in(CONTOSO, "user-d", "sid-d2", None).await,
        Verdict::Deny(EndReason::Reauthenticate)
    );
    assert_eq!(
        h.signed_in(CONTOSO, "user-d", "sid-d3", Some(at)).await,
        Verdict::Deny(EndReason::Revoked)
    );
    assert!(matches!(
        h.signed_in(CONTOSO, "user-d", "sid-d4", Some(at + 5)).await,
        Verdict::Allow { .. }
    ));

    // With a lock: nothing until it ends, then the same rule.
    let lock = "2026-09-22T00:00:00.000Z";
    let (status, answer) = h
        .send(
            "POST",
            "/api/v1/users/user-l/revoke",
            &admin,
            json!({"reason": "INC-2", "lockUntil": lock}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["blocked"]["lockUntil"], lock);
    let next = answer["nextStep"].as_str().unwrap();
    assert!(
        next.starts_with(&format!(
            "The user is locked out: no token opens a session until {lock}"
        )),
        "{next}"
    );
    assert!(
        next.contains("After that, the user must sign in again interactively"),
        "{next}"
    );
    assert_eq!(
        h.signed_in(CONTOSO, "user-l", "sid-l", Some(h.clock.now_secs()))
            .await,
        Verdict::Deny(EndReason::Revoked),
        "locked: even a fresh sign-in is refused"
    );
}

#[tokio::test]
async fn blocked_users_are_listed_per_tenant_and_lifted_with_an_audit_record() {
    let h = harness();
    let ann = h.admin(CONTOSO, "admin-ann");
    let fabrikam = h.admin(FABRIKAM, "admin-fay");
    h.session(CONTOSO, "user-d", "sid-d").await;
    let revoke = |token: String, user: &'static str, body: Value| {
        let h = &h;
        async move {
            let uri = format!("/api/v1/users/{user}/revoke");
            let (status, answer) = h.send("POST", &uri, &token, body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    revoke(
        ann.clone(),
        "user-d",
        json!({"reason": "INC-1 stolen laptop"}),
    )
    .await;
    h.clock.advance(Duration::from_secs(60));
    let lock = "2026-09-30T00:00:00.000Z";
    revoke(
        ann.clone(),
        "user-e",
        json!({"reason": "INC-2", "lockUntil": lock}),
    )
    .await;
    revoke(fabrikam.clone(), "user-f", json!({"reason": "INC-3"})).await;

    // Each tenant sees its own, newest revocation first.
    let (status, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["user"], "user-e");
    assert_eq!(items[0]["lockUntil"], lock);
    assert_eq!(items[0]["notBefore"], rfc3339(START + 60_000));
    assert_eq!(items[0]["revocation"]["reason"], "INC-2");
    assert_eq!(items[1]["user"], "user-d");
    assert_eq!(items[1]["notBefore"], rfc3339(START));
    assert_eq!(items[1]["lockUntil"], Value::Null);
    assert_eq!(
        items[1]["holdsUntil"],
        rfc3339(START + 90 * 24 * 3600 * 1000)
    );
    assert_eq!(
        items[1]["revocation"]["actor"], "admin-ann@72f988bf.test",
        "{page}"
    );
    assert_eq!(items[1]["revocation"]["reason"], "INC-1 stolen laptop");
    let (_, page) = h.get("/api/v1/blocked-users", Some(&fabrikam)).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["user"], "user-f");
    let (_, page) = h.get("/api/v1/blocked-users?limit=1", Some(&ann)).await;
    assert_eq!(page["nextOffset"], 1);
    let (status, _) = h.get("/api/v1/blocked-users?tenant=x", Some(&ann)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no tenant parameter");

    // Lifting needs a reason, only reaches the caller's tenant and blocked users.
    let lift = |user: &str| format!("/api/v1/users/{user}/revocation");
    for body in [json!({}), json!({"reason": "  "})] {
        let (status, problem) = h.send("DELETE", &lift("user-d"), &ann, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&problem).contains("reason"), "{problem}");
    }
    for user in ["user-f", "user-x", "bad%20user"] {
        let (status, problem) = h
            .send("DELETE", &lift(user), &ann, json!({"reason": "probe"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{user}");
        assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    }
    assert_eq!(h.store.blocked_users(FABRIKAM).await.unwrap().len(), 1);
    assert_eq!(h.store.audit(FABRIKAM, 10).await.unwrap().len(), 1);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 2);
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Deny(EndReason::Reauthenticate),
        "still blocked"
    );

    let response = h
        .call(
            "DELETE",
            &lift("user-d"),
            Some(&ann),
            Some(json!({"reason": "INC-1 closed: password reset"})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, lifted) = read_json(response).await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert_eq!(lifted["user"], "user-d");
    assert_eq!(lifted["lifted"]["notBefore"], rfc3339(START));
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 3);
    let record = &audit[0];
    assert_eq!(record.id, lifted["auditId"].as_str().unwrap());
    assert_eq!(record.action, Action::UserUnblock);
    assert_eq!(record.actor.id, "admin-ann");
    assert_eq!(record.source, Source::Dashboard);
    assert_eq!(record.target.user.as_deref(), Some("user-d"));
    assert_eq!(record.target.session, None);
    assert_eq!(
        record.reason.as_deref(),
        Some("INC-1 closed: password reset")
    );
    assert_eq!(record.sessions_revoked, None);
    assert_eq!(
        record.detail.as_deref(),
        Some(format!("lifted revoke-all watermark of {}", rfc3339(START)).as_str())
    );
    // In force at once: a token without auth_time opens a session; the ended one stays ended.
    assert!(matches!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Allow { .. }
    ));
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d").await,
        Verdict::Deny(EndReason::Revoked)
    );
    let (_, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["user"], "user-e");
    // A second lift finds nothing to lift and writes nothing.
    let (status, _) = h
        .send("DELETE", &lift("user-d"), &ann, json!({"reason": "again"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 3);

    // A lock is lifted too, and the record says what was lifted; the audit filter finds it.
    let (status, lifted) = h
        .send(
            "DELETE",
            &lift("user-e"),
            &ann,
            json!({"reason": "INC-2 closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert!(matches!(
        h.signed_in(CONTOSO, "user-e", "sid-e", Some(START / 1000))
            .await,
        Verdict::Allow { .. }
    ));
    let (status, page) = h.get("/api/v1/audit?action=user.unblock", Some(&ann)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 2);
    assert_eq!(
        page["items"][0]["detail"],
        format!(
            "lifted revoke-all watermark of {} and lock until {lock}",
            rfc3339(START + 60_000)
        )
    );
    let (_, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(page["total"], 0);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn readiness_lists_the_stores_resets_and_metrics_count_the_losses() {
    const LOST: i64 = START - 3_600_000;
    let h = harness_over(None, |store| {
        let wrapped = FaultyStore::new(store).with_resets(vec![
            StoreReset {
                tenant: None,
                lost_at: START - 86_400_000,
                generation: "g-1".into(),
            },
            StoreReset {
                tenant: Some(CONTOSO.into()),
                lost_at: LOST,
                generation: LOST.to_string(),
            },
        ]);
        Arc::new(wrapped)
    });
    // An admin call loads the issuer's keys.
    let (status, _) = h
        .get("/api/v1/me", Some(&h.admin(CONTOSO, "admin-ann")))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = |response: Response<Body>| async move {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    };
    let (status, body) = text(h.call("GET", "/readyz", None, None, &[]).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "resets do not make it unready: {body}"
    );
    assert_eq!(
        body,
        format!(
            "store: ok\nkeys: loaded\n\
             store generation since {}: tokens issued before it are refused (sign in again)\n\
             store reset: tenant {CONTOSO} at {}: tokens issued before it are refused (sign in again)\n",
            rfc3339(START - 86_400_000),
            rfc3339(LOST)
        )
    );
    let (status, metrics) = text(h.call("GET", "/metrics", None, None, &[]).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("# TYPE grantflow_store_resets gauge\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ngrantflow_store_resets 1\n"),
        "one loss found (the generation start is not one): {metrics}"
    );

    // A store without resets says nothing more.
    let h = harness();
    let (_, _) = h
        .get("/api/v1/me", Some(&h.admin(CONTOSO, "admin-ann")))
        .await;
    let (_, body) = text(h.call("GET", "/readyz", None, None, &[]).await).await;
    assert_eq!(body, "store: ok\nkeys: loaded\n");
    let (_, metrics) = text(h.call("GET", "/metrics", None, None, &[]).await).await;
    assert!(
        metrics.contains("\ngrantflow_store_resets 0\n"),
        "{metrics}"
    );
}

/// Every error of the API is a problem document with fixed wording: unknown addresses (404),
/// wrong methods (405, with `Allow`), bodies too large (413); what a parser said about a bad
/// body is kept apart in `parser`, never in `detail`.
#[tokio::test]
async fn every_api_error_is_a_problem_document_with_fixed_wording() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let problem_of = |response: Response<Body>| async move {
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{status}"
        );
        (status, allow, problem)
    };

    let (status, _, problem) =
        problem_of(h.call("GET", "/api/v1/nope", Some(&admin), None, &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    let (status, _, _) = problem_of(h.call("GET", "/nothing-here", None, None, &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, allow, problem) = problem_of(
        h.call("DELETE", "/api/v1/policy", Some(&admin), None, &[])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/method-not-allowed"
    );
    let allow = allow.expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");

    // A bad body: fixed wording, the parser's words apart (and never reflected in `detail`).
    let evil = "<script>alert(1)</script>";
    let (status, problem) = h
        .send(
            "PUT",
            "/api/v1/policy",
            &admin,
            json!({ evil: 1, "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!detail(&problem).contains(evil), "{problem}");
    assert!(
        problem["parser"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{problem}"
    );

    // A body over the framework's limit.
    let huge = "x".repeat(3 << 20);
    let response = h
        .call(
            "PUT",
            "/api/v1/policy",
            Some(&admin),
            Some(json!({ "reason": huge })),
            &[],
        )
        .await;
    let (status, _, problem) = problem_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/body-too-large"
    );
}

const RATE_LIMITED: &str = "https://grantflow.io/problems/rate-limited";

/// The status, `Retry-After` and body of a call.
async fn limited_call(
    h: &Harness,
    method: &str,
    uri: &str,
    token: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let response = h.call(method, uri, Some(token), Some(body), headers).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read_json(response).await;
    (status, retry_after, body)
}

#[tokio::test]
async fn an_administrators_writes_over_the_rate_limit_are_429_and_change_nothing() {
    // A store that counts every call made to it.
    let mut counted = None;
    let h = harness_over(None, |store| {
        let store = Arc::new(FaultyStore::new(store));
        counted = Some(store.clone());
        store
    });
    let calls = counted.unwrap();
    let burst = admin::WRITE_BURST.get() as usize;
    assert_eq!(burst, 60);
    assert_eq!(admin::WRITE_REFILL, Duration::from_secs(1));
    h.session(CONTOSO, "user-a", "sid-a").await;
    let ann = h.admin(CONTOSO, "admin-ann");
    let reason = json!({"reason": "INC-9 mass offboarding"});

    // A full burst goes through: one keyed revoke-all, then revoke-alls of other users.
    let (status, _, first) = limited_call(
        &h,
        "POST",
        "/api/v1/users/user-0/revoke",
        &ann,
        reason.clone(),
        &[("idempotency-key", "inc-9-user-0")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for n in 1..burst {
        let uri = format!("/api/v1/users/user-{n}/revoke");
        let (status, problem) = h.send("POST", &uri, &ann, reason.clone()).await;
        assert_eq!(status, StatusCode::OK, "write {n}: {problem}");
    }
    let audit = h.store.audit(CONTOSO, 1_000).await.unwrap();
    assert_eq!(audit.len(), burst);
    let blocked = h.store.blocked_users(CONTOSO).await.unwrap();
    let policy = h.store.policy(CONTOSO).await.unwrap();

    // Over the budget, every write is refused before the store is asked anything (not even
    // about the caller's own session), with the same fixed wording and Retry-After.
    let before = calls.calls();
    let mut details = BTreeSet::new();
    for (method, uri, body) in [
        ("POST", "/api/v1/users/user-x/revoke", reason.clone()),
        ("POST", "/api/v1/sessions/sid-a/revoke", reason.clone()),
        ("DELETE", "/api/v1/users/user-1/revocation", reason.clone()),
        (
            "PUT",
            "/api/v1/policy",
            json!({"reason": "INC-9", "maxSessionAgeSeconds": 900}),
        ),
    ] {
        let (status, retry_after, problem) = limited_call(&h, method, uri, &ann, body, &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{method} {uri}");
        assert_eq!(problem["type"], RATE_LIMITED);
        assert_eq!(problem["title"], "Too many changes");
        assert_eq!(retry_after.as_deref(), Some("1"), "{method} {uri}");
        details.insert(detail(&problem).to_owned());
    }
    assert_eq!(details.len(), 1, "fixed wording: {details:?}");
    assert!(
        details
            .first()
            .unwrap()
            .contains("Nothing was changed by this request")
    );
    assert_eq!(calls.calls(), before, "the store was not called");
    assert_eq!(h.store.audit(CONTOSO, 1_000).await.unwrap().len(), burst);
    assert_eq!(h.store.blocked_users(CONTOSO).await.unwrap(), blocked);
    assert_eq!(h.store.policy(CONTOSO).await.unwrap(), policy);
    assert!(matches!(
        h.session(CONTOSO, "user-a", "sid-a").await,
        Verdict::Allow { .. }
    ));

    // A replay of the keyed write is not refused: the store answers its first outcome.
    let (status, _, replay) = limited_call(
        &h,
        "POST",
        "/api/v1/users/user-0/revoke",
        &ann,
        reason.clone(),
        &[("idempotency-key", "inc-9-user-0")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["auditId"], first["auditId"]);
    // The same key for another request is counted like any write.
    let (status, _, _) = limited_call(
        &h,
        "POST",
        "/api/v1/users/user-x/revoke",
        &ann,
        reason.clone(),
        &[("idempotency-key", "inc-9-user-0")],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Reads are not limited.
    for _ in 0..3 {
        for uri in [
            "/api/v1/me",
            "/api/v1/sessions",
            "/api/v1/sessions/sid-a",
            "/api/v1/blocked-users",
            "/api/v1/audit",
            "/api/v1/policy",
        ] {
            let (status, body) = h.get(uri, Some(&ann)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        }
    }

    // Another administrator of the same tenant has a budget of their own, and so has an
    // administrator with the same user id in another tenant.
    let bob = h.admin(CONTOSO, "admin-bob");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-a/revoke",
            &bob,
            reason.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ann_elsewhere = h.admin(FABRIKAM, "admin-ann");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/user-f/revoke",
            &ann_elsewhere,
            reason.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // One write per second comes back; a minute restores the whole burst.
    h.clock.advance(Duration::from_secs(1));
    let (status, _) = h
        .send("POST", "/api/v1/users/user-x/revoke", &ann, reason.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .send("POST", "/api/v1/users/user-y/revoke", &ann, reason.clone())
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    h.clock.advance(Duration::from_secs(60));
    let (status, _) = h
        .send(
            "PUT",
            "/api/v1/policy",
            &ann,
            json!({"reason": "INC-9", "maxSessionAgeSeconds": 900}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The refusals are counted by operation, never by tenant or administrator.
    let response = h.call("GET", "/metrics", None, None, &[]).await;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let metrics = String::from_utf8(bytes.to_vec()).unwrap();
    for line in [
        "grantflow_admin_writes_rate_limited_total{operation=\"user_revoke\"} 3\n",
        "grantflow_admin_writes_rate_limited_total{operation=\"session_revoke\"} 1\n",
        "grantflow_admin_writes_rate_limited_total{operation=\"user_unblock\"} 1\n",
        "grantflow_admin_writes_rate_limited_total{operation=\"policy_update\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    assert!(!metrics.contains(CONTOSO) && !metrics.contains("admin-ann"));
}

#[tokio::test]
async fn retries_of_an_idempotent_revocation_after_a_503_are_not_rate_limited() {
    // Every revocation is in effect but unconfirmed (503); the client retries each with its
    // key. The retries pass however many there are, and change nothing.
    let h = harness_over(None, |store| Arc::new(unconfirmed_revocations(store, None)));
    let ann = h.admin(CONTOSO, "admin-ann");
    let burst = admin::WRITE_BURST.get() as usize;
    for n in 0..burst {
        let (status, _, _) = limited_call(
            &h,
            "POST",
            &format!("/api/v1/users/user-{n}/revoke"),
            &ann,
            json!({"reason": "INC-10"}),
            &[("idempotency-key", &format!("inc-10-{n}"))],
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    for n in 0..burst {
        let (status, _, problem) = limited_call(
            &h,
            "POST",
            &format!("/api/v1/users/user-{n}/revoke"),
            &ann,
            json!({"reason": "INC-10"}),
            &[("idempotency-key", &format!("inc-10-{n}"))],
        )
        .await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{n}: {problem}");
    }
    assert_eq!(h.store.audit(CONTOSO, 1_000).await.unwrap().len(), burst);
    // A new write is over the budget.
    let (status, retry_after, _) = limited_call(
        &h,
        "POST",
        "/api/v1/users/user-new/revoke",
        &ann,
        json!({"reason": "INC-10"}),
        &[("idempotency-key", "inc-10-new")],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[test]
fn the_openapi_document_lists_429_with_retry_after_on_every_write_and_no_read() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    for (method, path) in API_ROUTES {
        let responses = &doc["paths"][*path][*method]["responses"];
        let write = admin::WRITE_OPERATIONS
            .iter()
            .any(|op| op.method == *method && op.path == *path);
        assert_eq!(write, *method != "get", "{method} {path}");
        assert_eq!(
            responses.get("429").is_some(),
            write,
            "{method} {path}: 429 is documented on the writes only"
        );
        if write {
            assert_eq!(
                responses["429"]["headers"]["Retry-After"]["schema"]["type"], "integer",
                "{method} {path}"
            );
        }
    }
}
