//! Sessions and users: listing and reading sessions, revoking a session or all of a user's,
//! reasons, and the blocked users a revoke-all or lock leaves, and lifting them.

use std::time::Duration;

use axum::http::StatusCode;
use grantflow_core::audit::{Action, Source};
use grantflow_core::clock::{Clock, rfc3339};
use grantflow_core::session::{EndReason, Verdict};
use grantflow_core::store::SessionStore;
use serde_json::{Value, json};

use crate::support::{CHROME_ON_LINUX, CONTOSO, FABRIKAM, START, detail, harness, ids, read_json};

#[tokio::test]
async fn sessions_are_listed_per_tenant_filtered_sorted_and_paginated() {
    let h = harness();
    h.listing_sessions().await;
    let admin = h.admin(CONTOSO, "admin-ann");

    let (status, page) = h.get("/api/v1/sessions?limit=100", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    // Newest first by default; the admin's own session is the newest.
    assert_eq!(
        ids(&page),
        ["sid-admin-ann", "sid-4", "sid-3", "sid-2", "sid-1", "sid-0"]
    );
    assert_eq!(page["total"], 6);
    assert_eq!(page["nextOffset"], Value::Null);
    let newest = &page["items"][1];
    assert_eq!(newest["user"], "user-a");
    assert_eq!(newest["displayName"], "user-a@example.test");
    assert_eq!(newest["clientIp"], "203.0.113.7");
    assert_eq!(newest["clientLabel"], "Chrome on Linux");
    // The store keeps the first 64 bytes (the label is of the whole user agent).
    assert_eq!(
        newest["userAgent"],
        grantflow_core::session::capped_user_agent(CHROME_ON_LINUX)
    );
    assert_eq!(newest["anchor"], "sid");
    assert_eq!(newest["startedAt"], "2026-09-21T14:13:24.000Z");
    assert_eq!(newest["ageSeconds"], 1);

    let (_, page) = h
        .get(
            "/api/v1/sessions?user=user-a&sort=started&limit=2",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&page), ["sid-0", "sid-2"]);
    assert_eq!(page["total"], 3);
    assert_eq!(page["nextOffset"], 2);
    let (_, page) = h
        .get(
            "/api/v1/sessions?user=user-a&sort=started&limit=2&offset=2",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&page), ["sid-4"]);
    assert_eq!(page["nextOffset"], Value::Null);

    for bad in ["sort=user", "limit=0", "limit=x", "offset=-1", "tenant=x"] {
        let (status, _) = h
            .get(&format!("/api/v1/sessions?{bad}"), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Fabrikam's administrator sees Fabrikam only.
    h.clock.advance(Duration::from_secs(1));
    let other = h.admin(FABRIKAM, "admin-fay");
    let (_, page) = h.get("/api/v1/sessions", Some(&other)).await;
    assert_eq!(ids(&page), ["sid-admin-fay", "sid-fabrikam"]);
}

#[tokio::test]
async fn one_session_by_id_and_another_tenants_id_is_not_found() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-contoso").await;
    h.session(FABRIKAM, "user-f", "sid-fabrikam").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, session) = h.get("/api/v1/sessions/sid-contoso", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["user"], "user-a");
    for id in ["sid-fabrikam", "no-such-session", "bad%20id"] {
        let (status, problem) = h.get(&format!("/api/v1/sessions/{id}"), Some(&admin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    }
}

#[tokio::test]
async fn revoking_a_session_needs_a_reason_stays_in_the_tenant_and_is_audited() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    h.session(FABRIKAM, "user-f", "sid-f").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";

    for body in [json!({}), json!({"reason": "   "}), json!({"reason": null})] {
        let (status, problem) = h.send("POST", uri, &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(detail(&problem).contains("reason"), "{problem}");
    }
    let (status, _) = read_json(h.call("POST", uri, Some(&admin), None, &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no body");
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "x", "extra": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields");
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "x".repeat(501)}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "too long");

    // Another tenant's session: 404, and it stays live.
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-f/revoke",
            &admin,
            json!({"reason": "probe"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.store.sessions(FABRIKAM).await.unwrap().len(), 1);
    assert!(h.store.audit(FABRIKAM, 10).await.unwrap().is_empty());

    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "  lost laptop\n INC-7 "})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, result) = read_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["sessionsRevoked"], 1);
    assert_eq!(
        h.session(CONTOSO, "user-a", "sid-a").await,
        Verdict::Deny(EndReason::Revoked)
    );

    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    let record = &audit[0];
    assert_eq!(record.id, result["auditId"].as_str().unwrap());
    assert_eq!(record.action, Action::SessionRevoke);
    assert_eq!(record.actor.id, "admin-ann");
    assert_eq!(
        record.actor.name.as_deref(),
        Some("admin-ann@72f988bf.test")
    );
    assert_eq!(record.source, Source::Dashboard);
    assert_eq!(record.reason.as_deref(), Some("lost laptop  INC-7"));
    assert_eq!(record.target.session.as_deref(), Some("sid-a"));
    assert_eq!(record.target.user.as_deref(), Some("user-a"));

    // An ended session is no longer found.
    let (status, _) = h
        .send("POST", uri, &admin, json!({"reason": "again"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reasons_lose_control_and_format_characters() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/sessions/sid-a/revoke";
    // Only invisible characters: no reason at all.
    let (status, problem) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "\u{200b}\u{202e}\u{feff} \u{0}"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("reason"), "{problem}");
    // A right-to-left override would make the audit trail read "offboarding" backwards from
    // here on; zero-width characters and NUL/CR/LF do not reach the trail either.
    let (status, _) = h
        .send(
            "POST",
            uri,
            &admin,
            json!({"reason": "\u{202e}gnidraobffo\u{202c} INC\u{200b}-9\u{0}\r\nok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit[0].reason.as_deref(), Some("gnidraobffo INC-9   ok"));
}

#[tokio::test]
async fn revoking_a_user_ends_every_session_optionally_locks_and_is_idempotent() {
    let h = harness();
    h.session(CONTOSO, "user-d", "sid-d-laptop").await;
    h.session(CONTOSO, "user-d", "sid-d-phone").await;
    h.session(CONTOSO, "user-e", "sid-e").await;
    h.session(FABRIKAM, "user-d", "sid-d-fabrikam").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let uri = "/api/v1/users/user-d/revoke";

    let (status, _) = h.send("POST", uri, &admin, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for lock in ["yesterday", "2020-01-01T00:00:00Z"] {
        let body = json!({"reason": "x", "lockUntil": lock});
        let (status, problem) = h.send("POST", uri, &admin, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{lock}");
        assert!(detail(&problem).contains("lockUntil"));
    }
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/bad%20user/revoke",
            &admin,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = h
        .call(
            "POST",
            uri,
            Some(&admin),
            Some(json!({"reason": "x"})),
            &[("idempotency-key", "not ok")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let revoke = || async {
        let body = json!({"reason": "INC-2041", "lockUntil": "2026-09-22T00:00:00.000Z"});
        let response = h
            .call(
                "POST",
                uri,
                Some(&admin),
                Some(body),
                &[("idempotency-key", "inc-2041-1")],
            )
            .await;
        read_json(response).await
    };
    let (status, first) = revoke().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["sessionsRevoked"], 2);
    let (_, again) = revoke().await;
    assert_eq!(again, first, "a retry answers the first outcome");
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "one audit record");
    assert_eq!(audit[0].action, Action::UserLock);
    assert_eq!(audit[0].source, Source::Api);
    assert_eq!(audit[0].target.user.as_deref(), Some("user-d"));
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("locked until 2026-09-22T00:00:00.000Z")
    );

    // Locked: no new session, even a fresh sign-in; other users and tenants untouched.
    h.clock.advance(Duration::from_secs(5));
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Locked {
            until: 1_790_035_200_000,
            message: None
        }
    );
    assert!(matches!(
        h.session(CONTOSO, "user-e", "sid-e").await,
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        h.session(FABRIKAM, "user-d", "sid-d-fabrikam").await,
        Verdict::Allow { .. }
    ));
}

#[tokio::test]
async fn revoke_all_answers_what_the_user_must_do_to_get_back_in() {
    let h = harness();
    h.session(CONTOSO, "user-d", "sid-d").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, answer) = h
        .send(
            "POST",
            "/api/v1/users/user-d/revoke",
            &admin,
            json!({"reason": "INC-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let watermark = rfc3339(START);
    let holds = rfc3339(START + 90 * 24 * 3600 * 1000);
    assert_eq!(
        answer["blocked"],
        json!({"user": "user-d", "notBefore": watermark, "lockUntil": null, "holdsUntil": holds})
    );
    let next = answer["nextStep"].as_str().unwrap();
    assert!(
        next.starts_with("The user must sign in again interactively"),
        "{next}"
    );
    assert!(
        next.contains(&format!("auth_time is after {watermark}")),
        "{next}"
    );
    assert!(
        next.contains(&format!(
            "Tokens without auth_time (or with an earlier one) are refused until {holds}"
        )),
        "{next}"
    );
    assert!(
        next.contains("DELETE /api/v1/users/user-d/revocation"),
        "{next}"
    );
    // As it says: without auth_time, refused (sign in again); signed in before or at the
    // revocation, refused; signed in after it, allowed.
    h.clock.advance(Duration::from_secs(10));
    let at = START / 1000;
    assert_eq!(
        h.signed_in(CONTOSO, "user-d", "sid-d2", None).await,
        Verdict::Deny(EndReason::Reauthenticate)
    );
    assert_eq!(
        h.signed_in(CONTOSO, "user-d", "sid-d3", Some(at)).await,
        Verdict::Deny(EndReason::Revoked)
    );
    assert!(matches!(
        h.signed_in(CONTOSO, "user-d", "sid-d4", Some(at + 5)).await,
        Verdict::Allow { .. }
    ));

    // With a lock: nothing until it ends, then the same rule.
    let lock = "2026-09-22T00:00:00.000Z";
    let (status, answer) = h
        .send(
            "POST",
            "/api/v1/users/user-l/revoke",
            &admin,
            json!({"reason": "INC-2", "lockUntil": lock}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["blocked"]["lockUntil"], lock);
    let next = answer["nextStep"].as_str().unwrap();
    assert!(
        next.starts_with(&format!(
            "The user is locked out: no token opens a session until {lock}"
        )),
        "{next}"
    );
    assert!(
        next.contains("After that, the user must sign in again interactively"),
        "{next}"
    );
    assert!(
        matches!(
            h.signed_in(CONTOSO, "user-l", "sid-l", Some(h.clock.now_secs()))
                .await,
            Verdict::Locked { message: None, .. }
        ),
        "locked: even a fresh sign-in is refused"
    );
}

#[tokio::test]
async fn blocked_users_are_listed_per_tenant_and_lifted_with_an_audit_record() {
    let h = harness();
    let ann = h.admin(CONTOSO, "admin-ann");
    let fabrikam = h.admin(FABRIKAM, "admin-fay");
    h.session(CONTOSO, "user-d", "sid-d").await;
    let revoke = |token: String, user: &'static str, body: Value| {
        let h = &h;
        async move {
            let uri = format!("/api/v1/users/{user}/revoke");
            let (status, answer) = h.send("POST", &uri, &token, body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    revoke(
        ann.clone(),
        "user-d",
        json!({"reason": "INC-1 stolen laptop"}),
    )
    .await;
    h.clock.advance(Duration::from_secs(60));
    let lock = "2026-09-30T00:00:00.000Z";
    revoke(
        ann.clone(),
        "user-e",
        json!({"reason": "INC-2", "lockUntil": lock}),
    )
    .await;
    revoke(fabrikam.clone(), "user-f", json!({"reason": "INC-3"})).await;

    // Each tenant sees its own, newest revocation first.
    let (status, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["user"], "user-e");
    assert_eq!(items[0]["lockUntil"], lock);
    assert_eq!(items[0]["notBefore"], rfc3339(START + 60_000));
    assert_eq!(items[0]["revocation"]["reason"], "INC-2");
    assert_eq!(items[1]["user"], "user-d");
    assert_eq!(items[1]["notBefore"], rfc3339(START));
    assert_eq!(items[1]["lockUntil"], Value::Null);
    assert_eq!(
        items[1]["holdsUntil"],
        rfc3339(START + 90 * 24 * 3600 * 1000)
    );
    assert_eq!(
        items[1]["revocation"]["actor"], "admin-ann@72f988bf.test",
        "{page}"
    );
    assert_eq!(items[1]["revocation"]["reason"], "INC-1 stolen laptop");
    let (_, page) = h.get("/api/v1/blocked-users", Some(&fabrikam)).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["user"], "user-f");
    let (_, page) = h.get("/api/v1/blocked-users?limit=1", Some(&ann)).await;
    assert_eq!(page["nextOffset"], 1);
    let (status, _) = h.get("/api/v1/blocked-users?tenant=x", Some(&ann)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no tenant parameter");

    // Lifting needs a reason, only reaches the caller's tenant and blocked users.
    let lift = |user: &str| format!("/api/v1/users/{user}/revocation");
    for body in [json!({}), json!({"reason": "  "})] {
        let (status, problem) = h.send("DELETE", &lift("user-d"), &ann, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&problem).contains("reason"), "{problem}");
    }
    for user in ["user-f", "user-x", "bad%20user"] {
        let (status, problem) = h
            .send("DELETE", &lift(user), &ann, json!({"reason": "probe"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{user}");
        assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    }
    assert_eq!(h.store.blocked_users(FABRIKAM).await.unwrap().len(), 1);
    assert_eq!(h.store.audit(FABRIKAM, 10).await.unwrap().len(), 1);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 2);
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Deny(EndReason::Reauthenticate),
        "still blocked"
    );

    let response = h
        .call(
            "DELETE",
            &lift("user-d"),
            Some(&ann),
            Some(json!({"reason": "INC-1 closed: password reset"})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, lifted) = read_json(response).await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert_eq!(lifted["user"], "user-d");
    assert_eq!(lifted["lifted"]["notBefore"], rfc3339(START));
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit.len(), 3);
    let record = &audit[0];
    assert_eq!(record.id, lifted["auditId"].as_str().unwrap());
    assert_eq!(record.action, Action::UserUnblock);
    assert_eq!(record.actor.id, "admin-ann");
    assert_eq!(record.source, Source::Dashboard);
    assert_eq!(record.target.user.as_deref(), Some("user-d"));
    assert_eq!(record.target.session, None);
    assert_eq!(
        record.reason.as_deref(),
        Some("INC-1 closed: password reset")
    );
    assert_eq!(record.sessions_revoked, None);
    assert_eq!(
        record.detail.as_deref(),
        Some(format!("lifted revoke-all watermark of {}", rfc3339(START)).as_str())
    );
    // In force at once: a token without auth_time opens a session; the ended one stays ended.
    assert!(matches!(
        h.session(CONTOSO, "user-d", "sid-d-new").await,
        Verdict::Allow { .. }
    ));
    assert_eq!(
        h.session(CONTOSO, "user-d", "sid-d").await,
        Verdict::Deny(EndReason::Revoked)
    );
    let (_, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["user"], "user-e");
    // A second lift finds nothing to lift and writes nothing.
    let (status, _) = h
        .send("DELETE", &lift("user-d"), &ann, json!({"reason": "again"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 3);

    // A lock is lifted too, and the record says what was lifted; the audit filter finds it.
    let (status, lifted) = h
        .send(
            "DELETE",
            &lift("user-e"),
            &ann,
            json!({"reason": "INC-2 closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert!(matches!(
        h.signed_in(CONTOSO, "user-e", "sid-e", Some(START / 1000))
            .await,
        Verdict::Allow { .. }
    ));
    let (status, page) = h.get("/api/v1/audit?action=user.unblock", Some(&ann)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 2);
    assert_eq!(
        page["items"][0]["detail"],
        format!(
            "lifted revoke-all watermark of {} and lock until {lock}",
            rfc3339(START + 60_000)
        )
    );
    let (_, page) = h.get("/api/v1/blocked-users", Some(&ann)).await;
    assert_eq!(page["total"], 0);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn revocation_writes_are_timed_by_operation() {
    let h = harness();
    h.session(CONTOSO, "user-a", "sid-a").await;
    let admin = h.admin(CONTOSO, "admin-ann");
    for uri in [
        "/api/v1/sessions/sid-a/revoke",
        "/api/v1/users/user-b/revoke",
    ] {
        let (status, _) = h
            .send("POST", uri, &admin, json!({"reason": "INC-9"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let response = h.call("GET", "/metrics", None, None, &[]).await;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let metrics = String::from_utf8(bytes.to_vec()).unwrap();
    for operation in ["session_revoke", "user_revoke"] {
        let line = format!(
            "grantflow_revocation_write_duration_seconds_count{{operation=\"{operation}\"}} 1\n"
        );
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
}
