//! Tests of particular Redis deployments: TLS with a private CA (standalone and cluster), an
//! untrusted certificate, `WAIT` for replicas, and where a cluster sends its `WAIT`.

use std::time::Duration;

use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{RedisSettings, RedisStore, SessionStore, StoreError};
use grantflow_e2e::redis::{RedisCluster, RedisServer, redis_cli};

use crate::harness::*;

/// A write no replica acknowledged, with `wait_replicas: 1`.
const NOT_REPLICATED: StoreError = StoreError::NotReplicated {
    acknowledged: 0,
    wanted: 1,
};

/// Cases that between them run every script and the change feed, over TLS: `settings` are
/// `rediss://` URLs trusting only a private CA.
async fn cases_over_tls(settings: RedisSettings) {
    let ctx = || Ctx::on_redis(settings.clone());
    crate::decision::sessions_are_listed_oldest_first_with_their_client(ctx()).await;
    crate::decision::a_sign_in_after_the_end_starts_the_same_sid_again(ctx()).await;
    crate::revocation::revoking_a_user_refuses_their_earlier_tokens_and_a_fresh_sign_in_works(
        ctx(),
    )
    .await;
    crate::policy::policy_changes_apply_at_once_and_keep_their_source(ctx()).await;
    crate::watermark::blocked_users_lists_watermarks_and_locks_and_unblock_lifts_them(ctx()).await;
    crate::idempotency::a_replay_returns_the_first_outcome_and_writes_nothing(ctx()).await;
    crate::housekeeping::the_change_feed_tells_creations_ends_and_policy_changes(ctx()).await;
}

mod over_tls_with_a_private_ca {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let server = RedisServer::start_tls().await;
        let settings = redis_settings(vec![server.tls_url()], false)
            .trust_ca_file(&server.ca_file())
            .expect("a PEM CA file");
        cases_over_tls(settings).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster() {
        let cluster = RedisCluster::start_tls().await;
        let settings = redis_settings(cluster.tls_urls(), true)
            .trust_ca_file(&cluster.ca_file())
            .expect("a PEM CA file");
        cases_over_tls(settings).await;
    }
}

mod an_untrusted_certificate_is_refused_never_allowed {
    use std::sync::Arc;

    use grantflow_core::clock::ManualClock;
    use grantflow_core::decision::Limits;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let server = RedisServer::start_tls().await;
        let other = RedisServer::start_tls().await;
        let clock = ManualClock::new(T0);
        let open = |settings: RedisSettings| {
            RedisStore::new(settings, Limits::default(), Arc::new(clock.clone()))
        };
        let identity = grantflow_core::identity::Identity {
            tenant: new_tenant(),
            user: "u1".into(),
            display_name: None,
            session: grantflow_core::identity::SessionKey::derive(Some("s1"), None, "raw"),
            auth_time: None,
            issued_at: Some(T0 / 1000),
            not_before: None,
            expires_at: T0 / 1000 + 3600,
            roles: Vec::new(),
        };
        let request = AccessRequest {
            identity: Arc::new(identity),
            client_ip: None,
            user_agent: None,
        };
        let mut short = redis_settings(vec![server.tls_url()], false);
        short.timeout = Duration::from_secs(2);
        short.write_timeout = Duration::from_secs(2);
        let untrusted = [
            // The system's roots do not know a self-signed certificate.
            short.clone(),
            // Another server's certificate is not this one's CA.
            short.clone().trust_ca_file(&other.ca_file()).unwrap(),
        ];
        for settings in untrusted {
            let store = open(settings);
            assert!(
                store.check(&request).await.is_err(),
                "an unverified server gets no verdict"
            );
            assert!(store.ping().await.is_err(), "and is not healthy");
        }
        // The right CA works (the same request, the same server).
        let trusted = short.trust_ca_file(&server.ca_file()).unwrap();
        let verdict = open(trusted).check(&request).await;
        assert!(
            matches!(verdict, Ok(Verdict::Allow { created: true, .. })),
            "{verdict:?}"
        );
    }
}

mod with_wait_replicas_a_write_returns_once_a_replica_has_it {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let primary = RedisServer::start().await;
        let replica = RedisServer::start_replica_of(&primary).await;
        let mut settings = redis_settings(vec![primary.url()], false);
        settings.wait_replicas = 1;
        // Long enough for a replica on a loaded machine (the WAIT gets half of it); the frozen
        // replica below still ends the call well within 5 s.
        settings.write_timeout = Duration::from_millis(2000);
        let ctx = Ctx::on_redis(settings);
        let t = &ctx.tenant;
        let alice = ctx.token("alice", "a1");
        let bob = ctx.token("bob", "b1");
        ctx.check(&alice).await;
        ctx.check(&bob).await;

        // Replicated: the revocation returns, and the replica already has the tombstone.
        let outcome = ctx
            .try_revoke(&revocation(t, session("a1"), "INC-1"))
            .await
            .expect("one replica acknowledges");
        assert_eq!(outcome.sessions_revoked, 1);
        let tombstone = redis_cli(
            replica.port,
            &["HGET", &format!("gf:{{{t}}}:end:a1"), "reason"],
        );
        assert_eq!(tombstone.as_deref().map(str::trim), Some("revoked"));
        ctx.set_policy(t, mins(30)).await;

        // The replica stops answering: the primary applies the revocation, but the call
        // reports that no replica has it (within half the write deadline), so the caller can
        // retry.
        replica.freeze();
        let started = std::time::Instant::now();
        let error = ctx
            .try_revoke(&revocation(t, session("b1"), "INC-2"))
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
            max_session_age: mins(5),
            idle_timeout: None,
            max_sessions_per_user: None,
            on_limit: Default::default(),
            source: PolicySource::Kubernetes("ns/p".into()),
        };
        // Back in sync: writes return normally again.
        tokio::time::timeout(Duration::from_secs(10), async {
            while ctx
                .store()
                .set_policy(t, policy.clone(), None)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("writes are acknowledged again once the replica is back");
    }
}

