//! The change feed, housekeeping (expiry without a request, forgetting after the retention)
//! and the audit trail.

use std::time::Duration;

use futures::StreamExt;
use grantflow_core::audit::{Action, AuditRecord, Source, Target};
use grantflow_core::clock::rfc3339;
use grantflow_core::decision::{DEFAULT_AUDIT_RETENTION, Limits};
use grantflow_core::session::EndReason;
use grantflow_core::store::{ChangeEvent, ChangeStream};

use crate::harness::*;

cases! {
    the_change_feed_tells_creations_ends_and_policy_changes;
    the_change_feed_tells_blocks_and_lifts;
    housekeeping_expires_old_sessions_and_tells_the_feed [; exclusive];
    housekeeping_expires_old_sessions_and_forgets_after_the_retention [; exclusive];
    housekeeping_does_not_touch_live_young_sessions_or_policies [; exclusive];
    audit_trail_is_newest_first_and_capped_by_the_limit [; exclusive];
    audit_trail_is_kept_by_time_not_by_count [; exclusive];
}

/// The event of `user`'s session `session` in `tenant` ending for `reason`.
pub fn ended(tenant: &str, session: &str, user: &str, reason: EndReason) -> ChangeEvent {
    ChangeEvent::SessionEnded {
        tenant: tenant.into(),
        session: session.into(),
        user: Some(user.into()),
        reason,
    }
}

pub async fn next_event(stream: &mut ChangeStream) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a change event within 5 s")
        .expect("the feed stays open")
}

pub(crate) async fn the_change_feed_tells_creations_ends_and_policy_changes(ctx: Ctx) {
    let t = &ctx.tenant;
    let mut feed = ctx.store().subscribe(t).await.unwrap();
    // Another tenant's changes are not in this feed.
    ctx.check(&ctx.token_in(&ctx.other_tenant, "x", "x")).await;
    ctx.check(&ctx.token("u1", "s1")).await;
    match next_event(&mut feed).await {
        ChangeEvent::SessionCreated { tenant, session } => {
            assert_eq!(
                (tenant.as_str(), session.id.as_str(), session.user.as_str()),
                (t.as_str(), "s1", "u1")
            );
            assert_eq!(session.started_at, T0);
            assert_eq!(
                session.client_label.as_deref(),
                Some("Chrome on Windows 10")
            );
        }
        other => panic!("expected SessionCreated, got {other:?}"),
    }
    ctx.revoke(revocation(t, session("s1"), "INC-1")).await;
    assert_eq!(
        next_event(&mut feed).await,
        ended(t, "s1", "u1", EndReason::Revoked)
    );
    ctx.set_policy(t, mins(5)).await;
    match next_event(&mut feed).await {
        ChangeEvent::PolicyChanged { tenant, policy } => {
            assert_eq!(tenant, *t);
            assert_eq!(policy.max_session_age, mins(5));
        }
        other => panic!("expected PolicyChanged, got {other:?}"),
    }
    ctx.store().clear_policy(t).await.unwrap();
    match next_event(&mut feed).await {
        ChangeEvent::PolicyChanged { policy, .. } => {
            assert_eq!(
                policy,
                grantflow_core::policy::Policy::default_with(mins(15))
            )
        }
        other => panic!("expected PolicyChanged, got {other:?}"),
    }
}

/// A revoke-all and a lift tell the feed that the tenant's blocked users changed (after the
/// sessions the revoke-all ended), so every replica's dashboard shows them at once; a lift
/// that lifted nothing, and a replayed revoke-all, say nothing.
async fn the_change_feed_tells_blocks_and_lifts(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.check(&ctx.token("u1", "s1")).await;
    let mut feed = ctx.store().subscribe(t).await.unwrap();
    let blocks = |user: &str| ChangeEvent::UserBlocksChanged {
        tenant: t.clone(),
        user: user.into(),
    };
    let mut revoke_all = revocation(t, user("u1"), "INC-2");
    revoke_all.idempotency_key = Some("k-feed".into());
    ctx.revoke(revoke_all.clone()).await;
    assert_eq!(
        next_event(&mut feed).await,
        ended(t, "s1", "u1", EndReason::Revoked)
    );
    assert_eq!(next_event(&mut feed).await, blocks("u1"));
    assert!(ctx.revoke(revoke_all).await.replayed);

    ctx.advance(SEC);
    let lift = |user: &str| unblock_record(t, user, ctx.now());
    assert_eq!(
        ctx.store().unblock_user(t, "u2", lift("u2")).await,
        Ok(false)
    );
    assert_eq!(
        ctx.store().unblock_user(t, "u1", lift("u1")).await,
        Ok(true)
    );
    // The next event is the lift: neither the replay nor the empty lift said anything.
    assert_eq!(next_event(&mut feed).await, blocks("u1"));
}

