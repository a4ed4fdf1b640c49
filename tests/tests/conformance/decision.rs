//! The per-request decision of docs/design.md §3: create (6), touch (5), expiry (4) and what an
//! ended session key still lets in (3).

use std::net::IpAddr;

use grantflow_core::decision::Limits;
use grantflow_core::identity::SessionAnchor;
use grantflow_core::policy::{DEFAULT_MAX_SESSION_AGE, Policy};
use grantflow_core::session::{SessionRecord, Verdict};

use crate::harness::*;

cases! {
    new_session_without_auth_time_starts_now_and_is_recorded;
    new_session_with_auth_time_starts_at_auth_time;
    auth_time_in_the_future_starts_now;
    absurd_auth_time_values_do_not_panic;
    existing_session_is_allowed_and_touched_at_most_once_a_second;
    sessions_are_listed_oldest_first_with_their_client;
    default_max_age_is_fifteen_minutes;
    expired_session_is_refused_and_its_sid_cannot_start_afresh;
    expired_session_is_tombstoned_and_stays_expired_even_if_the_policy_is_raised;
    auth_time_starts_the_session_and_an_old_one_is_expired_and_remembered;
    after_expiry_only_a_sign_in_after_the_end_starts_the_same_sid_again;
    a_sign_in_after_the_max_age_replaces_the_live_session_it_finds;
    token_authenticated_longer_ago_than_max_age_is_expired_and_its_sid_cannot_start_later;
    a_tombstone_replaced_by_a_refused_sign_in_keeps_the_later_end;
    a_sign_in_after_the_end_starts_the_same_sid_again [; exclusive];
    a_new_session_beyond_the_per_user_limit_is_refused_and_nothing_is_stored;
    sessions_past_their_max_age_do_not_count_toward_the_per_user_limit;
    a_fresh_sign_in_refused_for_too_many_sessions_keeps_the_tombstone;
}

async fn new_session_without_auth_time_starts_now_and_is_recorded(ctx: Ctx) {
    let t = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&t).await, created(T0));
    assert_eq!(
        ctx.sessions(&ctx.tenant).await,
        vec![SessionRecord {
            tenant: ctx.tenant.clone(),
            user: ALICE.into(),
            display_name: Some(format!("{ALICE}@contoso.example")),
            id: "s-1".into(),
            anchor: SessionAnchor::Sid,
            started_at: T0,
            last_seen: T0,
            client_ip: Some(CLIENT_IP.parse::<IpAddr>().unwrap()),
            // Capped at 64 bytes (the hash stays compact); the label is of the whole one.
            user_agent: Some(grantflow_core::session::capped_user_agent(CHROME).into()),
            client_label: Some("Chrome on Windows 10".into()),
        }]
    );
    // `iat` alone does not set the start: only `auth_time` does.
    let t = issued(ctx.token(ALICE, "s-2"), T0 / 1000 - 600);
    assert_eq!(ctx.check(&t).await, created(T0));
}

async fn new_session_with_auth_time_starts_at_auth_time(ctx: Ctx) {
    let auth = T0 / 1000 - 120;
    let t = authenticated(ctx.token(ALICE, "s-1"), auth);
    assert_eq!(ctx.check(&t).await, created(auth * 1000));
    // Its age counts from the sign-in, not from the first request.
    ctx.advance(mins(13) - MS);
    assert_eq!(ctx.check(&t).await, allowed(auth * 1000));
    ctx.advance(MS);
    assert_eq!(ctx.check(&t).await, EXPIRED);
}

async fn auth_time_in_the_future_starts_now(ctx: Ctx) {
    // Clock skew between the issuer and us must not make a session younger than "now".
    let t = authenticated(ctx.token(ALICE, "s-1"), T0 / 1000 + 30);
    assert_eq!(ctx.check(&t).await, created(T0));
}

async fn absurd_auth_time_values_do_not_panic(ctx: Ctx) {
    let min = authenticated(ctx.token(ALICE, "s-min"), i64::MIN);
    assert_eq!(ctx.check(&min).await, EXPIRED);
    let max = authenticated(ctx.token(ALICE, "s-max"), i64::MAX);
    assert_eq!(ctx.check(&max).await, created(T0));
    let zero = authenticated(ctx.token(ALICE, "s-zero"), 0);
    assert_eq!(ctx.check(&zero).await, EXPIRED);
}

