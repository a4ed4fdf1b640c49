//! Many replicas on one Redis: a revocation or policy change made through one replica is
//! enforced on the very next request through any other, and a Redis that fails refuses
//! requests (503) instead of allowing them, recovering by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use grantflow_core::clock::Clock;
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::revocation::RevocationTarget;
use grantflow_core::store::{RedisSettings, StoreConfig};
use grantflow_e2e::redis::{RedisCluster, RedisServer};
use grantflow_e2e::stack::{Stack, StackOptions, TENANT};

fn redis(urls: Vec<String>, cluster: bool, timeout: Duration) -> StoreConfig {
    StoreConfig::Redis(RedisSettings {
        urls,
        cluster,
        timeout,
        write_timeout: Duration::from_secs(2),
        ca_pem: None,
        wait_replicas: 0,
    })
}

async fn two_replicas(redis_server: &RedisServer) -> Stack {
    Stack::start_with(StackOptions {
        store: redis(vec![redis_server.url()], false, Duration::from_secs(1)),
        replicas: 2,
        ..StackOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_replica_is_enforced_by_the_other() {
    let redis_server = RedisServer::start().await;
    let stack = two_replicas(&redis_server).await;
    let laptop = stack.token("user-ann", "sid-ann-laptop").await;
    let phone = stack.token("user-ann", "sid-ann-phone").await;
    for token in [&laptop, &phone] {
        assert_eq!(stack.status_via(0, token).await, 200);
        assert_eq!(stack.status_via(1, token).await, 200);
    }
    // Through replica B's store…
    let revocation = stack.others[0].store.clone();
    let outcome = revocation
        .revoke(&revocation_of(RevocationTarget::Session(
            "sid-ann-laptop".into(),
        )))
        .await
        .unwrap();
    assert_eq!(outcome.sessions_revoked, 1);
    // …the very next request through replica A is refused.
    assert_eq!(stack.status_via(0, &laptop).await, 401);
    assert_eq!(stack.status_via(1, &phone).await, 200);
    // All of the user's sessions, through A; enforced on B.
    stack.clock.advance(Duration::from_secs(1));
    let outcome = stack
        .revoke(
            RevocationTarget::User {
                user: "user-ann".into(),
                lock_until: None,
                message: None,
            },
            "INC-7",
        )
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(stack.status_via(1, &phone).await, 401);
}

fn revocation_of(target: RevocationTarget) -> grantflow_core::revocation::Revocation {
    grantflow_core::revocation::Revocation {
        tenant: TENANT.into(),
        target,
        reason: "stolen laptop".into(),
        actor: grantflow_core::audit::Actor {
            kind: grantflow_core::audit::ActorKind::Admin,
            id: "admin".into(),
            name: None,
        },
        source: grantflow_core::audit::Source::Api,
        idempotency_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_allowed_after_the_revoke_call_returns() {
    let redis_server = RedisServer::start().await;
    let stack = Arc::new(two_replicas(&redis_server).await);
    let token = Arc::new(stack.token("user-bea", "sid-bea").await);
    assert_eq!(stack.status(&token).await, 200);

    const CLIENTS: usize = 4;
    const MAX_REQUESTS_PER_CLIENT: usize = 400;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (stack, token, stop) = (stack.clone(), token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            // (when the request was sent, its status)
            let mut seen = Vec::new();
            for n in 0..MAX_REQUESTS_PER_CLIENT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = started.elapsed();
                let status = stack.status_via((client + n) % 2, &token).await;
                seen.push((sent, status));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .revoke(
            RevocationTarget::User {
                user: "user-bea".into(),
                lock_until: None,
                message: None,
            },
            "INC-8",
        )
        .await;
    let returned = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut before, mut after, mut allowed_after) = (0, 0, 0);
    for client in clients {
        for (sent, status) in client.await.unwrap() {
            if sent < returned {
                before += 1;
                continue;
            }
            after += 1;
            assert!(
                status == 401,
                "a request sent after the revocation returned got {status}"
            );
            if status == 200 {
                allowed_after += 1;
            }
        }
    }
    println!(
        "requests before the revocation returned: {before}, after: {after}, allowed after: {allowed_after}"
    );
    assert!(
        before > 0 && after > 0,
        "load ran on both sides of the revocation"
    );
    assert_eq!(allowed_after, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_max_age_refuses_older_sessions_on_every_replica() {
    let redis_server = RedisServer::start().await;
    let stack = two_replicas(&redis_server).await;
    let old = stack.token("user-cid", "sid-cid-old").await;
    assert_eq!(stack.status_via(0, &old).await, 200);
    stack.clock.advance(Duration::from_secs(180));
    let young = stack.token("user-dan", "sid-dan-young").await;
    assert_eq!(stack.status_via(1, &young).await, 200);
    let policy = Policy {
        max_session_age: Duration::from_secs(120),
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Admin,
    };
    stack.store.set_policy(TENANT, policy, None).await.unwrap();
    assert_eq!(
        stack.status_via(1, &old).await,
        401,
        "older than the new max age"
    );
    assert_eq!(stack.status_via(0, &young).await, 200);
    assert_eq!(stack.status_via(1, &young).await, 200);
}

/// Every request of a batch, with its status; never allows.
async fn statuses(stack: &Stack, token: &str, n: usize) -> Vec<u16> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(stack.status(token).await);
    }
    all
}

/// The first answer that is not 503 (Redis still away), within 20 s.
async fn first_answer(stack: &Stack, token: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stack.status(token).await;
        if status != 503 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no answer but 503 within 20 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn recovers(stack: &Stack, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stack.status(token).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "while Redis is away the answer is 503");
        assert!(
            Instant::now() < deadline,
            "no recovery within 20 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_or_frozen_refuses_with_503_and_recovers_by_itself() {
    let mut redis_server = RedisServer::start().await;
    let stack = Stack::start_with(StackOptions {
        store: redis(vec![redis_server.url()], false, Duration::from_millis(50)),
        ..StackOptions::default()
    })
    .await;
    let token = stack.token("user-eve", "sid-eve").await;
    assert_eq!(stack.status(&token).await, 200);

    redis_server.stop().await;
    let started = Instant::now();
    let stopped = statuses(&stack, &token, 20).await;
    println!(
        "Redis stopped: 20 requests refused in {:?}",
        started.elapsed()
    );
    assert!(
        stopped.iter().all(|s| *s == 503),
        "stopped Redis: {stopped:?}"
    );
    redis_server.restart().await;
    // Restarted without persistence, Redis lost the tenant's data: once it answers, the
    // generation marker is found gone, and the token issued before the loss is refused
    // (Session expired), never allowed. A token issued after the loss starts a session.
    assert_eq!(
        first_answer(&stack, &token).await,
        401,
        "a token issued before the loss"
    );
    stack.clock.advance(Duration::from_secs(2));
    let token = stack.token("user-eve", "sid-eve-after").await;
    recovers(&stack, &token).await;

    redis_server.freeze();
    let started = Instant::now();
    let frozen = statuses(&stack, &token, 10).await;
    println!(
        "Redis frozen: 10 requests refused in {:?}",
        started.elapsed()
    );
    redis_server.thaw();
    assert!(frozen.iter().all(|s| *s == 503), "frozen Redis: {frozen:?}");
    recovers(&stack, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_node_refuses_its_tenants_and_serves_the_others() {
    let mut cluster = RedisCluster::start().await;
    let stack = Stack::start_with(StackOptions {
        store: redis(cluster.urls(), true, Duration::from_millis(100)),
        ..StackOptions::default()
    })
    .await;
    // Two tenants whose keys live on different nodes.
    let mut tenants: Vec<(String, usize)> = Vec::new();
    while tenants.len() < 2 {
        let tenant = uuid::Uuid::new_v4().to_string();
        let node = cluster.node_of(&format!("gf:{{{tenant}}}:policy"));
        if tenants.iter().all(|(_, n)| *n != node) {
            tenants.push((tenant, node));
        }
    }
    let mut tokens = Vec::new();
    for (tenant, _) in &tenants {
        let mut claims = stack.claims("user-fay", Some(&format!("sid-{tenant}")));
        claims["tid"] = tenant.as_str().into();
        claims["iss"] = format!("https://login.microsoftonline.com/{tenant}/v2.0").into();
        let token = stack.issuer.token(claims).await;
        assert_eq!(stack.status(&token).await, 200);
        tokens.push(token);
    }
    let (dead, alive) = (&tokens[0], &tokens[1]);
    cluster.nodes[tenants[0].1].stop().await;
    let now = stack.clock.now_ms();
    let mut dead_statuses = Vec::new();
    let mut alive_statuses = Vec::new();
    for _ in 0..10 {
        dead_statuses.push(stack.status(dead).await);
        alive_statuses.push(stack.status(alive).await);
    }
    println!("dead node: {dead_statuses:?}; live node: {alive_statuses:?} (clock {now})");
    assert!(
        dead_statuses.iter().all(|s| *s == 503),
        "keys on the dead node: {dead_statuses:?}"
    );
    assert!(
        alive_statuses.iter().all(|s| *s == 200),
        "keys on live nodes: {alive_statuses:?}"
    );
}
