//! The tenant's settings (its session policy): edited, audited, applied, and Kubernetes wins.

use std::time::Duration;

use axum::http::StatusCode;
use grantflow_core::audit::{Action, Source};
use grantflow_core::policy::{OnLimit, Policy, PolicySource};
use grantflow_core::session::{EndReason, Verdict};
use grantflow_core::store::SessionStore;
use serde_json::json;

use crate::support::{CONTOSO, FABRIKAM, detail, harness, read_json};

#[tokio::test]
async fn tenant_settings_are_edited_audited_applied_and_kubernetes_wins() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let (status, policy) = h.get("/api/v1/policy", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        policy,
        json!({"maxSessionAgeSeconds": 900, "source": "default", "managedBy": null,
               "editable": true, "minSeconds": 60, "maxSeconds": 86400,
               "idleTimeoutSeconds": null, "minIdleSeconds": 60,
               "maxSessionsPerUser": null, "maxSessionsPerUserCap": 1000,
               "onLimit": "RefuseNew"})
    );

    h.session(CONTOSO, "user-old", "sid-old").await;
    h.clock.advance(Duration::from_secs(5 * 60));
    let out_of_range = "between 1 minute and 24 hours";
    for (body, what) in [
        (json!({"maxSessionAgeSeconds": 120}), "reason"),
        (
            json!({"maxSessionAgeSeconds": 30, "reason": "x"}),
            out_of_range,
        ),
        (
            json!({"maxSessionAgeSeconds": 90000, "reason": "x"}),
            out_of_range,
        ),
        (json!({"reason": "x"}), "maxSessionAgeSeconds"),
        (
            json!({"maxSessionAgeSeconds": "2m", "reason": "x"}),
            "invalid type",
        ),
    ] {
        let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // The handler's own words in `detail`; what the JSON parser said in `parser`.
        let said = format!(
            "{} {}",
            detail(&problem),
            problem["parser"].as_str().unwrap_or("")
        );
        assert!(said.contains(what), "{body}: {problem}");
    }
    let response = h
        .call(
            "PUT",
            "/api/v1/policy",
            Some(&admin),
            Some(json!({"maxSessionAgeSeconds": 120, "reason": "CAB-12 tighten"})),
            &[("x-grantflow-client", "dashboard")],
        )
        .await;
    let (status, policy) = read_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy["maxSessionAgeSeconds"], 120);
    assert_eq!(policy["source"], "admin");
    // Applies at once: the 5-minute-old session is over the new age.
    assert_eq!(
        h.session(CONTOSO, "user-old", "sid-old").await,
        Verdict::Deny(EndReason::Expired)
    );
    let audit = h.store.audit(CONTOSO, 10).await.unwrap();
    assert_eq!(audit[0].action, Action::PolicyUpdate);
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("max session age 15m -> 2m")
    );
    assert_eq!(audit[0].reason.as_deref(), Some("CAB-12 tighten"));
    assert_eq!(audit[0].actor.id, "admin-ann");
    assert_eq!(audit[0].source, Source::Dashboard);
    // Fabrikam is untouched.
    assert_eq!(
        h.store.policy(FABRIKAM).await.unwrap().max_session_age,
        Duration::from_secs(900)
    );

    // A tenant managed by a Kubernetes SessionPolicy refuses edits.
    let managed = Policy {
        max_session_age: Duration::from_secs(600),
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Kubernetes("security/contoso".into()),
    };
    h.store
        .set_policy(CONTOSO, managed.clone(), None)
        .await
        .unwrap();
    // (The admin's session is 5 minutes old, past the 2 minutes set above: sign in again.)
    let admin = h.sign(&h.claims(CONTOSO, "admin-ann", "sid-admin-ann-2", true));
    let (_, policy) = h.get("/api/v1/policy", Some(&admin)).await;
    assert_eq!(policy["source"], "kubernetes");
    assert_eq!(policy["managedBy"], "security/contoso");
    assert_eq!(policy["editable"], false);
    let body = json!({"maxSessionAgeSeconds": 3600, "reason": "x"});
    let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["title"], "Managed by Kubernetes");
    assert!(detail(&problem).contains("security/contoso"));
    assert_eq!(h.store.policy(CONTOSO).await.unwrap(), managed);
}

