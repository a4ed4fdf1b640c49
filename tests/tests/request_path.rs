//! The request path through a real Envoy with tokens from a real OIDC issuer.

use std::time::Duration;

use grantflow_core::clock::Clock;
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::revocation::RevocationTarget;
use grantflow_e2e::stack::{SIGN_IN_URL, Stack, TENANT};
use serde_json::Value;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_carries_identity_and_forged_headers_are_stripped() {
    let stack = Stack::start().await;
    let token = stack.token("user-alice", "sid-alice-1").await;
    let response = stack
        .get(
            Some(&token),
            "application/json",
            &[
                ("x-grantflow-user", "someone-else"),
                ("x-grantflow-tenant", "another-tenant"),
                ("x-grantflow-admin", "true"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["x-grantflow-tenant"], serde_json::json!([TENANT]));
    assert_eq!(seen["x-grantflow-user"], serde_json::json!(["user-alice"]));
    assert_eq!(
        seen["x-grantflow-session"],
        serde_json::json!(["sid-alice-1"])
    );
    assert!(
        seen.get("x-grantflow-admin").is_none(),
        "forged header reached upstream: {seen}"
    );

    let sessions = stack.store.sessions(TENANT).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].user, "user-alice");
    assert_eq!(sessions[0].client_ip, Some("127.0.0.1".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_invalid_tokens_are_refused() {
    let stack = Stack::start().await;
    let response = stack.get(None, "application/json", &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.headers()["cache-control"], "no-store");

    let response = stack.get(Some("not.a.jwt"), "application/json", &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // An oversized token (over extauthz's 16 KiB limit, under Envoy's header limit) and a
    // non-bearer scheme are refused, not crashed on.
    let huge = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "A".repeat(20 * 1024));
    let response = stack.get(Some(&huge), "application/json", &[]).await;
    assert_eq!(response.status(), 401);
    let basic = stack
        .get(
            None,
            "application/json",
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await;
    assert_eq!(basic.status(), 401);

    // Signed by the issuer but for another audience, and for a tenant the issuer does not name.
    let mut claims = stack.claims("user-bob", Some("sid-bob"));
    claims["aud"] = "api://someone-else".into();
    assert_eq!(stack.status(&stack.issuer.token(claims).await).await, 401);
    let mut claims = stack.claims("user-bob", Some("sid-bob"));
    claims["tid"] = "00000000-0000-0000-0000-000000000000".into();
    assert_eq!(stack.status(&stack.issuer.token(claims).await).await, 401);
    // Expired at the issuer.
    let expired = stack
        .issuer
        .token_for(stack.claims("user-bob", Some("sid-bob")), -3600)
        .await;
    assert_eq!(stack.status(&expired).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_past_max_age_is_refused_with_a_page_for_browsers_and_problem_for_apis() {
    let stack = Stack::start().await;
    let policy = Policy {
        max_session_age: Duration::from_secs(60),
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Kubernetes("e2e/short".into()),
    };
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    let token = stack.token("user-carol", "sid-carol").await;
    assert_eq!(stack.status(&token).await, 200);
    stack.clock.advance(Duration::from_secs(59));
    assert_eq!(stack.status(&token).await, 200);
    stack.clock.advance(Duration::from_secs(2));

    let page = stack.get(Some(&token), BROWSER_ACCEPT, &[]).await;
    assert_eq!(page.status(), 401);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Session expired</h1>"), "{html}");
    assert!(
        html.contains(SIGN_IN_URL),
        "the page links to sign-in: {html}"
    );

    let problem = stack.get(Some(&token), "application/json", &[]).await;
    assert_eq!(problem.status(), 401);
    assert_eq!(
        problem.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = problem.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/session-expired"
    );
    assert_eq!(problem["status"], 401);

    // A silently refreshed token of the expired session (same sid) cannot start it again.
    let refreshed = stack.token("user-carol", "sid-carol").await;
    assert_eq!(stack.status(&refreshed).await, 401);
    // A fresh sign-in (new sid) works.
    let fresh = stack.token("user-carol", "sid-carol-2").await;
    assert_eq!(stack.status(&fresh).await, 200);
    // "Sign in again" in a browser that keeps its Entra sign-in session keeps the sid too:
    // a token whose auth_time is after the session ended starts a new one; a refresh of a
    // sign-in from before the end does not.
    let signed_in_at = |secs: i64| {
        let mut claims = stack.claims("user-dan", Some("sid-dan"));
        claims["auth_time"] = secs.into();
        claims
    };
    let first_sign_in = stack.clock.now_secs();
    let dan = stack.issuer.token(signed_in_at(first_sign_in)).await;
    assert_eq!(stack.status(&dan).await, 200);
    stack.clock.advance(Duration::from_secs(61));
    assert_eq!(stack.status(&dan).await, 401);
    let dan_refreshed = stack.issuer.token(signed_in_at(first_sign_in)).await;
    assert_eq!(stack.status(&dan_refreshed).await, 401);
    let dan_again = stack
        .issuer
        .token(signed_in_at(stack.clock.now_secs()))
        .await;
    assert_eq!(stack.status(&dan_again).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_or_a_user_refuses_the_very_next_request() {
    let stack = Stack::start().await;
    let laptop = stack.token("user-dave", "sid-dave-laptop").await;
    let phone = stack.token("user-dave", "sid-dave-phone").await;
    let erin = stack.token("user-erin", "sid-erin").await;
    for token in [&laptop, &phone, &erin] {
        assert_eq!(stack.status(token).await, 200);
    }

    let one = stack
        .revoke(
            RevocationTarget::Session("sid-dave-laptop".into()),
            "lost laptop",
        )
        .await;
    assert_eq!(one.sessions_revoked, 1);
    let page = stack.get(Some(&laptop), BROWSER_ACCEPT, &[]).await;
    assert_eq!(page.status(), 401);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<h1>Your session was ended</h1>")
    );
    assert_eq!(stack.status(&phone).await, 200);

    stack.clock.advance(Duration::from_secs(2));
    let all = stack
        .revoke(
            RevocationTarget::User {
                user: "user-dave".into(),
                lock_until: None,
                message: None,
            },
            "INC-2041",
        )
        .await;
    assert_eq!(
        all.sessions_revoked, 1,
        "the phone session was the one still live"
    );
    assert_eq!(stack.status(&phone).await, 401);
    assert_eq!(stack.status(&erin).await, 200, "other users are untouched");
    // A token authenticated before the revocation cannot open a new session, whatever its
    // `sid`; nor can one that does not say when its user signed in (a later `iat` proves
    // nothing: every silent refresh moves it)…
    let now = grantflow_core::clock::Clock::now_secs(&stack.clock);
    let mut stale = stack.claims("user-dave", Some("sid-dave-new"));
    stale["auth_time"] = (now - 10).into();
    assert_eq!(stack.status(&stack.issuer.token(stale).await).await, 401);
    stack.clock.advance(Duration::from_secs(2));
    let refreshed = stack.token("user-dave", "sid-dave-refreshed").await;
    let page = stack.get(Some(&refreshed), BROWSER_ACCEPT, &[]).await;
    assert_eq!(page.status(), 401);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<h1>Sign in again</h1>")
    );
    // …but a fresh sign-in afterwards works.
    let mut fresh = stack.claims("user-dave", Some("sid-dave-fresh"));
    fresh["auth_time"] = grantflow_core::clock::Clock::now_secs(&stack.clock).into();
    let fresh = stack.issuer.token(fresh).await;
    assert_eq!(stack.status(&fresh).await, 200);

    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].reason.as_deref(), Some("INC-2041"));
    assert_eq!(audit[1].target.session.as_deref(), Some("sid-dave-laptop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_at_the_issuer_is_picked_up() {
    let stack = Stack::start().await;
    let before = stack.token("user-frank", "sid-frank-1").await;
    assert_eq!(stack.status(&before).await, 200);
    stack.issuer.rotate().await;
    // Signed with a key extauthz has never seen: the unknown kid triggers a JWKS refetch.
    let after = stack.token("user-frank", "sid-frank-2").await;
    assert_eq!(stack.status(&after).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_closed_when_extauthz_is_down() {
    let mut stack = Stack::start().await;
    let token = stack.token("user-grace", "sid-grace").await;
    assert_eq!(stack.status(&token).await, 200);
    stack.stop_extauthz().await;
    let mut allowed = 0;
    for _ in 0..20 {
        let status = stack.status(&token).await;
        assert_eq!(
            status, 503,
            "Envoy must refuse when extauthz is unreachable"
        );
        if status == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 0);
}
