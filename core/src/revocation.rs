//! Revocation requests: end one session, or every session of a user (optionally locking the
//! user out until a time).

use crate::audit::{Action, Actor, AuditRecord, Source, Target, new_audit_id};
use crate::clock::{UnixMillis, rfc3339};

/// What to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationTarget {
    /// One session, by its key (`sid` or the hashed key shown in the dashboard).
    Session(String),
    /// Every session of a user (`oid`); with a lock, no new session until it ends.
    User {
        user: String,
        lock_until: Option<UnixMillis>,
    },
}

/// A request to end sessions, with the facts its audit record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub tenant: String,
    pub target: RevocationTarget,
    pub reason: String,
    pub actor: Actor,
    pub source: Source,
    /// Makes the request idempotent: a second revocation with the same key (within the
    /// retention) changes nothing and returns the first one's outcome. The operator uses the
    /// Revocation object's uid, so a restart or re-reconcile never revokes twice.
    pub idempotency_key: Option<String>,
}

impl Revocation {
    /// The audit record of this revocation applied at `now`, having ended `sessions_revoked`
    /// live sessions; `session_user` is the user of an ended single session, when known.
    pub fn audit_record(
        &self,
        now: UnixMillis,
        sessions_revoked: u32,
        session_user: Option<String>,
    ) -> AuditRecord {
        let (target, lock_until) = match &self.target {
            RevocationTarget::Session(key) => (
                Target {
                    user: session_user,
                    session: Some(key.clone()),
                },
                None,
            ),
            RevocationTarget::User { user, lock_until } => (
                Target {
                    user: Some(user.clone()),
                    session: None,
                },
                *lock_until,
            ),
        };
        AuditRecord {
            id: new_audit_id(),
            time: rfc3339(now),
            tenant: self.tenant.clone(),
            actor: self.actor.clone(),
            action: self.action(),
            target,
            reason: Some(self.reason.clone()),
            source: self.source,
            sessions_revoked: Some(sessions_revoked),
            detail: lock_until.map(|until| format!("locked until {}", rfc3339(until))),
        }
    }

    pub fn action(&self) -> Action {
        match &self.target {
            RevocationTarget::Session(_) => Action::SessionRevoke,
            RevocationTarget::User {
                lock_until: Some(_),
                ..
            } => Action::UserLock,
            RevocationTarget::User {
                lock_until: None, ..
            } => Action::UserRevoke,
        }
    }
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationOutcome {
    /// Live sessions ended by it.
    pub sessions_revoked: u32,
    /// The id of its audit record.
    pub audit_id: String,
}