async fn housekeeping_expires_old_sessions_and_tells_the_feed(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.check(&ctx.token("u1", "s1")).await;
    let mut feed = ctx.store().subscribe(t).await.unwrap();
    ctx.advance(mins(16));
    assert!(
        ctx.sessions(t).await.is_empty(),
        "past the max age is not live"
    );
    ctx.maintain().await;
    assert_eq!(
        next_event(&mut feed).await,
        ended(t, "s1", "u1", EndReason::Expired)
    );
    assert_eq!(ctx.check(&ctx.token("u1", "s1")).await, EXPIRED);
}

/// Tombstones are forgotten after the retention. Redis expires them on its own clock, so the
/// retention here is a few seconds, waited for real on Redis.
async fn housekeeping_expires_old_sessions_and_forgets_after_the_retention(ctx: Ctx) {
    let ctx = ctx.with_limits(Limits {
        default_max_age: mins(15),
        retention: 3 * SEC,
        ..Limits::default()
    });
    let t = &ctx.tenant;
    let no_auth_time = ctx.token(ALICE, "s-plain");
    let with_auth_time = authenticated(ctx.token(ALICE, "s-auth"), T0 / 1000);
    ctx.check(&no_auth_time).await;
    ctx.check(&with_auth_time).await;
    ctx.advance(mins(5));
    ctx.check(&ctx.token(BOB, "s-young")).await;

    // Housekeeping expires sessions past the max age without waiting for a request.
    ctx.advance(mins(10));
    ctx.maintain().await;
    assert_eq!(ctx.session_ids(t).await, ["s-young"]);
    assert_eq!(
        ctx.check(&no_auth_time).await,
        EXPIRED,
        "tombstoned by housekeeping"
    );
    assert_eq!(ctx.check(&with_auth_time).await, EXPIRED);

    // Tombstones are kept for the retention ...
    ctx.elapse(SEC).await;
    ctx.maintain().await;
    assert_eq!(ctx.check(&no_auth_time).await, EXPIRED);
    assert_eq!(ctx.check(&with_auth_time).await, EXPIRED);

    // ... and then forgotten. What a forgotten sid does next depends on the token:
    // - without auth_time the store has nothing left to date it by, so the same sid starts a
    //   brand-new session. The retention must therefore outlast any token that may still
    //   carry the sid (Entra keeps `sid` across refreshes; default retention is 24 h);
    // - with auth_time the session's start is the sign-in, which is older than the max age,
    //   so it is expired (and tombstoned) again.
    ctx.elapse(2500 * MS).await;
    ctx.maintain().await;
    assert_eq!(ctx.check(&no_auth_time).await, created(ctx.now()));
    assert_eq!(ctx.check(&with_auth_time).await, EXPIRED);
    ctx.maintain().await;
    assert_eq!(
        ctx.check(&with_auth_time).await,
        EXPIRED,
        "tombstoned again"
    );
    assert_eq!(ctx.session_ids(t).await, ["s-young", "s-plain"]);
}

async fn housekeeping_does_not_touch_live_young_sessions_or_policies(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.set_policy(t, mins(30)).await;
    ctx.check(&ctx.token(ALICE, "s-1")).await;
    ctx.advance(mins(20));
    ctx.maintain().await;
    assert_eq!(ctx.session_ids(t).await, ["s-1"]);
    assert_eq!(ctx.policy(t).await, policy(mins(30)));
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-1")).await, allowed(T0));
}

