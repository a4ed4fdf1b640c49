//! The tenant's session rules beside the max age: the idle timeout (a session unused longer
//! ends, [`EndReason::Idle`]) and the session limit per user (`maxSessionsPerUser`, with
//! `onLimit: RefuseNew | EndOldest`). Redis-only facts (one round trip per check, a policy
//! hash written before the rules existed) are at the end.

use std::time::Duration;

use grantflow_core::audit::{Action, ActorKind, AuditRecord, Source};
use grantflow_core::policy::{OnLimit, Policy};
use grantflow_core::session::{EndReason, Verdict};
use grantflow_core::store::ChangeEvent;
use grantflow_e2e::redis::{RedisServer, redis_cli};

use crate::harness::*;

cases! {
    the_idle_timeout_is_off_by_default;
    a_session_unused_longer_than_the_idle_timeout_ends_and_stays_ended;
    every_check_keeps_a_session_alive;
    a_policy_change_applies_to_the_next_check;
    idle_sessions_are_not_listed_and_housekeeping_ends_them [; exclusive];
    the_session_limit_refuses_a_new_session_and_audits_it;
    the_session_limit_ends_exactly_the_oldest_session;
    lowering_the_limit_ends_as_many_oldest_sessions_as_needed;
    the_session_limit_counts_only_live_sessions;
    the_session_limit_is_off_by_default;
    a_fresh_sign_in_refused_by_the_limit_keeps_its_key_ended;
    the_rules_survive_a_restart [embedded];
    the_change_feed_carries_the_rules;
}

/// A policy of `max_age` with an idle timeout and a session limit.
fn rules(
    max_age: Duration,
    idle: Option<Duration>,
    limit: Option<u32>,
    on_limit: OnLimit,
) -> Policy {
    Policy {
        idle_timeout: idle,
        max_sessions_per_user: limit,
        on_limit,
        ..policy(max_age)
    }
}

async fn set(ctx: &Ctx, policy: Policy) {
    ctx.store()
        .set_policy(&ctx.tenant, policy, None)
        .await
        .expect("policy set");
}

fn idle(minutes: u64) -> Verdict {
    Verdict::Idle {
        idle_timeout: Some(mins(minutes)),
    }
}

/// The session-limit records of the case's tenant, newest first.
async fn limit_records(ctx: &Ctx) -> Vec<AuditRecord> {
    ctx.audit(&ctx.tenant, 100)
        .await
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("session limit"))
        .collect()
}

fn assert_system(record: &AuditRecord) {
    assert_eq!(record.actor.kind, ActorKind::System);
    assert_eq!(record.actor.id, "grantflow-extauthz");
    assert_eq!(record.source, Source::System);
}

async fn the_idle_timeout_is_off_by_default(ctx: Ctx) {
    let t = &ctx.tenant;
    let policy = ctx.policy(t).await;
    assert_eq!(
        (
            policy.idle_timeout,
            policy.max_sessions_per_user,
            policy.on_limit
        ),
        (None, None, OnLimit::RefuseNew)
    );
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(14));
    assert_eq!(
        ctx.check(&one).await,
        allowed(T0),
        "14 minutes unused, no idle timeout"
    );
}

async fn a_session_unused_longer_than_the_idle_timeout_ends_and_stays_ended(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(
        &ctx,
        rules(mins(60), Some(mins(5)), None, OnLimit::RefuseNew),
    )
    .await;
    let mut feed = ctx.store().subscribe(&t).await.unwrap();
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    assert!(matches!(
        crate::housekeeping::next_event(&mut feed).await,
        ChangeEvent::SessionCreated { .. }
    ));
    ctx.advance(mins(5) - MS);
    assert_eq!(ctx.check(&one).await, allowed(T0), "just within");
    ctx.advance(mins(5));
    assert_eq!(ctx.check(&one).await, idle(5), "5 minutes unused");
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        crate::housekeeping::ended(&t, "s-1", ALICE, EndReason::Idle)
    );
    assert!(ctx.session_ids(&t).await.is_empty());
    // Tombstoned like an expired session: the same token (or a silent refresh) never comes
    // back, whatever the clock does next.
    ctx.advance(SEC);
    assert_eq!(ctx.check(&one).await, idle(5));
    let refreshed = authenticated(ctx.token(ALICE, "s-1"), T0 / 1000);
    assert_eq!(ctx.check(&refreshed).await, idle(5));
    // A fresh sign-in (auth_time after the end) starts the key anew.
    let fresh = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, created(ctx.now_secs() * 1000));
}

