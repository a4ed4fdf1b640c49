//! One tenant's state in this process — what the in-process engine keeps and the embedded
//! store's journal reads back: its sessions (the decision engine's state), its audit trail
//! and the answers of its idempotent revocations.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::clock::UnixMillis;
use crate::decision::TenantSessions;
use crate::revocation::RevocationOutcome;

/// One tenant's state.
#[derive(Default)]
pub(super) struct Tenant {
    pub(super) sessions: TenantSessions,
    /// The audit trail, oldest first (in the order appended).
    pub(super) audit: VecDeque<Logged>,
    /// Answers of idempotent revocations by key.
    pub(super) applied: HashMap<String, Applied>,
    /// Audit records dropped by the cap ([`super::AUDIT_CAP`]) since housekeeping last said so.
    pub(super) capped: u64,
}

/// An audit record and when the store appended it (what the audit retention counts from).
#[derive(Debug, Clone)]
pub(super) struct Logged {
    pub(super) at: UnixMillis,
    pub(super) record: AuditRecord,
}

/// The answer of an idempotent revocation, bound to what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Applied {
    /// [`crate::revocation::Revocation::fingerprint`] of the request.
    pub(super) fingerprint: String,
    pub(super) outcome: RevocationOutcome,
    pub(super) at: UnixMillis,
}
