//! Redis loses its data after a revocation (`FLUSHALL`, a restart without persistence): tokens
//! issued before the loss are refused.

use std::time::{Duration, Instant};

use grantflow_e2e::redis::{RedisServer, redis_cli};
use grantflow_e2e::stack::TENANT;

use crate::harness::{
    Fault, Got, Watcher, acknowledged, allowed, hold, next_second, now_secs, tally,
};

#[derive(Debug, Clone, Copy)]
enum Loss {
    Flushall,
    RestartWithoutPersistence,
}

async fn redis_loses_its_data_after_a_revocation(loss: Loss) {
    let mut redis = RedisServer::start().await;
    let fault = Fault::start(&[
        "--store".into(),
        "redis".into(),
        "--redis-url".into(),
        redis.url(),
    ])
    .await;
    // Issued a minute ago: JWT times are whole seconds, and a token issued within the second
    // in which the loss is found counts as issued after it.
    let issued = now_secs() - 60;
    let ann = fault
        .token_issued("user-ann", Some("sid-ann"), None, issued)
        .await;
    let bob = fault
        .token_issued("user-bob", Some("sid-bob"), None, issued)
        .await;
    // The first requests teach the process the tenant's generation marker.
    assert_eq!(fault.got(&ann).await, Got::Allowed);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    let watch_ann = Watcher::start(&fault, &ann);
    tokio::time::sleep(Duration::from_millis(200)).await;
    acknowledged(fault.revoke_session("sid-ann", "INC-3 stolen token").await).await;
    let acked = Instant::now();
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;

    let lost = Instant::now();
    match loss {
        Loss::Flushall => {
            assert!(redis_cli(redis.port, &["FLUSHALL"]).is_some(), "FLUSHALL");
        }
        // The harness's Redis runs with `--save '' --appendonly no`: it comes back empty.
        Loss::RestartWithoutPersistence => redis.restart().await,
    }
    // The next request the store answers finds the marker gone: Session expired.
    assert_eq!(fault.first_answer(&ann).await, Got::Expired);
    let found = Instant::now();
    assert_eq!(fault.page(&ann).await, (401, "Session expired".into()));
    // Every token issued before the loss must be replaced, revoked or not.
    assert_eq!(fault.got(&bob).await, Got::Expired);
    // Tokens issued after the loss work (a sign-in again). Issued in a later second than the
    // one in which the loss was found, so that they are after L under either reading of a
    // token issued within L's own second.
    next_second().await;
    let ann_again = fault.token("user-ann", Some("sid-ann-2"), None).await;
    assert_eq!(fault.got(&ann_again).await, Got::Allowed);
    let bob_again = fault.token("user-bob", Some("sid-bob"), None).await;
    assert_eq!(fault.got(&bob_again).await, Got::Allowed);

    let audit = fault.audit_actions().await;
    assert!(
        audit.contains(&"store.reset".to_owned()),
        "the audit trail has store.reset: {audit:?}"
    );
    assert!(
        fault
            .extauthz
            .log()
            .contains("the session store lost this tenant's data"),
        "the process logged the loss"
    );
    let ready = fault
        .http
        .get(fault.extauthz.admin_url("/readyz"))
        .send()
        .await
        .expect("/readyz answers");
    assert_eq!(ready.status(), 200, "a loss does not fail readiness");
    let ready = ready.text().await.unwrap_or_default();
    assert!(
        ready.contains(&format!("store reset: tenant {TENANT} at ")),
        "/readyz lists the loss: {ready}"
    );

    hold().await;
    let seen = watch_ann.finish().await;
    let after = tally(&seen, acked, None);
    println!(
        "{loss:?}: Ann after the revocation {after:?} (of which while Redis was lost and until found: {:?}); audit {audit:?}",
        tally(&seen, lost, Some(found))
    );
    assert!(
        after.get(&Got::Expired).copied().unwrap_or(0) > 0,
        "the watcher ran after the loss"
    );
    assert_eq!(allowed(&after), 0, "allowed after the revocation");
}

/// `FLUSHALL` after a session revocation: the tombstone is gone, the generation marker too;
/// the next check records L and refuses the revoked token (Session expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_after_a_revocation_refuses_tokens_issued_before_the_loss() {
    redis_loses_its_data_after_a_revocation(Loss::Flushall).await;
}

/// Redis killed and started again empty on the same port (`--save '' --appendonly no`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_after_a_revocation_refuses_tokens_issued_before_the_loss()
 {
    redis_loses_its_data_after_a_revocation(Loss::RestartWithoutPersistence).await;
}
