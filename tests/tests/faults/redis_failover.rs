//! Redis failover after a revocation, with `redis_wait_replicas 1`: a revocation the replica
//! confirmed survives; an unconfirmed one is lost until the call is retried, or kept once the
//! replica caught up.

use std::time::{Duration, Instant};

use grantflow_e2e::loopback;
use grantflow_e2e::redis::{RedisServer, redis_cli};
use grantflow_e2e::stack::TENANT;
use grantflow_e2e::tcp_proxy::TcpProxy;
use serde_json::Value;

use crate::harness::{
    Fault, Got, PROBLEMS, RECOVERY, Watcher, acknowledged, allowed, hold, now_secs, tally,
};

/// A primary and a replica that replicates through a proxy (so the link can be cut), and a
/// proxy in front that extauthz connects to (so a failover can move it).
struct Replicated {
    primary: RedisServer,
    replica: RedisServer,
    link: TcpProxy,
    front: TcpProxy,
    /// The new primary's replica after a failover.
    spare: Option<RedisServer>,
}

impl Replicated {
    async fn start() -> Replicated {
        let primary = RedisServer::start().await;
        let replica = RedisServer::start().await;
        let link = TcpProxy::start(loopback(primary.port)).await;
        let port = link.port().to_string();
        assert!(redis_cli(replica.port, &["REPLICAOF", "127.0.0.1", &port]).is_some());
        wait_for(
            || info(replica.port, "master_link_status:up"),
            "the replica is in sync through the link",
        )
        .await;
        let front = TcpProxy::start(loopback(primary.port)).await;
        Replicated {
            primary,
            replica,
            link,
            front,
            spare: None,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.front.port())
    }

    fn has(&self, port: u16, key: &str) -> bool {
        redis_cli(port, &["EXISTS", key]).is_some_and(|n| n.trim() == "1")
    }

    /// The primary dies; the replica is promoted and gets a replica of its own; clients are
    /// moved to it.
    async fn failover(&mut self) {
        self.primary.stop().await;
        assert!(redis_cli(self.replica.port, &["REPLICAOF", "NO", "ONE"]).is_some());
        wait_for(
            || info(self.replica.port, "role:master"),
            "the replica is promoted",
        )
        .await;
        self.spare = Some(RedisServer::start_replica_of(&self.replica).await);
        self.front.retarget(loopback(self.replica.port));
    }
}

fn info(port: u16, line: &str) -> bool {
    redis_cli(port, &["INFO", "replication"]).is_some_and(|info| info.contains(line))
}

async fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + RECOVERY;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn replicated_fault(redis: &Replicated) -> Fault {
    Fault::start(&[
        "--store".into(),
        "redis".into(),
        "--redis-url".into(),
        redis.url(),
        "--redis-wait-replicas".into(),
        "1".into(),
        "--store-write-timeout".into(),
        "2s".into(),
    ])
    .await
}

fn key(suffix: &str) -> String {
    format!("gf:{{{TENANT}}}:{suffix}")
}

/// Ann's and Bob's tokens (issued a minute ago; Ann's with that `auth_time` when
/// `ann_signed_in`), each with a live session, and a watcher sending Ann's from now on.
async fn ann_and_bob_with_ann_watched(
    fault: &Fault,
    ann_signed_in: bool,
) -> (String, String, Watcher) {
    let issued = now_secs() - 60;
    let ann = fault
        .token_issued(
            "user-ann",
            Some("sid-ann"),
            ann_signed_in.then_some(issued),
            issued,
        )
        .await;
    let bob = fault
        .token_issued("user-bob", Some("sid-bob"), None, issued)
        .await;
    assert_eq!(fault.got(&ann).await, Got::Allowed);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    let watch = Watcher::start(fault, &ann);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (ann, bob, watch)
}

/// With `redis_wait_replicas: 1`, a 200 means the replica has it: promoted after the
/// primary dies, it refuses the revoked session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_a_wait_confirmed_revocation_keeps_it_refused() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, false).await;
    // 200: the replica acknowledged it (WAIT 1).
    acknowledged(fault.revoke_session("sid-ann", "INC-4").await).await;
    let acked = Instant::now();
    assert!(
        redis.has(redis.replica.port, &key("end:sid-ann")),
        "the tombstone is on the replica"
    );
    hold().await;
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    let audit = fault.audit_actions().await;
    assert!(audit.contains(&"session.revoke".to_owned()), "{audit:?}");
    assert!(
        !audit.contains(&"store.reset".to_owned()),
        "the replica had the generation marker: no loss: {audit:?}"
    );
    hold().await;
    let seen = watch.finish().await;
    let after = tally(&seen, acked, None);
    println!("confirmed revocation, failover: Ann after the revocation {after:?}");
    assert!(after.get(&Got::Revoked).copied().unwrap_or(0) > 0);
    assert_eq!(allowed(&after), 0, "allowed after the revocation");
}