async fn existing_session_is_allowed_and_touched_at_most_once_a_second(ctx: Ctx) {
    async fn last_seen(ctx: &Ctx) -> i64 {
        ctx.sessions(&ctx.tenant).await[0].last_seen
    }
    let t = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&t).await, created(T0));
    ctx.advance(999 * MS);
    assert_eq!(ctx.check(&t).await, allowed(T0));
    assert_eq!(last_seen(&ctx).await, T0, "touched less than a second ago");
    ctx.advance(MS);
    assert_eq!(ctx.check(&t).await, allowed(T0));
    assert_eq!(last_seen(&ctx).await, T0 + 1000);
    ctx.advance(500 * MS);
    assert_eq!(ctx.check(&t).await, allowed(T0));
    assert_eq!(last_seen(&ctx).await, T0 + 1000);
    ctx.advance(500 * MS);
    assert_eq!(ctx.check(&t).await, allowed(T0));
    assert_eq!(last_seen(&ctx).await, T0 + 2000);
    // A later token of the same sid with another auth_time does not move the start (a silent
    // refresh cannot reset the age).
    let refreshed = authenticated(t.clone(), ctx.now_secs());
    assert_eq!(ctx.check(&refreshed).await, allowed(T0));
    assert_eq!(ctx.sessions(&ctx.tenant).await.len(), 1);
}

pub(crate) async fn sessions_are_listed_oldest_first_with_their_client(ctx: Ctx) {
    let t = &ctx.tenant;
    let id = ctx.token("u1", "s1");
    assert_eq!(ctx.check(&id).await, created(T0));
    ctx.advance(400 * MS);
    assert_eq!(ctx.check(&id).await, allowed(T0));
    let listed = ctx.sessions(t).await;
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!(
        (s.id.as_str(), s.user.as_str(), s.started_at),
        ("s1", "u1", T0)
    );
    assert_eq!(s.last_seen, T0, "touched at most once a second");
    assert_eq!(s.display_name.as_deref(), Some("u1@contoso.example"));
    assert_eq!(s.client_ip, Some(CLIENT_IP.parse().unwrap()));
    assert_eq!(s.client_label.as_deref(), Some("Chrome on Windows 10"));
    ctx.advance(700 * MS);
    ctx.check(&id).await;
    assert_eq!(ctx.sessions(t).await[0].last_seen, T0 + 1100);
    // Oldest first.
    ctx.advance(SEC);
    ctx.check(&ctx.token("u2", "s2")).await;
    assert_eq!(ctx.session_ids(t).await, ["s1", "s2"]);
    assert!(ctx.sessions(&ctx.other_tenant).await.is_empty());
}

async fn default_max_age_is_fifteen_minutes(ctx: Ctx) {
    assert_eq!(DEFAULT_MAX_SESSION_AGE, mins(15));
    assert_eq!(
        ctx.policy(&ctx.tenant).await,
        Policy::default_with(mins(15))
    );
    let t = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&t).await, created(T0));
    ctx.advance(mins(14) + 59 * SEC);
    assert_eq!(ctx.check(&t).await, allowed(T0), "14:59");
    ctx.advance(SEC - MS);
    assert_eq!(ctx.check(&t).await, allowed(T0), "14:59.999");
    ctx.advance(MS);
    assert_eq!(ctx.check(&t).await, EXPIRED, "15:00");
    assert!(ctx.sessions(&ctx.tenant).await.is_empty());
}

async fn expired_session_is_refused_and_its_sid_cannot_start_afresh(ctx: Ctx) {
    let t = &ctx.tenant;
    let id = ctx.token("u1", "s1");
    assert_eq!(ctx.check(&id).await, created(T0));
    ctx.advance(mins(15) - MS);
    assert_eq!(ctx.check(&id).await, allowed(T0));
    ctx.advance(MS);
    assert_eq!(ctx.check(&id).await, EXPIRED, "at exactly the max age");
    assert!(ctx.sessions(t).await.is_empty());
    // The same sid cannot start afresh, even under a longer policy, with a token issued now.
    ctx.set_policy(t, mins(60)).await;
    assert_eq!(ctx.check(&ctx.token("u1", "s1")).await, EXPIRED);
}

