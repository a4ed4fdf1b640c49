//! The overview (`GET /api/v1/overview`): live sessions from the store, and per minute the
//! sessions started and the refusals by reason that the request path (`Authorizer`) counted.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use grantflow_extauthz::authorize::Authorizer;
use grantflow_extauthz::metrics::Metrics;
use grantflow_extauthz::request::{Credential, HttpRequest};
use serde_json::Value;

use crate::support::{CONTOSO, FABRIKAM, harness};

#[tokio::test]
async fn the_overview_counts_what_the_request_path_decided_per_minute() {
    let h = harness();
    let authorizer = Authorizer {
        validator: h.validator.clone(),
        store: h.store.clone(),
        store_timeout: Duration::from_secs(1),
        metrics: Arc::new(Metrics::default()),
        activity: h.activity.clone(),
    };
    let request = |credential: Credential| HttpRequest {
        credential,
        accept: None,
        user_agent: None,
        client_ip: Some("203.0.113.9".parse().unwrap()),
        identity_headers: Vec::new(),
    };
    let bearer = |token: String| request(Credential::Bearer(token));
    // This minute: two sessions start, one is used again, a token is not valid.
    let alice = h.user(CONTOSO, "user-a");
    authorizer.authorize(&bearer(alice.clone())).await;
    authorizer.authorize(&bearer(alice.clone())).await;
    authorizer
        .authorize(&bearer(h.user(CONTOSO, "user-b")))
        .await;
    authorizer.authorize(&bearer("not-a-token".into())).await;
    authorizer
        .authorize(&bearer(h.user(FABRIKAM, "user-f")))
        .await;
    h.clock.advance(Duration::from_secs(60));
    // Next minute: Alice's session is revoked, then her token is refused twice.
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-user-a/revoke",
            &admin,
            serde_json::json!({"reason": "incident"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    authorizer.authorize(&bearer(alice.clone())).await;
    authorizer.authorize(&bearer(alice)).await;

    let (status, overview) = h.get("/api/v1/overview", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    // user-b and the administrator's own session.
    assert_eq!(overview["liveSessions"], 2);
    assert_eq!(overview["perReplica"], true);
    let minutes = overview["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let sum = |field: &str| -> u64 { minutes.iter().map(|m| m[field].as_u64().unwrap()).sum() };
    let (before, now) = (&minutes[58], &minutes[59]);
    assert_eq!(before["started"], 2, "{before}");
    assert_eq!(before["invalidToken"], 1);
    assert_eq!(now["revoked"], 2, "{now}");
    assert_eq!(now["signInAgain"], 0);
    // The administrator's own session started through the admin API, not the request path.
    assert_eq!(sum("started"), 2);
    assert_eq!(
        sum("expired") + sum("unavailable") + sum("tooManySessions"),
        0
    );
    assert!(
        now["start"].as_str().unwrap() > before["start"].as_str().unwrap(),
        "oldest first"
    );
    let reasons: Vec<&str> = overview["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"invalidToken") && !reasons.contains(&"started"));

    // Another tenant's administrator sees only that tenant's sessions and starts.
    let other = h.admin(FABRIKAM, "admin-fay");
    let (_, overview) = h.get("/api/v1/overview", Some(&other)).await;
    assert_eq!(overview["liveSessions"], 2);
    let minutes: &Vec<Value> = overview["minutes"].as_array().unwrap();
    assert_eq!(minutes[58]["started"], 1);
    assert_eq!(minutes[59]["revoked"], 0);
    // The replica's unverified tokens show for every tenant.
    assert_eq!(minutes[58]["invalidToken"], 1);

    let (status, _) = h.get("/api/v1/overview", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
