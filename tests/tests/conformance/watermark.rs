//! The revoke-all watermark W (step 2): a token must prove a sign-in after W with its
//! `auth_time` (without one: sign in again; `iat` proves nothing), for the watermark retention;
//! the blocked users and lifting their marks.

use grantflow_core::decision::{DEFAULT_WATERMARK_RETENTION, Limits};
use grantflow_core::revocation::BlockedUser;

use crate::harness::*;

cases! {
    after_revoke_all_earlier_sign_ins_cannot_open_a_session_but_a_fresh_one_can;
    after_revoke_all_unseen_sids_and_tokens_without_sid_need_a_later_sign_in;
    a_token_without_auth_time_is_told_to_reauthenticate_once_a_watermark_exists;
    the_watermark_stops_refusing_after_the_watermark_retention;
    blocked_users_lists_watermarks_and_locks_and_unblock_lifts_them;
    a_lock_that_outlasts_the_watermark_is_listed_without_it;
    housekeeping_forgets_watermarks_after_the_retention_but_not_active_locks [; exclusive];
}

async fn after_revoke_all_earlier_sign_ins_cannot_open_a_session_but_a_fresh_one_can(ctx: Ctx) {
    let signed_in = T0 / 1000;
    ctx.check(&authenticated(ctx.token(ALICE, "a-1"), signed_in))
        .await;
    // Revoke in the middle of a second, 10 minutes later.
    ctx.advance(mins(10) + 500 * MS);
    let revoked_at_secs = ctx.now_secs();
    ctx.revoke(revocation(&ctx.tenant, user(ALICE), "compromised"))
        .await;

    // Tokens from before the revocation, each with a new sid (e.g. another app or a silent
    // refresh with a new session id):
    let before = authenticated(ctx.token(ALICE, "a-2"), signed_in);
    assert_eq!(
        ctx.check(&before).await,
        REVOKED,
        "auth_time before the watermark"
    );
    let before = issued(ctx.token(ALICE, "a-3"), signed_in + 60);
    assert_eq!(
        ctx.check(&before).await,
        REAUTHENTICATE,
        "no auth_time: the token proves no sign-in (iat moves with every refresh)"
    );
    let before = issued(
        authenticated(ctx.token(ALICE, "a-4"), signed_in),
        revoked_at_secs + 5,
    );
    assert_eq!(
        ctx.check(&before).await,
        REVOKED,
        "auth_time wins over a later iat"
    );
    // Claims have whole seconds, the watermark has milliseconds: a sign-in within the second
    // of the revocation cannot prove it came after it, so it is refused (fail closed).
    let same_second = authenticated(ctx.token(ALICE, "a-5"), revoked_at_secs);
    assert_eq!(ctx.check(&same_second).await, REVOKED);
    assert!(ctx.sessions(&ctx.tenant).await.is_empty());

    // A fresh sign-in afterwards works; a fresh iat alone does not.
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "a-6"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, created(ctx.now_secs() * 1000));
    let fresh_iat = issued(ctx.token(ALICE, "a-7"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh_iat).await, REAUTHENTICATE);
    assert_eq!(ctx.session_ids(&ctx.tenant).await, ["a-6"]);
    // The sids refused above were not tombstoned by being refused: a fresh sign-in that
    // happens to reuse one is let in.
    let reused = authenticated(ctx.token(ALICE, "a-2"), ctx.now_secs());
    assert_eq!(ctx.check(&reused).await, created(ctx.now_secs() * 1000));
    // The sid that was live at the revocation is tombstoned: a silent refresh of it (same
    // auth_time) stays refused; a sign-in after the revocation under that same sid (Entra
    // keeps `sid` for the browser's sign-in session) starts a new session.
    let refreshed = issued(
        authenticated(ctx.token(ALICE, "a-1"), signed_in),
        ctx.now_secs(),
    );
    assert_eq!(ctx.check(&refreshed).await, REVOKED);
    let same_sid = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&same_sid).await, created(ctx.now_secs() * 1000));
}