#[tokio::test]
async fn the_idle_timeout_and_session_limit_are_set_kept_checked_and_audited() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    for (body, what) in [
        (
            json!({"maxSessionAgeSeconds": 600, "idleTimeoutSeconds": 59, "reason": "x"}),
            "idle timeout must be between 1 minute and the maximum session age",
        ),
        (
            json!({"maxSessionAgeSeconds": 600, "idleTimeoutSeconds": 601, "reason": "x"}),
            "idle timeout must be between 1 minute and the maximum session age",
        ),
        (
            json!({"maxSessionAgeSeconds": 600, "maxSessionsPerUser": 0, "reason": "x"}),
            "between 1 and 1000",
        ),
        (
            json!({"maxSessionAgeSeconds": 600, "maxSessionsPerUser": 1001, "reason": "x"}),
            "between 1 and 1000",
        ),
        (
            json!({"maxSessionAgeSeconds": 600, "onLimit": "KickEveryone", "reason": "x"}),
            "unknown variant",
        ),
    ] {
        let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let said = format!(
            "{} {}",
            detail(&problem),
            problem["parser"].as_str().unwrap_or("")
        );
        assert!(said.contains(what), "{body}: {problem}");
    }
    let body = json!({"maxSessionAgeSeconds": 3600, "idleTimeoutSeconds": 300,
                      "maxSessionsPerUser": 2, "onLimit": "EndOldest", "reason": "CAB-7"});
    let (status, policy) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["idleTimeoutSeconds"], 300);
    assert_eq!(policy["maxSessionsPerUser"], 2);
    assert_eq!(policy["onLimit"], "EndOldest");
    let stored = h.store.policy(CONTOSO).await.unwrap();
    assert_eq!(stored.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(stored.max_sessions_per_user, Some(2));
    assert_eq!(stored.on_limit, OnLimit::EndOldest);
    let audit = h.store.audit(CONTOSO, 1).await.unwrap();
    assert_eq!(
        audit[0].detail.as_deref(),
        Some(
            "max session age 15m -> 1h; idle timeout off -> 5m; \
             max sessions per user off -> 2 (EndOldest)"
        )
    );
    // A field left out keeps its value; null turns it off.
    let body = json!({"maxSessionAgeSeconds": 1800, "reason": "CAB-8"});
    let (status, policy) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            policy["idleTimeoutSeconds"].clone(),
            policy["maxSessionsPerUser"].clone()
        ),
        (json!(300), json!(2))
    );
    let body = json!({"maxSessionAgeSeconds": 1800, "idleTimeoutSeconds": null,
                      "maxSessionsPerUser": null, "reason": "CAB-9"});
    let (status, policy) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy["idleTimeoutSeconds"], json!(null));
    assert_eq!(policy["maxSessionsPerUser"], json!(null));
    assert_eq!(
        policy["onLimit"], "EndOldest",
        "kept, though off without a limit"
    );
    // A lowered max age below a kept idle timeout is refused.
    let body = json!({"maxSessionAgeSeconds": 1800, "idleTimeoutSeconds": 900, "reason": "x"});
    assert_eq!(
        h.send("PUT", "/api/v1/policy", &admin, body).await.0,
        StatusCode::OK
    );
    let body = json!({"maxSessionAgeSeconds": 600, "reason": "x"});
    let (status, problem) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

/// The administrator's own sessions obey the tenant's rules: a second sign-in beyond a limit of
/// one is refused with 403 `session-limit`, and an idle session with 401.
#[tokio::test]
async fn the_administrators_own_sessions_obey_the_session_rules() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let body = json!({"maxSessionAgeSeconds": 3600, "idleTimeoutSeconds": 300,
                      "maxSessionsPerUser": 1, "reason": "CAB-10"});
    let (status, _) = h.send("PUT", "/api/v1/policy", &admin, body).await;
    assert_eq!(status, StatusCode::OK);
    let elsewhere = h.sign(&h.claims(CONTOSO, "admin-ann", "sid-laptop", true));
    let (status, problem) = h.get("/api/v1/policy", Some(&elsewhere)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/session-limit"
    );
    assert!(
        detail(&problem).contains("You already have 1 active session,"),
        "{problem}"
    );
    assert_eq!(
        h.get("/api/v1/policy", Some(&admin)).await.0,
        StatusCode::OK
    );
    h.clock.advance(Duration::from_secs(300));
    let (status, problem) = h.get("/api/v1/policy", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(detail(&problem).contains("without activity"), "{problem}");
}
