//! Server-side listing through the API (`GET /api/v1/sessions` with filters, sorts, cursors
//! and `groupBy=user`); the store-level rules are in the conformance suite
//! (tests/tests/conformance/listing.rs).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::{CONTOSO, harness, ids};

#[tokio::test]
async fn sessions_are_filtered_sorted_and_paged_with_a_cursor() {
    let h = harness();
    h.listing_sessions().await;
    let admin = h.admin(CONTOSO, "admin-ann");

    // Name prefix (display name or user id, any case), IP range, browser part.
    let (status, page) = h.get("/api/v1/sessions?name=USER-A", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), ["sid-4", "sid-2", "sid-0"]);
    let (_, page) = h
        .get(
            "/api/v1/sessions?ip=203.0.113.0/24&name=user-",
            Some(&admin),
        )
        .await;
    assert_eq!(page["total"], 5);
    let (_, page) = h
        .get("/api/v1/sessions?ip=198.51.100.1", Some(&admin))
        .await;
    assert_eq!(page["total"], 0);
    let (_, page) = h
        .get(
            "/api/v1/sessions?browser=chrome%20on%20linux&user=user-b",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&page), ["sid-1"]);
    let (_, page) = h.get("/api/v1/sessions?browser=safari", Some(&admin)).await;
    assert_eq!(page["total"], 0);

    // Last seen: sid-0 is used again, so it is the most recently seen of the users'.
    h.clock.advance(Duration::from_secs(2));
    h.session(CONTOSO, "user-a", "sid-0").await;
    let (_, page) = h
        .get("/api/v1/sessions?sort=-lastSeen&name=user-", Some(&admin))
        .await;
    assert_eq!(ids(&page), ["sid-0", "sid-4", "sid-3", "sid-2", "sid-1"]);
    let (_, page) = h
        .get("/api/v1/sessions?sort=lastSeen&name=user-", Some(&admin))
        .await;
    assert_eq!(ids(&page), ["sid-1", "sid-2", "sid-3", "sid-4", "sid-0"]);

    // Cursor pages: every row once, while a session ends and another starts in between.
    let (_, first) = h
        .get("/api/v1/sessions?sort=started&limit=2", Some(&admin))
        .await;
    assert_eq!(ids(&first), ["sid-0", "sid-1"]);
    assert_eq!(first["total"], 6);
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let revoke = h
        .send(
            "POST",
            "/api/v1/sessions/sid-2/revoke",
            &admin,
            serde_json::json!({"reason": "test"}),
        )
        .await;
    assert_eq!(revoke.0, StatusCode::OK);
    h.session(CONTOSO, "user-d", "sid-new").await;
    let (_, second) = h
        .get(
            &format!("/api/v1/sessions?sort=started&limit=2&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&second), ["sid-3", "sid-4"]);
    let cursor = second["nextCursor"].as_str().unwrap().to_owned();
    let (_, third) = h
        .get(
            &format!("/api/v1/sessions?sort=started&limit=2&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&third), ["sid-admin-ann", "sid-new"]);
    assert_eq!(third["nextCursor"], Value::Null);

    // A tampered cursor, one of another query, cursor with offset, a bad range: 400.
    for bad in [
        format!("cursor={}x", &cursor[..cursor.len() - 3]),
        "cursor=%21%21".to_owned(),
        format!("sort=-started&cursor={cursor}"),
        format!("sort=started&name=u&cursor={cursor}"),
        format!("sort=started&offset=1&cursor={cursor}"),
        "ip=10.0.0.300".to_owned(),
        "sort=-lastseen".to_owned(),
        "groupBy=ip".to_owned(),
    ] {
        let (status, problem) = h
            .get(&format!("/api/v1/sessions?{bad}"), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(problem["detail"].is_string(), "{bad}");
    }
}

#[tokio::test]
async fn sessions_are_grouped_by_user() {
    let h = harness();
    for (i, user) in ["user-a", "user-b", "user-a", "user-a"].iter().enumerate() {
        h.session(CONTOSO, user, &format!("sid-{i}")).await;
        h.clock.advance(Duration::from_secs(1));
    }
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, page) = h
        .get(
            "/api/v1/sessions?groupBy=user&name=user-&sort=started",
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 2);
    let rows: Vec<(String, u64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().into(),
                u["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    // Oldest newest-start first: user-b (started at +1 s), then user-a (+3 s).
    assert_eq!(rows, [("user-b".into(), 1), ("user-a".into(), 3)]);
    assert_eq!(page["items"][1]["displayName"], "user-a@example.test");
    assert!(page["items"][1]["newestStart"].is_string());
    // One user a page, with cursors.
    let (_, first) = h
        .get("/api/v1/sessions?groupBy=user&limit=1", Some(&admin))
        .await;
    assert_eq!(first["total"], 3);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (status, second) = h
        .get(
            &format!("/api/v1/sessions?groupBy=user&limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(first["items"][0]["user"], second["items"][0]["user"]);
    // A grouped cursor does not page sessions.
    let (status, _) = h
        .get(
            &format!("/api/v1/sessions?limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
