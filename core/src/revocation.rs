//! Revocation requests: end one session, or every session of a user (optionally locking the
//! user out until a time).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Action, Actor, AuditRecord, Source, Target, new_audit_id};
use crate::clock::{UnixMillis, rfc3339};

/// The longest lock message, in characters (after [`crate::text::clean`]).
pub const LOCK_MESSAGE_MAX_CHARS: usize = 200;

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
        /// The lock's message to the user, shown on the refusal ("INC-2041"): only with a
        /// lock, [`crate::text::clean`]ed and at most [`LOCK_MESSAGE_MAX_CHARS`] long (the
        /// callers check it; the engine ignores it without a lock).
        message: Option<String>,
    },
}

impl RevocationTarget {
    /// The target as (kind `session` / `user`, session key or user id, lock end, lock
    /// message): what the fingerprint binds and what the Redis script is given.
    pub fn parts(&self) -> (&'static str, &str, Option<UnixMillis>, Option<&str>) {
        match self {
            RevocationTarget::Session(key) => ("session", key.as_str(), None, None),
            RevocationTarget::User {
                user,
                lock_until,
                message,
            } => ("user", user.as_str(), *lock_until, message.as_deref()),
        }
    }
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
        let (target, lock_until, message) = match &self.target {
            RevocationTarget::Session(key) => (
                Target {
                    user: session_user,
                    session: Some(key.clone()),
                },
                None,
                None,
            ),
            RevocationTarget::User {
                user,
                lock_until,
                message,
            } => (
                Target {
                    user: Some(user.clone()),
                    session: None,
                },
                *lock_until,
                message.as_deref(),
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
            detail: lock_until.map(|until| match message {
                Some(message) => format!("locked until {}: {message}", rfc3339(until)),
                None => format!("locked until {}", rfc3339(until)),
            }),
        }
    }

    /// What this request asks for, as a short hex digest of (action, target, lock, reason,
    /// lock message): the fact an idempotency key is bound to. The actor and source are not
    /// part of it. Without a message the digest is the one of the versions before lock
    /// messages, so a request they stored still replays.
    pub fn fingerprint(&self) -> String {
        let (kind, target, lock, message) = self.target.parts();
        let facts = match message {
            None => serde_json::json!([kind, target, lock, self.reason]),
            Some(message) => serde_json::json!([kind, target, lock, self.reason, message]),
        };
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
    /// The running lock's message to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
            message: None,
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
                    message: None,
                },
                "incident",
            ),
            revocation(RevocationTarget::Session("u1".into()), "incident"),
        ];
        for other in others {
            assert_ne!(base.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn the_fingerprint_binds_the_lock_message_and_is_unchanged_without_one() {
        let lock = |message: Option<&str>| {
            revocation(
                RevocationTarget::User {
                    user: "u1".into(),
                    lock_until: Some(5),
                    message: message.map(str::to_owned),
                },
                "incident",
            )
        };
        let with = lock(Some("INC-2041")).fingerprint();
        assert_eq!(with, lock(Some("INC-2041")).fingerprint());
        assert_ne!(with, lock(Some("INC-2042")).fingerprint());
        assert_ne!(with, lock(None).fingerprint());
        // The digest of a lock without a message, as the versions before messages made it.
        let facts = serde_json::json!(["user", "u1", 5, "incident"]);
        let before = hex::encode(&Sha256::digest(facts.to_string().as_bytes())[..16]);
        assert_eq!(lock(None).fingerprint(), before);
    }

    #[test]
    fn the_audit_detail_names_the_lock_message() {
        let r = revocation(
            RevocationTarget::User {
                user: "u1".into(),
                lock_until: Some(0),
                message: Some("INC-2041".into()),
            },
            "incident",
        );
        assert_eq!(
            r.audit_record(0, 0, None).detail.as_deref(),
            Some("locked until 1970-01-01T00:00:00.000Z: INC-2041")
        );
    }
}
