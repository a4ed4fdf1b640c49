//! Revocations: one session, every session of a user, a lock until a time; their audit
//! records; tenants kept apart; tokens without `sid`.

use grantflow_core::audit::{Action, AuditRecord, Source, Target};
use grantflow_core::clock::rfc3339;
use grantflow_core::identity::SessionAnchor;
use grantflow_core::policy::Policy;
use grantflow_core::store::ChangeEvent;

use crate::harness::*;

cases! {
    revoking_one_session_refuses_its_next_request_and_is_audited;
    revoking_one_session_leaves_the_others_and_a_session_belongs_to_its_user;
    revoking_an_unknown_session_key_still_tombstones_it;
    revoking_a_user_ends_all_their_sessions_and_no_one_elses;
    revoking_a_user_refuses_their_earlier_tokens_and_a_fresh_sign_in_works;
    a_lock_refuses_even_fresh_sign_ins_until_it_ends;
    a_lock_refuses_new_sessions_until_it_ends_and_is_audited;
    revoke_all_without_a_lock_keeps_an_existing_lock;
    user_watermark_is_checked_before_the_tombstone;
    tenants_are_isolated;
    a_revoke_all_in_one_tenant_leaves_the_other_alone;
    without_sid_each_token_is_its_own_session;
    the_audit_log_line_is_the_stored_record;
}

/// The JSON log line of each revocation's audit record (the durable copy outside the store)
/// is exactly the record the store keeps — including the user of a single revoked session,
/// which the store fills in.
async fn the_audit_log_line_is_the_stored_record(ctx: Ctx) {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;

    let t = &ctx.tenant;
    ctx.check(&ctx.token(ALICE, "s-1")).await;
    ctx.check(&ctx.token(ALICE, "s-2")).await;
    ctx.check(&ctx.token(BOB, "b-1")).await;
    let lines = AuditLines::default();
    let logs = tracing::Dispatch::new(tracing_subscriber::registry().with(lines.clone()));
    ctx.revoke(revocation(t, session("s-1"), "lost laptop"))
        .with_subscriber(logs.clone())
        .await;
    ctx.revoke(revocation(t, user(ALICE), "offboarding"))
        .with_subscriber(logs.clone())
        .await;
    ctx.revoke(revocation(t, session("never-seen"), "precaution"))
        .with_subscriber(logs)
        .await;
    let logged: Vec<AuditRecord> = lines
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).expect("an audit record"))
        .collect();
    let mut stored = ctx.audit(t, 10).await;
    stored.reverse();
    assert_eq!(logged.len(), 3, "one line per revocation");
    assert_eq!(logged, stored);
    assert_eq!(logged[0].target.user.as_deref(), Some(ALICE));
    assert_eq!(
        logged[2].target.user, None,
        "a key never seen has no known user"
    );
}

/// Collects the `audit` field of every event: the audit JSON lines.
#[derive(Clone, Default)]
struct AuditLines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Audit(Option<String>);
        impl tracing::field::Visit for Audit {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "audit" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut audit = Audit(None);
        event.record(&mut audit);
        if let Some(line) = audit.0 {
            self.0.lock().unwrap().push(line);
        }
    }
}

