//! Locks that explain themselves, end to end: an administrator locks a user with a message
//! through the admin API; the user's next request through the real Envoy, with tokens from the
//! real OIDC issuer, gets the refusal page (HTML-escaped) or problem+json with the message;
//! the dashboard's list shows it; lifting it lets a new sign-in through; both steps are
//! audited.

use std::time::Duration;

use grantflow_core::clock::{Clock, rfc3339};
use grantflow_e2e::stack::{SIGN_IN_URL, Stack};
use serde_json::{Value, json};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const USER: &str = "user-lena";

/// An administrator token of the test tenant from the test issuer.
async fn admin_token(stack: &Stack) -> String {
    let mut claims = stack.claims("admin-ann", Some("sid-admin-ann"));
    claims["roles"] = json!(["GrantFlow.SessionAdmin"]);
    stack.issuer.token(claims).await
}

/// A token of a sign-in that happened now (its `auth_time`).
async fn signed_in_now(stack: &Stack, sid: &str) -> String {
    let mut claims = stack.claims(USER, Some(sid));
    claims["auth_time"] = stack.clock.now_secs().into();
    stack.issuer.token(claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_with_a_message_is_shown_escaped_through_envoy_and_lifting_it_lets_a_new_sign_in_through()
 {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("http://{}{path}", stack.admin_addr(0));
    let admin = admin_token(&stack).await;
    let before = signed_in_now(&stack, "sid-lena-1").await;
    assert_eq!(stack.status(&before).await, 200);

    // Lock for an hour, with a message holding markup, an ampersand and a control character
    // (cleaned away by the API).
    // On a whole minute: the page shows hours and minutes.
    let until_ms = stack.clock.now_ms() / 60_000 * 60_000 + 2 * 3_600_000;
    let until = rfc3339(until_ms);
    let response = http
        .post(api(&format!("/api/v1/users/{USER}/revoke")))
        .bearer_auth(&admin)
        .json(&json!({
            "reason": "INC-2041 credential theft",
            "lockUntil": until,
            "message": "INC-2041 <script>alert(1)</script> & call\u{7} the desk",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    // The control character became a space.
    let message = "INC-2041 <script>alert(1)</script> & call  the desk";
    assert_eq!(answer["sessionsRevoked"], 1, "{answer}");
    assert_eq!(answer["blocked"]["message"], message, "{answer}");

    // The user's browser, with the ended session and with a fresh sign-in: the 403 page, the
    // message escaped.
    stack.clock.advance(Duration::from_secs(2));
    let during = signed_in_now(&stack, "sid-lena-2").await;
    for token in [&before, &during] {
        let page = stack.get(Some(token), BROWSER_ACCEPT, &[]).await;
        assert_eq!(page.status(), 403);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = page.text().await.unwrap();
        assert!(body.contains("<h1>Access locked</h1>"), "{body}");
        let time = until.get(11..16).unwrap();
        let expected = format!(
            "Your access is locked until {} {time} UTC: INC-2041 \
             &lt;script&gt;alert(1)&lt;/script&gt; &amp; call  the desk",
            &until[..10]
        );
        assert!(body.contains(&expected), "{expected}\n{body}");
        assert!(!body.contains("<script>"), "{body}");
        assert!(body.contains(&format!("href=\"{SIGN_IN_URL}\"")), "{body}");
    }
    // An API client: problem+json with the end and the message.
    let problem = stack.get(Some(&during), "application/json", &[]).await;
    assert_eq!(problem.status(), 403);
    assert_eq!(
        problem.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = problem.json().await.unwrap();
    assert_eq!(problem["type"], "https://grantflow.io/problems/user-locked");
    assert_eq!(problem["message"], message);
    assert_eq!(problem["locked_until"], until.as_str());
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("UTC: {message}")),
        "{problem}"
    );

    // The blocked users list shows the lock with its end and message.
    let blocked: Value = http
        .get(api("/api/v1/blocked-users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lena = &blocked["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["user"] == USER)
        .unwrap_or_else(|| panic!("{blocked}"));
    assert_eq!(lena["lockUntil"], until.as_str());
    assert_eq!(lena["message"], message);

    // Lifted: a new sign-in works at once; the refused token of before stays refused (its
    // session was ended).
    let response = http
        .delete(api(&format!("/api/v1/users/{USER}/revocation")))
        .bearer_auth(&admin)
        .json(&json!({"reason": "false positive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stack.clock.advance(Duration::from_secs(2));
    let after = signed_in_now(&stack, "sid-lena-3").await;
    assert_eq!(stack.status(&after).await, 200);
    assert_eq!(stack.status(&before).await, 401);

    // Audited: the lock with its message, then the lift naming what it lifted.
    let audit: Value = http
        .get(api("/api/v1/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert_eq!(items[0]["action"], "user.unblock");
    assert_eq!(items[0]["target"]["user"], USER);
    assert_eq!(items[0]["reason"], "false positive");
    let lifted = items[0]["detail"].as_str().unwrap();
    assert!(
        lifted.contains(&format!("lock until {} ({message})", rfc3339(until_ms))),
        "{lifted}"
    );
    assert_eq!(items[1]["action"], "user.lock");
    assert_eq!(items[1]["actor"]["id"], "admin-ann");
    assert_eq!(
        items[1]["detail"],
        format!("locked until {}: {message}", rfc3339(until_ms))
    );
}
