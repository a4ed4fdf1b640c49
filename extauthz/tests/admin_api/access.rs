//! Who gets in: health, readiness and metrics without a token; callers without a valid admin
//! token refused; `/api/v1/me`; the store's resets in readiness and metrics; the per-user
//! session bound on an administrator's own session.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use grantflow_core::clock::rfc3339;
use grantflow_core::decision::Limits;
use grantflow_core::session::Verdict;
use grantflow_core::store::{SessionStore, StoreReset};
use grantflow_core::testing::FaultyStore;
use grantflow_extauthz::config::DEFAULT_ADMIN_ROLE;
use serde_json::json;

use crate::support::{CONTOSO, START, detail, harness, harness_over, read_json};

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

#[tokio::test]
async fn an_administrator_at_the_per_user_session_bound_gets_429_for_a_new_session_only() {
    let h = harness();
    for i in 0..Limits::default().max_sessions_per_user {
        let verdict = h.session(CONTOSO, "admin-ann", &format!("sid-{i}")).await;
        assert!(matches!(verdict, Verdict::Allow { created: true, .. }));
    }
    let (status, problem) = h
        .get("/api/v1/sessions", Some(&h.admin(CONTOSO, "admin-ann")))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/too-many-sessions"
    );
    assert!(detail(&problem).contains("Sign out of privileged access"));
    // A session the administrator holds keeps working; others are not held back.
    let own = h.sign(&h.claims(CONTOSO, "admin-ann", "sid-0", true));
    assert_eq!(h.get("/api/v1/me", Some(&own)).await.0, StatusCode::OK);
    let bob = h.admin(CONTOSO, "admin-bob");
    assert_eq!(h.get("/api/v1/me", Some(&bob)).await.0, StatusCode::OK);
}