async fn revoking_one_session_refuses_its_next_request_and_is_audited(ctx: Ctx) {
    let t = &ctx.tenant;
    let s1 = ctx.token(ALICE, "s-1");
    let s2 = ctx.token(ALICE, "s-2");
    ctx.check(&s1).await;
    ctx.check(&s2).await;
    ctx.advance(mins(2));

    let outcome = ctx
        .revoke(revocation(t, session("s-1"), "lost laptop"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert!(!outcome.replayed);
    assert_eq!(ctx.check(&s1).await, REVOKED);
    assert_eq!(ctx.check(&s1).await, REVOKED);
    assert_eq!(
        ctx.check(&s2).await,
        allowed(T0),
        "the user's other session continues"
    );
    assert_eq!(ctx.session_ids(t).await, ["s-2"]);
    // A token signed in before (or in the same second as) the revocation stays refused.
    assert_eq!(
        ctx.check(&authenticated(s1.clone(), ctx.now_secs())).await,
        REVOKED
    );

    let trail = ctx.audit(t, 10).await;
    assert_eq!(trail.len(), 1);
    let record = &trail[0];
    assert_eq!(record.id, outcome.audit_id);
    assert_eq!(record.time, rfc3339(T0 + 2 * 60_000));
    assert_eq!(record.tenant, *t);
    assert_eq!(record.actor, admin());
    assert_eq!(record.action, Action::SessionRevoke);
    assert_eq!(
        record.target,
        Target {
            user: Some(ALICE.into()),
            session: Some("s-1".into())
        }
    );
    assert_eq!(record.reason.as_deref(), Some("lost laptop"));
    assert_eq!(record.source, Source::Dashboard);
    assert_eq!(record.sessions_revoked, Some(1));
    assert_eq!(record.detail, None);

    // The wire form of docs/design.md §7.
    let json = serde_json::to_value(record).unwrap();
    assert_eq!(json["action"], "session.revoke");
    assert_eq!(json["actor"]["kind"], "admin");
    assert_eq!(json["source"], "dashboard");
    assert_eq!(json["sessionsRevoked"], 1);
    assert_eq!(json["target"]["session"], "s-1");
    assert_eq!(json["target"]["user"], ALICE);

    // A sign-in after the revocation under the same sid starts a new session — for the user
    // it belonged to; another user's token naming it stays refused.
    ctx.advance(SEC);
    let bob = authenticated(ctx.token(BOB, "s-1"), ctx.now_secs());
    assert_eq!(ctx.check(&bob).await, REVOKED);
    let again = authenticated(s1.clone(), ctx.now_secs());
    assert_eq!(ctx.check(&again).await, created(ctx.now_secs() * 1000));
    assert_eq!(ctx.audit(t, 10).await.len(), 1, "no new audit record");
}

async fn revoking_one_session_leaves_the_others_and_a_session_belongs_to_its_user(ctx: Ctx) {
    let t = &ctx.tenant;
    let a = ctx.token("u1", "a");
    let b = ctx.token("u1", "b");
    ctx.check(&a).await;
    ctx.check(&b).await;
    let first = ctx.revoke(revocation(t, session("a"), "INC-1")).await;
    assert_eq!(first.sessions_revoked, 1);
    assert_eq!(ctx.check(&a).await, REVOKED);
    assert!(is_allowed(ctx.check(&b).await));
    // A session belongs to its user: another user's token naming it is refused, and does
    // not end it — nor tells dashboards it ended: the next change is the next session's start.
    let mut feed = ctx.store().subscribe(t).await.unwrap();
    assert_eq!(ctx.check(&ctx.token("intruder", "b")).await, REVOKED);
    assert!(is_allowed(ctx.check(&b).await));
    ctx.check(&ctx.token("u2", "c")).await;
    match crate::housekeeping::next_event(&mut feed).await {
        ChangeEvent::SessionCreated { session, .. } => assert_eq!(session.id, "c"),
        other => panic!("another user's token ended nothing, yet the feed said {other:?}"),
    }
    let unknown = ctx
        .revoke(revocation(t, session("never-seen"), "INC-2"))
        .await;
    assert_eq!(unknown.sessions_revoked, 0);
    assert_eq!(ctx.check(&ctx.token("u3", "never-seen")).await, REVOKED);
    let audit = ctx.audit(t, 10).await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].id, unknown.audit_id, "newest first");
    let record = &audit[1];
    assert_eq!(record.id, first.audit_id);
    assert_eq!(record.action, Action::SessionRevoke);
    assert_eq!(record.target.session.as_deref(), Some("a"));
    assert_eq!(record.target.user.as_deref(), Some("u1"));
    assert_eq!(record.sessions_revoked, Some(1));
    assert_eq!(record.reason.as_deref(), Some("INC-1"));
    assert_eq!(record.actor.name.as_deref(), Some("Grace"));
    assert_eq!(ctx.audit(t, 1).await.len(), 1, "limit");
}

