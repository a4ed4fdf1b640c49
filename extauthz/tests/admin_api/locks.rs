//! A lock's message for the user (`POST /api/v1/users/{user}/revoke` with `message`): only
//! with `lockUntil`, cleaned like a reason, at most 200 characters, shown in the blocked users
//! and bound to the idempotency key.

use axum::http::StatusCode;
use grantflow_core::clock::Clock;
use grantflow_core::session::Verdict;
use grantflow_core::store::SessionStore;
use serde_json::json;

use crate::support::{CONTOSO, detail, harness, read_json};

const LOCK: &str = "2026-09-22T00:00:00.000Z";

#[tokio::test]
async fn a_lock_message_is_validated_cleaned_listed_and_refused_to_the_user() {
    let h = harness();
    h.session(CONTOSO, "user-m", "sid-m").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/users/user-m/revoke";

    // Only with a lock.
    let (status, problem) = h
        .send("POST", uri, &admin, json!({"reason": "x", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        detail(&problem).contains("message needs lockUntil"),
        "{problem}"
    );
    // At most 200 characters (after cleaning: format characters do not count).
    let long = "é".repeat(201);
    let (status, problem) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "x", "lockUntil": LOCK, "message": long}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&problem),
        "The message is longer than 200 characters."
    );
    let (status, _) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "x", "lockUntil": LOCK, "message": "1".repeat(20_000)}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Not a string.
    let (status, _) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "x", "lockUntil": LOCK, "message": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing was locked by the refused calls.
    assert!(h.store.blocked_users(CONTOSO).await.unwrap().is_empty());

    // Control characters become spaces, format characters (a bidi override) go, trimmed.
    let at_limit = format!(
        " INC-2041\r\n\u{200B}call the desk{}\u{202E} ",
        "x".repeat(200 - "INC-2041  call the desk".len())
    );
    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "INC-2041", "lockUntil": LOCK, "message": at_limit})),
            &[("idempotency-key", "lock-m-1")],
        )
        .await;
    let (status, answer) = read_json(response).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let cleaned = format!("INC-2041  call the desk{}", "x".repeat(177));
    assert_eq!(cleaned.chars().count(), 200);
    assert_eq!(answer["blocked"]["message"], cleaned.as_str());
    assert_eq!(answer["blocked"]["lockUntil"], LOCK);

    // Listed with the blocked users.
    let (status, listed) = h
        .send("GET", "/api/v1/blocked-users", &admin, json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["user"], "user-m");
    assert_eq!(listed["items"][0]["message"], cleaned.as_str());

    // The user's refusal carries it.
    let verdict = h
        .signed_in(CONTOSO, "user-m", "sid-m-2", Some(h.clock.now_secs()))
        .await;
    assert_eq!(
        verdict,
        Verdict::Locked {
            until: 1_790_035_200_000,
            message: Some(cleaned.clone()),
        }
    );

    // The same key with another message: 422, nothing changed.
    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "INC-2041", "lockUntil": LOCK, "message": "other"})),
            &[("idempotency-key", "lock-m-1")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let blocked = h.store.blocked_users(CONTOSO).await.unwrap();
    assert_eq!(blocked[0].message.as_deref(), Some(cleaned.as_str()));
}

#[tokio::test]
async fn a_blank_message_is_no_message() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, answer) = h
        .send(
            "POST",
            "/api/v1/users/user-n/revoke",
            &admin,
            json!({"reason": "x", "lockUntil": LOCK, "message": " \u{200B}\n "}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["blocked"].get("message").is_none(), "{answer}");
}