async fn expired_session_is_tombstoned_and_stays_expired_even_if_the_policy_is_raised(ctx: Ctx) {
    let t = ctx.token(ALICE, "s-1");
    ctx.check(&t).await;
    ctx.advance(mins(15));
    assert_eq!(ctx.check(&t).await, EXPIRED);
    assert_eq!(ctx.check(&t).await, EXPIRED);
    ctx.set_policy(&ctx.tenant, DAY).await;
    assert_eq!(
        ctx.check(&t).await,
        EXPIRED,
        "the tombstone outlives the policy change"
    );
    assert!(ctx.sessions(&ctx.tenant).await.is_empty());
    // Other sessions start normally under the raised policy.
    assert_eq!(
        ctx.check(&ctx.token(ALICE, "s-2")).await,
        created(ctx.now())
    );
}

async fn auth_time_starts_the_session_and_an_old_one_is_expired_and_remembered(ctx: Ctx) {
    let now = ctx.now_secs();
    let id = authenticated(ctx.token("u1", "s1"), now - 600);
    assert_eq!(ctx.check(&id).await, created((now - 600) * 1000));
    let old = authenticated(ctx.token("u1", "s2"), now - 16 * 60);
    assert_eq!(ctx.check(&old).await, EXPIRED);
    // Remembered: the same sid stays expired, even for a token without auth_time.
    assert_eq!(ctx.check(&ctx.token("u1", "s2")).await, EXPIRED);
}

async fn after_expiry_only_a_sign_in_after_the_end_starts_the_same_sid_again(ctx: Ctx) {
    let signed_in = T0 / 1000;
    let t = authenticated(ctx.token(ALICE, "s-1"), signed_in);
    assert_eq!(ctx.check(&t).await, created(T0));
    // The user signs in again (new auth_time) in minute 14, while the session still lives:
    // that does not extend it.
    ctx.advance(mins(14));
    let reauth_during = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&reauth_during).await, allowed(T0));
    // Idle past the max age: the session ended at T0 + 15 min, though nobody looked then.
    ctx.advance(mins(6));
    // A silent refresh keeps auth_time (and moves iat): refused, and the sid is tombstoned.
    let refreshed = issued(t.clone(), ctx.now_secs());
    assert_eq!(ctx.check(&refreshed).await, EXPIRED);
    assert_eq!(
        ctx.check(&reauth_during).await,
        EXPIRED,
        "signed in before the end"
    );
    // A token without auth_time cannot prove anything.
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-1")).await, EXPIRED);
    // Another user's fresh sign-in naming the sid is refused.
    let bob = authenticated(ctx.token(BOB, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&bob).await, EXPIRED);
    // "Sign in again": auth_time after the end starts a new session under the same sid.
    let again = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&again).await, created(ctx.now_secs() * 1000));
    assert_eq!(ctx.check(&again).await, allowed(ctx.now_secs() * 1000));
    assert_eq!(ctx.session_ids(&ctx.tenant).await, ["s-1"]);
    // Its silent refreshes keep the new start.
    ctx.advance(mins(5));
    assert_eq!(
        ctx.check(&issued(again.clone(), ctx.now_secs())).await,
        allowed(ctx.now() - mins(5).as_millis() as i64)
    );
}

async fn a_sign_in_after_the_max_age_replaces_the_live_session_it_finds(ctx: Ctx) {
    // Nobody used the session after it reached its max age, and housekeeping has not run:
    // the fresh sign-in's first request finds it still live.
    let t = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&t).await, created(T0));
    ctx.advance(mins(16));
    let signed_in = ctx.now_secs();
    ctx.advance(mins(1));
    let again = authenticated(ctx.token(ALICE, "s-1"), signed_in);
    assert_eq!(ctx.check(&again).await, created(signed_in * 1000));
    assert_eq!(ctx.check(&t).await, allowed(signed_in * 1000));
    assert_eq!(ctx.sessions(&ctx.tenant).await.len(), 1);

    // Signed in a second before the old one reached its max age: refused.
    let other = ctx.token_in(&ctx.other_tenant, ALICE, "s-1");
    let start = ctx.now();
    assert_eq!(ctx.check(&other).await, created(start));
    ctx.advance(mins(20));
    let late = authenticated(other.clone(), start / 1000 + 15 * 60 - 1);
    assert_eq!(ctx.check(&late).await, EXPIRED);
}

