//! The decision table of DESIGN §3 — policy, user lock / watermark, tombstones, expiry,
//! create-or-touch — and the revocation rules, exercised through the memory store's
//! `SessionStore` API with a fake clock.
//!
//! Identities are built by hand (token validation has its own tests in `token.rs`, including
//! `require_sid`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Action, Actor, ActorKind, AuditRecord, Source, Target};
use grantflow_core::clock::{Clock, ManualClock, rfc3339};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::policy::{DEFAULT_MAX_SESSION_AGE, Policy, PolicySource};
use grantflow_core::revocation::{Revocation, RevocationOutcome, RevocationTarget};
use grantflow_core::session::{AccessRequest, EndReason, SessionRecord, Verdict};
use grantflow_core::store::{MemoryStore, SessionStore};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The start of every test, in milliseconds (a whole second).
const T0: i64 = 1_750_000_000_000;
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0b3c1a9e-5d4f-4c2b-9a8e-7f6d5c4b3a21";
const ALICE: &str = "a11ce000-0000-0000-0000-000000000001";
const BOB: &str = "b0b00000-0000-0000-0000-000000000002";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

const EXPIRED: Verdict = Verdict::Deny(EndReason::Expired);
const REVOKED: Verdict = Verdict::Deny(EndReason::Revoked);

fn created(started_at: i64) -> Verdict {
    Verdict::Allow {
        created: true,
        started_at,
    }
}

fn allowed(started_at: i64) -> Verdict {
    Verdict::Allow {
        created: false,
        started_at,
    }
}

/// A token of `user` in `TENANT` with session id `sid`, and neither `auth_time` nor `iat`.
fn token(user: &str, sid: &str) -> Identity {
    Identity {
        tenant: TENANT.into(),
        user: user.into(),
        display_name: Some(format!("{user}@contoso.example")),
        session: SessionKey::derive(Some(sid), None, "unused"),
        auth_time: None,
        issued_at: None,
        not_before: None,
        expires_at: T0 / 1000 + 3600,
        roles: Vec::new(),
    }
}

/// The same token with `auth_time` (seconds).
fn authenticated(identity: Identity, auth_time_secs: i64) -> Identity {
    Identity {
        auth_time: Some(auth_time_secs),
        ..identity
    }
}

/// The same token with `iat` (seconds).
fn issued(identity: Identity, iat_secs: i64) -> Identity {
    Identity {
        issued_at: Some(iat_secs),
        ..identity
    }
}

fn in_tenant(identity: Identity, tenant: &str) -> Identity {
    Identity {
        tenant: tenant.into(),
        ..identity
    }
}

fn policy(max_age: Duration) -> Policy {
    Policy {
        max_session_age: max_age,
        source: PolicySource::Admin,
    }
}

fn admin() -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: "ad000000-0000-0000-0000-0000000000ad".into(),
        name: Some("Grace".into()),
    }
}

fn revocation(tenant: &str, target: RevocationTarget, reason: &str) -> Revocation {
    Revocation {
        tenant: tenant.into(),
        target,
        reason: reason.into(),
        actor: admin(),
        source: Source::Dashboard,
        idempotency_key: None,
    }
}

fn session(key: &str) -> RevocationTarget {
    RevocationTarget::Session(key.into())
}

fn user(user: &str) -> RevocationTarget {
    RevocationTarget::User {
        user: user.into(),
        lock_until: None,
    }
}

struct World {
    clock: ManualClock,
    store: MemoryStore,
}

impl World {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(limits, Arc::new(clock.clone()));
        Self { clock, store }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn check(&self, identity: &Identity) -> Verdict {
        let request = AccessRequest {
            identity: Arc::new(identity.clone()),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some(CHROME.into()),
        };
        self.store
            .check(&request)
            .await
            .expect("memory store answers")
    }

    async fn revoke(&self, revocation: Revocation) -> RevocationOutcome {
        self.store
            .revoke(&revocation)
            .await
            .expect("memory store answers")
    }

    async fn sessions(&self, tenant: &str) -> Vec<SessionRecord> {
        self.store.sessions(tenant).await.unwrap()
    }