async fn after_revoke_all_unseen_sids_and_tokens_without_sid_need_a_later_sign_in(ctx: Ctx) {
    let t = &ctx.tenant;
    let live = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    assert_eq!(ctx.check(&live).await, created(T0));
    ctx.advance(mins(1));
    let outcome = ctx.revoke(revocation(t, user(ALICE), "phished")).await;
    assert_eq!(outcome.sessions_revoked, 1);
    ctx.advance(SEC);
    let now = ctx.now_secs();
    let before = T0 / 1000 + 30;

    // A sid never seen, without auth_time: sign in again.
    let unseen = ctx.token(ALICE, "a-unseen");
    assert_eq!(ctx.check(&unseen).await, REAUTHENTICATE);
    // No sid (each token its own session), without auth_time: sign in again.
    let by_uti = ctx.token_without_sid(ALICE, Some("uti-9"), "raw-9");
    assert_eq!(ctx.check(&by_uti).await, REAUTHENTICATE);
    let by_token = ctx.token_without_sid(ALICE, None, "raw-10");
    assert_eq!(ctx.check(&by_token).await, REAUTHENTICATE);
    // However recent its iat.
    assert_eq!(
        ctx.check(&issued(unseen.clone(), now + 60)).await,
        REAUTHENTICATE
    );
    // Signed in before the watermark: revoked, with or without a sid.
    let old = authenticated(ctx.token(ALICE, "a-old"), before);
    assert_eq!(ctx.check(&old).await, REVOKED);
    assert_eq!(
        ctx.check(&authenticated(by_uti.clone(), before)).await,
        REVOKED
    );
    // Signed in after it: allowed, with or without a sid.
    let new = authenticated(ctx.token(ALICE, "a-new"), now);
    assert_eq!(ctx.check(&new).await, created(now * 1000));
    assert_eq!(
        ctx.check(&authenticated(by_uti.clone(), now)).await,
        created(now * 1000)
    );
    let mut ids = ctx.session_ids(t).await;
    ids.sort();
    let mut expected = vec!["a-new".to_owned(), by_uti.session.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // Another user has no watermark.
    assert_eq!(ctx.check(&ctx.token(BOB, "b-1")).await, created(ctx.now()));
}

async fn a_token_without_auth_time_is_told_to_reauthenticate_once_a_watermark_exists(ctx: Ctx) {
    let bare = ctx.token(ALICE, "a-1");
    assert_eq!(
        ctx.check(&bare).await,
        created(T0),
        "no watermark yet: allowed, starts now"
    );
    ctx.advance(SEC);
    ctx.revoke(revocation(&ctx.tenant, user(ALICE), "reset"))
        .await;
    ctx.advance(mins(1));
    // A new sid without auth_time cannot prove it came after the watermark.
    assert_eq!(ctx.check(&ctx.token(ALICE, "a-2")).await, REAUTHENTICATE);
    ctx.advance(mins(5));
    assert_eq!(ctx.check(&ctx.token(ALICE, "a-3")).await, REAUTHENTICATE);
    // The revoked session too: the watermark is checked before its tombstone.
    assert_eq!(ctx.check(&bare).await, REAUTHENTICATE);
    // Only that user has a watermark.
    assert_eq!(ctx.check(&ctx.token(BOB, "b-1")).await, created(ctx.now()));
}

async fn the_watermark_stops_refusing_after_the_watermark_retention(ctx: Ctx) {
    let ctx = ctx.with_limits(Limits {
        watermark_retention: HOUR,
        ..Limits::default()
    });
    let t = &ctx.tenant;
    // A long policy, so that a token signed in before the watermark is not also too old.
    ctx.set_policy(t, DAY).await;
    ctx.revoke(revocation(t, user(ALICE), "incident")).await;
    assert_eq!(
        ctx.blocked(t).await,
        [BlockedUser {
            user: ALICE.into(),
            not_before: Some(T0),
            lock_until: None,
            message: None,
            holds_until: T0 + HOUR.as_millis() as i64,
        }]
    );
    let old = authenticated(ctx.token(ALICE, "a-old"), T0 / 1000);

    ctx.advance(HOUR - MS);
    assert_eq!(ctx.check(&ctx.token(ALICE, "a-1")).await, REAUTHENTICATE);
    assert_eq!(ctx.check(&old).await, REVOKED);
    assert_eq!(ctx.blocked(t).await.len(), 1);

    ctx.advance(MS);
    assert!(ctx.blocked(t).await.is_empty());
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "a-2")).await,
        created(ctx.now())
    );
    assert_eq!(ctx.check(&old).await, created(T0));
}

