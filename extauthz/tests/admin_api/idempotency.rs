//! Idempotency keys and unconfirmed writes: a revocation the replicas did not confirm is a 503
//! that says so; a replay answers the first outcome; a reused key is 422.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use grantflow_core::session::{EndReason, Verdict};
use grantflow_core::store::SessionStore;
use serde_json::json;

use crate::support::{
    CONTOSO, FABRIKAM, detail, harness, harness_over, keyed, unconfirmed_revocations,
};

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
