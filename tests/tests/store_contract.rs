//! One contract, every store: the memory store, a standalone Redis and a 3-master Redis
//! Cluster answer the same cases with the same verdicts (DESIGN §3, §8).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use grantflow_core::audit::{Action, Actor, ActorKind, Source};
use grantflow_core::clock::{Clock, ManualClock, SystemClock};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::revocation::{Revocation, RevocationOutcome, RevocationTarget};
use grantflow_core::session::{AccessRequest, EndReason, Verdict};
use grantflow_core::store::{
    ChangeEvent, ChangeStream, MemoryStore, RedisSettings, RedisStore, SessionStore, StoreError,
};
use grantflow_e2e::redis::{RedisCluster, RedisServer};

const MINUTE: Duration = Duration::from_secs(60);
const EXPIRED: Verdict = Verdict::Deny(EndReason::Expired);
const REVOKED: Verdict = Verdict::Deny(EndReason::Revoked);
/// A write no replica acknowledged, with `wait_replicas: 1`.
const NOT_REPLICATED: StoreError = StoreError::NotReplicated {
    acknowledged: 0,
    wanted: 1,
};
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

struct Ctx {
    store: Arc<dyn SessionStore>,
    clock: ManualClock,
}

impl Ctx {
    fn tenant(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn identity(&self, tenant: &str, user: &str, sid: Option<&str>) -> Identity {
        let now = self.clock.now_secs();
        Identity {
            tenant: tenant.into(),
            user: user.into(),
            display_name: Some(format!("{user}@contoso.test")),
            session: SessionKey::derive(sid, Some(&format!("uti-{user}-{now}")), "raw"),
            auth_time: None,
            issued_at: Some(now),
            not_before: Some(now),
            expires_at: now + 3600,
            roles: Vec::new(),
        }
    }

    async fn check(&self, identity: &Identity) -> Verdict {
        let request = AccessRequest {
            identity: Arc::new(identity.clone()),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some(CHROME.into()),
        };
        self.store.check(&request).await.expect("the store answers")
    }

    async fn revoke(
        &self,
        tenant: &str,
        target: RevocationTarget,
        key: Option<&str>,
    ) -> (u32, String) {
        let outcome = self
            .store
            .revoke(&revocation_of(tenant, target, key))
            .await
            .expect("the store revokes");
        (outcome.sessions_revoked, outcome.audit_id)
    }

    /// A revocation of `target` without an idempotency key, as the store answers it.
    async fn try_revoke(
        &self,
        tenant: &str,
        target: RevocationTarget,
    ) -> Result<RevocationOutcome, StoreError> {
        self.store
            .revoke(&revocation_of(tenant, target, None))
            .await
    }

    async fn set_max_age(&self, tenant: &str, age: Duration) {
        let policy = Policy {
            max_session_age: age,
            source: PolicySource::Kubernetes("ns/p".into()),
        };
        self.store
            .set_policy(tenant, policy, None)
            .await
            .expect("policy set");
    }
}

fn user(user: &str) -> RevocationTarget {
    RevocationTarget::User {
        user: user.into(),
        lock_until: None,
    }
}

/// The event of `user`'s session `session` in `tenant` ending for `reason`.
fn ended(tenant: &str, session: &str, user: &str, reason: EndReason) -> ChangeEvent {
    ChangeEvent::SessionEnded {
        tenant: tenant.into(),
        session: session.into(),
        user: Some(user.into()),
        reason,
    }
}

async fn next_event(stream: &mut ChangeStream) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a change event within 5 s")
        .expect("the feed stays open")
}

async fn run_contract(ctx: Ctx) {
    create_touch_and_list(&ctx).await;
    expire_at_max_age_and_remember(&ctx).await;
    auth_time_starts_the_session(&ctx).await;
    policy_changes_apply_at_once(&ctx).await;
    revoke_one_session(&ctx).await;
    revoke_all_of_a_user(&ctx).await;
    lock_until(&ctx).await;
    idempotent_revocation(&ctx).await;
    tenants_are_isolated(&ctx).await;
    change_feed(&ctx).await;
    housekeeping_expires_old_sessions(&ctx).await;
    a_sign_in_after_the_end_starts_the_same_sid_again(&ctx).await;
}

