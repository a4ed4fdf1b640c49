//! Locks that explain themselves (docs/design.md §3): a lock carries a message for the user,
//! returned with the refusal, listed with the blocked users, bound to the idempotency key,
//! kept across a restart, and gone with the lock.

use grantflow_core::revocation::RevocationTarget;
use grantflow_core::session::Verdict;
use grantflow_core::store::StoreError;

use crate::harness::*;

cases! {
    a_lock_message_is_returned_on_refusal_listed_and_audited;
    a_replay_with_the_same_message_replays_and_another_message_is_refused;
    a_lock_message_survives_a_restart [embedded];
    unblock_removes_the_lock_and_its_message;
    a_new_lock_replaces_the_message_and_a_revoke_all_keeps_it;
}

/// Characters a page must escape, and a non-ASCII one.
const MESSAGE: &str = "INC-2041 <script>alert(1)</script> & \"Zoë\"";

fn lock_with(user: &str, until: i64, message: Option<&str>) -> RevocationTarget {
    RevocationTarget::User {
        user: user.into(),
        lock_until: Some(until),
        message: message.map(str::to_owned),
    }
}

fn locked_saying(until: i64, message: &str) -> Verdict {
    Verdict::Locked {
        until,
        message: Some(message.into()),
    }
}

async fn a_lock_message_is_returned_on_refusal_listed_and_audited(ctx: Ctx) {
    let t = &ctx.tenant;
    let a1 = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    assert_eq!(ctx.check(&a1).await, created(T0));
    ctx.advance(SEC);
    let until = ctx.now() + 3_600_000;
    let outcome = ctx
        .revoke(revocation(
            t,
            lock_with(ALICE, until, Some(MESSAGE)),
            "INC-2041",
        ))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);

    // The ended session and a fresh sign-in both get the lock with its message.
    assert_eq!(ctx.check(&a1).await, locked_saying(until, MESSAGE));
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "a-2"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked_saying(until, MESSAGE));
    // Without auth_time too: the lock answers before the watermark.
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "a-3")).await,
        locked_saying(until, MESSAGE)
    );

    let blocked = ctx.blocked(t).await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].lock_until, Some(until));
    assert_eq!(blocked[0].message.as_deref(), Some(MESSAGE));

    let record = &ctx.audit(t, 1).await[0];
    assert_eq!(
        record.detail.as_deref(),
        Some(
            format!(
                "locked until {}: {MESSAGE}",
                grantflow_core::clock::rfc3339(until)
            )
            .as_str()
        )
    );

    // Once the lock ends, nothing says it any more.
    ctx.set_time(until);
    assert!(ctx.blocked(t).await.iter().all(|b| b.message.is_none()));
    let after = authenticated(ctx.token(ALICE, "a-4"), ctx.now_secs());
    assert_eq!(ctx.check(&after).await, created(until));
}

async fn a_replay_with_the_same_message_replays_and_another_message_is_refused(ctx: Ctx) {
    let t = &ctx.tenant;
    let until = T0 + 3_600_000;
    let request = |message: Option<&str>| {
        keyed(
            revocation(t, lock_with(ALICE, until, message), "INC-2041"),
            "k-lock",
        )
    };
    let first = ctx.revoke(request(Some("INC-2041"))).await;
    assert!(!first.replayed);
    ctx.advance(SEC);
    let replay = ctx.revoke(request(Some("INC-2041"))).await;
    assert!(replay.replayed);
    assert_eq!(replay.audit_id, first.audit_id);
    for other in [Some("INC-2042"), None] {
        assert_eq!(
            ctx.try_revoke(&request(other)).await,
            Err(StoreError::IdempotencyKeyReused),
            "{other:?}"
        );
    }
    // Nothing changed: the first message stands, one audit record.
    let fresh = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked_saying(until, "INC-2041"));
    assert_eq!(ctx.audit(t, 10).await.len(), 1);
}

async fn a_lock_message_survives_a_restart(mut ctx: Ctx) {
    let t = ctx.tenant.clone();
    let until = T0 + 3_600_000;
    ctx.revoke(revocation(
        &t,
        lock_with(ALICE, until, Some(MESSAGE)),
        "INC-2041",
    ))
    .await;
    let before = ctx.blocked(&t).await;
    ctx.restart().await;
    assert_eq!(ctx.blocked(&t).await, before);
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked_saying(until, MESSAGE));
}

async fn unblock_removes_the_lock_and_its_message(ctx: Ctx) {
    let t = &ctx.tenant;
    let until = T0 + 3_600_000;
    ctx.revoke(revocation(
        t,
        lock_with(BOB, until, Some(MESSAGE)),
        "INC-2041",
    ))
    .await;
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(BOB, "b-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked_saying(until, MESSAGE));
    let lifted = ctx
        .store()
        .unblock_user(t, BOB, unblock_record(t, BOB, ctx.now()))
        .await;
    assert_eq!(lifted, Ok(true));
    assert!(ctx.blocked(t).await.is_empty());
    assert_eq!(ctx.check(&fresh).await, created(ctx.now_secs() * 1000));
    // A later lock without a message says none: the old one is gone.
    ctx.advance(SEC);
    let until = ctx.now() + 3_600_000;
    ctx.revoke(revocation(t, lock(BOB, until), "again")).await;
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(BOB, "b-2"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked(until));
    assert_eq!(ctx.blocked(t).await[0].message, None);
}

async fn a_new_lock_replaces_the_message_and_a_revoke_all_keeps_it(ctx: Ctx) {
    let t = &ctx.tenant;
    let until = T0 + 3_600_000;
    ctx.revoke(revocation(t, lock_with(ALICE, until, Some("first")), "1"))
        .await;
    ctx.advance(SEC);
    let later = until + 3_600_000;
    ctx.revoke(revocation(t, lock_with(ALICE, later, Some("second")), "2"))
        .await;
    ctx.advance(SEC);
    // A revoke-all without a lock keeps the running lock and its message.
    ctx.revoke(revocation(t, user(ALICE), "3")).await;
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked_saying(later, "second"));
    assert_eq!(ctx.blocked(t).await[0].message.as_deref(), Some("second"));
}