/// An administrator lifts a user's marks: audited once; a second time changes nothing.
pub(crate) async fn blocked_users_lists_watermarks_and_locks_and_unblock_lifts_them(ctx: Ctx) {
    let t = &ctx.tenant;
    let a1 = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&a1).await, created(T0));
    ctx.advance(SEC);
    let alice_revoked = ctx.now();
    ctx.revoke(revocation(t, user(ALICE), "phished")).await;
    ctx.advance(SEC);
    let bob_revoked = ctx.now();
    let until = bob_revoked + HOUR.as_millis() as i64;
    ctx.revoke(revocation(t, lock(BOB, until), "offboarding"))
        .await;
    let retention = DEFAULT_WATERMARK_RETENTION.as_millis() as i64;
    let alice = BlockedUser {
        user: ALICE.into(),
        not_before: Some(alice_revoked),
        lock_until: None,
        message: None,
        holds_until: alice_revoked + retention,
    };
    let bob = BlockedUser {
        user: BOB.into(),
        not_before: Some(bob_revoked),
        lock_until: Some(until),
        message: None,
        holds_until: bob_revoked + retention,
    };
    assert_eq!(ctx.blocked(t).await, [alice.clone(), bob.clone()]);
    assert!(ctx.blocked(&ctx.other_tenant).await.is_empty());
    assert_eq!(ctx.audit(t, 10).await.len(), 2);

    ctx.advance(SEC);
    let unblock = |user: &str| unblock_record(t, user, ctx.now());
    let record = unblock(ALICE);
    let lifted = ctx.store().unblock_user(t, ALICE, record.clone()).await;
    assert_eq!(lifted, Ok(true));
    let audit = ctx.audit(t, 10).await;
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0], record, "audited once, newest first");
    assert_eq!(
        serde_json::to_value(&audit[0]).unwrap()["action"],
        "user.unblock"
    );
    assert_eq!(ctx.blocked(t).await, [bob]);
    // Lifted: a token without auth_time opens a session again; the revoked session stays
    // revoked (its tombstone is not a mark).
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "a-2")).await,
        created(ctx.now())
    );
    assert_eq!(ctx.check(&a1).await, REVOKED);

    // Not blocked any more: false, and no audit record.
    let again = ctx.store().unblock_user(t, ALICE, unblock(ALICE)).await;
    assert_eq!(again, Ok(false));
    assert_eq!(ctx.audit(t, 10).await.len(), 3);

    // Lifting a lock: a sign-in is allowed at once.
    let locked_out = authenticated(ctx.token(BOB, "b-1"), ctx.now_secs());
    assert_eq!(ctx.check(&locked_out).await, locked(until));
    let lifted = ctx.store().unblock_user(t, BOB, unblock(BOB)).await;
    assert_eq!(lifted, Ok(true));
    assert_eq!(ctx.check(&locked_out).await, created(ctx.now()));
    assert_eq!(ctx.check(&ctx.token(BOB, "b-2")).await, created(ctx.now()));
    assert!(ctx.blocked(t).await.is_empty());
    assert_eq!(ctx.audit(t, 10).await.len(), 4);

    // Users never blocked, tenants never seen: false, nothing written.
    let never = ctx.store().unblock_user(t, CAROL, unblock(CAROL)).await;
    assert_eq!(never, Ok(false));
    let unseen = new_tenant();
    let elsewhere = ctx
        .store()
        .unblock_user(&unseen, ALICE, unblock(ALICE))
        .await;
    assert_eq!(elsewhere, Ok(false));
    assert_eq!(ctx.audit(t, 10).await.len(), 4);
    assert!(ctx.audit(&unseen, 10).await.is_empty());
}

/// A lock longer than the watermark retention keeps the user out after the watermark is
/// over: the user is listed with the lock only.
async fn a_lock_that_outlasts_the_watermark_is_listed_without_it(ctx: Ctx) {
    let ctx = ctx.with_limits(Limits {
        watermark_retention: HOUR,
        ..Limits::default()
    });
    let t = &ctx.tenant;
    let until = T0 + 3 * HOUR.as_millis() as i64;
    ctx.revoke(revocation(t, lock(ALICE, until), "leave of absence"))
        .await;
    let listed = |not_before| BlockedUser {
        user: ALICE.into(),
        not_before,
        lock_until: Some(until),
        message: None,
        holds_until: until,
    };
    assert_eq!(ctx.blocked(t).await, [listed(Some(T0))]);
    ctx.advance(2 * HOUR);
    assert_eq!(ctx.blocked(t).await, [listed(None)]);
    let fresh = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked(until));
    ctx.set_time(until);
    assert!(ctx.blocked(t).await.is_empty());
    assert_eq!(ctx.check(&ctx.token(ALICE, "a-2")).await, created(until));
}

async fn housekeeping_forgets_watermarks_after_the_retention_but_not_active_locks(ctx: Ctx) {
    let ctx = ctx.with_limits(Limits {
        default_max_age: mins(15),
        retention: mins(60),
        watermark_retention: mins(60),
        ..Limits::default()
    });
    let t = &ctx.tenant;
    ctx.revoke(revocation(t, user(ALICE), "watermark only"))
        .await;
    let until = T0 + 3 * 3_600_000;
    ctx.revoke(revocation(t, lock(BOB, until), "locked for 3 hours"))
        .await;

    ctx.advance(mins(30));
    ctx.maintain().await;
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "a-1")).await,
        REAUTHENTICATE,
        "watermark kept"
    );

    ctx.advance(mins(30));
    ctx.maintain().await;
    // ALICE's watermark is older than the retention and forgotten: a token without auth_time
    // opens a session again.
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "a-2")).await,
        created(ctx.now())
    );
    // A token authenticated before the forgotten watermark is dated by its auth_time: expired.
    let old = authenticated(ctx.token(ALICE, "a-3"), T0 / 1000 - 1);
    assert_eq!(ctx.check(&old).await, EXPIRED);
    // BOB's lock is still running: kept regardless of the retention.
    let bob = authenticated(ctx.token(BOB, "b-1"), ctx.now_secs());
    assert_eq!(ctx.check(&bob).await, locked(until));
    assert_eq!(ctx.blocked(t).await.len(), 1);

    ctx.set_time(until);
    ctx.maintain().await;
    assert_eq!(
        ctx.check(&ctx.token(BOB, "b-2")).await,
        created(ctx.now()),
        "lock over, all forgotten"
    );
    assert!(ctx.blocked(t).await.is_empty());
}
