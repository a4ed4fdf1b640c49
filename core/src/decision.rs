//! The session engine: the per-request decision of docs/design.md §3 and the revocation rules, as
//! one synchronous state machine over a tenant's session state.
//!
//! The memory and embedded stores run it under a lock; Redis implements the same steps
//! atomically (`check.lua`); the store conformance suite (`tests/tests/conformance.rs`) holds
//! every store to the same verdicts.
//!
//! Decision, per request:
//! 0. the store lost data at L (its generation marker vanished or changed, or it is new):
//!    a token issued before L (`iat`, else `auth_time`) → expired ("sign in again");
//! 1. the tenant's policy (max age; the default when it has none);
//! 2. the user's lock → revoked; a revoke-all watermark W (for `watermark_retention`): a token
//!    without `auth_time` cannot prove a sign-in after W → reauthenticate; `auth_time` ≤ W →
//!    revoked (`iat` proves nothing: every silent refresh moves it);
//! 3. a tombstone for the session key → revoked or expired — unless the token proves a sign-in
//!    after the session ended (`auth_time` later than the end, same user), which starts a new
//!    session under the same key (step 6): a silent refresh keeps its `auth_time`, a fresh
//!    sign-in does not;
//! 4. a live session older than the max age → expired (and tombstoned as ended when it
//!    reached the max age; a token signed in after that goes on to step 6);
//! 5. a live session → allow (touch last seen, at most once a second) — if it is the same
//!    user's; another user's token naming it is refused;
//! 6. no session → create it (start = `auth_time`, else now) and allow — unless its start is
//!    already older than the max age, which is expired, or the user already has
//!    [`Limits::max_sessions_per_user`] live sessions in the tenant, which refuses it
//!    ([`Verdict::TooManySessions`]) and stores nothing: their existing sessions keep working.
//!
//! The tenant's policy adds two rules (both off by default):
//! - **idle timeout** (steps 3–4): a live session whose last seen is older than the idle
//!   timeout ends ([`EndReason::Idle`], tombstoned at last seen + idle timeout, like an expired
//!   one) and the request is refused ([`Verdict::Idle`]);
//! - **sessions per user** (step 6): a new session of a user who already holds the policy's
//!   `max_sessions_per_user` live sessions is refused ([`Verdict::SessionLimit`], `RefuseNew`)
//!   or ends the user's oldest live sessions by start (`EndOldest`: revoked, tombstoned; the
//!   store takes them with [`TenantSessions::take_evicted`] to journal, publish and audit).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{UnixMillis, millis};
use crate::identity::Identity;
use crate::policy::{OnLimit, Policy};
use crate::revocation::{BlockedUser, RevocationTarget};
use crate::session::{
    AccessRequest, EndReason, SessionRecord, Verdict, capped_user_agent, client_label,
};

/// How often last-seen is written for one session, at most.
pub const TOUCH_INTERVAL_MS: i64 = 1_000;

/// Store-wide settings the engine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Max session age of tenants without a policy.
    pub default_max_age: Duration,
    /// How long ended sessions (tombstones) are remembered.
    pub retention: Duration,
    /// How long a revoke-all watermark keeps refusing the user's tokens that cannot prove a
    /// later sign-in (no `auth_time`, or an older one), unless an administrator lifts it.
    pub watermark_retention: Duration,
    /// How long audit records are kept in the store (the dashboard's and API's audit trail):
    /// a record older than this is forgotten by housekeeping. The JSON audit log line is the
    /// durable copy.
    pub audit_retention: Duration,
    /// Most live sessions one user may hold in one tenant: a new session beyond it is refused
    /// (step 6). A bound on the state one identity can make the store hold, not a feature.
    pub max_sessions_per_user: u32,
}

