//! The tenant's session rules through a real Envoy with tokens from a real OIDC issuer: the
//! idle timeout (the Session expired page names the cause) and the session limit per user
//! (`RefuseNew`: a clear 403 page; `EndOldest`: the oldest session's token is refused, the new
//! one allowed).

use std::time::Duration;

use grantflow_core::audit::Action;
use grantflow_core::policy::{OnLimit, Policy, PolicySource};
use grantflow_e2e::stack::{Stack, TENANT};
use serde_json::Value;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn rules(idle: Option<Duration>, limit: Option<u32>, on_limit: OnLimit) -> Policy {
    Policy {
        max_session_age: Duration::from_secs(3600),
        idle_timeout: idle,
        max_sessions_per_user: limit,
        on_limit,
        source: PolicySource::Admin,
    }
}

async fn html(stack: &Stack, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let page = stack.get(Some(token), BROWSER_ACCEPT, &[]).await;
    let status = page.status().as_u16();
    let headers = page.headers().clone();
    (status, headers, page.text().await.unwrap())
}

async fn problem(stack: &Stack, token: &str) -> Value {
    let response = stack.get(Some(token), "application/json", &[]).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_gets_the_session_expired_page_naming_the_idle_timeout() {
    let stack = Stack::start().await;
    let policy = rules(Some(Duration::from_secs(300)), None, OnLimit::RefuseNew);
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    let token = stack.token("user-idle", "sid-idle").await;
    assert_eq!(stack.status(&token).await, 200);
    stack.clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(stack.status(&token).await, 200, "used within 5 minutes");
    stack.clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(stack.status(&token).await, 200, "each request counts");
    stack.clock.advance(Duration::from_secs(5 * 60));

    let (status, headers, html) = html(&stack, &token).await;
    assert_eq!(status, 401);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert!(html.contains("<h1>Session expired</h1>"), "{html}");
    assert!(
        html.contains("Your session ended after 5 minutes without activity."),
        "the page names the cause: {html}"
    );
    let problem = problem(&stack, &token).await;
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/session-idle"
    );
    assert_eq!(problem["status"], 401);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("after 5 minutes without activity"),
        "{problem}"
    );
    // Ended for good: a silently refreshed token of the same session stays refused.
    let refreshed = stack.token("user-idle", "sid-idle").await;
    assert_eq!(stack.status(&refreshed).await, 401);
    assert!(stack.store.sessions(TENANT).await.unwrap().is_empty());
    // A new sign-in (another sid) works.
    let fresh = stack.token("user-idle", "sid-idle-2").await;
    assert_eq!(stack.status(&fresh).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_beyond_the_limit_gets_a_clear_page_and_is_audited() {
    let stack = Stack::start().await;
    let policy = rules(None, Some(1), OnLimit::RefuseNew);
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    let first = stack.token("user-limit", "sid-limit-1").await;
    assert_eq!(stack.status(&first).await, 200);
    let second = stack.token("user-limit", "sid-limit-2").await;

    let (status, headers, html) = html(&stack, &second).await;
    assert_eq!(status, 403);
    assert!(
        headers.get("www-authenticate").is_none(),
        "not a credential problem"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(html.contains("<h1>Session limit reached</h1>"), "{html}");
    assert!(
        html.contains("You already have 1 active session, the most your administrator allows"),
        "{html}"
    );
    assert!(html.contains("ask an administrator"), "{html}");
    let problem = problem(&stack, &second).await;
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/session-limit"
    );
    assert_eq!(problem["status"], 403);

    // The session held keeps working; nothing was stored for the refused one.
    assert_eq!(stack.status(&first).await, 200);
    let sessions = stack.store.sessions(TENANT).await.unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["sid-limit-1"]);
    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    let refused: Vec<_> = audit
        .iter()
        .filter(|r| r.action == Action::SessionRefuse)
        .collect();
    assert_eq!(refused.len(), 2, "one per refused request: {audit:?}");
    assert_eq!(refused[0].target.session.as_deref(), Some("sid-limit-2"));
    assert_eq!(refused[0].target.user.as_deref(), Some("user-limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_oldest_refuses_the_old_token_and_allows_the_new_one() {
    let stack = Stack::start().await;
    let policy = rules(None, Some(1), OnLimit::EndOldest);
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    let old = stack.token("user-evict", "sid-evict-1").await;
    assert_eq!(stack.status(&old).await, 200);
    stack.clock.advance(Duration::from_secs(1));
    let new = stack.token("user-evict", "sid-evict-2").await;
    assert_eq!(stack.status(&new).await, 200);

    let (status, _, html) = html(&stack, &old).await;
    assert_eq!(status, 401);
    assert!(html.contains("<h1>Your session was ended</h1>"), "{html}");
    assert_eq!(stack.status(&new).await, 200);
    let sessions = stack.store.sessions(TENANT).await.unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["sid-evict-2"]);
    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    let ended = audit
        .iter()
        .find(|r| r.action == Action::SessionRevoke)
        .expect("the ended session is audited");
    assert_eq!(ended.target.session.as_deref(), Some("sid-evict-1"));
    assert_eq!(ended.reason.as_deref(), Some("session limit"));
    assert_eq!(ended.sessions_revoked, Some(1));
}

/// On Redis with two replicas (the rules decided inside `check.lua`): a new session on one
/// replica ends the oldest, refused on the other at once; the new one, left unused, ends as
/// idle with the page naming the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_rules_hold_across_replicas() {
    let redis_server = grantflow_e2e::redis::RedisServer::start().await;
    let stack = Stack::start_with(grantflow_e2e::stack::StackOptions {
        store: grantflow_core::store::StoreConfig::Redis(grantflow_core::store::RedisSettings {
            urls: vec![redis_server.url()],
            cluster: false,
            timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            ca_pem: None,
            wait_replicas: 0,
        }),
        replicas: 2,
        ..Default::default()
    })
    .await;
    let policy = rules(Some(Duration::from_secs(300)), Some(1), OnLimit::EndOldest);
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    let old = stack.token("user-redis", "sid-redis-1").await;
    assert_eq!(stack.status_via(0, &old).await, 200);
    stack.clock.advance(Duration::from_secs(1));
    let new = stack.token("user-redis", "sid-redis-2").await;
    assert_eq!(stack.status_via(1, &new).await, 200);
    assert_eq!(stack.status_via(0, &old).await, 401, "ended by the limit");
    assert_eq!(stack.status_via(0, &new).await, 200);

    stack.clock.advance(Duration::from_secs(5 * 60));
    let page = stack.get_via(1, Some(&new), BROWSER_ACCEPT, &[]).await;
    assert_eq!(page.status(), 401);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Your session ended after 5 minutes without activity."),
        "{html}"
    );
    assert_eq!(
        stack.status_via(0, &new).await,
        401,
        "ended for every replica"
    );
    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert!(
        audit.iter().any(|r| r.action == Action::SessionRevoke
            && r.target.session.as_deref() == Some("sid-redis-1")
            && r.reason.as_deref() == Some("session limit")),
        "{audit:?}"
    );
}
