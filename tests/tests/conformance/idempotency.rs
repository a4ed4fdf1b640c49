//! Idempotency keys: bound to the request they first came with (its fingerprint: action,
//! target, lock, reason) for a day.

use grantflow_core::revocation::IDEMPOTENCY_TTL;
use grantflow_core::store::StoreError;

use crate::harness::*;

cases! {
    an_idempotent_revocation_is_applied_once;
    a_replay_returns_the_first_outcome_and_writes_nothing;
    a_key_reused_for_another_request_is_refused_and_changes_nothing;
    idempotency_keys_are_per_tenant;
    idempotency_keys_are_forgotten_after_a_day [embedded, memory];
}

async fn an_idempotent_revocation_is_applied_once(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.check(&ctx.token("u1", "a")).await;
    let first = ctx
        .revoke(keyed(revocation(t, user("u1"), "INC-1"), "uid-1"))
        .await;
    assert_eq!(first.sessions_revoked, 1);
    ctx.advance(3 * SEC);
    let b = authenticated(ctx.token("u1", "b"), ctx.now_secs());
    assert!(is_allowed(ctx.check(&b).await));
    let second = ctx
        .revoke(keyed(revocation(t, user("u1"), "INC-1"), "uid-1"))
        .await;
    assert_eq!(
        (second.sessions_revoked, &second.audit_id),
        (first.sessions_revoked, &first.audit_id),
        "the same outcome, and nothing revoked again"
    );
    assert!(is_allowed(ctx.check(&b).await));
    assert_eq!(ctx.audit(t, 10).await.len(), 1, "one audit record");
}

pub(crate) async fn a_replay_returns_the_first_outcome_and_writes_nothing(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.check(&ctx.token(ALICE, "a-1")).await;
    ctx.check(&ctx.token(ALICE, "a-2")).await;
    let request = keyed(
        revocation(t, lock(ALICE, T0 + 3_600_000), "INC-7"),
        "rev-uid-7",
    );
    let first = ctx.revoke(request.clone()).await;
    assert_eq!(first.sessions_revoked, 2);
    assert!(!first.replayed);
    let blocked = ctx.blocked(t).await;

    // The same request again, later and through another door (actor and source are not part
    // of the fingerprint): the first answer, marked as a replay.
    ctx.advance(mins(5));
    let fresh = authenticated(ctx.token(ALICE, "a-3"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked(T0 + 3_600_000), "locked");
    let mut again = request.clone();
    again.actor.id = "another-admin".into();
    again.source = grantflow_core::audit::Source::Kubernetes;
    let replay = ctx.revoke(again).await;
    assert!(replay.replayed);
    assert_eq!(replay.sessions_revoked, first.sessions_revoked);
    assert_eq!(replay.audit_id, first.audit_id);
    let audit = ctx.audit(t, 10).await;
    assert_eq!(audit.len(), 1, "one audit record");
    assert_eq!(audit[0].id, first.audit_id);
    assert_eq!(ctx.blocked(t).await, blocked, "the lock is not set again");
    // Replayed as often as asked.
    let third = ctx.revoke(request).await;
    assert!(third.replayed);
    assert_eq!(third.audit_id, first.audit_id);
}

async fn a_key_reused_for_another_request_is_refused_and_changes_nothing(ctx: Ctx) {
    let t = &ctx.tenant;
    let alice = ctx.token(ALICE, "a-1");
    let bob = ctx.token(BOB, "b-1");
    ctx.check(&alice).await;
    ctx.check(&bob).await;
    let first = ctx
        .revoke(keyed(revocation(t, user(ALICE), "INC-1"), "k-1"))
        .await;
    assert_eq!(first.sessions_revoked, 1);
    ctx.advance(SEC);

    let others = [
        revocation(t, user(BOB), "INC-1"),
        revocation(t, user(ALICE), "INC-2"),
        revocation(t, lock(ALICE, T0 + 3_600_000), "INC-1"),
        revocation(t, session("b-1"), "INC-1"),
    ];
    for other in others {
        let answer = ctx.try_revoke(&keyed(other.clone(), "k-1")).await;
        assert_eq!(answer, Err(StoreError::IdempotencyKeyReused), "{other:?}");
    }
    // Nothing changed: the other user is still signed in, no lock, one audit record.
    assert_eq!(ctx.check(&bob).await, allowed(T0));
    assert_eq!(ctx.session_ids(t).await, ["b-1"]);
    let blocked = ctx.blocked(t).await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        (blocked[0].user.as_str(), blocked[0].lock_until),
        (ALICE, None)
    );
    assert_eq!(ctx.audit(t, 10).await.len(), 1);
    // The key still answers for its own request.
    let replay = ctx
        .revoke(keyed(revocation(t, user(ALICE), "INC-1"), "k-1"))
        .await;
    assert!(replay.replayed);
    assert_eq!(replay.audit_id, first.audit_id);
}

async fn idempotency_keys_are_per_tenant(ctx: Ctx) {
    let (t1, t2) = (&ctx.tenant, &ctx.other_tenant);
    ctx.check(&ctx.token_in(t2, BOB, "b-1")).await;
    let here = ctx
        .revoke(keyed(revocation(t1, user(ALICE), "INC-1"), "k-1"))
        .await;
    // The same key in another tenant is another request there.
    let there = ctx
        .revoke(keyed(revocation(t2, user(BOB), "INC-2"), "k-1"))
        .await;
    assert!(!there.replayed);
    assert_eq!(there.sessions_revoked, 1);
    assert_ne!(there.audit_id, here.audit_id);
    let bob = authenticated(ctx.token_in(t2, BOB, "b-1"), T0 / 1000);
    assert_eq!(ctx.check(&bob).await, REVOKED);
}

/// Only where the clock can be moved: Redis forgets a key when its TTL (a real day) ends.
async fn idempotency_keys_are_forgotten_after_a_day(ctx: Ctx) {
    let t = &ctx.tenant;
    let request = keyed(revocation(t, user(ALICE), "INC-1"), "k-1");
    let first = ctx.revoke(request.clone()).await;
    ctx.advance(IDEMPOTENCY_TTL - MS);
    assert!(ctx.revoke(request.clone()).await.replayed);
    let other = keyed(revocation(t, user(BOB), "INC-2"), "k-1");
    assert_eq!(
        ctx.try_revoke(&other).await,
        Err(StoreError::IdempotencyKeyReused)
    );

    // A day later the key is free: the same request is applied again (a new record), and
    // housekeeping removes what is left of it.
    ctx.advance(MS);
    let again = ctx.revoke(request).await;
    assert!(!again.replayed);
    assert_ne!(again.audit_id, first.audit_id);
    assert_eq!(ctx.audit(t, 10).await.len(), 2);
    ctx.advance(IDEMPOTENCY_TTL);
    ctx.maintain().await;
    let reused = ctx.revoke(other).await;
    assert!(!reused.replayed, "the key is free for another request");
    assert_eq!(ctx.audit(t, 10).await.len(), 3);
}
