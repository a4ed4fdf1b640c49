//! The audit records of the tenant's session limit (`maxSessionsPerUser`): a new session
//! refused (`onLimit: RefuseNew`, action `session.refuse`) and an oldest session ended to make
//! room (`onLimit: EndOldest`, action `session.revoke`). Both are the system's doing: actor and
//! source `system`. The in-process stores build them here; `check.lua` builds the same fields
//! (`session_limit_record`) so a Redis record reads back as one of these.

use crate::audit::{Action, Actor, ActorKind, AuditRecord, Source, Target, new_audit_id};
use crate::clock::{UnixMillis, rfc3339};

/// The actor id of records the request path writes.
pub const SYSTEM_ACTOR: &str = "grantflow-extauthz";
/// The reason of both records.
pub const REASON: &str = "session limit";

fn record(tenant: &str, action: Action, target: Target, now: UnixMillis) -> AuditRecord {
    AuditRecord {
        id: new_audit_id(),
        time: rfc3339(now),
        tenant: tenant.to_owned(),
        actor: Actor {
            kind: ActorKind::System,
            id: SYSTEM_ACTOR.to_owned(),
            name: None,
        },
        action,
        target,
        reason: Some(REASON.to_owned()),
        source: Source::System,
        sessions_revoked: None,
        detail: None,
    }
}

/// A new session `key` of `user` refused: the user already held `limit` live sessions.
pub fn refused(tenant: &str, user: &str, key: &str, limit: u32, now: UnixMillis) -> AuditRecord {
    AuditRecord {
        detail: Some(refused_detail(limit)),
        ..record(
            tenant,
            Action::SessionRefuse,
            Target {
                user: Some(user.to_owned()),
                session: Some(key.to_owned()),
            },
            now,
        )
    }
}

/// The sessions `ended` (oldest first, at least one) of `user`, ended to make room for the new
/// session `key`: one record, its target the oldest.
pub fn ended_oldest(
    tenant: &str,
    user: &str,
    ended: &[String],
    key: &str,
    limit: u32,
    now: UnixMillis,
) -> AuditRecord {
    AuditRecord {
        sessions_revoked: Some(ended.len() as u32),
        detail: Some(ended_oldest_detail(key, limit, ended)),
        ..record(
            tenant,
            Action::SessionRevoke,
            Target {
                user: Some(user.to_owned()),
                session: ended.first().cloned(),
            },
            now,
        )
    }
}

/// The `detail` of [`refused`] (`check.lua` writes the same words).
pub fn refused_detail(limit: u32) -> String {
    format!(
        "new session refused: the user already holds {limit} active sessions (maxSessionsPerUser {limit}, onLimit RefuseNew)"
    )
}

/// The `detail` of [`ended_oldest`] (`check.lua` writes the same words).
pub fn ended_oldest_detail(key: &str, limit: u32, ended: &[String]) -> String {
    format!(
        "ended to make room for session {key} (maxSessionsPerUser {limit}, onLimit EndOldest): {}",
        ended.join(", ")
    )
}
