//! The session engine alone, synchronously: exact boundaries of the rules that the store
//! conformance suite (`tests/tests/conformance.rs`, every store) exercises through the
//! `SessionStore` API.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::decision::{Limits, TenantSessions, UserMarks, issued_since};
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::revocation::RevocationTarget;
use grantflow_core::session::{AccessRequest, EndReason, Verdict};

const T0: i64 = 1_750_000_000_000;
const MINUTE: i64 = 60_000;

fn identity(user: &str, sid: &str) -> Identity {
    Identity {
        tenant: "t".into(),
        user: user.into(),
        display_name: None,
        session: SessionKey::derive(Some(sid), None, "raw"),
        auth_time: None,
        issued_at: Some(T0 / 1000),
        not_before: None,
        expires_at: T0 / 1000 + 3600,
        roles: Vec::new(),
    }
}

fn signed_in(identity: Identity, secs: i64) -> Identity {
    Identity {
        auth_time: Some(secs),
        ..identity
    }
}

fn request(identity: Identity) -> AccessRequest {
    AccessRequest {
        identity: Arc::new(identity),
        client_ip: None,
        user_agent: None,
    }
}

fn decide(state: &mut TenantSessions, identity: &Identity, now: i64) -> Verdict {
    state.decide(
        "t",
        &request(identity.clone()),
        &Limits::default(),
        None,
        now,
    )
}

#[test]
fn a_session_lives_until_exactly_its_max_age_and_is_then_tombstoned() {
    let mut state = TenantSessions::default();
    let token = identity("u1", "s1");
    let created = Verdict::Allow {
        created: true,
        started_at: T0,
    };
    assert_eq!(decide(&mut state, &token, T0), created);
    let live = Verdict::Allow {
        created: false,
        started_at: T0,
    };
    assert_eq!(decide(&mut state, &token, T0 + 15 * MINUTE - 1), live);
    assert_eq!(state.live["s1"].last_seen, T0 + 15 * MINUTE - 1);
    assert_eq!(
        decide(&mut state, &token, T0 + 15 * MINUTE),
        Verdict::Deny(EndReason::Expired)
    );
    assert!(state.live.is_empty());
    let tombstone = &state.ended["s1"];
    assert_eq!(
        (
            tombstone.reason,
            tombstone.ended_at,
            tombstone.user.as_deref()
        ),
        (EndReason::Expired, T0 + 15 * MINUTE, Some("u1"))
    );
    // Only the same user's sign-in after the end gets past the tombstone.
    let after = T0 / 1000 + 15 * 60 + 1;
    assert!(tombstone.yields_to(&signed_in(identity("u1", "s1"), after)));
    assert!(!tombstone.yields_to(&signed_in(identity("u1", "s1"), after - 1)));
    assert!(!tombstone.yields_to(&signed_in(identity("u2", "s1"), after)));
    assert!(!tombstone.yields_to(&identity("u1", "s1")));
}

#[test]
fn marks_refuse_by_lock_then_watermark_with_auth_time_as_the_only_proof() {
    let limits = Limits {
        watermark_retention: Duration::from_secs(3600),
        ..Limits::default()
    };
    let w = T0 + 500;
    let marks = UserMarks {
        not_before: Some(w),
        lock_until: Some(T0 + 10 * MINUTE),
        lock_message: None,
    };
    let bare = identity("u1", "s1");
    let at = |secs| signed_in(identity("u1", "s1"), secs);
    // The lock refuses everyone until it ends (exclusive).
    assert_eq!(
        marks.refuses(&at(T0 / 1000 + 60), &limits, T0 + 10 * MINUTE - 1),
        Some(EndReason::Revoked)
    );
    let now = T0 + 10 * MINUTE;
    // Then the watermark: no auth_time → reauthenticate, whatever the iat.
    let fresh_iat = Identity {
        issued_at: Some(now / 1000),
        ..bare.clone()
    };
    assert_eq!(
        marks.refuses(&fresh_iat, &limits, now),
        Some(EndReason::Reauthenticate)
    );
    // auth_time in W's second is not after W; the next second is.
    assert_eq!(
        marks.refuses(&at(T0 / 1000), &limits, now),
        Some(EndReason::Revoked)
    );
    assert_eq!(marks.refuses(&at(T0 / 1000 + 1), &limits, now), None);
    // For the watermark retention, counted from W.
    let end = w + 3_600_000;
    assert_eq!(
        marks.refuses(&bare, &limits, end - 1),
        Some(EndReason::Reauthenticate)
    );
    assert_eq!(marks.refuses(&bare, &limits, end), None);
    assert!(marks.in_force(&limits, end - 1));
    assert!(!marks.in_force(&limits, end));
    assert_eq!(marks.holds_until(&limits), end);
}