/// The default of [`Limits::watermark_retention`]: 90 days, the time a stolen Entra refresh
/// token can go on minting access tokens without being used (its inactivity lifetime), so a
/// revoke-all outlasts every token a stolen refresh token could still mint unless Entra ID
/// revokes it first.
pub const DEFAULT_WATERMARK_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// The default of [`Limits::audit_retention`]: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// The default of [`Limits::max_sessions_per_user`]: far above what a person uses (one per
/// browser or device and sign-in), far below what fills a store; also the highest session
/// limit a policy may set ([`crate::policy::MAX_SESSIONS_PER_USER`]).
pub const DEFAULT_MAX_SESSIONS_PER_USER: u32 = crate::policy::MAX_SESSIONS_PER_USER;

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_max_age: crate::policy::DEFAULT_MAX_SESSION_AGE,
            retention: Duration::from_secs(24 * 60 * 60),
            watermark_retention: DEFAULT_WATERMARK_RETENTION,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

/// Whether a token was issued after `lost_at`. JWT claims have whole seconds: a token issued
/// in the very second of `lost_at` cannot prove it came after it and is refused (as a sign-in
/// within a watermark's second is). A token that does not say when it was issued (`iat`,
/// else `auth_time`) cannot prove it either and is refused.
pub fn issued_since(identity: &Identity, lost_at: UnixMillis) -> bool {
    identity
        .issued_at
        .or(identity.auth_time)
        .is_some_and(|secs| secs.saturating_mul(1000) > lost_at)
}

/// The loss time L of a store whose state begins at `now` in this process (a new data folder,
/// a memory store): the end of the previous whole second, so that tokens issued in the
/// second the store began — after the old state was already gone — are accepted, and every
/// earlier one is refused.
pub fn begins_at(now: UnixMillis) -> UnixMillis {
    now.div_euclid(1000) * 1000 - 1
}

/// A user's revocation marks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMarks {
    /// Tokens authenticated before this instant cannot be used.
    pub not_before: Option<UnixMillis>,
    /// No session at all until this instant.
    pub lock_until: Option<UnixMillis>,
    /// The lock's message to the user (absent in marks written before lock messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_message: Option<String>,
}

impl UserMarks {
    /// Why these marks refuse `identity` at `now`, if they do: a lock that has not ended
    /// (revoked); a watermark W younger than the watermark retention, against a token
    /// without `auth_time` (reauthenticate) or with `auth_time` ≤ W (revoked). Claims have
    /// whole seconds and W milliseconds: a sign-in within W's second cannot prove it came
    /// after it, so it is refused.
    pub fn refuses(
        &self,
        identity: &Identity,
        limits: &Limits,
        now: UnixMillis,
    ) -> Option<EndReason> {
        if self.running_lock(now).is_some() {
            return Some(EndReason::Revoked);
        }
        let not_before = self.live_watermark(limits, now)?;
        match identity.auth_time {
            None => Some(EndReason::Reauthenticate),
            Some(secs) if secs.saturating_mul(1000) <= not_before => Some(EndReason::Revoked),
            Some(_) => None,
        }
    }

    /// The lock, while it runs at `now`.
    pub fn running_lock(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.lock_until.filter(|until| *until > now)
    }

    /// The watermark, while it still refuses tokens at `now` (younger than the watermark
    /// retention).
    pub fn live_watermark(&self, limits: &Limits, now: UnixMillis) -> Option<UnixMillis> {
        self.not_before
            .filter(|at| now.saturating_sub(*at) < millis(limits.watermark_retention))
    }

    /// Whether they still keep anyone out at `now` (else they can be forgotten).
    pub fn in_force(&self, limits: &Limits, now: UnixMillis) -> bool {
        self.running_lock(now).is_some() || self.live_watermark(limits, now).is_some()
    }

    /// `user` as a blocked user at `now`, with only the marks still in force (a watermark past
    /// its retention is not listed beside a lock that outlasts it); `None` when nothing keeps
    /// the user out. Every store lists blocked users through this.
    pub fn blocked(&self, user: &str, limits: &Limits, now: UnixMillis) -> Option<BlockedUser> {
        let not_before = self.live_watermark(limits, now);
        let lock_until = self.running_lock(now);
        (not_before.is_some() || lock_until.is_some()).then(|| BlockedUser {
            user: user.to_owned(),
            not_before,
            lock_until,
            message: lock_until.and(self.lock_message.clone()),
            holds_until: self.holds_until(limits),
        })
    }

