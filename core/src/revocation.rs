//! Revocation requests: end one session, or every session of a user (optionally locking the
//! user out until a time).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Action, Actor, AuditRecord, Source, Target, new_audit_id};
use crate::clock::{UnixMillis, rfc3339};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

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
    /// Makes the request idempotent: a second revocation with the same key and the same
    /// [`fingerprint`](Self::fingerprint) (within [`IDEMPOTENCY_TTL`]) changes nothing and
    /// returns the first one's outcome, marked as a replay; the same key with another request
    /// is refused ([`crate::store::StoreError::IdempotencyKeyReused`]) and changes nothing.
    /// The operator uses the Revocation object's uid, so a restart or re-reconcile never
    /// revokes twice.
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

    /// What this request asks for, as a short hex digest of (action, target, lock, reason):
    /// the fact an idempotency key is bound to. The actor and source are not part of it.
    pub fn fingerprint(&self) -> String {
        let (kind, target, lock) = match &self.target {
            RevocationTarget::Session(key) => ("session", key.as_str(), None),
            RevocationTarget::User { user, lock_until } => ("user", user.as_str(), *lock_until),
        };
        let facts = serde_json::json!([kind, target, lock, self.reason]);
        let digest = Sha256::digest(facts.to_string().as_bytes());
        hex::encode(&digest[..16])
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

/// A user that a revoke-all (watermark) or a lock still keeps out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedUser {
    pub user: String,
    /// Tokens must prove a sign-in (`auth_time`) after this instant.
    pub not_before: Option<UnixMillis>,
    /// No session at all until this instant.
    pub lock_until: Option<UnixMillis>,
    /// When the watermark stops refusing tokens without `auth_time` (it is forgotten).
    pub holds_until: UnixMillis,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationOutcome {
    /// Live sessions ended by it.
    pub sessions_revoked: u32,
    /// The id of its audit record.
    pub audit_id: String,
    /// This is the stored answer of an earlier request with the same idempotency key: nothing
    /// was changed now.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ActorKind;

    fn revocation(target: RevocationTarget, reason: &str) -> Revocation {
        Revocation {
            tenant: "t".into(),
            target,
            reason: reason.into(),
            actor: Actor {
                kind: ActorKind::Admin,
                id: "a".into(),
                name: None,
            },
            source: Source::Api,
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn the_fingerprint_binds_action_target_lock_and_reason() {
        let user = |lock_until| RevocationTarget::User {
            user: "u1".into(),
            lock_until,
        };
        let base = revocation(user(None), "incident");
        assert_eq!(
            base.fingerprint(),
            revocation(user(None), "incident").fingerprint()
        );
        let mut other_actor = base.clone();
        other_actor.actor.id = "b".into();
        other_actor.source = Source::Dashboard;
        assert_eq!(base.fingerprint(), other_actor.fingerprint());
        let others = [
            revocation(user(Some(5)), "incident"),
            revocation(user(None), "incident 2"),
            revocation(
                RevocationTarget::User {
                    user: "u2".into(),
                    lock_until: None,
                },
                "incident",
            ),
            revocation(RevocationTarget::Session("u1".into()), "incident"),
        ];
        for other in others {
            assert_ne!(base.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }
}