    async fn session_ids(&self, tenant: &str) -> Vec<String> {
        self.sessions(tenant)
            .await
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    async fn last_seen(&self) -> i64 {
        self.sessions(TENANT).await[0].last_seen
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Vec<AuditRecord> {
        self.store.audit(tenant, limit).await.unwrap()
    }

    async fn set_policy(&self, tenant: &str, max_age: Duration) {
        self.store
            .set_policy(tenant, policy(max_age), None)
            .await
            .unwrap();
    }

    async fn maintain(&self) {
        self.store.maintain().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 6. No session → create it, allow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn new_session_without_auth_time_starts_now_and_is_recorded() {
    let w = World::new();
    let t = token(ALICE, "s-1");
    assert_eq!(w.check(&t).await, created(T0));
    assert_eq!(
        w.sessions(TENANT).await,
        vec![SessionRecord {
            tenant: TENANT.into(),
            user: ALICE.into(),
            display_name: Some(format!("{ALICE}@contoso.example")),
            id: "s-1".into(),
            anchor: SessionAnchor::Sid,
            started_at: T0,
            last_seen: T0,
            client_ip: Some("203.0.113.7".parse::<IpAddr>().unwrap()),
            user_agent: Some(CHROME.into()),
            client_label: Some("Chrome on Windows 10".into()),
        }]
    );
    // `iat` alone does not set the start: only `auth_time` does.
    let t = issued(token(ALICE, "s-2"), T0 / 1000 - 600);
    assert_eq!(w.check(&t).await, created(T0));
}

#[tokio::test]
async fn new_session_with_auth_time_starts_at_auth_time() {
    let w = World::new();
    let auth = T0 / 1000 - 120;
    let t = authenticated(token(ALICE, "s-1"), auth);
    assert_eq!(w.check(&t).await, created(auth * 1000));
    // Its age counts from the sign-in, not from the first request.
    w.advance(mins(13) - MS);
    assert_eq!(w.check(&t).await, allowed(auth * 1000));
    w.advance(MS);
    assert_eq!(w.check(&t).await, EXPIRED);
}

#[tokio::test]
async fn auth_time_in_the_future_starts_now() {
    // Clock skew between the issuer and us must not make a session younger than "now".
    let w = World::new();
    let t = authenticated(token(ALICE, "s-1"), T0 / 1000 + 30);
    assert_eq!(w.check(&t).await, created(T0));
}

#[tokio::test]
async fn absurd_auth_time_values_do_not_panic() {
    let w = World::new();
    assert_eq!(
        w.check(&authenticated(token(ALICE, "s-min"), i64::MIN))
            .await,
        EXPIRED
    );
    assert_eq!(
        w.check(&authenticated(token(ALICE, "s-max"), i64::MAX))
            .await,
        created(T0)
    );
    assert_eq!(
        w.check(&authenticated(token(ALICE, "s-zero"), 0)).await,
        EXPIRED
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Existing session → allow, touch last seen at most once a second
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn existing_session_is_allowed_and_touched_at_most_once_a_second() {
    let w = World::new();
    let t = token(ALICE, "s-1");
    assert_eq!(w.check(&t).await, created(T0));
    w.advance(Duration::from_millis(999));
    assert_eq!(w.check(&t).await, allowed(T0));
    assert_eq!(w.last_seen().await, T0, "touched less than a second ago");
    w.advance(MS);
    assert_eq!(w.check(&t).await, allowed(T0));
    assert_eq!(w.last_seen().await, T0 + 1000);
    w.advance(Duration::from_millis(500));
    assert_eq!(w.check(&t).await, allowed(T0));
    assert_eq!(w.last_seen().await, T0 + 1000);
    w.advance(Duration::from_millis(500));
    assert_eq!(w.check(&t).await, allowed(T0));
    assert_eq!(w.last_seen().await, T0 + 2000);
    // A later token of the same sid with another auth_time does not move the start (a silent
    // refresh cannot reset the age).
    let refreshed = authenticated(t.clone(), w.now_secs());
    assert_eq!(w.check(&refreshed).await, allowed(T0));
    assert_eq!(w.sessions(TENANT).await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 1 + 4. Policy and expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_max_age_is_fifteen_minutes() {
    let w = World::new();
    assert_eq!(DEFAULT_MAX_SESSION_AGE, mins(15));
    assert_eq!(
        w.store.policy(TENANT).await.unwrap(),
        Policy::default_with(mins(15))
    );
    let t = token(ALICE, "s-1");
    assert_eq!(w.check(&t).await, created(T0));
    w.advance(mins(14) + 59 * SEC);
    assert_eq!(w.check(&t).await, allowed(T0), "14:59");
    w.advance(SEC - MS);
    assert_eq!(w.check(&t).await, allowed(T0), "14:59.999");
    w.advance(MS);
    assert_eq!(w.check(&t).await, EXPIRED, "15:00");
    assert!(w.sessions(TENANT).await.is_empty());
}

#[tokio::test]
async fn expired_session_is_tombstoned_and_stays_expired_even_if_the_policy_is_raised() {
    let w = World::new();
    let t = token(ALICE, "s-1");
    w.check(&t).await;
    w.advance(mins(15));
    assert_eq!(w.check(&t).await, EXPIRED);
    assert_eq!(w.check(&t).await, EXPIRED);
    w.set_policy(TENANT, Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        w.check(&t).await,
        EXPIRED,
        "the tombstone outlives the policy change"
    );
    assert!(w.sessions(TENANT).await.is_empty());
    // Other sessions start normally under the raised policy.
    assert_eq!(w.check(&token(ALICE, "s-2")).await, created(w.now()));
}

#[tokio::test]
async fn after_expiry_only_a_sign_in_after_the_end_starts_the_same_sid_again() {
    let w = World::new();
    let signed_in = T0 / 1000;
    let t = authenticated(token(ALICE, "s-1"), signed_in);
    assert_eq!(w.check(&t).await, created(T0));
    // The user signs in again (new auth_time) in minute 14, while the session still lives:
    // that does not extend it.
    w.advance(mins(14));
    let reauth_during = authenticated(token(ALICE, "s-1"), w.now_secs());
    assert_eq!(w.check(&reauth_during).await, allowed(T0));
    // Idle past the max age: the session ended at T0 + 15 min, though nobody looked then.
    w.advance(mins(6));
    // A silent refresh keeps auth_time (and moves iat): refused, and the sid is tombstoned.
    let refreshed = issued(t.clone(), w.now_secs());
    assert_eq!(w.check(&refreshed).await, EXPIRED);
    assert_eq!(
        w.check(&reauth_during).await,
        EXPIRED,
        "signed in before the end"
    );
    // A token without auth_time cannot prove anything.
    assert_eq!(
        w.check(&issued(token(ALICE, "s-1"), w.now_secs())).await,
        EXPIRED
    );
    // Another user's fresh sign-in naming the sid is refused.
    let bob = authenticated(token(BOB, "s-1"), w.now_secs());
    assert_eq!(w.check(&bob).await, EXPIRED);
    // "Sign in again": auth_time after the end starts a new session under the same sid.
    let again = authenticated(token(ALICE, "s-1"), w.now_secs());
    assert_eq!(w.check(&again).await, created(w.now_secs() * 1000));
    assert_eq!(w.check(&again).await, allowed(w.now_secs() * 1000));
    assert_eq!(w.session_ids(TENANT).await, ["s-1"]);
    // Its silent refreshes keep the new start.
    w.advance(mins(5));
    assert_eq!(
        w.check(&issued(again.clone(), w.now_secs())).await,
        allowed(w.now() - mins(5).as_millis() as i64)
    );
}

#[tokio::test]
async fn a_sign_in_after_the_max_age_replaces_the_live_session_it_finds() {
    // Nobody used the session after it reached its max age, and maintenance has not run:
    // the fresh sign-in's first request finds it still live.
    let w = World::new();
    let t = token(ALICE, "s-1");
    assert_eq!(w.check(&t).await, created(T0));
    w.advance(mins(16));
    let signed_in = w.now_secs();
    w.advance(mins(1));
    let again = authenticated(token(ALICE, "s-1"), signed_in);
    assert_eq!(w.check(&again).await, created(signed_in * 1000));
    assert_eq!(w.check(&t).await, allowed(signed_in * 1000));
    assert_eq!(w.sessions(TENANT).await.len(), 1);
    // Signed in a second before the old one reached its max age: refused.
    let w = World::new();
    assert_eq!(w.check(&t).await, created(T0));
    w.advance(mins(20));
    let late = authenticated(token(ALICE, "s-1"), T0 / 1000 + 15 * 60 - 1);
    assert_eq!(w.check(&late).await, EXPIRED);
}

#[tokio::test]
async fn token_authenticated_longer_ago_than_max_age_is_expired_and_its_sid_cannot_start_later() {
    let w = World::new();
    let old = authenticated(token(ALICE, "s-old"), T0 / 1000 - 15 * 60);
    assert_eq!(w.check(&old).await, EXPIRED);
    assert!(
        w.sessions(TENANT).await.is_empty(),
        "no session was created"
    );
    // One second younger is still fine.
    let young = authenticated(token(ALICE, "s-young"), T0 / 1000 - 15 * 60 + 1);
    assert_eq!(w.check(&young).await, created(T0 - (15 * 60 - 1) * 1000));
    // The refused sid was tombstoned: raising the policy, or a token of that sid without
    // auth_time (which would otherwise start "now"), does not let it in.
    w.set_policy(TENANT, mins(60)).await;
    assert_eq!(w.check(&old).await, EXPIRED);
    assert_eq!(w.check(&token(ALICE, "s-old")).await, EXPIRED);
    w.advance(mins(5));
    assert_eq!(w.check(&token(ALICE, "s-old")).await, EXPIRED);
}

#[tokio::test]
async fn lowered_policy_ends_older_sessions_at_once_and_younger_ones_continue() {
    let w = World::new();
    w.set_policy(TENANT, mins(60)).await;
    assert_eq!(w.store.policy(TENANT).await.unwrap(), policy(mins(60)));
    let older = token(ALICE, "s-older");
    let younger = token(BOB, "s-younger");
    assert_eq!(w.check(&older).await, created(T0));
    w.advance(mins(20));
    assert_eq!(w.check(&younger).await, created(T0 + 20 * 60_000));
    w.advance(mins(5));
    assert_eq!(
        w.check(&older).await,
        allowed(T0),
        "25 minutes under a 60-minute policy"
    );

    w.set_policy(TENANT, mins(10)).await;
    assert_eq!(
        w.check(&older).await,
        EXPIRED,
        "25 minutes old under a 10-minute policy"
    );
    assert_eq!(
        w.check(&younger).await,
        allowed(T0 + 20 * 60_000),
        "5 minutes old"
    );
    w.advance(mins(5) - MS);
    assert_eq!(w.check(&younger).await, allowed(T0 + 20 * 60_000));
    w.advance(MS);
    assert_eq!(w.check(&younger).await, EXPIRED);
}

#[tokio::test]
async fn lowered_policy_also_applies_to_maintenance() {
    let w = World::new();
    w.set_policy(TENANT, mins(60)).await;
    w.check(&token(ALICE, "s-older")).await;
    w.advance(mins(20));
    w.check(&token(BOB, "s-younger")).await;
    w.set_policy(TENANT, mins(10)).await;
    w.maintain().await;
    assert_eq!(w.session_ids(TENANT).await, ["s-younger"]);
    assert_eq!(w.check(&token(ALICE, "s-older")).await, EXPIRED);
}

#[tokio::test]
async fn clear_policy_returns_to_the_default() {
    let w = World::new();
    w.set_policy(TENANT, mins(60)).await;
    let t = token(ALICE, "s-1");
    w.check(&t).await;
    w.advance(mins(20));
    assert_eq!(w.check(&t).await, allowed(T0));
    w.store.clear_policy(TENANT).await.unwrap();
    assert_eq!(
        w.store.policy(TENANT).await.unwrap(),
        Policy::default_with(mins(15))
    );
    assert_eq!(
        w.check(&t).await,
        EXPIRED,
        "20 minutes old under the 15-minute default"
    );
    // Clearing a tenant that never had a policy is harmless.
    w.store.clear_policy(OTHER_TENANT).await.unwrap();
    assert_eq!(
        w.store.policy(OTHER_TENANT).await.unwrap(),
        Policy::default_with(mins(15))
    );
}

#[tokio::test]
async fn configured_default_max_age_applies_to_tenants_without_a_policy() {
    let w = World::with_limits(Limits {
        default_max_age: mins(5),
        ..Limits::default()
    });
    assert_eq!(
        w.store.policy(TENANT).await.unwrap(),
        Policy::default_with(mins(5))
    );
    let t = token(ALICE, "s-1");
    w.check(&t).await;
    w.advance(mins(5));
    assert_eq!(w.check(&t).await, EXPIRED);
}

#[tokio::test]
async fn policy_update_with_an_audit_record_is_appended() {
    let w = World::new();
    let record = AuditRecord {
        id: "audit-1".into(),
        time: rfc3339(w.now()),
        tenant: TENANT.into(),
        actor: admin(),
        action: Action::PolicyUpdate,
        target: Target::default(),
        reason: None,
        source: Source::Api,
        sessions_revoked: None,
        detail: Some("maxSessionAge=30m".into()),
    };
    w.store
        .set_policy(TENANT, policy(mins(30)), Some(record.clone()))
        .await
        .unwrap();
    assert_eq!(w.audit(TENANT, 10).await, vec![record]);
}

// ---------------------------------------------------------------------------------------------
// Revocation: one session
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revoking_one_session_refuses_its_next_request_and_is_audited() {
    let w = World::new();
    let s1 = token(ALICE, "s-1");
    let s2 = token(ALICE, "s-2");
    w.check(&s1).await;
    w.check(&s2).await;
    w.advance(mins(2));

    let outcome = w
        .revoke(revocation(TENANT, session("s-1"), "lost laptop"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(w.check(&s1).await, REVOKED);
    assert_eq!(w.check(&s1).await, REVOKED);
    assert_eq!(
        w.check(&s2).await,
        allowed(T0),
        "the user's other session continues"
    );
    assert_eq!(w.session_ids(TENANT).await, ["s-2"]);
    // A token signed in before (or in the same second as) the revocation stays refused.
    assert_eq!(
        w.check(&authenticated(s1.clone(), w.now_secs())).await,
        REVOKED
    );

    let trail = w.audit(TENANT, 10).await;
    assert_eq!(trail.len(), 1);
    let record = &trail[0];
    assert_eq!(record.id, outcome.audit_id);
    assert_eq!(record.time, rfc3339(T0 + 2 * 60_000));
    assert_eq!(record.tenant, TENANT);
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

    // The wire form of DESIGN §7.
    let json = serde_json::to_value(record).unwrap();
    assert_eq!(json["action"], "session.revoke");
    assert_eq!(json["actor"]["kind"], "admin");
    assert_eq!(json["source"], "dashboard");
    assert_eq!(json["sessionsRevoked"], 1);
    assert_eq!(json["target"]["session"], "s-1");
    assert_eq!(json["target"]["user"], ALICE);

    // A sign-in after the revocation under the same sid starts a new session — for the user
    // it belonged to; another user's token naming it stays refused.
    w.advance(SEC);
    let bob = authenticated(token(BOB, "s-1"), w.now_secs());
    assert_eq!(w.check(&bob).await, REVOKED);
    let again = authenticated(s1.clone(), w.now_secs());
    assert_eq!(w.check(&again).await, created(w.now_secs() * 1000));
    assert_eq!(w.audit(TENANT, 10).await.len(), 1, "no new audit record");
}

#[tokio::test]
async fn revoking_an_unknown_session_key_still_tombstones_it() {
    let w = World::new();
    let outcome = w
        .revoke(revocation(TENANT, session("s-future"), "leaked sid"))
        .await;
    assert_eq!(outcome.sessions_revoked, 0);
    let record = &w.audit(TENANT, 1).await[0];
    assert_eq!(
        record.target,
        Target {
            user: None,
            session: Some("s-future".into())
        }
    );
    assert_eq!(record.sessions_revoked, Some(0));
    // The key can never start a session (until the retention forgets it).
    assert_eq!(w.check(&token(ALICE, "s-future")).await, REVOKED);
    assert!(w.sessions(TENANT).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Revocation: every session of a user, and the watermark
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revoking_a_user_ends_all_their_sessions_and_no_one_elses() {
    let w = World::new();
    let a1 = token(ALICE, "a-1");
    let a2 = token(ALICE, "a-2");
    let b1 = token(BOB, "b-1");
    for t in [&a1, &a2, &b1] {
        w.check(t).await;
    }
    w.advance(SEC);
    let outcome = w
        .revoke(revocation(TENANT, user(ALICE), "offboarding"))
        .await;
    assert_eq!(outcome.sessions_revoked, 2);
    assert_eq!(w.check(&a1).await, REVOKED);
    assert_eq!(w.check(&a2).await, REVOKED);
    assert_eq!(w.check(&b1).await, allowed(T0));
    assert_eq!(w.session_ids(TENANT).await, ["b-1"]);

    let record = &w.audit(TENANT, 1).await[0];
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
    let again = w.revoke(revocation(TENANT, user(ALICE), "again")).await;
    assert_eq!(again.sessions_revoked, 0);
    assert_eq!(w.audit(TENANT, 10).await.len(), 2);
}

#[tokio::test]
async fn after_revoke_all_earlier_sign_ins_cannot_open_a_session_but_a_fresh_one_can() {
    let w = World::new();
    let signed_in = T0 / 1000;
    w.check(&authenticated(token(ALICE, "a-1"), signed_in))
        .await;
    // Revoke in the middle of a second, 10 minutes later.
    w.advance(mins(10) + Duration::from_millis(500));
    let revoked_at_secs = w.now_secs();
    w.revoke(revocation(TENANT, user(ALICE), "compromised"))
        .await;

    // Tokens from before the revocation, each with a new sid (e.g. another app or a silent
    // refresh with a new session id):
    let before = authenticated(token(ALICE, "a-2"), signed_in);
    assert_eq!(
        w.check(&before).await,
        REVOKED,
        "auth_time before the watermark"
    );
    let before = issued(token(ALICE, "a-3"), signed_in + 60);
    assert_eq!(
        w.check(&before).await,
        REVOKED,
        "iat before the watermark (no auth_time)"
    );
    let before = issued(
        authenticated(token(ALICE, "a-4"), signed_in),
        revoked_at_secs + 5,
    );
    assert_eq!(
        w.check(&before).await,
        REVOKED,
        "auth_time wins over a later iat"
    );
    // Claims have whole seconds, the watermark has milliseconds: a sign-in within the second
    // of the revocation cannot prove it came after it, so it is refused (fail closed).
    let same_second = authenticated(token(ALICE, "a-5"), revoked_at_secs);
    assert_eq!(w.check(&same_second).await, REVOKED);
    assert!(w.sessions(TENANT).await.is_empty());

    // A fresh sign-in afterwards works.
    w.advance(SEC);
    let fresh = authenticated(token(ALICE, "a-6"), w.now_secs());
    assert_eq!(w.check(&fresh).await, created(w.now_secs() * 1000));
    let fresh_iat = issued(token(ALICE, "a-7"), w.now_secs());
    assert_eq!(
        w.check(&fresh_iat).await,
        created(w.now()),
        "iat after the watermark"
    );
    assert_eq!(w.session_ids(TENANT).await.len(), 2);
    // The sids refused above were not tombstoned by being refused: a fresh sign-in that
    // happens to reuse one is let in.
    let reused = authenticated(token(ALICE, "a-2"), w.now_secs());
    assert_eq!(w.check(&reused).await, created(w.now_secs() * 1000));
    // The sid that was live at the revocation is tombstoned: a silent refresh of it (same
    // auth_time, or none) stays refused; a sign-in after the revocation under that same sid
    // (Entra keeps `sid` for the browser's sign-in session) starts a new session.
    let refreshed = issued(authenticated(token(ALICE, "a-1"), signed_in), w.now_secs());
    assert_eq!(w.check(&refreshed).await, REVOKED);
    let same_sid = authenticated(token(ALICE, "a-1"), w.now_secs());
    assert_eq!(w.check(&same_sid).await, created(w.now_secs() * 1000));
}

#[tokio::test]
async fn token_without_auth_time_or_iat_is_refused_once_a_watermark_exists() {
    let w = World::new();
    let bare = token(ALICE, "a-1");
    assert_eq!(
        w.check(&bare).await,
        created(T0),
        "no watermark yet: allowed, starts now"
    );
    w.advance(SEC);
    w.revoke(revocation(TENANT, user(ALICE), "reset")).await;
    w.advance(mins(1));
    // A new sid without any auth instant cannot prove it came after the watermark.
    assert_eq!(w.check(&token(ALICE, "a-2")).await, REVOKED);
    w.advance(mins(5));
    assert_eq!(w.check(&token(ALICE, "a-3")).await, REVOKED);
    // Only that user has a watermark.
    assert_eq!(w.check(&token(BOB, "b-1")).await, created(w.now()));
}

#[tokio::test]
async fn user_watermark_is_checked_before_the_tombstone() {
    // Decision order: step 2 (user marks) before step 3 (tombstone).
    let w = World::new();
    let t = authenticated(token(ALICE, "a-1"), T0 / 1000);
    w.check(&t).await;
    w.advance(mins(15));
    assert_eq!(w.check(&t).await, EXPIRED);
    w.revoke(revocation(TENANT, user(ALICE), "incident")).await;
    assert_eq!(w.check(&t).await, REVOKED);
}

// ---------------------------------------------------------------------------------------------
// Revocation: lock until a time
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_lock_refuses_even_fresh_sign_ins_until_it_ends() {
    let w = World::new();
    let a1 = authenticated(token(ALICE, "a-1"), T0 / 1000);
    let b1 = token(BOB, "b-1");
    w.check(&a1).await;
    w.check(&b1).await;
    w.advance(SEC);
    let until = w.now() + 60 * 60_000;
    let lock = RevocationTarget::User {
        user: ALICE.into(),
        lock_until: Some(until),
    };
    let outcome = w
        .revoke(revocation(TENANT, lock, "incident response"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);

    let record = &w.audit(TENANT, 1).await[0];
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

    assert_eq!(w.check(&a1).await, REVOKED);
    w.advance(SEC);
    let fresh = || authenticated(token(ALICE, &format!("a-fresh-{}", w.now())), w.now_secs());
    assert_eq!(
        w.check(&fresh()).await,
        REVOKED,
        "a fresh sign-in during the lock"
    );
    assert_eq!(
        w.check(&b1).await,
        allowed(T0),
        "other users are not locked"
    );
    w.clock.set(until - 1);
    assert_eq!(
        w.check(&fresh()).await,
        REVOKED,
        "one millisecond before the end"
    );

    w.clock.set(until);
    let after = fresh();
    assert_eq!(
        w.check(&after).await,
        created(w.now_secs() * 1000),
        "the lock has ended"
    );
    // The lock came with a watermark: earlier sign-ins stay refused.
    let earlier = authenticated(token(ALICE, "a-earlier"), T0 / 1000);
    assert_eq!(w.check(&earlier).await, REVOKED);
    assert_eq!(w.check(&a1).await, REVOKED);
}

#[tokio::test]
async fn revoke_all_without_a_lock_keeps_an_existing_lock() {
    let w = World::new();
    let until = T0 + 60 * 60_000;
    let lock = RevocationTarget::User {
        user: ALICE.into(),
        lock_until: Some(until),
    };
    w.revoke(revocation(TENANT, lock, "lock")).await;
    w.advance(SEC);
    w.revoke(revocation(TENANT, user(ALICE), "revoke again"))
        .await;
    w.advance(SEC);
    let fresh = authenticated(token(ALICE, "a-1"), w.now_secs());
    assert_eq!(w.check(&fresh).await, REVOKED, "still locked");
}

// ---------------------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_are_isolated() {
    let w = World::new();
    // The same sid and the same user id in two tenants are two different sessions.
    let here = token(ALICE, "s-shared");
    let there = in_tenant(token(ALICE, "s-shared"), OTHER_TENANT);
    assert_eq!(w.check(&here).await, created(T0));
    assert_eq!(w.check(&there).await, created(T0));
    assert_eq!(w.sessions(TENANT).await[0].tenant, TENANT);
    assert_eq!(w.sessions(OTHER_TENANT).await[0].tenant, OTHER_TENANT);

    // Revoking the session in one tenant leaves the other alone.
    assert_eq!(
        w.revoke(revocation(TENANT, session("s-shared"), "x"))
            .await
            .sessions_revoked,
        1
    );
    assert_eq!(w.check(&here).await, REVOKED);
    assert_eq!(w.check(&there).await, allowed(T0));

    // Revoking (and locking) the user in one tenant leaves the other alone.
    let lock = RevocationTarget::User {
        user: ALICE.into(),
        lock_until: Some(T0 + 3_600_000),
    };
    assert_eq!(
        w.revoke(revocation(TENANT, lock, "y"))
            .await
            .sessions_revoked,
        0
    );
    w.advance(SEC);
    assert_eq!(w.check(&there).await, allowed(T0));
    let new_there = in_tenant(token(ALICE, "s-new"), OTHER_TENANT);
    assert_eq!(
        w.check(&new_there).await,
        created(w.now()),
        "no watermark or lock there"
    );

    // Revoking in the other tenant cannot reach this one's sessions by key.
    w.check(&token(BOB, "b-here")).await;
    let outcome = w
        .revoke(revocation(OTHER_TENANT, session("b-here"), "z"))
        .await;
    assert_eq!(outcome.sessions_revoked, 0);
    assert_eq!(w.check(&token(BOB, "b-here")).await, allowed(w.now()));
    let outcome = w.revoke(revocation(OTHER_TENANT, user(BOB), "z")).await;
    assert_eq!(outcome.sessions_revoked, 0);
    assert_eq!(w.check(&token(BOB, "b-here")).await, allowed(w.now()));

    // Policies are per tenant.
    w.set_policy(OTHER_TENANT, mins(60)).await;
    assert_eq!(
        w.store.policy(TENANT).await.unwrap(),
        Policy::default_with(mins(15))
    );
    w.advance(mins(15));
    assert_eq!(w.check(&there).await, allowed(T0), "60-minute policy there");
    assert_eq!(
        w.check(&token(BOB, "b-here")).await,
        EXPIRED,
        "15-minute default here"
    );

    // Sessions and audit trails are per tenant.
    assert_eq!(w.session_ids(OTHER_TENANT).await, ["s-shared", "s-new"]);
    assert!(w.sessions(TENANT).await.is_empty());
    let reasons = |trail: Vec<AuditRecord>| -> Vec<String> {
        trail.into_iter().map(|r| r.reason.unwrap()).collect()
    };
    assert_eq!(reasons(w.audit(TENANT, 10).await), ["y", "x"]);
    assert_eq!(reasons(w.audit(OTHER_TENANT, 10).await), ["z", "z"]);
    assert!(
        w.audit(OTHER_TENANT, 10)
            .await
            .iter()
            .all(|r| r.tenant == OTHER_TENANT)
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens without sid
// ---------------------------------------------------------------------------------------------

/// CAVEAT (DESIGN §3): in Entra access tokens `sid` and `auth_time` are optional claims.
/// Without `sid`, nothing ties two access tokens of one sign-in together, so each token is its
/// own session (keyed by a hash of its `uti`/`jti`, else of the whole token). A silent refresh
/// yields a new token and therefore a new session whose age starts again: the max age then
/// bounds how long one access token is used, not how long ago the user signed in. Revoking
/// one such session ends only that token; "revoke all of a user" (tombstones + watermark)
/// still ends them all. Tenants that want the strict guarantee set `require_sid`, which token
/// validation enforces (see `token.rs`).
#[tokio::test]
async fn without_sid_each_token_is_its_own_session() {
    let w = World::new();
    let token_id_anchored = |uti: &str, raw: &str| Identity {
        session: SessionKey::derive(None, Some(uti), raw),
        ..token(ALICE, "unused")
    };
    let first = token_id_anchored("uti-1", "header.payload-1.sig");
    assert_eq!(first.session.anchor, SessionAnchor::TokenId);
    assert_eq!(w.check(&first).await, created(T0));

    // Ten minutes later the client silently refreshes: same user, new token, new session.
    w.advance(mins(10));
    let refreshed = token_id_anchored("uti-2", "header.payload-2.sig");
    assert_ne!(refreshed.session.id, first.session.id);
    assert_eq!(w.check(&refreshed).await, created(T0 + 10 * 60_000));
    // ... and a token without uti/jti is keyed by the whole token.
    let whole = Identity {
        session: SessionKey::derive(None, None, "header.payload-3.sig"),
        ..token(ALICE, "unused")
    };
    assert_eq!(whole.session.anchor, SessionAnchor::Token);
    assert_eq!(w.check(&whole).await, created(T0 + 10 * 60_000));
    let records = w.sessions(TENANT).await;
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
    w.advance(mins(5));
    assert_eq!(w.check(&first).await, EXPIRED);
    assert_eq!(w.check(&refreshed).await, allowed(T0 + 10 * 60_000));

    // Revoking one (by the hashed key shown in the dashboard) ends only that token.
    let outcome = w
        .revoke(revocation(TENANT, session(&refreshed.session.id), "one"))
        .await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(w.check(&refreshed).await, REVOKED);
    assert_eq!(w.check(&whole).await, allowed(T0 + 10 * 60_000));

    // Revoking the user ends every token-session.
    let outcome = w.revoke(revocation(TENANT, user(ALICE), "all")).await;
    assert_eq!(outcome.sessions_revoked, 1);
    assert_eq!(w.check(&whole).await, REVOKED);
    assert!(w.sessions(TENANT).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Maintenance and retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn maintain_expires_old_sessions_and_forgets_after_the_retention() {
    let w = World::with_limits(Limits {
        default_max_age: mins(15),
        retention: mins(60),
        ..Limits::default()
    });
    let no_auth_time = token(ALICE, "s-plain");
    let with_auth_time = authenticated(token(ALICE, "s-auth"), T0 / 1000);
    w.check(&no_auth_time).await;
    w.check(&with_auth_time).await;
    w.advance(mins(5));
    w.check(&token(BOB, "s-young")).await;

    // Maintenance expires sessions past the max age without waiting for a request.
    w.advance(mins(10));
    w.maintain().await;
    assert_eq!(w.session_ids(TENANT).await, ["s-young"]);
    assert_eq!(
        w.check(&no_auth_time).await,
        EXPIRED,
        "tombstoned by maintenance"
    );
    assert_eq!(w.check(&with_auth_time).await, EXPIRED);

    // Tombstones are kept for the retention (counted from when the session ended) ...
    w.advance(mins(60) - MS);
    w.maintain().await;
    assert_eq!(w.check(&no_auth_time).await, EXPIRED);
    assert_eq!(w.check(&with_auth_time).await, EXPIRED);

    // ... and then forgotten. What a forgotten sid does next depends on the token:
    // - without auth_time the store has nothing left to date it by, so the same sid starts a
    //   brand-new session. The retention must therefore outlast any token that may still
    //   carry the sid (Entra keeps `sid` across refreshes; default retention is 24 h);
    // - with auth_time the session's start is the sign-in, which is older than the max age,
    //   so it is expired (and tombstoned) again.
    w.advance(MS);
    w.maintain().await;
    assert_eq!(w.check(&no_auth_time).await, created(w.now()));
    assert_eq!(w.check(&with_auth_time).await, EXPIRED);
    w.maintain().await;
    assert_eq!(w.check(&with_auth_time).await, EXPIRED, "tombstoned again");
}

#[tokio::test]
async fn maintain_forgets_watermarks_after_the_retention_but_not_active_locks() {
    let w = World::with_limits(Limits {
        default_max_age: mins(15),
        retention: mins(60),
        watermark_retention: mins(60),
    });
    w.revoke(revocation(TENANT, user(ALICE), "watermark only"))
        .await;
    let lock = RevocationTarget::User {
        user: BOB.into(),
        lock_until: Some(T0 + 3 * 3_600_000),
    };
    w.revoke(revocation(TENANT, lock, "locked for 3 hours"))
        .await;

    w.advance(mins(30));
    w.maintain().await;
    assert_eq!(
        w.check(&token(ALICE, "a-1")).await,
        REVOKED,
        "watermark kept"
    );

    w.advance(mins(30));
    w.maintain().await;
    // ALICE's watermark is older than the retention and forgotten: a token with no auth
    // instant opens a session again. (Any real token authenticated before it would by now be
    // older than the max age, or past its own expiry.)
    assert_eq!(w.check(&token(ALICE, "a-2")).await, created(w.now()));
    // A token authenticated before the forgotten watermark is dated by its auth_time: expired.
    let old = authenticated(token(ALICE, "a-3"), T0 / 1000 - 1);
    assert_eq!(w.check(&old).await, EXPIRED);
    // BOB's lock is still running: kept regardless of the retention.
    assert_eq!(
        w.check(&authenticated(token(BOB, "b-1"), w.now_secs()))
            .await,
        REVOKED
    );

    w.clock.set(T0 + 3 * 3_600_000);
    w.maintain().await;
    assert_eq!(
        w.check(&token(BOB, "b-2")).await,
        created(w.now()),
        "lock over, all forgotten"
    );
}

#[tokio::test]
async fn maintain_does_not_touch_live_young_sessions_or_policies() {
    let w = World::new();
    w.set_policy(TENANT, mins(30)).await;
    w.check(&token(ALICE, "s-1")).await;
    w.advance(mins(20));
    w.maintain().await;
    assert_eq!(w.session_ids(TENANT).await, ["s-1"]);
    assert_eq!(w.store.policy(TENANT).await.unwrap(), policy(mins(30)));
    assert_eq!(w.check(&token(ALICE, "s-1")).await, allowed(T0));
}

// ---------------------------------------------------------------------------------------------
// Audit trail
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn audit_trail_is_newest_first_and_capped_by_the_limit() {
    let w = World::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let outcome = w
            .revoke(revocation(
                TENANT,
                session(&format!("s-{i}")),
                &format!("r{i}"),
            ))
            .await;
        ids.push(outcome.audit_id);
        w.advance(SEC);
    }
    let reasons = |trail: &[AuditRecord]| {
        trail
            .iter()
            .map(|r| r.reason.clone().unwrap())
            .collect::<Vec<_>>()
    };

    let newest = w.audit(TENANT, 3).await;
    assert_eq!(reasons(&newest), ["r4", "r3", "r2"]);
    assert_eq!(newest[0].time, rfc3339(T0 + 4000));
    let all = w.audit(TENANT, 100).await;
    assert_eq!(reasons(&all), ["r4", "r3", "r2", "r1", "r0"]);
    let all_ids: Vec<String> = all.iter().map(|r| r.id.clone()).collect();
    ids.reverse();
    assert_eq!(all_ids, ids);
    assert!(w.audit(TENANT, 0).await.is_empty());
    assert!(w.audit(OTHER_TENANT, 100).await.is_empty());
    assert!(w.audit("never-seen", 100).await.is_empty());

    // The trail survives maintenance.
    w.advance(Duration::from_secs(48 * 3600));
    w.maintain().await;
    assert_eq!(w.audit(TENANT, 100).await.len(), 5);
}