/// Cuts the replication link, revokes all of Ann's sessions: 503 store-not-replicated.
async fn unconfirmed_revoke_all(
    fault: &Fault,
    redis: &Replicated,
    idempotency_key: &str,
) -> Instant {
    redis.link.cut();
    wait_for(
        || info(redis.primary.port, "connected_slaves:0"),
        "the primary lost its replica",
    )
    .await;
    let response = fault
        .revoke_user(
            "user-ann",
            Some(idempotency_key),
            "INC-5 account compromised",
        )
        .await;
    let answered = Instant::now();
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"],
        format!("{PROBLEMS}store-not-replicated"),
        "{problem}"
    );
    assert!(redis.has(redis.primary.port, &key("u:user-ann")));
    assert!(
        !redis.has(redis.replica.port, &key("u:user-ann")),
        "the replica did not get the watermark"
    );
    answered
}

/// The replica is cut off before a revoke-all: 503 `store-not-replicated`; in effect on the
/// primary; the primary dies and the replica is promoted: the revocation is lost (the session
/// is allowed again, no `store.reset`: the marker came along) until the call is retried
/// (the same Idempotency-Key is new to the new primary, which applies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_an_unconfirmed_revocation_loses_it_until_the_call_is_retried() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, true).await;

    let unconfirmed = unconfirmed_revoke_all(&fault, &redis, "end-all-ann-1").await;
    // In effect on the primary.
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;
    let failover_began = Instant::now();
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    let failed_over = Instant::now();
    // The promoted replica never had the revocation: Ann's session is live there again, and
    // no loss is noticed (the generation marker is the same).
    assert_eq!(
        fault.got(&ann).await,
        Got::Allowed,
        "an unconfirmed revocation is lost in a failover"
    );
    hold().await;
    let audit = fault.audit_actions().await;
    assert!(
        !audit.contains(&"user.revoke".to_owned()) && !audit.contains(&"store.reset".to_owned()),
        "neither the revocation's audit record nor a store.reset: {audit:?}"
    );
    // The retry the 503 asks for, with the same Idempotency-Key: the new primary has never
    // seen the key, so it applies the revocation (and its replica confirms it).
    let retry_sent = Instant::now();
    let retried = fault
        .revoke_user(
            "user-ann",
            Some("end-all-ann-1"),
            "INC-5 account compromised",
        )
        .await;
    assert!(
        retried.headers().get("idempotent-replayed").is_none(),
        "applied anew, not replayed"
    );
    let body = acknowledged(retried).await;
    let acked = Instant::now();
    assert_eq!(body["sessionsRevoked"], 1, "{body}");
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    hold().await;

    let seen = watch.finish().await;
    let on_primary = tally(&seen, unconfirmed, Some(failover_began));
    let lost = tally(&seen, failed_over, Some(retry_sent));
    let after = tally(&seen, acked, None);
    println!(
        "unconfirmed revocation: on the old primary {on_primary:?}; after the failover until the retry {lost:?}; \
         during the failover {:?}; after the retry's 200 {after:?}",
        tally(&seen, failover_began, Some(failed_over))
    );
    assert_eq!(allowed(&on_primary), 0, "in effect on the primary");
    assert!(allowed(&lost) > 0, "lost in the failover until retried");
    assert_eq!(
        allowed(&after),
        0,
        "allowed after the retry was acknowledged"
    );
}

/// The same 503, but the link comes back and the replica catches up before the failover:
/// the revocation holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_an_unconfirmed_revocation_keeps_it_once_the_replica_caught_up() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, true).await;

    let unconfirmed = unconfirmed_revoke_all(&fault, &redis, "end-all-ann-2").await;
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;
    // The link comes back; the replica catches up before the failover.
    redis.link.retarget(loopback(redis.primary.port));
    wait_for(
        || redis.has(redis.replica.port, &key("u:user-ann")),
        "the replica caught up",
    )
    .await;
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    let audit = fault.audit_actions().await;
    assert!(audit.contains(&"user.revoke".to_owned()), "{audit:?}");
    hold().await;

    let seen = watch.finish().await;
    let after = tally(&seen, unconfirmed, None);
    println!("unconfirmed revocation, replica caught up, failover: Ann after the 503 {after:?}");
    assert_eq!(
        allowed(&after),
        0,
        "allowed after the (unconfirmed) revocation"
    );
}
