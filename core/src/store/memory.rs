//! The embedded memory store: the whole session state of every tenant in this process.
//! For a single replica and for trying the product out; nothing survives a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{SessionStore, StoreError};
use crate::audit::{AuditRecord, Target, new_audit_id};
use crate::clock::{Clock, rfc3339};
use crate::decision::{Limits, TenantSessions};
use crate::policy::Policy;
use crate::revocation::{Revocation, RevocationOutcome, RevocationTarget};
use crate::session::{AccessRequest, SessionRecord, Verdict};

/// Audit records kept per tenant; the oldest are dropped past this.
pub const AUDIT_CAPACITY: usize = 10_000;

#[derive(Default)]
struct Tenant {
    sessions: TenantSessions,
    audit: VecDeque<AuditRecord>,
}

/// Sessions, policies and audit trails in memory.
pub struct MemoryStore {
    limits: Limits,
    clock: Arc<dyn Clock>,
    tenants: Mutex<HashMap<String, Tenant>>,
}

impl MemoryStore {
    pub fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn push_audit(tenant: &mut Tenant, record: AuditRecord) {
        if tenant.audit.len() >= AUDIT_CAPACITY {
            tenant.audit.pop_front();
        }
        tenant.audit.push_back(record);
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError> {
        let now = self.clock.now_ms();
        let tenant_id = &request.identity.tenant;
        let mut tenants = self.tenants.lock();
        let tenant = tenants.entry(tenant_id.clone()).or_default();
        Ok(tenant
            .sessions
            .decide(tenant_id, request, &self.limits, now))
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        let now = self.clock.now_ms();
        let mut tenants = self.tenants.lock();
        let tenant = tenants.entry(revocation.tenant.clone()).or_default();
        let ended = tenant.sessions.revoke(&revocation.target, now);
        let target = match &revocation.target {
            RevocationTarget::Session(key) => Target {
                user: ended.first().map(|s| s.user.clone()),
                session: Some(key.clone()),
            },
            RevocationTarget::User { user, .. } => Target {
                user: Some(user.clone()),
                session: None,
            },
        };
        let record = AuditRecord {
            id: new_audit_id(),
            time: rfc3339(now),
            tenant: revocation.tenant.clone(),
            actor: revocation.actor.clone(),
            action: revocation.action(),
            target,
            reason: Some(revocation.reason.clone()),
            source: revocation.source,
            sessions_revoked: Some(ended.len() as u32),
            detail: match &revocation.target {
                RevocationTarget::User {
                    lock_until: Some(until),
                    ..
                } => Some(format!("locked until {}", rfc3339(*until))),
                _ => None,
            },
        };
        let outcome = RevocationOutcome {
            sessions_revoked: ended.len() as u32,
            audit_id: record.id.clone(),
        };
        record.log();
        Self::push_audit(tenant, record);
        Ok(outcome)
    }

    async fn policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        let tenants = self.tenants.lock();
        Ok(match tenants.get(tenant) {
            Some(t) => t.sessions.policy(&self.limits),
            None => Policy::default_with(self.limits.default_max_age),
        })
    }

    async fn set_policy(
        &self,
        tenant: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut tenants = self.tenants.lock();
        let entry = tenants.entry(tenant.to_owned()).or_default();
        entry.sessions.policy = Some(policy);
        if let Some(record) = audit {
            record.log();
            Self::push_audit(entry, record);
        }
        Ok(())
    }

    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.tenants.lock().get_mut(tenant) {
            entry.sessions.policy = None;
        }
        Ok(())
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let tenants = self.tenants.lock();
        let mut live: Vec<SessionRecord> = tenants
            .get(tenant)
            .map(|t| t.sessions.live.values().cloned().collect())
            .unwrap_or_default();
        live.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(live)
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let tenants = self.tenants.lock();
        Ok(tenants
            .get(tenant)
            .map(|t| t.audit.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut tenants = self.tenants.lock();
        for tenant in tenants.values_mut() {
            tenant.sessions.sweep(&self.limits, now);
        }
        tenants.retain(|_, t| !t.sessions.is_empty() || !t.audit.is_empty());
        Ok(())
    }
}
