//! Audit records: one per revocation or policy change, kept per tenant in the store and
//! written as one JSON log line.

use serde::{Deserialize, Serialize};

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// `oid` for admins, the Kubernetes user name, or the component for the system.
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Admin,
    Kubernetes,
    System,
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "session.revoke")]
    SessionRevoke,
    #[serde(rename = "user.revoke")]
    UserRevoke,
    #[serde(rename = "user.lock")]
    UserLock,
    #[serde(rename = "policy.update")]
    PolicyUpdate,
    /// An administrator lifted a user's revoke-all watermark (and lock).
    #[serde(rename = "user.unblock")]
    UserUnblock,
    /// The store found its generation marker gone or changed: it lost data.
    #[serde(rename = "store.reset")]
    StoreReset,
    /// A new session was refused: the user held the tenant's `maxSessionsPerUser`.
    #[serde(rename = "session.refuse")]
    SessionRefuse,
}

/// Through which door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Dashboard,
    Api,
    Kubernetes,
    System,
    /// An OpenID Connect back-channel logout token from the tenant's issuer.
    #[serde(rename = "backchannel-logout")]
    BackchannelLogout,
    /// A Shared Signals (CAEP) event from a configured transmitter.
    #[serde(rename = "ssf")]
    Ssf,
}

/// What it was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub user: Option<String>,
    pub session: Option<String>,
}

/// One entry of a tenant's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub tenant: String,
    pub actor: Actor,
    pub action: Action,
    pub target: Target,
    pub reason: Option<String>,
    pub source: Source,
    pub sessions_revoked: Option<u32>,
    /// Free-form detail, e.g. the new maximum age for `policy.update`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// Writes the record as one structured JSON log line (target `audit`).
    pub fn log(&self) {
        match serde_json::to_string(self) {
            Ok(line) => tracing::info!(target: "audit", audit = %line, "audit record"),
            Err(error) => tracing::error!(%error, "audit record could not be serialised"),
        }
    }
}

/// A fresh, time-ordered audit id.
pub fn new_audit_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