async fn every_check_keeps_a_session_alive(ctx: Ctx) {
    set(
        &ctx,
        rules(mins(60), Some(mins(5)), None, OnLimit::RefuseNew),
    )
    .await;
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    // A request every 4 minutes 59 seconds: never 5 minutes unused, for the whole max age.
    let every = mins(5) - SEC;
    for _ in 0..12 {
        ctx.advance(every);
        assert_eq!(ctx.check(&one).await, allowed(T0));
    }
    // The max age still ends it.
    ctx.advance(every);
    assert_eq!(ctx.check(&one).await, EXPIRED);
}

async fn a_policy_change_applies_to_the_next_check(ctx: Ctx) {
    let t = ctx.tenant.clone();
    let (one, two) = (ctx.token(ALICE, "s-1"), ctx.token(ALICE, "s-2"));
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(3));
    assert_eq!(ctx.check(&two).await, created(T0 + 3 * 60_000));
    ctx.advance(mins(3));
    // s-1 was unused for 6 minutes, s-2 for 3: a 5-minute idle timeout ends only s-1.
    set(
        &ctx,
        rules(mins(15), Some(mins(5)), None, OnLimit::RefuseNew),
    )
    .await;
    assert_eq!(ctx.check(&one).await, idle(5));
    assert_eq!(ctx.check(&two).await, allowed(T0 + 3 * 60_000));
    // A limit of one: the user holds one live session (s-2), so a new one is refused; the
    // one held keeps working.
    set(
        &ctx,
        rules(mins(15), Some(mins(5)), Some(1), OnLimit::RefuseNew),
    )
    .await;
    let three = ctx.token(ALICE, "s-3");
    assert_eq!(ctx.check(&three).await, Verdict::SessionLimit { limit: 1 });
    assert_eq!(ctx.check(&two).await, allowed(T0 + 3 * 60_000));
    // Turned off again: the new session starts; the idle-ended key stays ended (its page
    // can no longer name the timeout).
    set(&ctx, policy(mins(15))).await;
    assert!(is_allowed(ctx.check(&three).await));
    assert_eq!(ctx.check(&one).await, Verdict::Idle { idle_timeout: None });
    let mut ids = ctx.session_ids(&t).await;
    ids.sort();
    assert_eq!(ids, ["s-2", "s-3"]);
}

async fn idle_sessions_are_not_listed_and_housekeeping_ends_them(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(
        &ctx,
        rules(mins(60), Some(mins(5)), None, OnLimit::RefuseNew),
    )
    .await;
    let (one, two) = (ctx.token(ALICE, "s-1"), ctx.token(BOB, "s-2"));
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(3));
    assert_eq!(ctx.check(&two).await, created(T0 + 3 * 60_000));
    ctx.advance(mins(3));
    assert_eq!(
        ctx.session_ids(&t).await,
        ["s-2"],
        "s-1 is 6 minutes unused"
    );
    let mut feed = ctx.store().subscribe(&t).await.unwrap();
    ctx.maintain().await;
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        crate::housekeeping::ended(&t, "s-1", ALICE, EndReason::Idle),
        "housekeeping ends it, so dashboards see it go"
    );
    assert_eq!(ctx.session_ids(&t).await, ["s-2"]);
    assert_eq!(ctx.check(&one).await, idle(5));
    assert_eq!(ctx.check(&two).await, allowed(T0 + 3 * 60_000));
}

async fn the_session_limit_refuses_a_new_session_and_audits_it(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(&ctx, rules(mins(60), None, Some(2), OnLimit::RefuseNew)).await;
    let (one, two) = (ctx.token(ALICE, "s-1"), ctx.token(ALICE, "s-2"));
    assert_eq!(ctx.check(&one).await, created(T0));
    assert_eq!(ctx.check(&two).await, created(T0));
    let three = ctx.token(ALICE, "s-3");
    assert_eq!(ctx.check(&three).await, Verdict::SessionLimit { limit: 2 });
    assert_eq!(ctx.session_ids(&t).await, ["s-1", "s-2"], "nothing stored");
    let records = limit_records(&ctx).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let refused = &records[0];
    assert_system(refused);
    assert_eq!(refused.action, Action::SessionRefuse);
    assert_eq!(refused.tenant, t);
    assert_eq!(refused.target.user.as_deref(), Some(ALICE));
    assert_eq!(refused.target.session.as_deref(), Some("s-3"));
    assert_eq!(refused.sessions_revoked, None);
    assert_eq!(
        refused.detail.as_deref(),
        Some(grantflow_core::session_limit::refused_detail(2).as_str())
    );
    // The sessions held keep working; other users and tenants are not counted.
    ctx.advance(SEC);
    assert_eq!(ctx.check(&one).await, allowed(T0));
    assert_eq!(ctx.check(&two).await, allowed(T0));
    assert!(is_allowed(ctx.check(&ctx.token(BOB, "s-b")).await));
    let elsewhere = ctx.token_in(&ctx.other_tenant, ALICE, "s-3");
    assert!(is_allowed(ctx.check(&elsewhere).await));
    // Ending one makes room for exactly one.
    ctx.revoke(revocation(&t, session("s-1"), "signed out"))
        .await;
    assert!(is_allowed(ctx.check(&three).await));
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "s-4")).await,
        Verdict::SessionLimit { limit: 2 }
    );
}

