//! The live event stream (SSE): a tenant's changes only, ending with the caller's session or
//! token.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use futures::StreamExt;
use grantflow_core::clock::Clock;
use serde_json::{Value, json};

use grantflow_extauthz::admin::{MAX_STREAMS_PER_ADMIN, STREAM_RETRY_AFTER_SECS};

use crate::support::{CONTOSO, FABRIKAM, harness, read_json};

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
async fn an_administrator_holds_at_most_eight_streams_and_a_closed_one_frees_its_place() {
    let h = harness();
    let ann = h.admin(CONTOSO, "admin-ann");
    let open_stream = |token: String| {
        let h = &h;
        async move {
            h.call("GET", "/api/v1/events", Some(&token), None, &[])
                .await
        }
    };
    let mut streams = Vec::new();
    for _ in 0..MAX_STREAMS_PER_ADMIN {
        let response = open_stream(ann.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    assert_eq!(MAX_STREAMS_PER_ADMIN, 8);
    let refused = open_stream(ann.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["retry-after"],
        STREAM_RETRY_AFTER_SECS.to_string().as_str()
    );
    let (_, problem) = read_json(refused).await;
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/too-many-streams"
    );
    // The bound is per administrator and tenant: others are not held back.
    let bob = h.admin(CONTOSO, "admin-bob");
    assert_eq!(open_stream(bob).await.status(), StatusCode::OK);
    let ann_elsewhere = h.admin(FABRIKAM, "admin-ann");
    assert_eq!(open_stream(ann_elsewhere).await.status(), StatusCode::OK);
    // A client that goes away frees its place; so does a stream that ended.
    drop(streams.pop());
    let again = open_stream(ann.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        open_stream(ann.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(again);
    let mut claims = h.claims(CONTOSO, "admin-ann", "sid-admin-ann", true);
    claims["exp"] = json!(h.clock.now_secs() + 1);
    let short = open_stream(h.sign(&claims)).await;
    assert_eq!(short.status(), StatusCode::OK);
    let events = read_events(short, 2).await;
    assert_eq!(events[1].0, "end", "{events:?}");
    assert_eq!(open_stream(ann).await.status(), StatusCode::OK);
}
