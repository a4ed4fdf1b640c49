//! The session engine: the per-request decision of DESIGN §3 and the revocation rules, as
//! one synchronous state machine over a tenant's session state.
//!
//! The memory store runs it under a lock; other stores implement the same steps atomically
//! and are held to the same verdicts by the shared store contract tests.
//!
//! Decision, per request:
//! 1. the tenant's policy (max age; the default when it has none);
//! 2. the user's lock, or a `not_before` watermark later than the token's auth instant
//!    → revoked;
//! 3. a tombstone for the session key → revoked or expired — unless the token proves a sign-in
//!    after the session ended (`auth_time` later than the end, same user), which starts a new
//!    session under the same key (step 6): a silent refresh keeps its `auth_time`, a fresh
//!    sign-in does not;
//! 4. a live session older than the max age → expired (and tombstoned as ended when it
//!    reached the max age; a token signed in after that goes on to step 6);
//! 5. a live session → allow (touch last seen, at most once a second) — if it is the same
//!    user's; another user's token naming it is refused;
//! 6. no session → create it (start = `auth_time`, else now) and allow — unless its start is
//!    already older than the max age, which is expired.

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::{UnixMillis, millis};
use crate::identity::Identity;
use crate::policy::Policy;
use crate::revocation::RevocationTarget;
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict, client_label};

/// How often last-seen is written for one session, at most.
pub const TOUCH_INTERVAL_MS: i64 = 1_000;

/// Store-wide settings the engine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Max session age of tenants without a policy.
    pub default_max_age: Duration,
    /// How long ended sessions and user watermarks are remembered.
    pub retention: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_max_age: crate::policy::DEFAULT_MAX_SESSION_AGE,
            retention: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A user's revocation marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserMarks {
    /// Tokens authenticated before this instant cannot be used.
    pub not_before: Option<UnixMillis>,
    /// No session at all until this instant.
    pub lock_until: Option<UnixMillis>,
}

/// An ended session, remembered so that its key cannot silently start a fresh session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub reason: EndReason,
    /// When the session ended: the revocation, or the instant it reached the max age.
    pub ended_at: UnixMillis,
    /// When the tombstone was written; the retention counts from here.
    pub recorded_at: UnixMillis,
    pub user: Option<String>,
}

impl Tombstone {
    /// Whether a token of the ended key is a fresh sign-in that may start a new session: its
    /// `auth_time` (the issuer's word for when the user last authenticated, unchanged by a
    /// silent refresh) is after the end, and it is the user the session belonged to (when
    /// known). `iat` proves nothing here: every silent refresh moves it.
    pub fn yields_to(&self, identity: &Identity) -> bool {
        signed_in_after(identity, self.ended_at)
            && self.user.as_ref().is_none_or(|user| *user == identity.user)
    }
}

/// Whether the token's `auth_time` is later than `at`.
fn signed_in_after(identity: &Identity, at: UnixMillis) -> bool {
    identity
        .auth_time
        .is_some_and(|secs| secs.saturating_mul(1000) > at)
}

/// Everything the engine knows about one tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantSessions {
    pub policy: Option<Policy>,
    pub users: HashMap<String, UserMarks>,
    pub live: HashMap<String, SessionRecord>,
    pub ended: HashMap<String, Tombstone>,
}

impl TenantSessions {
    /// The tenant's policy, or the default.
    pub fn policy(&self, limits: &Limits) -> Policy {
        self.policy
            .clone()
            .unwrap_or_else(|| Policy::default_with(limits.default_max_age))
    }