async fn create_touch_and_list(ctx: &Ctx) {
    let t = ctx.tenant();
    let id = ctx.identity(&t, "u1", Some("s1"));
    let start = ctx.clock.now_ms();
    assert_eq!(
        ctx.check(&id).await,
        Verdict::Allow {
            created: true,
            started_at: start
        }
    );
    ctx.clock.advance(Duration::from_millis(400));
    assert_eq!(
        ctx.check(&id).await,
        Verdict::Allow {
            created: false,
            started_at: start
        }
    );
    let listed = ctx.store.sessions(&t).await.unwrap();
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!(
        (s.id.as_str(), s.user.as_str(), s.started_at),
        ("s1", "u1", start)
    );
    assert_eq!(s.last_seen, start, "touched at most once a second");
    assert_eq!(s.display_name.as_deref(), Some("u1@contoso.test"));
    assert_eq!(s.client_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(s.client_label.as_deref(), Some("Chrome on Windows 10"));
    ctx.clock.advance(Duration::from_millis(700));
    ctx.check(&id).await;
    let listed = ctx.store.sessions(&t).await.unwrap();
    assert_eq!(listed[0].last_seen, start + 1100);
    // Oldest first.
    ctx.clock.advance(Duration::from_secs(1));
    ctx.check(&ctx.identity(&t, "u2", Some("s2"))).await;
    let ids: Vec<String> = ctx
        .store
        .sessions(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
}

async fn expire_at_max_age_and_remember(ctx: &Ctx) {
    let t = ctx.tenant();
    let id = ctx.identity(&t, "u1", Some("s1"));
    assert!(matches!(
        ctx.check(&id).await,
        Verdict::Allow { created: true, .. }
    ));
    ctx.clock.advance(15 * MINUTE - Duration::from_millis(1));
    assert!(matches!(
        ctx.check(&id).await,
        Verdict::Allow { created: false, .. }
    ));
    ctx.clock.advance(Duration::from_millis(1));
    assert_eq!(
        ctx.check(&id).await,
        EXPIRED,
        "expired at exactly the max age"
    );
    assert!(ctx.store.sessions(&t).await.unwrap().is_empty());
    // The same sid cannot start afresh, even under a longer policy.
    ctx.set_max_age(&t, 60 * MINUTE).await;
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u1", Some("s1"))).await,
        EXPIRED
    );
}

async fn auth_time_starts_the_session(ctx: &Ctx) {
    let t = ctx.tenant();
    let mut id = ctx.identity(&t, "u1", Some("s1"));
    id.auth_time = Some(ctx.clock.now_secs() - 600);
    let verdict = ctx.check(&id).await;
    assert_eq!(
        verdict,
        Verdict::Allow {
            created: true,
            started_at: (ctx.clock.now_secs() - 600) * 1000
        }
    );
    let mut old = ctx.identity(&t, "u1", Some("s2"));
    old.auth_time = Some(ctx.clock.now_secs() - 16 * 60);
    assert_eq!(ctx.check(&old).await, EXPIRED);
    // Remembered: the same sid stays expired.
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u1", Some("s2"))).await,
        EXPIRED
    );
}