#[test]
fn issued_since_compares_whole_seconds_and_refuses_tokens_that_cannot_say() {
    let lost_at = T0 + 700;
    let with = |iat: Option<i64>, auth_time: Option<i64>| Identity {
        issued_at: iat,
        auth_time,
        ..identity("u1", "s1")
    };
    let next = T0 / 1000 + 1;
    assert!(issued_since(&with(Some(next), None), lost_at));
    // Issued in L's own second: cannot prove it came after L.
    assert!(!issued_since(&with(Some(T0 / 1000), None), lost_at));
    assert!(!issued_since(&with(Some(T0 / 1000), None), T0));
    assert!(!issued_since(&with(Some(T0 / 1000 - 1), None), lost_at));
    assert!(issued_since(&with(None, Some(next)), lost_at));
    assert!(!issued_since(&with(None, Some(T0 / 1000)), lost_at));
    assert!(!issued_since(&with(None, None), lost_at));
    // iat wins over auth_time.
    assert!(!issued_since(
        &with(Some(T0 / 1000 - 1), Some(next)),
        lost_at
    ));
    // A store that begins within a second accepts tokens of that second, not earlier ones.
    let begun = grantflow_core::decision::begins_at(T0 + 700);
    assert_eq!(begun, T0 - 1);
    assert!(issued_since(&with(Some(T0 / 1000), None), begun));
    assert!(!issued_since(&with(Some(T0 / 1000 - 1), None), begun));
    let mut state = TenantSessions::default();
    let old = with(Some(T0 / 1000 - 1), None);
    let verdict = state.decide(
        "t",
        &request(old),
        &Limits::default(),
        Some(lost_at),
        T0 + 1000,
    );
    assert_eq!(verdict, Verdict::Deny(EndReason::Expired));
    assert!(
        state.is_empty(),
        "refused before anything is written or tombstoned"
    );
}

#[test]
fn sweep_forgets_tombstones_at_exactly_the_retention_and_marks_no_longer_in_force() {
    let limits = Limits {
        retention: Duration::from_secs(60),
        watermark_retention: Duration::from_secs(120),
        ..Limits::default()
    };
    let mut state = TenantSessions::default();
    state.revoke(&RevocationTarget::Session("s1".into()), T0);
    state.revoke(
        &RevocationTarget::User {
            user: "u1".into(),
            lock_until: None,
            message: None,
        },
        T0,
    );
    state.sweep(&limits, T0 + 60_000 - 1);
    assert!(state.ended.contains_key("s1"));
    state.sweep(&limits, T0 + 60_000);
    assert!(!state.ended.contains_key("s1"));
    assert!(state.users.contains_key("u1"));
    assert_eq!(state.blocked_users(&limits, T0 + 120_000 - 1).len(), 1);
    state.sweep(&limits, T0 + 120_000);
    assert!(state.users.is_empty());
    assert!(state.is_empty());
}

#[test]
fn a_lock_outlasting_the_watermark_is_listed_without_it() {
    let limits = Limits {
        watermark_retention: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut state = TenantSessions::default();
    let until = T0 + 10 * MINUTE;
    state.revoke(
        &RevocationTarget::User {
            user: "u1".into(),
            lock_until: Some(until),
            message: None,
        },
        T0,
    );
    let listed = state.blocked_users(&limits, T0 + 59_999);
    assert_eq!(listed[0].not_before, Some(T0));
    let listed = state.blocked_users(&limits, T0 + 60_000);
    assert_eq!(
        (
            listed[0].not_before,
            listed[0].lock_until,
            listed[0].holds_until
        ),
        (None, Some(until), until)
    );
    assert!(state.unblock("u1", &limits, T0 + 60_000));
    assert!(!state.unblock("u1", &limits, T0 + 60_000));
}

/// Marks the embedded store's journal holds from before lock messages still read, without
/// one; marks with a message keep it.
#[test]
fn user_marks_written_before_lock_messages_still_read() {
    let old: UserMarks = serde_json::from_str(r#"{"not_before":1,"lock_until":2}"#).unwrap();
    assert_eq!(
        old,
        UserMarks {
            not_before: Some(1),
            lock_until: Some(2),
            lock_message: None,
        }
    );
    let new = UserMarks {
        lock_message: Some("INC-2041".into()),
        ..old
    };
    let json = serde_json::to_string(&new).unwrap();
    assert_eq!(serde_json::from_str::<UserMarks>(&json).unwrap(), new);
}