async fn token_authenticated_longer_ago_than_max_age_is_expired_and_its_sid_cannot_start_later(
    ctx: Ctx,
) {
    let old = authenticated(ctx.token(ALICE, "s-old"), T0 / 1000 - 15 * 60);
    assert_eq!(ctx.check(&old).await, EXPIRED);
    assert!(
        ctx.sessions(&ctx.tenant).await.is_empty(),
        "no session was created"
    );
    // One second younger is still fine.
    let young = authenticated(ctx.token(ALICE, "s-young"), T0 / 1000 - 15 * 60 + 1);
    assert_eq!(ctx.check(&young).await, created(T0 - (15 * 60 - 1) * 1000));
    // The refused sid was tombstoned: raising the policy, or a token of that sid without
    // auth_time (which would otherwise start "now"), does not let it in.
    ctx.set_policy(&ctx.tenant, mins(60)).await;
    assert_eq!(ctx.check(&old).await, EXPIRED);
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-old")).await, EXPIRED);
    ctx.advance(mins(5));
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-old")).await, EXPIRED);
}

/// A sign-in after a revocation (so the tombstone yields) whose start is already older than
/// the max age is refused, and its refusal ends the key later than the revocation did: a
/// token signed in between the two ends stays refused.
async fn a_tombstone_replaced_by_a_refused_sign_in_keeps_the_later_end(ctx: Ctx) {
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-1")).await, created(T0));
    ctx.advance(SEC);
    ctx.revoke(revocation(&ctx.tenant, session("s-1"), "lost laptop"))
        .await;
    // Signed in 2 s after T0 (after the revocation), first seen 15 minutes later.
    let signed_in = T0 / 1000 + 2;
    ctx.set_time(signed_in * 1000 + mins(15).as_millis() as i64);
    let late = authenticated(ctx.token(ALICE, "s-1"), signed_in);
    assert_eq!(ctx.check(&late).await, EXPIRED);
    // Ended at signed_in + 15 min: a sign-in a minute before that is young, but not after
    // the end.
    let between = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs() - 60);
    assert_eq!(ctx.check(&between).await, EXPIRED);
    ctx.advance(SEC);
    let after = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&after).await, created(ctx.now_secs() * 1000));
}

pub(crate) async fn a_sign_in_after_the_end_starts_the_same_sid_again(ctx: Ctx) {
    let t = &ctx.tenant;
    let mut feed = ctx.store().subscribe(t).await.unwrap();
    let start = ctx.now_secs();
    let first = authenticated(ctx.token("u1", "s1"), start);
    assert_eq!(ctx.check(&first).await, created(start * 1000));
    assert!(matches!(
        crate::housekeeping::next_event(&mut feed).await,
        grantflow_core::store::ChangeEvent::SessionCreated { .. }
    ));

    // Idle past the max age, then a fresh sign-in: its first request finds the old session
    // still live, ends it (as of its max age) and starts a new one under the same sid.
    ctx.advance(mins(20));
    let again = authenticated(ctx.token("u1", "s1"), start + 16 * 60);
    let again_started = (start + 16 * 60) * 1000;
    assert_eq!(ctx.check(&again).await, created(again_started));
    assert_eq!(
        crate::housekeeping::next_event(&mut feed).await,
        crate::housekeeping::ended(t, "s1", "u1", grantflow_core::session::EndReason::Expired)
    );
    match crate::housekeeping::next_event(&mut feed).await {
        grantflow_core::store::ChangeEvent::SessionCreated { session, .. } => {
            assert_eq!(session.started_at, again_started)
        }
        other => panic!("expected SessionCreated, got {other:?}"),
    }
    // A silent refresh of the old sign-in (same auth_time, new iat) is not let in by that.
    ctx.advance(mins(1));
    let refreshed_old = authenticated(ctx.token("u1", "s1"), start);
    assert_eq!(ctx.check(&refreshed_old).await, allowed(again_started));

    // Expired at lookup and tombstoned: a silent refresh stays refused, another user's fresh
    // token too; a sign-in after the end (start + 16 min + 15 min) starts anew.
    ctx.advance(mins(20));
    assert_eq!(ctx.check(&again).await, EXPIRED);
    let refreshed = authenticated(ctx.token("u1", "s1"), start + 16 * 60);
    assert_eq!(ctx.check(&refreshed).await, EXPIRED);
    assert_eq!(ctx.check(&ctx.token("u1", "s1")).await, EXPIRED);
    let now = ctx.now_secs();
    assert_eq!(
        ctx.check(&authenticated(ctx.token("u2", "s1"), now)).await,
        EXPIRED
    );
    let before_end = authenticated(ctx.token("u1", "s1"), start + 31 * 60 - 1);
    assert_eq!(ctx.check(&before_end).await, EXPIRED);
    let third = authenticated(ctx.token("u1", "s1"), now);
    assert_eq!(ctx.check(&third).await, created(now * 1000));

    // Revoked: only a sign-in after the revocation, by the same user, starts anew.
    ctx.revoke(revocation(t, session("s1"), "INC-1")).await;
    assert_eq!(ctx.check(&third).await, REVOKED);
    ctx.advance(2 * SEC);
    let now = ctx.now_secs();
    assert_eq!(
        ctx.check(&authenticated(ctx.token("u2", "s1"), now)).await,
        REVOKED
    );
    let fourth = authenticated(ctx.token("u1", "s1"), now);
    assert_eq!(ctx.check(&fourth).await, created(now * 1000));

    // Expired by housekeeping: ended as of its max age, so a sign-in after that, before the
    // sweep ran, starts anew.
    ctx.advance(mins(16));
    let after_max_age = ctx.now_secs() - 30;
    ctx.maintain().await;
    let fifth = authenticated(ctx.token("u1", "s1"), after_max_age);
    assert_eq!(ctx.check(&fifth).await, created(after_max_age * 1000));
    assert_eq!(ctx.sessions(t).await.len(), 1);
}