async fn policy_changes_apply_at_once(ctx: &Ctx) {
    let t = ctx.tenant();
    assert_eq!(
        ctx.store.policy(&t).await.unwrap(),
        Policy::default_with(15 * MINUTE)
    );
    let old = ctx.identity(&t, "u1", Some("old"));
    ctx.check(&old).await;
    ctx.clock.advance(3 * MINUTE);
    let young = ctx.identity(&t, "u2", Some("young"));
    ctx.check(&young).await;
    ctx.clock.advance(MINUTE);
    ctx.set_max_age(&t, 2 * MINUTE).await;
    let policy = ctx.store.policy(&t).await.unwrap();
    assert_eq!(policy.max_session_age, 2 * MINUTE);
    assert_eq!(policy.source, PolicySource::Kubernetes("ns/p".into()));
    assert_eq!(
        ctx.check(&old).await,
        EXPIRED,
        "a lowered max age ends older sessions"
    );
    assert!(matches!(ctx.check(&young).await, Verdict::Allow { .. }));
    ctx.store.clear_policy(&t).await.unwrap();
    assert_eq!(
        ctx.store.policy(&t).await.unwrap(),
        Policy::default_with(15 * MINUTE)
    );
}

async fn revoke_one_session(ctx: &Ctx) {
    let t = ctx.tenant();
    let a = ctx.identity(&t, "u1", Some("a"));
    let b = ctx.identity(&t, "u1", Some("b"));
    ctx.check(&a).await;
    ctx.check(&b).await;
    let (count, audit_id) = ctx
        .revoke(&t, RevocationTarget::Session("a".into()), None)
        .await;
    assert_eq!(count, 1);
    assert_eq!(ctx.check(&a).await, REVOKED);
    assert!(matches!(ctx.check(&b).await, Verdict::Allow { .. }));
    // A session belongs to its user: another user's token naming it is refused.
    assert_eq!(
        ctx.check(&ctx.identity(&t, "intruder", Some("b"))).await,
        REVOKED
    );
    assert!(matches!(ctx.check(&b).await, Verdict::Allow { .. }));
    let (count, _) = ctx
        .revoke(&t, RevocationTarget::Session("never-seen".into()), None)
        .await;
    assert_eq!(count, 0);
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u3", Some("never-seen"))).await,
        REVOKED
    );
    let audit = ctx.store.audit(&t, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    let first = &audit[1];
    assert_eq!(first.id, audit_id);
    assert_eq!(first.action, Action::SessionRevoke);
    assert_eq!(first.target.session.as_deref(), Some("a"));
    assert_eq!(first.target.user.as_deref(), Some("u1"));
    assert_eq!(first.sessions_revoked, Some(1));
    assert_eq!(first.reason.as_deref(), Some("INC-1 contract"));
    assert_eq!(first.actor.name.as_deref(), Some("Ada"));
    assert_eq!(ctx.store.audit(&t, 1).await.unwrap().len(), 1, "limit");
}

async fn revoke_all_of_a_user(ctx: &Ctx) {
    let t = ctx.tenant();
    let a = ctx.identity(&t, "u1", Some("a"));
    let b = ctx.identity(&t, "u1", Some("b"));
    let other = ctx.identity(&t, "u2", Some("c"));
    for id in [&a, &b, &other] {
        ctx.check(id).await;
    }
    ctx.clock.advance(Duration::from_secs(5));
    let (count, _) = ctx.revoke(&t, user("u1"), None).await;
    assert_eq!(count, 2);
    assert_eq!(ctx.check(&a).await, REVOKED);
    assert_eq!(ctx.check(&b).await, REVOKED);
    assert!(matches!(ctx.check(&other).await, Verdict::Allow { .. }));
    // Authenticated before the revocation: no new session.
    let mut stale = ctx.identity(&t, "u1", Some("new"));
    stale.issued_at = Some(ctx.clock.now_secs() - 60);
    assert_eq!(ctx.check(&stale).await, REVOKED);
    let mut unknown = ctx.identity(&t, "u1", Some("unknown-instant"));
    unknown.issued_at = None;
    assert_eq!(ctx.check(&unknown).await, REVOKED);
    // A fresh sign-in afterwards works.
    ctx.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        ctx.check(&ctx.identity(&t, "u1", Some("fresh"))).await,
        Verdict::Allow { created: true, .. }
    ));
    let audit = ctx.store.audit(&t, 10).await.unwrap();
    assert_eq!(audit[0].action, Action::UserRevoke);
    assert_eq!(audit[0].sessions_revoked, Some(2));
}