async fn revoking_an_unknown_session_key_still_tombstones_it(ctx: Ctx) {
    let t = &ctx.tenant;
    let outcome = ctx
        .revoke(revocation(t, session("s-future"), "leaked sid"))
        .await;
    assert_eq!(outcome.sessions_revoked, 0);
    let record = &ctx.audit(t, 1).await[0];
    assert_eq!(
        record.target,
        Target {
            user: None,
            session: Some("s-future".into())
        }
    );
    assert_eq!(record.sessions_revoked, Some(0));
    // The key can never start a session (until the retention forgets it).
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-future")).await, REVOKED);
    assert!(ctx.sessions(t).await.is_empty());
}

async fn revoking_a_user_ends_all_their_sessions_and_no_one_elses(ctx: Ctx) {
    let t = &ctx.tenant;
    let a1 = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    let a2 = ctx.token(ALICE, "a-2");
    let b1 = ctx.token(BOB, "b-1");
    for token in [&a1, &a2, &b1] {
        ctx.check(token).await;
    }
    ctx.advance(SEC);
    let outcome = ctx.revoke(revocation(t, user(ALICE), "offboarding")).await;
    assert_eq!(outcome.sessions_revoked, 2);
    assert_eq!(ctx.check(&a1).await, REVOKED);
    // Without auth_time the token proves no sign-in: sign in again.
    assert_eq!(ctx.check(&a2).await, REAUTHENTICATE);
    assert_eq!(ctx.check(&b1).await, allowed(T0));
    assert_eq!(ctx.session_ids(t).await, ["b-1"]);

    let record = &ctx.audit(t, 1).await[0];
    assert_eq!(record.id, outcome.audit_id);
    assert_eq!(record.action, Action::UserRevoke);
    assert_eq!(
        record.target,
        Target {
            user: Some(ALICE.into()),
            session: None
        }
    );
    assert_eq!(record.sessions_revoked, Some(2));
    assert_eq!(record.reason.as_deref(), Some("offboarding"));
    assert_eq!(record.detail, None);
    assert_eq!(
        serde_json::to_value(record).unwrap()["action"],
        "user.revoke"
    );

    // Again, with nothing left to end: counted as 0, audited all the same.
    let again = ctx.revoke(revocation(t, user(ALICE), "again")).await;
    assert_eq!(again.sessions_revoked, 0);
    assert_eq!(ctx.audit(t, 10).await.len(), 2);
}

