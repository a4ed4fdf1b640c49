//! The embedded store's process stopped (SIGTERM, SIGKILL) right after a revocation: after the
//! restart the revocation holds.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use grantflow_e2e::process::Stop;
use serde_json::Value;

use crate::harness::{Fault, Got, Watcher, acknowledged, allowed, hold, now_secs, tally};

async fn embedded_store_restart_right_after_a_revocation(how: Stop) {
    let data = grantflow_e2e::temp_dir("data");
    let mut fault = Fault::start(&[
        "--store".into(),
        "embedded".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ])
    .await;
    let signed_in = now_secs() - 60;
    // Ann's laptop session is stolen; her phone is not. Cy's account is compromised (all
    // sessions). Bob is a bystander whose token has no auth_time (its session starts when
    // first seen, so an unchanged start after the restart shows the session itself survived).
    let laptop = fault
        .token("user-ann", Some("sid-ann-laptop"), Some(signed_in))
        .await;
    let phone = fault
        .token("user-ann", Some("sid-ann-phone"), Some(signed_in))
        .await;
    let cy = fault
        .token("user-cy", Some("sid-cy"), Some(signed_in))
        .await;
    let bob = fault.token("user-bob", Some("sid-bob"), None).await;
    for token in [&laptop, &phone, &cy, &bob] {
        assert_eq!(fault.got(token).await, Got::Allowed);
    }
    let bob_started = |sessions: &[Value]| {
        sessions
            .iter()
            .find(|s| s["id"] == "sid-bob")
            .map(|s| s["startedAt"].clone())
            .expect("Bob's session is live")
    };
    let bob_started_before = bob_started(&fault.admin_items("/api/v1/sessions").await);

    let watch_laptop = Watcher::start(&fault, &laptop);
    let watch_cy = Watcher::start(&fault, &cy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    acknowledged(
        fault
            .revoke_user("user-cy", None, "INC-1 account compromised")
            .await,
    )
    .await;
    let cy_acked = Instant::now();
    acknowledged(
        fault
            .revoke_session("sid-ann-laptop", "INC-2 stolen laptop")
            .await,
    )
    .await;
    let laptop_acked = Instant::now();
    // Right after the API's answer.
    let status = fault.extauthz.stop(how).await;
    let stopped_at = Instant::now();
    match how {
        Stop::Term => assert!(status.success(), "SIGTERM: a clean exit, got {status}"),
        Stop::Kill => assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}"),
    }
    let down = fault.got(&bob).await;
    assert!(
        matches!(down, Got::Other(503, _)),
        "Envoy refuses while extauthz is down: {down:?}"
    );
    fault.extauthz.restart().await;
    let restarted_at = Instant::now();
    assert_eq!(
        fault.first_answer(&bob).await,
        Got::Allowed,
        "a live session not revoked keeps working after the restart"
    );

    assert_eq!(fault.got(&laptop).await, Got::Revoked);
    assert_eq!(
        fault.page(&laptop).await,
        (401, "Your session was ended".into())
    );
    assert_eq!(fault.got(&phone).await, Got::Allowed, "Ann's other session");
    assert_eq!(
        fault.got(&cy).await,
        Got::Revoked,
        "auth_time before the revoke-all"
    );
    let cy_refreshed = fault.token("user-cy", Some("sid-cy-2"), None).await;
    assert_eq!(fault.got(&cy_refreshed).await, Got::SignInAgain);
    assert_eq!(
        bob_started(&fault.admin_items("/api/v1/sessions").await),
        bob_started_before,
        "Bob's session is the same one (its start did not move)"
    );
    let audit = fault.audit_actions().await;
    assert!(
        audit.contains(&"user.revoke".to_owned()) && audit.contains(&"session.revoke".to_owned()),
        "both revocations are in the audit trail after the restart: {audit:?}"
    );

    hold().await;
    let laptop_seen = watch_laptop.finish().await;
    let cy_seen = watch_cy.finish().await;
    let laptop_after = tally(&laptop_seen, laptop_acked, None);
    let cy_after = tally(&cy_seen, cy_acked, None);
    println!(
        "{how:?}: laptop before its revocation {:?}; after: {laptop_after:?}; Cy after: {cy_after:?}; \
         down {:?} (stop → ready)",
        tally(&laptop_seen, laptop_seen[0].0, Some(laptop_acked)),
        restarted_at - stopped_at,
    );
    assert!(
        allowed(&tally(&laptop_seen, laptop_seen[0].0, Some(laptop_acked))) > 0,
        "the watcher ran before the revocation"
    );
    assert!(
        laptop_after.get(&Got::Revoked).copied().unwrap_or(0) > 0,
        "the watcher ran after the restart"
    );
    assert_eq!(allowed(&laptop_after), 0, "allowed after the revocation");
    assert_eq!(allowed(&cy_after), 0, "allowed after the revoke-all");
}

/// SIGTERM right after the API acknowledged a session revocation and a revoke-all; restart on
/// the same data folder and ports: both still refused, other sessions (and their start) kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_sigterm_right_after_a_revocation_keeps_it_after_restart() {
    embedded_store_restart_right_after_a_revocation(Stop::Term).await;
}

/// The same with SIGKILL (`kill -9`): nothing is flushed at exit, the fsync before the answer
/// is all there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_sigkill_right_after_a_revocation_keeps_it_after_restart() {
    embedded_store_restart_right_after_a_revocation(Stop::Kill).await;
}