async fn lock_until(ctx: &Ctx) {
    let t = ctx.tenant();
    let until = ctx.clock.now_ms() + 10 * 60_000;
    let (_, _) = ctx
        .revoke(
            &t,
            RevocationTarget::User {
                user: "u1".into(),
                lock_until: Some(until),
            },
            None,
        )
        .await;
    ctx.clock.advance(MINUTE);
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u1", Some("during"))).await,
        REVOKED
    );
    ctx.clock.advance(10 * MINUTE);
    assert!(matches!(
        ctx.check(&ctx.identity(&t, "u1", Some("after"))).await,
        Verdict::Allow { .. }
    ));
    assert_eq!(
        ctx.store.audit(&t, 1).await.unwrap()[0].action,
        Action::UserLock
    );
}

async fn idempotent_revocation(ctx: &Ctx) {
    let t = ctx.tenant();
    ctx.check(&ctx.identity(&t, "u1", Some("a"))).await;
    let first = ctx.revoke(&t, user("u1"), Some("uid-1")).await;
    ctx.clock.advance(Duration::from_secs(3));
    ctx.check(&ctx.identity(&t, "u1", Some("b"))).await;
    let second = ctx.revoke(&t, user("u1"), Some("uid-1")).await;
    assert_eq!(first, second, "the same outcome, and nothing revoked again");
    assert!(matches!(
        ctx.check(&ctx.identity(&t, "u1", Some("b"))).await,
        Verdict::Allow { .. }
    ));
    assert_eq!(
        ctx.store.audit(&t, 10).await.unwrap().len(),
        1,
        "one audit record"
    );
}

async fn tenants_are_isolated(ctx: &Ctx) {
    let (t1, t2) = (ctx.tenant(), ctx.tenant());
    ctx.check(&ctx.identity(&t1, "u1", Some("s"))).await;
    ctx.check(&ctx.identity(&t2, "u1", Some("s"))).await;
    ctx.revoke(&t1, user("u1"), None).await;
    assert_eq!(
        ctx.check(&ctx.identity(&t1, "u1", Some("s"))).await,
        REVOKED
    );
    assert!(matches!(
        ctx.check(&ctx.identity(&t2, "u1", Some("s"))).await,
        Verdict::Allow { .. }
    ));
    assert!(ctx.store.audit(&t2, 10).await.unwrap().is_empty());
    assert_eq!(ctx.store.sessions(&t2).await.unwrap().len(), 1);
}

async fn change_feed(ctx: &Ctx) {
    let t = ctx.tenant();
    let mut feed = ctx.store.subscribe(&t).await.unwrap();
    // Another tenant's changes are not in this feed.
    ctx.check(&ctx.identity(&ctx.tenant(), "x", Some("x")))
        .await;
    ctx.check(&ctx.identity(&t, "u1", Some("s1"))).await;
    match next_event(&mut feed).await {
        ChangeEvent::SessionCreated { tenant, session } => {
            assert_eq!(
                (tenant.as_str(), session.id.as_str(), session.user.as_str()),
                (t.as_str(), "s1", "u1")
            );
        }
        other => panic!("expected SessionCreated, got {other:?}"),
    }
    ctx.revoke(&t, RevocationTarget::Session("s1".into()), None)
        .await;
    assert_eq!(
        next_event(&mut feed).await,
        ended(&t, "s1", "u1", EndReason::Revoked)
    );
    ctx.set_max_age(&t, 5 * MINUTE).await;
    match next_event(&mut feed).await {
        ChangeEvent::PolicyChanged { policy, .. } => assert_eq!(policy.max_session_age, 5 * MINUTE),
        other => panic!("expected PolicyChanged, got {other:?}"),
    }
}