async fn audit_trail_is_newest_first_and_capped_by_the_limit(ctx: Ctx) {
    let t = &ctx.tenant;
    let mut ids = Vec::new();
    for i in 0..5 {
        let target = session(&format!("s-{i}"));
        let outcome = ctx.revoke(revocation(t, target, &format!("r{i}"))).await;
        ids.push(outcome.audit_id);
        ctx.advance(SEC);
    }
    let reasons = |trail: &[AuditRecord]| {
        trail
            .iter()
            .map(|r| r.reason.clone().unwrap())
            .collect::<Vec<_>>()
    };

    let newest = ctx.audit(t, 3).await;
    assert_eq!(reasons(&newest), ["r4", "r3", "r2"]);
    assert_eq!(newest[0].time, rfc3339(T0 + 4000));
    let all = ctx.audit(t, 100).await;
    assert_eq!(reasons(&all), ["r4", "r3", "r2", "r1", "r0"]);
    let all_ids: Vec<String> = all.iter().map(|r| r.id.clone()).collect();
    ids.reverse();
    assert_eq!(all_ids, ids);
    assert!(ctx.audit(t, 0).await.is_empty());
    assert!(ctx.audit(&ctx.other_tenant, 100).await.is_empty());

    // The trail survives housekeeping.
    ctx.advance(2 * DAY);
    ctx.maintain().await;
    assert_eq!(ctx.audit(t, 100).await.len(), 5);
}

/// The audit trail is kept by time (`audit_retention`, 90 days by default), however many
/// records: a burst of more than 10 000 (the old ring, which a tenant admin could use to push a
/// lock out of the trail) keeps every record. Records as old as the retention are forgotten by
/// housekeeping, the younger ones stay. Redis stream ids are the store's time (`audit.lua`), so
/// the case's clock moves every store alike.
async fn audit_trail_is_kept_by_time_not_by_count(mut ctx: Ctx) {
    // More than 10 000 by more than a Redis stream node, which `MAXLEN ~` would have kept.
    const BURST: usize = 10_200;
    let t = ctx.tenant.clone();
    let retention = DEFAULT_AUDIT_RETENTION.as_millis() as i64;
    let locked = ctx
        .revoke(revocation(
            &t,
            lock(ALICE, T0 + HOUR.as_millis() as i64),
            "INC-7",
        ))
        .await;
    let store = ctx.store();
    let burst: Vec<Result<(), _>> = futures::stream::iter(0..BURST)
        .map(|i| {
            let record = AuditRecord {
                id: grantflow_core::audit::new_audit_id(),
                time: rfc3339(ctx.now()),
                tenant: t.clone(),
                actor: admin(),
                action: Action::PolicyUpdate,
                target: Target::default(),
                reason: Some(format!("burst {i}")),
                source: Source::Api,
                sessions_revoked: None,
                detail: Some("maxSessionAge=30m".into()),
            };
            let t = &t;
            async move { store.set_policy(t, policy(mins(30)), Some(record)).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(burst.iter().all(Result::is_ok), "every policy write lands");
    let everything = 2 * BURST;
    let trail = ctx.audit(&t, everything).await;
    assert_eq!(trail.len(), BURST + 1, "no count cap pushes records out");
    assert_eq!(
        trail.last().unwrap().id,
        locked.audit_id,
        "the lock is kept"
    );

    ctx.advance(DAY);
    let young = ctx
        .revoke(revocation(&t, session("s-young"), "young"))
        .await;
    // Younger than the retention: kept by housekeeping, to the millisecond.
    ctx.set_time(T0 + retention - 1);
    ctx.maintain().await;
    assert_eq!(ctx.audit(&t, everything).await.len(), BURST + 2);
    // As old as the retention: forgotten.
    ctx.advance(MS);
    ctx.maintain().await;
    let ids = |trail: Vec<AuditRecord>| trail.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ctx.audit(&t, everything).await),
        [young.audit_id.as_str()]
    );
    if ctx.kind == StoreKind::Embedded {
        // The records forgotten are gone from the data folder too.
        ctx.restart().await;
        assert_eq!(ids(ctx.audit(&t, everything).await), [young.audit_id]);
    }
}