async fn the_session_limit_ends_exactly_the_oldest_session(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(&ctx, rules(mins(60), None, Some(2), OnLimit::EndOldest)).await;
    let (one, two, three) = (
        ctx.token(ALICE, "s-1"),
        ctx.token(ALICE, "s-2"),
        ctx.token(ALICE, "s-3"),
    );
    // s-2 is created first but s-1's sign-in (auth_time) is older: oldest is by start.
    let two_started = T0;
    assert_eq!(ctx.check(&two).await, created(two_started));
    ctx.advance(mins(1));
    let one = authenticated(one, T0 / 1000 - 60);
    assert_eq!(ctx.check(&one).await, created(T0 - 60_000));
    ctx.advance(mins(1));
    let mut feed = ctx.store().subscribe(&t).await.unwrap();
    assert_eq!(ctx.check(&three).await, created(ctx.now()));
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        crate::housekeeping::ended(&t, "s-1", ALICE, EndReason::Revoked),
        "the oldest session ends first, so dashboards see it go"
    );
    assert!(matches!(
        crate::housekeeping::next_event(&mut feed).await,
        ChangeEvent::SessionCreated { session, .. } if session.id == "s-3"
    ));
    assert_eq!(ctx.session_ids(&t).await, ["s-2", "s-3"]);
    // Ended for good: tombstoned revoked.
    assert_eq!(ctx.check(&one).await, REVOKED);
    assert_eq!(ctx.check(&two).await, allowed(two_started));
    let records = limit_records(&ctx).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let ended = &records[0];
    assert_system(ended);
    assert_eq!(ended.action, Action::SessionRevoke);
    assert_eq!(ended.target.user.as_deref(), Some(ALICE));
    assert_eq!(ended.target.session.as_deref(), Some("s-1"));
    assert_eq!(ended.sessions_revoked, Some(1));
    assert_eq!(
        ended.detail.as_deref(),
        Some(
            grantflow_core::session_limit::ended_oldest_detail("s-3", 2, &["s-1".into()]).as_str()
        )
    );
}

async fn lowering_the_limit_ends_as_many_oldest_sessions_as_needed(ctx: Ctx) {
    let t = ctx.tenant.clone();
    for n in 1..=4 {
        assert!(is_allowed(
            ctx.check(&ctx.token(ALICE, &format!("s-{n}"))).await
        ));
        ctx.advance(SEC);
    }
    set(&ctx, rules(mins(60), None, Some(2), OnLimit::EndOldest)).await;
    // Four live, a limit of two: the new one leaves exactly two.
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-5")).await));
    assert_eq!(ctx.session_ids(&t).await, ["s-4", "s-5"]);
    for n in 1..=3 {
        assert_eq!(
            ctx.check(&ctx.token(ALICE, &format!("s-{n}"))).await,
            REVOKED
        );
    }
    let records = limit_records(&ctx).await;
    assert_eq!(
        records.len(),
        1,
        "one record for the one request: {records:?}"
    );
    assert_eq!(records[0].sessions_revoked, Some(3));
    assert_eq!(records[0].target.session.as_deref(), Some("s-1"));
}

async fn the_session_limit_counts_only_live_sessions(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(
        &ctx,
        rules(mins(15), Some(mins(5)), Some(2), OnLimit::RefuseNew),
    )
    .await;
    // s-1 reaches the max age (kept busy), s-2 goes idle, s-3 was revoked: none counts.
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(4));
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-2")).await));
    assert!(is_allowed(ctx.check(&one).await));
    ctx.revoke(revocation(&t, session("s-2"), "signed out"))
        .await;
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-3")).await));
    for _ in 0..2 {
        ctx.advance(mins(4));
        assert!(is_allowed(ctx.check(&one).await));
    }
    // s-3: 8 minutes unused (idle); s-1: busy. One live.
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-4")).await));
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "s-5")).await,
        Verdict::SessionLimit { limit: 2 }
    );
    ctx.advance(mins(4));
    // s-1 is past the max age (16 minutes): room again.
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-5")).await));
}

async fn the_session_limit_is_off_by_default(ctx: Ctx) {
    for n in 0..20 {
        let token = ctx.token(ALICE, &format!("s-{n}"));
        assert_eq!(ctx.check(&token).await, created(T0));
    }
    assert!(limit_records(&ctx).await.is_empty());
}