    /// Until when they keep anyone out.
    pub fn holds_until(&self, limits: &Limits) -> UnixMillis {
        let watermark = self
            .not_before
            .map(|at| at.saturating_add(millis(limits.watermark_retention)));
        watermark.max(self.lock_until).unwrap_or(0)
    }
}

/// An ended session, remembered so that its key cannot silently start a fresh session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Whether a session is live at `now`: younger than `max_age` and, with an idle timeout,
/// used within it.
fn is_live(session: &SessionRecord, max_age: i64, idle: Option<i64>, now: UnixMillis) -> bool {
    now < session.started_at.saturating_add(max_age)
        && idle.is_none_or(|idle| now < session.last_seen.saturating_add(idle))
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
    /// Live sessions by key. Read freely; add and remove through [`Self::insert_live`] and
    /// [`Self::remove_live`], which keep the per-user counts.
    pub live: HashMap<String, SessionRecord>,
    pub ended: HashMap<String, Tombstone>,
    /// The keys of each user's entries in `live` (expired ones not swept yet included): a
    /// user's sessions and their count in O(result) (listing, session limits).
    by_user: HashMap<String, HashSet<String>>,
    /// The sessions the last [`Self::decide`] ended to make room for a new one
    /// (`on_limit: EndOldest`), until the store takes them ([`Self::take_evicted`]).
    evicted: Vec<SessionRecord>,
}

impl TenantSessions {
    /// The tenant's policy, or the default.
    pub fn policy(&self, limits: &Limits) -> Policy {
        self.policy
            .clone()
            .unwrap_or_else(|| Policy::default_with(limits.default_max_age))
    }