async fn housekeeping_expires_old_sessions(ctx: &Ctx) {
    let t = ctx.tenant();
    ctx.check(&ctx.identity(&t, "u1", Some("s1"))).await;
    let mut feed = ctx.store.subscribe(&t).await.unwrap();
    ctx.clock.advance(16 * MINUTE);
    assert!(
        ctx.store.sessions(&t).await.unwrap().is_empty(),
        "past the max age is not live"
    );
    ctx.store.maintain().await.unwrap();
    assert_eq!(
        next_event(&mut feed).await,
        ended(&t, "s1", "u1", EndReason::Expired)
    );
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u1", Some("s1"))).await,
        EXPIRED
    );
}

/// `id` signed in (auth_time) at `secs`.
fn signed_in(mut id: Identity, secs: i64) -> Identity {
    id.auth_time = Some(secs);
    id
}

async fn a_sign_in_after_the_end_starts_the_same_sid_again(ctx: &Ctx) {
    let t = ctx.tenant();
    let mut feed = ctx.store.subscribe(&t).await.unwrap();
    let start = ctx.clock.now_secs();
    let first = signed_in(ctx.identity(&t, "u1", Some("s1")), start);
    assert!(matches!(
        ctx.check(&first).await,
        Verdict::Allow { created: true, .. }
    ));
    assert!(matches!(
        next_event(&mut feed).await,
        ChangeEvent::SessionCreated { .. }
    ));

    // Idle past the max age, then a fresh sign-in: its first request finds the old session
    // still live, ends it (as of its max age) and starts a new one under the same sid.
    ctx.clock.advance(20 * MINUTE);
    let again = signed_in(ctx.identity(&t, "u1", Some("s1")), start + 16 * 60);
    let again_started = (start + 16 * 60) * 1000;
    assert_eq!(
        ctx.check(&again).await,
        Verdict::Allow {
            created: true,
            started_at: again_started
        }
    );
    assert_eq!(
        next_event(&mut feed).await,
        ended(&t, "s1", "u1", EndReason::Expired)
    );
    match next_event(&mut feed).await {
        ChangeEvent::SessionCreated { session, .. } => {
            assert_eq!(session.started_at, again_started)
        }
        other => panic!("expected SessionCreated, got {other:?}"),
    }
    // A silent refresh of the old sign-in (same auth_time, new iat) is not let in by that.
    ctx.clock.advance(MINUTE);
    let refreshed_old = signed_in(ctx.identity(&t, "u1", Some("s1")), start);
    assert_eq!(
        ctx.check(&refreshed_old).await,
        Verdict::Allow {
            created: false,
            started_at: again_started
        }
    );

    // Expired at lookup and tombstoned: a silent refresh stays refused, another user's fresh
    // token too; a sign-in after the end (start + 16 min + 15 min) starts anew.
    ctx.clock.advance(20 * MINUTE);
    assert_eq!(ctx.check(&again).await, EXPIRED);
    let mut refreshed = ctx.identity(&t, "u1", Some("s1"));
    refreshed.auth_time = again.auth_time;
    assert_eq!(ctx.check(&refreshed).await, EXPIRED);
    assert_eq!(
        ctx.check(&ctx.identity(&t, "u1", Some("s1"))).await,
        EXPIRED
    );
    let now = ctx.clock.now_secs();
    assert_eq!(
        ctx.check(&signed_in(ctx.identity(&t, "u2", Some("s1")), now))
            .await,
        EXPIRED
    );
    let before_end = signed_in(ctx.identity(&t, "u1", Some("s1")), start + 31 * 60 - 1);
    assert_eq!(ctx.check(&before_end).await, EXPIRED);
    let third = signed_in(ctx.identity(&t, "u1", Some("s1")), now);
    assert_eq!(
        ctx.check(&third).await,
        Verdict::Allow {
            created: true,
            started_at: now * 1000
        }
    );

    // Revoked: only a sign-in after the revocation, by the same user, starts anew.
    ctx.revoke(&t, RevocationTarget::Session("s1".into()), None)
        .await;
    assert_eq!(ctx.check(&third).await, REVOKED);
    ctx.clock.advance(Duration::from_secs(2));
    let now = ctx.clock.now_secs();
    assert_eq!(
        ctx.check(&signed_in(ctx.identity(&t, "u2", Some("s1")), now))
            .await,
        REVOKED
    );
    let fourth = signed_in(ctx.identity(&t, "u1", Some("s1")), now);
    assert_eq!(
        ctx.check(&fourth).await,
        Verdict::Allow {
            created: true,
            started_at: now * 1000
        }
    );

    // Expired by housekeeping: ended as of its max age, so a sign-in after that, before the
    // sweep ran, starts anew.
    ctx.clock.advance(16 * MINUTE);
    let after_max_age = ctx.clock.now_secs() - 30;
    ctx.store.maintain().await.unwrap();
    let fifth = signed_in(ctx.identity(&t, "u1", Some("s1")), after_max_age);
    assert_eq!(
        ctx.check(&fifth).await,
        Verdict::Allow {
            created: true,
            started_at: after_max_age * 1000
        }
    );
    assert_eq!(ctx.store.sessions(&t).await.unwrap().len(), 1);
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

fn redis_settings(urls: Vec<String>, cluster: bool) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        ca_pem: None,
        wait_replicas: 0,
    }
}

