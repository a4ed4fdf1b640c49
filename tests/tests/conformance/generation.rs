//! A store never forgets silently (docs/design.md §3, Failure): restarts keep every
//! verdict-deciding fact; a store that lost data (or is new) refuses tokens issued before the loss
//! time L.

use grantflow_core::audit::{Action, ActorKind, AuditRecord, Source};
use grantflow_core::policy::Policy;
use grantflow_core::revocation::BlockedUser;
use grantflow_core::session::SessionRecord;
use grantflow_core::store::{StoreError, StoreReset};

use crate::harness::*;

cases! {
    a_new_store_refuses_tokens_issued_before_it_began [embedded, memory];
    a_reopened_data_folder_keeps_every_fact [embedded];
    a_wiped_redis_refuses_tokens_issued_before_the_loss [redis, redis_cluster; own];
    another_process_refuses_tokens_from_before_a_recorded_loss [redis, redis_cluster; own];
    a_marker_replaced_by_a_process_that_never_knew_it_is_found_by_one_that_did [redis; own];
}

/// A new data folder, or a memory store started now, cannot tell what an earlier store
/// revoked: it begins a generation at L = the end of the second before now
/// (`decision::begins_at`) and refuses every token issued before it (JWT claims have whole
/// seconds; `iat`, else `auth_time`): tokens of the second it began pass.
async fn a_new_store_refuses_tokens_issued_before_it_began(mut ctx: Ctx) {
    ctx.advance(mins(10));
    let began = ctx.now();
    ctx.begin_new_store();
    let resets = ctx.resets();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(
        (resets[0].tenant.as_ref(), resets[0].lost_at),
        (None, grantflow_core::decision::begins_at(began))
    );
    ctx.advance(500 * MS);
    let l = began / 1000;

    let before = issued(ctx.token(ALICE, "a-1"), l - 1);
    assert_eq!(ctx.check(&before).await, EXPIRED);
    let same_second = issued(ctx.token(ALICE, "a-2"), l);
    assert_eq!(ctx.check(&same_second).await, created(ctx.now()));
    // Without iat, auth_time tells when the token was issued at the latest.
    let old_sign_in = issued(authenticated(ctx.token(ALICE, "a-3"), l - 60), None);
    assert_eq!(ctx.check(&old_sign_in).await, EXPIRED);
    let new_sign_in = issued(authenticated(ctx.token(BOB, "b-1"), l), None);
    assert_eq!(ctx.check(&new_sign_in).await, created(began));
    // A token that says neither cannot prove it came after L.
    let undated = issued(ctx.token(BOB, "b-2"), None);
    assert_eq!(ctx.check(&undated).await, EXPIRED);
    // Refused, not tombstoned: the same sid issued later is let in.
    ctx.advance(SEC);
    let later = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&later).await, created(ctx.now()));
    assert_eq!(ctx.session_ids(&ctx.tenant).await, ["b-1", "a-2", "a-1"]);
}