    /// Decides one request at `now`, creating or touching its session. `lost_at` is the
    /// store's loss time L, when it has one (step 0).
    pub fn decide(
        &mut self,
        tenant: &str,
        request: &AccessRequest,
        limits: &Limits,
        lost_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Verdict {
        let identity = &request.identity;
        if lost_at.is_some_and(|lost_at| !issued_since(identity, lost_at)) {
            return Verdict::Deny(EndReason::Expired);
        }
        let policy = self.policy(limits);
        let max_age = millis(policy.max_session_age);
        let idle = policy.idle_timeout.map(millis);
        let key = &identity.session.id;

        if let Some(marks) = self.users.get(&identity.user) {
            if let Some(until) = marks.running_lock(now) {
                return Verdict::Locked {
                    until,
                    message: marks.lock_message.clone(),
                };
            }
            if let Some(reason) = marks.refuses(identity, limits, now) {
                return Verdict::Deny(reason);
            }
        }
        // A fresh sign-in goes on: the new session replaces the tombstone (step 6).
        if let Some(tombstone) = self.ended.get(key)
            && !tombstone.yields_to(identity)
        {
            if tombstone.reason == EndReason::Idle {
                return Verdict::Idle {
                    idle_timeout: policy.idle_timeout,
                };
            }
            return Verdict::Deny(tombstone.reason);
        }
        // The end of this key's live session when it is too old and this token may replace
        // it (step 4); it is removed only once step 6 decides.
        let mut replaces = None;
        if let Some(session) = self.live.get_mut(key) {
            // A session belongs to one user: another user's token naming it (a colliding or
            // forged `sid` from a custom issuer) is refused and does not touch it.
            if session.user != identity.user {
                return Verdict::Deny(EndReason::Revoked);
            }
            let expires_at = session.started_at.saturating_add(max_age);
            // Unused longer than the idle timeout (before it reached the max age): it ended
            // then. A token of its user signed in after that starts a new session (step 6).
            let idle_ends = idle.map(|idle| session.last_seen.saturating_add(idle));
            if let Some(idle_ends) = idle_ends.filter(|at| now >= *at && *at < expires_at) {
                if !signed_in_after(identity, idle_ends) {
                    self.end(key, EndReason::Idle, idle_ends, now);
                    return Verdict::Idle {
                        idle_timeout: policy.idle_timeout,
                    };
                }
                replaces = Some((EndReason::Idle, idle_ends));
            } else if now < expires_at {
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
            else if !signed_in_after(identity, expires_at) {
                self.end(key, EndReason::Expired, expires_at, now);
                return Verdict::Deny(EndReason::Expired);
            } else {
                replaces = Some((EndReason::Expired, expires_at));
            }
        }
        // Saturating: `auth_time` is the issuer's number; it must not overflow.
        let started_at = identity
            .auth_time
            .map_or(now, |secs| secs.saturating_mul(1000).min(now));
        if now.saturating_sub(started_at) >= max_age {
            self.remove_live(key);
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
        // The tenant's own limit (at most the store's bound, checked next).
        if let Some(limit) = policy.max_sessions_per_user {
            let mut live = self.live_at_limit(&identity.user, limit, max_age, idle, now);
            if live.len() >= limit as usize {
                match policy.on_limit {
                    OnLimit::RefuseNew => {
                        // Nothing is stored; a session of this key that had ended (max age,
                        // idle) is tombstoned.
                        if let Some((reason, ended_at)) = replaces {
                            self.end(key, reason, ended_at, now);
                        }
                        return Verdict::SessionLimit { limit };
                    }
                    OnLimit::EndOldest => {
                        // Oldest first; enough of them that the new one makes `limit`.
                        live.sort();
                        let surplus = live.len() + 1 - limit as usize;
                        for (_, oldest) in live.into_iter().take(surplus) {
                            if let Some(ended) = self.end(&oldest, EndReason::Revoked, now, now) {
                                self.evicted.push(ended);
                            }
                        }
                    }
                }
            }
        }
        if self.at_session_limit(
            &identity.user,
            limits.max_sessions_per_user,
            max_age,
            idle,
            now,
        ) {
            // Nothing is stored; a session of this key that had ended (max age, idle) is
            // tombstoned.
            if let Some((reason, ended_at)) = replaces {
                self.end(key, reason, ended_at, now);
            }
            return Verdict::TooManySessions;
        }
        self.remove_live(key);
        self.ended.remove(key);
        let record = SessionRecord {
            tenant: tenant.to_owned(),
            user: identity.user.clone(),
            display_name: identity.display_name.clone(),
            id: key.clone(),
            anchor: identity.session.anchor,
            started_at,
            last_seen: now,
            client_ip: request.client_ip,
            user_agent: request
                .user_agent
                .as_deref()
                .map(|ua| capped_user_agent(ua).to_owned()),
            client_label: request.user_agent.as_deref().and_then(client_label),
        };
        self.insert_live(record);
        Verdict::Allow {
            created: true,
            started_at,
        }
    }

    /// Whether `user` already holds `limit` sessions live at `now` (younger than `max_age`,
    /// and used within the idle timeout; see [`Self::live_at_limit`]).
    fn at_session_limit(
        &self,
        user: &str,
        limit: u32,
        max_age: i64,
        idle: Option<i64>,
        now: UnixMillis,
    ) -> bool {
        self.live_at_limit(user, limit, max_age, idle, now).len() >= limit as usize
    }

    /// The user's live sessions at `now` as (start, key) — empty at once when the per-user
    /// count of `live` is below `limit`, so the sessions are looked at only at the limit
    /// (some may have ended, past the max age or idle, and not been swept yet).
    fn live_at_limit(
        &self,
        user: &str,
        limit: u32,
        max_age: i64,
        idle: Option<i64>,
        now: UnixMillis,
    ) -> Vec<(UnixMillis, String)> {
        if self.user_entries(user) < limit as usize {
            return Vec::new();
        }
        self.user_sessions(user)
            .filter(|s| is_live(s, max_age, idle, now))
            .map(|s| (s.started_at, s.id.clone()))
            .collect()
    }

    /// The sessions the last [`Self::decide`] ended to make room for a new one
    /// (`on_limit: EndOldest`; revoked and tombstoned), for the store to journal, publish and
    /// audit.
    pub fn take_evicted(&mut self) -> Vec<SessionRecord> {
        std::mem::take(&mut self.evicted)
    }

    /// Adds a live session (a new one, or one read back from disk), keeping the per-user
    /// counts.
    pub fn insert_live(&mut self, record: SessionRecord) {
        let user = record.user.clone();
        let key = record.id.clone();
        if let Some(old) = self.live.insert(record.id.clone(), record) {
            self.unindex(&old.user, &key);
        }
        self.by_user.entry(user).or_default().insert(key);
    }

    /// Removes a live session, keeping the per-user counts.
    pub fn remove_live(&mut self, key: &str) -> Option<SessionRecord> {
        let removed = self.live.remove(key)?;
        self.unindex(&removed.user, key);
        Some(removed)
    }

    fn unindex(&mut self, user: &str, key: &str) {
        if let Some(keys) = self.by_user.get_mut(user) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    /// The user's entries in `live`, in O(their number).
    pub fn user_sessions<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a SessionRecord> {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|key| self.live.get(key))
    }

    /// How many entries of `live` the user has (ended ones not swept yet included).
    fn user_entries(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, HashSet::len)
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
        let ended = self.remove_live(key);
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
            RevocationTarget::User {
                user,
                lock_until,
                message,
            } => {
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
                    // A new lock says its own message, or none.
                    marks.lock_message = message.clone();
                }
                ended
            }
        }
    }