async fn a_fresh_sign_in_refused_by_the_limit_keeps_its_key_ended(ctx: Ctx) {
    let t = ctx.tenant.clone();
    set(
        &ctx,
        rules(mins(60), Some(mins(5)), Some(1), OnLimit::RefuseNew),
    )
    .await;
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(6));
    let two = ctx.token(ALICE, "s-2");
    assert!(is_allowed(ctx.check(&two).await), "s-1 is idle");
    // A fresh sign-in under s-1 would start it anew, but the user holds one live session.
    let fresh = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, Verdict::SessionLimit { limit: 1 });
    assert_eq!(ctx.check(&one).await, idle(5), "s-1 stays ended as idle");
    assert_eq!(ctx.session_ids(&t).await, ["s-2"]);
}

async fn the_rules_survive_a_restart(mut ctx: Ctx) {
    let t = ctx.tenant.clone();
    let rules = rules(mins(60), Some(mins(5)), Some(2), OnLimit::EndOldest);
    set(&ctx, rules.clone()).await;
    ctx.restart().await;
    assert_eq!(ctx.policy(&t).await, rules);
}

async fn the_change_feed_carries_the_rules(ctx: Ctx) {
    let t = ctx.tenant.clone();
    let mut feed = ctx.store().subscribe(&t).await.unwrap();
    let rules = rules(mins(45), Some(mins(7)), Some(4), OnLimit::EndOldest);
    set(&ctx, rules.clone()).await;
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        ChangeEvent::PolicyChanged {
            tenant: t.clone(),
            policy: rules.clone()
        }
    );
    assert_eq!(ctx.policy(&t).await, rules);
    // Turned off again: the feed says so too.
    set(&ctx, policy(mins(45))).await;
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        ChangeEvent::PolicyChanged {
            tenant: t.clone(),
            policy: policy(mins(45))
        }
    );
    assert_eq!(ctx.policy(&t).await, policy(mins(45)));
}

// -- Redis only ---------------------------------------------------------------------------------

/// The commands clients sent to the server at `port` while `during` ran, by name (upper
/// case), as `MONITOR` shows them: the commands a script runs (`[0 lua]`) are not counted.
async fn client_commands<F: std::future::Future<Output = ()>>(port: u16, during: F) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read};
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "MONITOR"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli MONITOR");
    let mut out = BufReader::new(monitor.stdout.take().expect("piped"));
    // MONITOR answers OK once it is listening.
    let mut first = String::new();
    out.read_line(&mut first).expect("MONITOR answers");
    assert_eq!(first.trim(), "OK");
    during.await;
    // Its last lines reach the pipe within a moment; then the monitor is stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    monitor.kill().expect("stop MONITOR");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("MONITOR output");
    monitor.wait().expect("MONITOR ends");
    rest.lines()
        .filter(|line| !line.contains(" lua]"))
        .filter_map(|line| line.split_once("] \"")?.1.split('"').next())
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The idle check and the touch are inside `check.lua`: a check of a live session, touching it
/// or not, ending it as idle or not, is one `EVALSHA` and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_check_with_the_idle_timeout_is_one_evalsha() {
    let server = RedisServer::start().await;
    let ctx = Ctx::on_redis(redis_settings(vec![server.url()], false));
    set(
        &ctx,
        rules(mins(60), Some(mins(5)), Some(3), OnLimit::RefuseNew),
    )
    .await;
    let one = ctx.token(ALICE, "s-1");
    // The first check loads the script and registers the tenant.
    assert_eq!(ctx.check(&one).await, created(T0));
    let checks = 12;
    let commands = client_commands(server.port, async {
        for _ in 0..checks - 1 {
            ctx.advance(mins(4));
            assert_eq!(ctx.check(&one).await, allowed(T0), "touched every time");
        }
        ctx.advance(mins(6));
        assert_eq!(ctx.check(&one).await, idle(5));
    })
    .await;
    assert_eq!(
        commands,
        vec!["EVALSHA"; checks],
        "one round trip per check"
    );
}

/// A policy hash written before the rules existed (`max_age_ms` and `source` only) reads, and
/// decides, with both off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_policy_hash_without_the_rules_reads_as_off() {
    let server = RedisServer::shared().await;
    let ctx = Ctx::on_redis(redis_settings(vec![server.url()], false));
    let key = format!("gf:{{{}}}:policy", ctx.tenant);
    let written = redis_cli(
        server.port,
        &[
            "HSET",
            &key,
            "max_age_ms",
            "1800000",
            "source",
            r#"{"kind":"admin"}"#,
        ],
    );
    assert!(written.is_some());
    assert_eq!(ctx.policy(&ctx.tenant).await, policy(mins(30)));
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.advance(mins(29));
    assert_eq!(ctx.check(&one).await, allowed(T0));
}