mod on_a_cluster_the_wait_goes_to_the_tenants_primary {
    use super::*;

    /// Three primaries, no replicas (the shared cluster): the `WAIT` reaches the tenant's
    /// primary and reports that none acknowledged (a `WAIT` sent elsewhere would count
    /// another node's replicas).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster() {
        let ctx = Ctx::start(StoreKind::RedisCluster, Sharing::Shared)
            .await
            .with_redis_settings(|settings| {
                settings.wait_replicas = 1;
                settings.write_timeout = Duration::from_millis(400);
            });
        let alice = authenticated(ctx.token("alice", "a1"), T0 / 1000);
        ctx.check(&alice).await;
        let error = ctx
            .try_revoke(&revocation(&ctx.tenant, user("alice"), "INC-1"))
            .await
            .expect_err("no replica to acknowledge");
        assert_eq!(error, NOT_REPLICATED);
        assert_eq!(ctx.check(&alice).await, REVOKED, "in effect on the primary");
    }
}

/// The request path's Redis traffic (issue 10): a live session's check is one script call
/// (the touch call, which sends only what a live session needs); a new session is two (the
/// touch call answers "create needed", then the create call). Counted by Redis itself
/// (`INFO commandstats`), not timed.
mod a_live_session_check_is_one_round_trip_a_new_session_two {
    use super::*;

    /// Script calls Redis has run since its counters were reset (`EVALSHA`, plus `EVAL` when
    /// a script was not cached yet).
    fn script_calls(port: u16) -> u64 {
        let stats = redis_cli(port, &["INFO", "commandstats"]).expect("INFO commandstats");
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                let calls = l.split("calls=").nth(1)?.split(',').next()?;
                calls.parse::<u64>().ok()
            })
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let server = RedisServer::start().await;
        let ctx = Ctx::on_redis(redis_settings(vec![server.url()], false));
        // The script is loaded and the tenant registered before counting.
        assert!(is_allowed(ctx.check(&ctx.token(BOB, "warm-up")).await));
        redis_cli(server.port, &["CONFIG", "RESETSTAT"]).expect("CONFIG RESETSTAT");

        let alice = ctx.token(ALICE, "a1");
        assert_eq!(ctx.check(&alice).await, created(T0));
        assert_eq!(
            script_calls(server.port),
            2,
            "a new session: touch, then create"
        );
        for n in 1..=5 {
            ctx.advance(SEC);
            assert_eq!(ctx.check(&alice).await, allowed(T0));
            assert_eq!(script_calls(server.port), 2 + n, "a live session: one call");
        }
        // An ended session is refused in the touch call, without a create call.
        ctx.revoke(revocation(&ctx.tenant, session("a1"), "INC-1"))
            .await;
        let before = script_calls(server.port);
        assert_eq!(ctx.check(&alice).await, REVOKED);
        assert_eq!(script_calls(server.port), before + 1, "a refusal: one call");
    }
}

/// A session hash written by the previous layout (the whole user agent, no `cl` label field)
/// still lists with its label and still touches; a new session keeps the user agent capped
/// and its label in `cl`, so its hash stays a listpack under Redis's defaults.
mod a_session_hash_of_the_previous_layout_still_reads_and_touches {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let server = RedisServer::start().await;
        let ctx = Ctx::on_redis(redis_settings(vec![server.url()], false));
        let t = ctx.tenant.clone();
        let cli = |args: &[&str]| redis_cli(server.port, args).expect("redis-cli");
        // A new session first: the tenant's generation marker and script are in place.
        assert_eq!(ctx.check(&ctx.token(BOB, "b1")).await, created(T0));
        let key = format!("gf:{{{t}}}:s:old");
        let t0 = T0.to_string();
        cli(&[
            "HSET", &key, "user", ALICE, "dn", "Alice", "anchor", "sid", "started", &t0, "seen",
            &t0, "ip", CLIENT_IP, "ua", CHROME,
        ]);
        cli(&["PEXPIRE", &key, "86400000"]);
        cli(&["ZADD", &format!("gf:{{{t}}}:live"), &t0, "old"]);
        cli(&["SADD", &format!("gf:{{{t}}}:us:{ALICE}"), "old"]);

        let sessions = ctx.sessions(&t).await;
        let old = sessions.iter().find(|s| s.id == "old").expect("listed");
        assert_eq!(old.user_agent.as_deref(), Some(CHROME), "read as written");
        assert_eq!(old.client_label.as_deref(), Some("Chrome on Windows 10"));
        ctx.advance(2 * SEC);
        assert_eq!(ctx.check(&ctx.token(ALICE, "old")).await, allowed(T0));
        let seen = cli(&["HGET", &key, "seen"]);
        assert_eq!(seen.trim(), (T0 + 2000).to_string(), "touched");

        // The new layout: the capped user agent, the label in `cl`, a listpack.
        let new = format!("gf:{{{t}}}:s:b1");
        assert_eq!(
            cli(&["HGET", &new, "ua"]).trim_end_matches('\n'),
            grantflow_core::session::capped_user_agent(CHROME)
        );
        assert_eq!(cli(&["HGET", &new, "cl"]).trim(), "Chrome on Windows 10");
        assert_eq!(cli(&["OBJECT", "ENCODING", &new]).trim(), "listpack");
        let b1 = ctx.sessions(&t).await.into_iter().find(|s| s.id == "b1");
        assert_eq!(
            b1.and_then(|s| s.client_label).as_deref(),
            Some("Chrome on Windows 10")
        );
    }
}
