//! The administrators' write budget: writes over it are 429 and change nothing; retries of an
//! idempotent revocation are not counted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use grantflow_core::session::Verdict;
use grantflow_core::store::SessionStore;
use grantflow_core::testing::FaultyStore;
use grantflow_extauthz::admin;
use serde_json::{Value, json};

use crate::support::{
    CONTOSO, FABRIKAM, Harness, detail, harness_over, read_json, unconfirmed_revocations,
};

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
