//! `Idempotency-Key`: a replay changes nothing, another request with the key is refused.

use std::time::Instant;

use grantflow_e2e::process::Stop;
use serde_json::Value;

use crate::harness::{Fault, Got, PROBLEMS, Watcher, acknowledged, allowed, hold, now_secs, tally};

/// A replayed revoke-all (same Idempotency-Key, same request) answers the first outcome with
/// `Idempotent-Replayed: true`; the key with another user or reason is 422 and changes
/// nothing (that user stays allowed through Envoy); one audit record; the same after kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replayed_answers_the_first_outcome_and_reused_for_another_user_changes_nothing()
 {
    let data = grantflow_e2e::temp_dir("data");
    let mut fault = Fault::start(&["--data-dir".into(), data.path().display().to_string()]).await;
    let signed_in = now_secs() - 60;
    let eve = fault
        .token("user-eve", Some("sid-eve"), Some(signed_in))
        .await;
    let fay = fault
        .token("user-fay", Some("sid-fay"), Some(signed_in))
        .await;
    assert_eq!(fault.got(&eve).await, Got::Allowed);
    assert_eq!(fault.got(&fay).await, Got::Allowed);
    let watch_eve = Watcher::start(&fault, &eve);
    let watch_fay = Watcher::start(&fault, &fay);
    hold().await;

    const KEY: &str = "end-all-incident-7";
    let first = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = acknowledged(first).await;
    let acked = Instant::now();
    assert_eq!(first["sessionsRevoked"], 1, "{first}");

    // The same request again (a retried call): the first answer, nothing changes.
    let replay = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert_replayed(replay, &first).await;

    // The key with another request: another user, or the same user with another reason.
    assert_mismatch(fault.revoke_user("user-fay", Some(KEY), "INC-7").await).await;
    assert_mismatch(fault.revoke_user("user-eve", Some(KEY), "INC-8").await).await;
    assert_eq!(fault.got(&fay).await, Got::Allowed, "Fay was not revoked");
    assert_eq!(fault.got(&eve).await, Got::Revoked);

    // The same after kill -9 and a restart on the data folder: the key's record is durable.
    fault.extauthz.stop(Stop::Kill).await;
    fault.extauthz.restart().await;
    assert_eq!(fault.first_answer(&fay).await, Got::Allowed);
    let replay = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert_replayed(replay, &first).await;
    assert_mismatch(fault.revoke_user("user-fay", Some(KEY), "INC-7").await).await;
    assert_eq!(fault.got(&fay).await, Got::Allowed, "Fay was not revoked");
    assert_eq!(fault.got(&eve).await, Got::Revoked);

    let records = fault.admin_items("/api/v1/audit?limit=200").await;
    let revokes: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "user.revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "one audit record: {revokes:?}");
    assert_eq!(revokes[0]["target"]["user"], "user-eve");
    assert_eq!(revokes[0]["id"], first["auditId"]);
    hold().await;

    let eve_seen = watch_eve.finish().await;
    let fay_seen = watch_fay.finish().await;
    let eve_after = tally(&eve_seen, acked, None);
    let fay_after = tally(&fay_seen, acked, None);
    println!("idempotency: Eve after her revocation {eve_after:?}; Fay meanwhile {fay_after:?}");
    assert_eq!(allowed(&eve_after), 0, "allowed after the revocation");
    assert!(
        !fay_after.contains_key(&Got::Revoked) && !fay_after.contains_key(&Got::SignInAgain),
        "Fay was never refused as revoked: {fay_after:?}"
    );
    assert!(allowed(&fay_after) > 0);
}

/// A 200 marked `Idempotent-Replayed: true` with the first call's outcome.
async fn assert_replayed(response: reqwest::Response, first: &Value) {
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let body = acknowledged(response).await;
    assert_eq!(body["auditId"], first["auditId"], "{body}");
    assert_eq!(body["sessionsRevoked"], first["sessionsRevoked"], "{body}");
}

/// 422 `idempotency-key-mismatch`.
async fn assert_mismatch(response: reqwest::Response) {
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        format!("{PROBLEMS}idempotency-key-mismatch"),
        "{problem}"
    );
}