fn redis_store(urls: Vec<String>, cluster: bool, clock: &ManualClock) -> Arc<dyn SessionStore> {
    open_redis(redis_settings(urls, cluster), clock)
}

fn open_redis(settings: RedisSettings, clock: &ManualClock) -> Arc<dyn SessionStore> {
    Arc::new(RedisStore::new(
        settings,
        Limits::default(),
        Arc::new(clock.clone()),
    ))
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    let clock = clock();
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    run_contract(Ctx { store, clock }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let redis = RedisServer::start().await;
    let clock = clock();
    let store = redis_store(vec![redis.url()], false, &clock);
    run_contract(Ctx { store, clock }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_meets_the_contract() {
    let cluster = RedisCluster::start().await;
    let clock = clock();
    let store = redis_store(cluster.urls(), true, &clock);
    run_contract(Ctx { store, clock }).await;
}

/// The contract over TLS: `urls` are `rediss://`, trusting only the CA in `ca_file`.
async fn run_contract_over_tls(urls: Vec<String>, cluster: bool, ca_file: &std::path::Path) {
    let clock = clock();
    let settings = redis_settings(urls, cluster)
        .trust_ca_file(ca_file)
        .expect("a PEM CA file");
    run_contract(Ctx {
        store: open_redis(settings, &clock),
        clock,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_meets_the_contract() {
    let redis = RedisServer::start_tls().await;
    run_contract_over_tls(vec![redis.tls_url()], false, &redis.ca_file()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_tls_with_a_private_ca_meets_the_contract() {
    let cluster = RedisCluster::start_tls().await;
    run_contract_over_tls(cluster.tls_urls(), true, &cluster.ca_file()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_whose_certificate_is_not_trusted_is_refused_never_allowed() {
    let redis = RedisServer::start_tls().await;
    let other = RedisServer::start_tls().await;
    let clock = clock();
    let ctx = Ctx {
        store: Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone()))),
        clock: clock.clone(),
    };
    let identity = ctx.identity(&ctx.tenant(), "u1", Some("s1"));
    let request = AccessRequest {
        identity: Arc::new(identity),
        client_ip: None,
        user_agent: None,
    };
    let untrusted = [
        // The system's roots do not know a self-signed certificate.
        redis_settings(vec![redis.tls_url()], false),
        // Another server's certificate is not this one's CA.
        redis_settings(vec![redis.tls_url()], false)
            .trust_ca_file(&other.ca_file())
            .unwrap(),
    ];
    for settings in untrusted {
        let store = open_redis(settings, &clock);
        assert!(
            store.check(&request).await.is_err(),
            "an unverified server gets no verdict"
        );
        assert!(store.ping().await.is_err(), "and is not healthy");
    }
    // The right CA works (the same request, the same server).
    let trusted = redis_settings(vec![redis.tls_url()], false)
        .trust_ca_file(&redis.ca_file())
        .unwrap();
    let verdict = open_redis(trusted, &clock).check(&request).await;
    assert!(
        matches!(verdict, Ok(Verdict::Allow { created: true, .. })),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_revocation_returns_once_a_replica_has_it() {
    let primary = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let clock = clock();
    let mut settings = redis_settings(vec![primary.url()], false);
    settings.wait_replicas = 1;
    settings.write_timeout = Duration::from_millis(800);
    let ctx = Ctx {
        store: open_redis(settings, &clock),
        clock: clock.clone(),
    };
    let t = ctx.tenant();
    let alice = ctx.identity(&t, "alice", Some("a1"));
    let bob = ctx.identity(&t, "bob", Some("b1"));
    ctx.check(&alice).await;
    ctx.check(&bob).await;

    // Replicated: the revocation returns, and the replica already has the tombstone.
    let outcome = ctx
        .try_revoke(&t, RevocationTarget::Session("a1".into()))
        .await
        .expect("one replica acknowledges");
    assert_eq!(outcome.sessions_revoked, 1);
    let tombstone = grantflow_e2e::redis::redis_cli(
        replica.port,
        &["HGET", &format!("gf:{{{t}}}:end:a1"), "reason"],
    );
    assert_eq!(tombstone.as_deref().map(str::trim), Some("revoked"));
    ctx.set_max_age(&t, 30 * MINUTE).await;

    // The replica stops answering: the primary applies the revocation, but the call reports
    // that no replica has it (within half the write deadline), so the caller can retry.
    replica.freeze();
    let started = std::time::Instant::now();
    let error = ctx
        .try_revoke(&t, RevocationTarget::Session("b1".into()))
        .await
        .expect_err("no replica acknowledges");
    replica.thaw();
    assert_eq!(error, NOT_REPLICATED);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the write deadline"
    );
    assert_eq!(ctx.check(&bob).await, REVOKED, "in effect on the primary");
    let policy = Policy {
        max_session_age: 5 * MINUTE,
        source: PolicySource::Kubernetes("ns/p".into()),
    };
    // Back in sync: writes return normally again.
    tokio::time::timeout(Duration::from_secs(10), async {
        while ctx
            .store
            .set_policy(&t, policy.clone(), None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("writes are acknowledged again once the replica is back");
}

/// An admin's revocation of `target` in `tenant`, with an optional idempotency key.
fn revocation_of(tenant: &str, target: RevocationTarget, key: Option<&str>) -> Revocation {
    Revocation {
        tenant: tenant.into(),
        target,
        reason: "INC-1 contract".into(),
        actor: Actor {
            kind: ActorKind::Admin,
            id: "admin".into(),
            name: Some("Ada".into()),
        },
        source: Source::Api,
        idempotency_key: key.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_wait_goes_to_the_tenants_primary() {
    // Three primaries, no replicas: the WAIT reaches the tenant's primary and reports that
    // none acknowledged (a WAIT sent elsewhere would count another node's replicas).
    let cluster = RedisCluster::start().await;
    let clock = clock();
    let mut settings = redis_settings(cluster.urls(), true);
    settings.wait_replicas = 1;
    settings.write_timeout = Duration::from_millis(400);
    let ctx = Ctx {
        store: open_redis(settings, &clock),
        clock,
    };
    let t = ctx.tenant();
    let alice = ctx.identity(&t, "alice", Some("a1"));
    ctx.check(&alice).await;
    let error = ctx
        .try_revoke(&t, user("alice"))
        .await
        .expect_err("no replica to acknowledge");
    assert_eq!(error, NOT_REPLICATED);
    assert_eq!(ctx.check(&alice).await, REVOKED, "in effect on the primary");
}