/// A store holding at most two live sessions per user and tenant.
fn two_per_user(ctx: Ctx) -> Ctx {
    ctx.with_limits(Limits {
        max_sessions_per_user: 2,
        ..Limits::default()
    })
}

async fn a_new_session_beyond_the_per_user_limit_is_refused_and_nothing_is_stored(ctx: Ctx) {
    let ctx = two_per_user(ctx);
    let t = ctx.tenant.clone();
    let (one, two) = (ctx.token(ALICE, "s-1"), ctx.token(ALICE, "s-2"));
    assert_eq!(ctx.check(&one).await, created(T0));
    assert_eq!(ctx.check(&two).await, created(T0));
    let three = ctx.token(ALICE, "s-3");
    assert_eq!(ctx.check(&three).await, Verdict::TooManySessions);
    assert_eq!(ctx.check(&three).await, Verdict::TooManySessions);
    assert_eq!(ctx.session_ids(&t).await, vec!["s-1", "s-2"]);
    // The sessions the user has keep working; the bound is per user and per tenant.
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
    let four = ctx.token(ALICE, "s-4");
    assert_eq!(ctx.check(&four).await, Verdict::TooManySessions);
    let mut ids = ctx.session_ids(&t).await;
    ids.sort();
    assert_eq!(ids, vec!["s-2", "s-3", "s-b"]);
}

async fn sessions_past_their_max_age_do_not_count_toward_the_per_user_limit(ctx: Ctx) {
    // Sessions that reached the max age end even before housekeeping sweeps them.
    let ctx = two_per_user(ctx);
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-1")).await, created(T0));
    ctx.advance(mins(10));
    let two = ctx.token(ALICE, "s-2");
    assert!(is_allowed(ctx.check(&two).await));
    ctx.advance(mins(5));
    let three = ctx.token(ALICE, "s-3");
    assert!(
        is_allowed(ctx.check(&three).await),
        "s-1 is past the max age"
    );
    let four = ctx.token(ALICE, "s-4");
    assert_eq!(ctx.check(&four).await, Verdict::TooManySessions);
    // A sign-in after the max age under the key of a session that reached it replaces it, if
    // there is room: here there is none, so it is refused and its old session has ended.
    ctx.advance(SEC);
    let again = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&again).await, Verdict::TooManySessions);
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-1")).await, EXPIRED);
}

async fn a_fresh_sign_in_refused_for_too_many_sessions_keeps_the_tombstone(ctx: Ctx) {
    let ctx = two_per_user(ctx);
    let t = ctx.tenant.clone();
    let one = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&one).await, created(T0));
    ctx.revoke(revocation(&t, session("s-1"), "lost laptop"))
        .await;
    ctx.advance(SEC);
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-2")).await));
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-3")).await));
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, Verdict::TooManySessions);
    // Nothing changed: the ended key still refuses its old token.
    assert_eq!(ctx.check(&one).await, REVOKED);
    assert_eq!(ctx.session_ids(&t).await, vec!["s-2", "s-3"]);
}
