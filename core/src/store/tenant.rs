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
    pub(super) audit: VecDeque<AuditRecord>,
    /// Answers of idempotent revocations by key.
    pub(super) applied: HashMap<String, Applied>,
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