    /// Decides one request at `now`, creating or touching its session.
    pub fn decide(
        &mut self,
        tenant: &str,
        request: &AccessRequest,
        limits: &Limits,
        now: UnixMillis,
    ) -> Verdict {
        let identity = &request.identity;
        let max_age = millis(self.policy(limits).max_session_age);
        let key = &identity.session.id;

        if let Some(marks) = self.users.get(&identity.user) {
            if marks.lock_until.is_some_and(|until| until > now) {
                return Verdict::Deny(EndReason::Revoked);
            }
            if let Some(not_before) = marks.not_before {
                // A token that does not say when its user authenticated cannot prove it came
                // after the watermark.
                let authenticated = identity
                    .auth_instant()
                    .map(|secs| secs.saturating_mul(1000));
                if authenticated.is_none_or(|at| at < not_before) {
                    return Verdict::Deny(EndReason::Revoked);
                }
            }
        }
        if let Some(tombstone) = self.ended.get(key) {
            if !tombstone.yields_to(identity) {
                return Verdict::Deny(tombstone.reason);
            }
            // A fresh sign-in: the new session replaces the tombstone (step 6).
            self.ended.remove(key);
        }
        if let Some(session) = self.live.get_mut(key) {
            // A session belongs to one user: another user's token naming it (a colliding or
            // forged `sid` from a custom issuer) is refused and does not touch it.
            if session.user != identity.user {
                return Verdict::Deny(EndReason::Revoked);
            }
            let expires_at = session.started_at.saturating_add(max_age);
            if now < expires_at {
                if now - session.last_seen >= TOUCH_INTERVAL_MS {
                    session.last_seen = now;
                }
                return Verdict::Allow {
                    created: false,
                    started_at: session.started_at,
                };
            }
            // Too old: it ended when it reached the max age. A token of its user signed in
            // after that starts a new session (step 6); any other is refused.
            if !signed_in_after(identity, expires_at) {
                self.end(key, EndReason::Expired, expires_at, now);
                return Verdict::Deny(EndReason::Expired);
            }
            self.live.remove(key);
        }
        // Saturating: `auth_time` is the issuer's number; it must not overflow.
        let started_at = identity
            .auth_time
            .map_or(now, |secs| secs.saturating_mul(1000).min(now));
        if now.saturating_sub(started_at) >= max_age {
            let user = Some(identity.user.clone());
            self.ended.insert(
                key.clone(),
                Tombstone {
                    reason: EndReason::Expired,
                    ended_at: started_at.saturating_add(max_age).min(now),
                    recorded_at: now,
                    user,
                },
            );
            return Verdict::Deny(EndReason::Expired);
        }
        let record = SessionRecord {
            tenant: tenant.to_owned(),
            user: identity.user.clone(),
            display_name: identity.display_name.clone(),
            id: key.clone(),
            anchor: identity.session.anchor,
            started_at,
            last_seen: now,
            client_ip: request.client_ip,
            user_agent: request.user_agent.clone(),
            client_label: request.user_agent.as_deref().and_then(client_label),
        };
        self.live.insert(key.clone(), record);
        Verdict::Allow {
            created: true,
            started_at,
        }
    }

    /// Ends a live session (if any) at `ended_at` and tombstones its key at `now`. Returns
    /// the ended session.
    fn end(
        &mut self,
        key: &str,
        reason: EndReason,
        ended_at: UnixMillis,
        now: UnixMillis,
    ) -> Option<SessionRecord> {
        let ended = self.live.remove(key);
        let user = ended.as_ref().map(|s| s.user.clone());
        let user = user.or_else(|| self.ended.get(key).and_then(|t| t.user.clone()));
        self.ended.insert(
            key.to_owned(),
            Tombstone {
                reason,
                ended_at,
                recorded_at: now,
                user,
            },
        );
        ended
    }

    /// Applies a revocation at `now`; returns the live sessions it ended.
    pub fn revoke(&mut self, target: &RevocationTarget, now: UnixMillis) -> Vec<SessionRecord> {
        match target {
            RevocationTarget::Session(key) => self
                .end(key, EndReason::Revoked, now, now)
                .into_iter()
                .collect(),
            RevocationTarget::User { user, lock_until } => {
                let keys: Vec<String> = self
                    .live
                    .values()
                    .filter(|s| &s.user == user)
                    .map(|s| s.id.clone())
                    .collect();
                let ended = keys
                    .iter()
                    .filter_map(|k| self.end(k, EndReason::Revoked, now, now))
                    .collect();
                let marks = self.users.entry(user.clone()).or_default();
                marks.not_before = Some(now);
                if lock_until.is_some() {
                    marks.lock_until = *lock_until;
                }
                ended
            }
        }
    }

    /// Expires live sessions past the max age and forgets what is older than the retention.
    /// Returns the sessions it expired.
    pub fn sweep(&mut self, limits: &Limits, now: UnixMillis) -> Vec<SessionRecord> {
        let max_age = millis(self.policy(limits).max_session_age);
        let retention = millis(limits.retention);
        let old: Vec<(String, UnixMillis)> = self
            .live
            .values()
            .filter(|s| now - s.started_at >= max_age)
            .map(|s| (s.id.clone(), s.started_at.saturating_add(max_age).min(now)))
            .collect();
        let expired = old
            .iter()
            .filter_map(|(key, expired_at)| self.end(key, EndReason::Expired, *expired_at, now))
            .collect();
        self.ended.retain(|_, t| now - t.recorded_at < retention);
        self.users.retain(|_, m| {
            m.lock_until.is_some_and(|until| until > now)
                || m.not_before.is_some_and(|at| now - at < retention)
        });
        expired
    }

    /// Nothing left worth remembering.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none()
            && self.users.is_empty()
            && self.live.is_empty()
            && self.ended.is_empty()
    }
}