pub(crate) async fn revoking_a_user_refuses_their_earlier_tokens_and_a_fresh_sign_in_works(
    ctx: Ctx,
) {
    let t = &ctx.tenant;
    let a = authenticated(ctx.token("u1", "a"), T0 / 1000);
    let b = ctx.token("u1", "b");
    let other = ctx.token("u2", "c");
    for token in [&a, &b, &other] {
        ctx.check(token).await;
    }
    ctx.advance(5 * SEC);
    let outcome = ctx.revoke(revocation(t, user("u1"), "INC-1")).await;
    assert_eq!(outcome.sessions_revoked, 2);
    assert_eq!(ctx.check(&a).await, REVOKED);
    assert_eq!(ctx.check(&b).await, REAUTHENTICATE);
    assert!(is_allowed(ctx.check(&other).await));
    // Signed in before the revocation: no new session. Without auth_time a token proves no
    // sign-in at all, whatever its iat: sign in again.
    let stale = authenticated(ctx.token("u1", "new"), ctx.now_secs() - 60);
    assert_eq!(ctx.check(&stale).await, REVOKED);
    let stale_iat = issued(ctx.token("u1", "new-2"), ctx.now_secs() - 60);
    assert_eq!(ctx.check(&stale_iat).await, REAUTHENTICATE);
    // A fresh sign-in afterwards works.
    ctx.advance(2 * SEC);
    let fresh = authenticated(ctx.token("u1", "fresh"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, created(ctx.now()));
    let audit = ctx.audit(t, 10).await;
    assert_eq!(audit[0].action, Action::UserRevoke);
    assert_eq!(audit[0].sessions_revoked, Some(2));
}

async fn a_lock_refuses_even_fresh_sign_ins_until_it_ends(ctx: Ctx) {
    let t = &ctx.tenant;
    let a1 = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    let b1 = ctx.token(BOB, "b-1");
    ctx.check(&a1).await;
    ctx.check(&b1).await;
    ctx.advance(SEC);
    let until = ctx.now() + 60 * 60_000;
    let outcome = ctx
        .revoke(revocation(t, lock(ALICE, until), "incident response"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);

    let record = &ctx.audit(t, 1).await[0];
    assert_eq!(record.action, Action::UserLock);
    assert_eq!(
        record.target,
        Target {
            user: Some(ALICE.into()),
            session: None
        }
    );
    assert_eq!(record.sessions_revoked, Some(1));
    assert_eq!(
        record.detail,
        Some(format!("locked until {}", rfc3339(until)))
    );
    assert_eq!(serde_json::to_value(record).unwrap()["action"], "user.lock");

    assert_eq!(ctx.check(&a1).await, locked(until));
    ctx.advance(SEC);
    let fresh = || {
        let sid = format!("a-fresh-{}", ctx.now());
        authenticated(ctx.token(ALICE, &sid), ctx.now_secs())
    };
    assert_eq!(
        ctx.check(&fresh()).await,
        locked(until),
        "a fresh sign-in during the lock"
    );
    assert_eq!(
        ctx.check(&b1).await,
        allowed(T0),
        "other users are not locked"
    );
    ctx.set_time(until - 1);
    assert_eq!(
        ctx.check(&fresh()).await,
        locked(until),
        "one millisecond before the end"
    );

    ctx.set_time(until);
    let after = fresh();
    assert_eq!(
        ctx.check(&after).await,
        created(ctx.now_secs() * 1000),
        "the lock has ended"
    );
    // The lock came with a watermark: earlier sign-ins stay refused.
    let earlier = authenticated(ctx.token(ALICE, "a-earlier"), T0 / 1000);
    assert_eq!(ctx.check(&earlier).await, REVOKED);
    assert_eq!(ctx.check(&a1).await, REVOKED);
}

async fn a_lock_refuses_new_sessions_until_it_ends_and_is_audited(ctx: Ctx) {
    let t = &ctx.tenant;
    let until = ctx.now() + 10 * 60_000;
    ctx.revoke(revocation(t, lock("u1", until), "INC-1")).await;
    ctx.advance(mins(1));
    let during = authenticated(ctx.token("u1", "during"), ctx.now_secs());
    assert_eq!(ctx.check(&during).await, locked(until));
    ctx.advance(mins(10));
    let after = authenticated(ctx.token("u1", "after"), ctx.now_secs());
    assert!(is_allowed(ctx.check(&after).await));
    // Without auth_time, the lock's watermark still asks for a sign-in.
    assert_eq!(ctx.check(&ctx.token("u1", "bare")).await, REAUTHENTICATE);
    assert_eq!(ctx.audit(t, 1).await[0].action, Action::UserLock);
}

async fn revoke_all_without_a_lock_keeps_an_existing_lock(ctx: Ctx) {
    let t = &ctx.tenant;
    let until = T0 + 60 * 60_000;
    ctx.revoke(revocation(t, lock(ALICE, until), "lock")).await;
    ctx.advance(SEC);
    ctx.revoke(revocation(t, user(ALICE), "revoke again")).await;
    ctx.advance(SEC);
    let fresh = authenticated(ctx.token(ALICE, "a-1"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, locked(until), "still locked");
    ctx.set_time(until);
    let fresh = authenticated(ctx.token(ALICE, "a-2"), ctx.now_secs());
    assert_eq!(ctx.check(&fresh).await, created(until));
}

async fn user_watermark_is_checked_before_the_tombstone(ctx: Ctx) {
    // Decision order: step 2 (user marks) before step 3 (tombstone).
    let token = authenticated(ctx.token(ALICE, "a-1"), T0 / 1000);
    ctx.check(&token).await;
    ctx.advance(mins(15));
    assert_eq!(ctx.check(&token).await, EXPIRED);
    ctx.revoke(revocation(&ctx.tenant, user(ALICE), "incident"))
        .await;
    assert_eq!(ctx.check(&token).await, REVOKED);
    let bare = ctx.token(ALICE, "a-1");
    assert_eq!(ctx.check(&bare).await, REAUTHENTICATE);
}

async fn tenants_are_isolated(ctx: Ctx) {
    let (here_t, there_t) = (&ctx.tenant, &ctx.other_tenant);
    // The same sid and the same user id in two tenants are two different sessions.
    let here = ctx.token(ALICE, "s-shared");
    let there = ctx.token_in(there_t, ALICE, "s-shared");
    assert_eq!(ctx.check(&here).await, created(T0));
    assert_eq!(ctx.check(&there).await, created(T0));
    assert_eq!(ctx.sessions(here_t).await[0].tenant, *here_t);
    assert_eq!(ctx.sessions(there_t).await[0].tenant, *there_t);

    // Revoking the session in one tenant leaves the other alone.
    let outcome = ctx
        .revoke(revocation(here_t, session("s-shared"), "x"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(ctx.check(&here).await, REVOKED);
    assert_eq!(ctx.check(&there).await, allowed(T0));

    // Revoking (and locking) the user in one tenant leaves the other alone.
    let outcome = ctx
        .revoke(revocation(here_t, lock(ALICE, T0 + 3_600_000), "y"))
        .await;
    assert_eq!(outcome.sessions_revoked, 0);
    ctx.advance(SEC);
    assert_eq!(ctx.check(&there).await, allowed(T0));
    let new_there = ctx.token_in(there_t, ALICE, "s-new");
    assert_eq!(
        ctx.check(&new_there).await,
        created(ctx.now()),
        "no watermark or lock there"
    );

    // Revoking in the other tenant cannot reach this one's sessions by key.
    ctx.check(&ctx.token(BOB, "b-here")).await;
    let outcome = ctx
        .revoke(revocation(there_t, session("b-here"), "z"))
        .await;
    assert_eq!(outcome.sessions_revoked, 0);
    assert_eq!(
        ctx.check(&ctx.token(BOB, "b-here")).await,
        allowed(ctx.now())
    );
    let outcome = ctx.revoke(revocation(there_t, user(BOB), "z")).await;
    assert_eq!(outcome.sessions_revoked, 0);
    assert_eq!(
        ctx.check(&ctx.token(BOB, "b-here")).await,
        allowed(ctx.now())
    );

    // Policies are per tenant.
    ctx.set_policy(there_t, mins(60)).await;
    assert_eq!(ctx.policy(here_t).await, Policy::default_with(mins(15)));
    ctx.advance(mins(15));
    assert_eq!(
        ctx.check(&there).await,
        allowed(T0),
        "60-minute policy there"
    );
    assert_eq!(
        ctx.check(&ctx.token(BOB, "b-here")).await,
        EXPIRED,
        "15-minute default here"
    );

    // Sessions and audit trails are per tenant.
    assert_eq!(ctx.session_ids(there_t).await, ["s-shared", "s-new"]);
    assert!(ctx.sessions(here_t).await.is_empty());
    let reasons = |trail: Vec<AuditRecord>| -> Vec<String> {
        trail.into_iter().map(|r| r.reason.unwrap()).collect()
    };
    assert_eq!(reasons(ctx.audit(here_t, 10).await), ["y", "x"]);
    assert_eq!(reasons(ctx.audit(there_t, 10).await), ["z", "z"]);
    assert!(
        ctx.audit(there_t, 10)
            .await
            .iter()
            .all(|r| r.tenant == *there_t)
    );
    let blocked = |users: Vec<grantflow_core::revocation::BlockedUser>| -> Vec<String> {
        users.into_iter().map(|u| u.user).collect()
    };
    assert_eq!(blocked(ctx.blocked(here_t).await), [ALICE]);
    assert_eq!(blocked(ctx.blocked(there_t).await), [BOB]);
}

async fn a_revoke_all_in_one_tenant_leaves_the_other_alone(ctx: Ctx) {
    let (t1, t2) = (&ctx.tenant, &ctx.other_tenant);
    ctx.check(&ctx.token_in(t1, "u1", "s")).await;
    ctx.check(&ctx.token_in(t2, "u1", "s")).await;
    ctx.revoke(revocation(t1, user("u1"), "INC-1")).await;
    let signed_in = authenticated(ctx.token_in(t1, "u1", "s"), T0 / 1000);
    assert_eq!(ctx.check(&signed_in).await, REVOKED);
    assert_eq!(
        ctx.check(&ctx.token_in(t1, "u1", "s")).await,
        REAUTHENTICATE
    );
    assert!(is_allowed(ctx.check(&ctx.token_in(t2, "u1", "s")).await));
    assert!(ctx.audit(t2, 10).await.is_empty());
    assert_eq!(ctx.sessions(t2).await.len(), 1);
}

/// CAVEAT (docs/design.md §3): in Entra access tokens `sid` and `auth_time` are optional claims.
/// Without `sid`, nothing ties two access tokens of one sign-in together, so each token is its
/// own session (keyed by a hash of its `uti`/`jti`, else of the whole token). A silent refresh
/// yields a new token and therefore a new session whose age starts again: the max age then
/// bounds how long one access token is used, not how long ago the user signed in. Revoking
/// one such session ends only that token; "revoke all of a user" (tombstones + watermark)
/// still ends them all. Tenants that want the strict guarantee set `require_sid`, which token
/// validation enforces (see `core/tests/token/`).
async fn without_sid_each_token_is_its_own_session(ctx: Ctx) {
    let t = &ctx.tenant;
    let first = ctx.token_without_sid(ALICE, Some("uti-1"), "header.payload-1.sig");
    assert_eq!(first.session.anchor, SessionAnchor::TokenId);
    assert_eq!(ctx.check(&first).await, created(T0));

    // Ten minutes later the client silently refreshes: same user, new token, new session.
    ctx.advance(mins(10));
    let refreshed = ctx.token_without_sid(ALICE, Some("uti-2"), "header.payload-2.sig");
    assert_ne!(refreshed.session.id, first.session.id);
    assert_eq!(ctx.check(&refreshed).await, created(T0 + 10 * 60_000));
    // ... and a token without uti/jti is keyed by the whole token.
    let whole = ctx.token_without_sid(ALICE, None, "header.payload-3.sig");
    assert_eq!(whole.session.anchor, SessionAnchor::Token);
    assert_eq!(ctx.check(&whole).await, created(T0 + 10 * 60_000));
    let records = ctx.sessions(t).await;
    assert_eq!(records.len(), 3);
    let anchor_of = |key: &str| records.iter().find(|r| r.id == key).map(|r| r.anchor);
    assert_eq!(anchor_of(&first.session.id), Some(SessionAnchor::TokenId));
    assert_eq!(
        anchor_of(&refreshed.session.id),
        Some(SessionAnchor::TokenId)
    );
    assert_eq!(anchor_of(&whole.session.id), Some(SessionAnchor::Token));
    assert!(
        records.iter().all(|r| r.id.starts_with("h-")),
        "keys are hashes"
    );

    // The first token's session ends at 15 minutes; the refreshed one lives on.
    ctx.advance(mins(5));
    assert_eq!(ctx.check(&first).await, EXPIRED);
    assert_eq!(ctx.check(&refreshed).await, allowed(T0 + 10 * 60_000));

    // Revoking one (by the hashed key shown in the dashboard) ends only that token.
    let outcome = ctx
        .revoke(revocation(t, session(&refreshed.session.id), "one"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(ctx.check(&refreshed).await, REVOKED);
    assert_eq!(ctx.check(&whole).await, allowed(T0 + 10 * 60_000));

    // Revoking the user ends every token-session.
    let outcome = ctx.revoke(revocation(t, user(ALICE), "all")).await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(ctx.check(&whole).await, REAUTHENTICATE);
    let whole_signed_in = authenticated(whole.clone(), T0 / 1000);
    assert_eq!(ctx.check(&whole_signed_in).await, REVOKED);
    assert!(ctx.sessions(t).await.is_empty());
}