/// Dropping the embedded store and opening its folder again (a restart) keeps sessions,
/// tombstones, watermarks, locks, policies, the audit trail, idempotency records and L.
async fn a_reopened_data_folder_keeps_every_fact(mut ctx: Ctx) {
    let (t, other) = (ctx.tenant.clone(), ctx.other_tenant.clone());
    let policy_record = policy_record(&t, ctx.now());
    ctx.store()
        .set_policy(&t, policy(mins(30)), Some(policy_record))
        .await
        .unwrap();
    let a1 = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    let a2 = ctx.token(ALICE, "a-2");
    for token in [&a1, &a2, &ctx.token(BOB, "b-1"), &ctx.token(CAROL, "c-1")] {
        assert!(is_allowed(ctx.check(token).await));
    }
    assert_eq!(
        ctx.check(&ctx.token_in(&other, ALICE, "x-1")).await,
        created(T0)
    );

    ctx.advance(SEC);
    ctx.revoke(revocation(&t, session("a-1"), "lost laptop"))
        .await;
    let bob = ctx
        .revoke(keyed(revocation(&t, user(BOB), "phished"), "k-bob"))
        .await;
    let carol_until = T0 + 2 * HOUR.as_millis() as i64;
    let carol = keyed(revocation(&t, lock(CAROL, carol_until), "leave"), "k-carol");
    ctx.revoke(carol.clone()).await;
    ctx.revoke(revocation(&other, session("x-1"), "INC-3"))
        .await;
    // A sign-in after that revocation, first seen when it is already older than the max age:
    // refused, and the key now ends 15 minutes after that sign-in.
    let signed_in = T0 / 1000 + 2;
    ctx.set_time(signed_in * 1000 + mins(15).as_millis() as i64);
    let late = authenticated(ctx.token_in(&other, ALICE, "x-1"), signed_in);
    assert_eq!(ctx.check(&late).await, EXPIRED);
    let between = authenticated(ctx.token_in(&other, ALICE, "x-1"), ctx.now_secs() - 60);
    assert_eq!(ctx.check(&between).await, EXPIRED);
    // A touch, written behind by housekeeping.
    ctx.advance(SEC);
    assert_eq!(ctx.check(&a2).await, allowed(T0));
    ctx.maintain().await;

    let before = snapshot(&ctx, &t, &other).await;
    assert_eq!(before.sessions.len(), 1, "a-2 lives: {:?}", before.sessions);
    assert_eq!(before.sessions[0].last_seen, ctx.now());
    assert_eq!(before.audit.len(), 4);
    assert_eq!(before.blocked.len(), 2);
    ctx.restart().await;
    assert_eq!(snapshot(&ctx, &t, &other).await, before);

    // The verdicts are those of before the restart.
    ctx.advance(SEC);
    assert_eq!(ctx.check(&a1).await, REVOKED, "tombstone");
    assert_eq!(ctx.check(&a2).await, allowed(T0), "live session");
    assert_eq!(ctx.check(&ctx.token(BOB, "b-2")).await, REAUTHENTICATE);
    let bob_old = authenticated(ctx.token(BOB, "b-3"), T0 / 1000);
    assert_eq!(ctx.check(&bob_old).await, REVOKED, "watermark");
    let carol_fresh = authenticated(ctx.token(CAROL, "c-2"), ctx.now_secs());
    assert_eq!(ctx.check(&carol_fresh).await, locked(carol_until), "lock");
    assert_eq!(ctx.check(&between).await, EXPIRED, "the later end");
    let replay = ctx
        .revoke(keyed(revocation(&t, user(BOB), "phished"), "k-bob"))
        .await;
    assert!(replay.replayed);
    assert_eq!(replay.audit_id, bob.audit_id);
    let mismatch = keyed(revocation(&t, user(ALICE), "leave"), "k-carol");
    assert_eq!(
        ctx.try_revoke(&mismatch).await,
        Err(StoreError::IdempotencyKeyReused)
    );
    // The session created before the restart goes on expiring by its age.
    ctx.set_time(T0 + mins(30).as_millis() as i64);
    assert_eq!(ctx.check(&a2).await, EXPIRED);

    // And once more, with the generation: L is the folder's, not the restart's.
    let l = before.resets[0].lost_at;
    ctx.restart().await;
    assert_eq!(ctx.resets()[0].lost_at, l);
    assert_eq!(ctx.check(&a2).await, EXPIRED);
}

/// Redis wiped (`FLUSHALL`: a restart without persistence, a failover to an empty replica)
/// after a revocation: the revoked token is refused all the same, as is every token issued
/// before the loss; the loss is audited and listed.
async fn a_wiped_redis_refuses_tokens_issued_before_the_loss(ctx: Ctx) {
    let t = &ctx.tenant;
    let a1 = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&a1).await, created(T0));
    ctx.revoke(revocation(t, session("a-1"), "lost laptop"))
        .await;
    assert_eq!(ctx.check(&a1).await, REVOKED);
    assert!(ctx.resets().is_empty());

    ctx.wipe();
    ctx.advance(SEC);
    let lost_at = ctx.now();
    assert_eq!(ctx.check(&a1).await, EXPIRED, "the revoked token");
    let resets = ctx.resets();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0].tenant.as_deref(), Some(t.as_str()));
    assert_eq!(resets[0].lost_at, lost_at);
    let audit = ctx.audit(t, 10).await;
    assert_eq!(audit.len(), 1, "the wipe took the revocation's record");
    assert_eq!(audit[0].action, Action::StoreReset);
    assert_eq!(audit[0].actor.kind, ActorKind::System);
    assert_eq!(audit[0].source, Source::System);
    assert_eq!(
        serde_json::to_value(&audit[0]).unwrap()["action"],
        "store.reset"
    );

    // Every token issued before the loss, by anyone, and tokens that cannot say.
    let before = issued(ctx.token(BOB, "b-0"), T0 / 1000);
    assert_eq!(ctx.check(&before).await, EXPIRED);
    let undated = issued(ctx.token(BOB, "b-1"), None);
    assert_eq!(ctx.check(&undated).await, EXPIRED);
    // Found once: refusing again records nothing more.
    assert_eq!(ctx.check(&a1).await, EXPIRED);
    assert_eq!(ctx.resets().len(), 1);
    assert_eq!(ctx.audit(t, 10).await.len(), 1);

    // A token issued in the loss's own second cannot prove it came after it; one issued in a
    // later second is allowed.
    let same_second = ctx.token(BOB, "b-2");
    assert_eq!(ctx.check(&same_second).await, EXPIRED);
    ctx.advance(SEC);
    let after = ctx.token(BOB, "b-3");
    assert_eq!(ctx.check(&after).await, created(lost_at + 1000));
    ctx.advance(SEC);
    let signed_in_again = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&signed_in_again).await, created(ctx.now()));
}