    /// Expires live sessions past the max age (or unused past the idle timeout) and forgets
    /// what is older than the retention. Returns the sessions it expired.
    pub fn sweep(&mut self, limits: &Limits, now: UnixMillis) -> Vec<SessionRecord> {
        let policy = self.policy(limits);
        let max_age = millis(policy.max_session_age);
        let retention = millis(limits.retention);
        let mut ended = Vec::new();
        if let Some(idle) = policy.idle_timeout.map(millis) {
            let unused: Vec<(String, UnixMillis)> = self
                .live
                .values()
                .filter(|s| {
                    let idle_ends = s.last_seen.saturating_add(idle);
                    now >= idle_ends && idle_ends < s.started_at.saturating_add(max_age)
                })
                .map(|s| (s.id.clone(), s.last_seen.saturating_add(idle)))
                .collect();
            ended.extend(
                unused
                    .into_iter()
                    .filter_map(|(key, at)| self.end(&key, EndReason::Idle, at, now)),
            );
        }
        let old: Vec<(String, UnixMillis)> = self
            .live
            .values()
            .filter(|s| now - s.started_at >= max_age)
            .map(|s| (s.id.clone(), s.started_at.saturating_add(max_age).min(now)))
            .collect();
        ended.extend(
            old.iter().filter_map(|(key, expired_at)| {
                self.end(key, EndReason::Expired, *expired_at, now)
            }),
        );
        self.ended.retain(|_, t| now - t.recorded_at < retention);
        self.users.retain(|_, m| m.in_force(limits, now));
        ended
    }

    /// The users the marks still keep out at `now`, by user id, with the marks still in
    /// force (a watermark past its retention is not listed beside a lock that outlasts it).
    pub fn blocked_users(&self, limits: &Limits, now: UnixMillis) -> Vec<BlockedUser> {
        let mut blocked: Vec<BlockedUser> = self
            .users
            .iter()
            .filter_map(|(user, marks)| marks.blocked(user, limits, now))
            .collect();
        blocked.sort_by(|a, b| a.user.cmp(&b.user));
        blocked
    }

    /// Lifts the user's watermark and lock; whether they kept the user out.
    pub fn unblock(&mut self, user: &str, limits: &Limits, now: UnixMillis) -> bool {
        self.users
            .remove(user)
            .is_some_and(|marks| marks.in_force(limits, now))
    }

    /// Nothing left worth remembering.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none()
            && self.users.is_empty()
            && self.live.is_empty()
            && self.ended.is_empty()
    }
}
