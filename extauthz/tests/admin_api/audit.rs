//! The audit trail: per tenant, filtered and paginated, and one structured log line per
//! revocation.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{CONTOSO, FABRIKAM, harness};

#[tokio::test]
async fn the_audit_trail_is_per_tenant_filtered_and_paginated() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    for i in 0..5 {
        h.session(CONTOSO, &format!("user-{i}"), &format!("sid-{i}"))
            .await;
        let (status, _) = h
            .send(
                "POST",
                &format!("/api/v1/sessions/sid-{i}/revoke"),
                &admin,
                json!({"reason": format!("reason {i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        h.clock.advance(Duration::from_millis(10));
    }
    let user_1 = "/api/v1/users/user-1/revoke";
    let (status, _) = h
        .send("POST", user_1, &admin, json!({"reason": "all of user 1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Fabrikam's trail is its own.
    let other = h.admin(FABRIKAM, "admin-fay");
    let (status, _) = h
        .send("POST", user_1, &other, json!({"reason": "fabrikam"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, page) = h.get("/api/v1/audit?limit=4", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 6);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["items"][0]["action"], "user.revoke");
    assert_eq!(page["items"][0]["reason"], "all of user 1");
    assert_eq!(page["items"][0]["source"], "api");
    assert_eq!(
        page["items"][0]["actor"],
        json!({"kind": "admin", "id": "admin-ann", "name": "admin-ann@72f988bf.test"})
    );
    assert_eq!(page["items"][1]["reason"], "reason 4");
    assert_eq!(page["nextOffset"], 4);
    let (_, rest) = h.get("/api/v1/audit?limit=4&offset=4", Some(&admin)).await;
    let reasons: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["reason 1", "reason 0"]);
    assert_eq!(rest["nextOffset"], Value::Null);

    let (_, by_user) = h.get("/api/v1/audit?user=user-1", Some(&admin)).await;
    assert_eq!(by_user["total"], 2);
    let (_, by_action) = h
        .get("/api/v1/audit?action=session.revoke", Some(&admin))
        .await;
    assert_eq!(by_action["total"], 5);
    let (status, _) = h
        .get("/api/v1/audit?action=session.delete", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, theirs) = h.get("/api/v1/audit", Some(&other)).await;
    assert_eq!(theirs["total"], 1);
    assert_eq!(theirs["items"][0]["reason"], "fabrikam");
}

/// Collects everything written to it.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON log lines of target `audit` of this whole test binary. A global subscriber, set
/// once: a thread-local one would race with callsites other tests register concurrently.
fn audit_log() -> Lines {
    static CAPTURED: OnceLock<Lines> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(move || writer.clone())
                .with_env_filter("audit=info")
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber");
            lines
        })
        .clone()
}

#[tokio::test]
async fn every_revocation_is_one_structured_log_line() {
    // A tenant of its own, so other tests' records are told apart.
    const TENANT: &str = "44444444-5555-4666-8777-888888888888";
    let lines = audit_log();
    let h = harness();
    h.session(TENANT, "user-a", "sid-a").await;
    let admin = h.admin(TENANT, "admin-ann");
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/sessions/sid-a/revoke",
            &admin,
            json!({"reason": "stolen token"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .send(
            "POST",
            "/api/v1/users/user-b/revoke",
            &admin,
            json!({"reason": "offboarding"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["target"] == "audit")
        .map(|line| {
            serde_json::from_str::<Value>(line["fields"]["audit"].as_str().unwrap()).unwrap()
        })
        .filter(|record| record["tenant"] == TENANT)
        .collect();
    assert_eq!(records.len(), 2, "one line per revocation, not two: {text}");
    assert_eq!(records[0]["action"], "session.revoke");
    assert_eq!(records[0]["actor"]["id"], "admin-ann");
    assert_eq!(records[0]["target"]["session"], "sid-a");
    assert_eq!(records[0]["reason"], "stolen token");
    assert_eq!(records[0]["sessionsRevoked"], 1);
    assert_eq!(records[1]["action"], "user.revoke");
    assert_eq!(records[1]["target"]["user"], "user-b");
    assert_eq!(records[1]["sessionsRevoked"], 0);
}