/// The loss time is in Redis: a process that never knew the old marker refuses what the one
/// that found the loss refuses.
async fn another_process_refuses_tokens_from_before_a_recorded_loss(ctx: Ctx) {
    let a1 = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&a1).await, created(T0));
    ctx.wipe();
    ctx.advance(SEC);
    assert_eq!(ctx.check(&a1).await, EXPIRED);
    assert_eq!(ctx.resets().len(), 1);

    let second = ctx.second_process();
    assert_eq!(check_on(&*second, &a1).await, EXPIRED);
    let before = issued(ctx.token(BOB, "b-0"), T0 / 1000);
    assert_eq!(check_on(&*second, &before).await, EXPIRED);
    ctx.advance(SEC);
    let after = ctx.token(BOB, "b-1");
    assert_eq!(check_on(&*second, &after).await, created(ctx.now()));
    assert_eq!(ctx.check(&after).await, allowed(ctx.now()));
}

/// Wiped, then first touched by a process that never knew the old marker: that one cannot
/// tell a wiped tenant from a new one (it lets an old token in and writes a new marker). The
/// next request through a process that knew the old marker finds the change and records L as
/// the instant the new marker was written; from then on both refuse older tokens.
async fn a_marker_replaced_by_a_process_that_never_knew_it_is_found_by_one_that_did(ctx: Ctx) {
    let a1 = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&a1).await, created(T0));
    ctx.wipe();
    ctx.advance(SEC);
    let replaced_at = ctx.now();
    let second = ctx.second_process();
    assert_eq!(
        check_on(&*second, &a1).await,
        created(replaced_at),
        "a new tenant, as far as this process can tell"
    );

    ctx.advance(SEC);
    assert_eq!(ctx.check(&a1).await, EXPIRED);
    let resets = ctx.resets();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0].lost_at, replaced_at);
    assert_eq!(check_on(&*second, &a1).await, EXPIRED);
    let after = ctx.token(BOB, "b-1");
    assert_eq!(check_on(&*second, &after).await, created(ctx.now()));
    assert_eq!(
        ctx.audit(&ctx.tenant, 10).await[0].action,
        Action::StoreReset
    );
}

/// Everything the store tells about two tenants.
#[derive(Debug, PartialEq)]
struct Snapshot {
    sessions: Vec<SessionRecord>,
    other_sessions: Vec<SessionRecord>,
    audit: Vec<AuditRecord>,
    other_audit: Vec<AuditRecord>,
    blocked: Vec<BlockedUser>,
    policy: Policy,
    other_policy: Policy,
    resets: Vec<StoreReset>,
}

async fn snapshot(ctx: &Ctx, t: &str, other: &str) -> Snapshot {
    let store = ctx.store();
    Snapshot {
        sessions: store.sessions(t).await.unwrap(),
        other_sessions: store.sessions(other).await.unwrap(),
        audit: store.audit(t, 100).await.unwrap(),
        other_audit: store.audit(other, 100).await.unwrap(),
        blocked: store.blocked_users(t).await.unwrap(),
        policy: store.policy(t).await.unwrap(),
        other_policy: store.policy(other).await.unwrap(),
        resets: store.resets(),
    }
}
