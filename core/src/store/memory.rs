//! The embedded memory store: the whole session state of every tenant in this process.
//! For a single replica and for trying the product out; nothing survives a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{ChangeEvent, ChangeStream, SessionStore, StoreError};
use crate::audit::AuditRecord;
use crate::clock::Clock;
use crate::decision::{Limits, TenantSessions};
use crate::policy::Policy;
use crate::revocation::{Revocation, RevocationOutcome};
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict};

/// Audit records kept per tenant; the oldest are dropped past this.
pub const AUDIT_CAPACITY: usize = 10_000;
/// Change events buffered for slow subscribers before they must resync.
const CHANGE_BUFFER: usize = 4_096;

#[derive(Default)]
struct Tenant {
    sessions: TenantSessions,
    audit: VecDeque<AuditRecord>,
    /// Outcomes of revocations by idempotency key, with when they were applied.
    applied: HashMap<String, (RevocationOutcome, i64)>,
}

/// Sessions, policies and audit trails in memory.
pub struct MemoryStore {
    limits: Limits,
    clock: Arc<dyn Clock>,
    tenants: Mutex<HashMap<String, Tenant>>,
    changes: broadcast::Sender<ChangeEvent>,
}

impl MemoryStore {
    pub fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Self {
            limits,
            clock,
            tenants: Mutex::new(HashMap::new()),
            changes,
        }
    }

    fn publish(&self, event: ChangeEvent) {
        // No subscriber is fine.
        let _ = self.changes.send(event);
    }

    fn ended(&self, tenant: &str, session: SessionRecord, reason: EndReason) {
        self.publish(ChangeEvent::SessionEnded {
            tenant: tenant.to_owned(),
            session: session.id,
            user: Some(session.user),
            reason,
        });
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
        let key = &request.identity.session.id;
        let mut tenants = self.tenants.lock();
        let tenant = tenants.entry(tenant_id.clone()).or_default();
        let was_live = tenant.sessions.live.get(key).cloned();
        let verdict = tenant
            .sessions
            .decide(tenant_id, request, &self.limits, now);
        match verdict {
            Verdict::Allow { created: true, .. } => {
                // A fresh sign-in under the key of a session that had just expired.
                if let Some(expired) = was_live {
                    self.ended(tenant_id, expired, EndReason::Expired);
                }
                if let Some(session) = tenant.sessions.live.get(key).cloned() {
                    self.publish(ChangeEvent::SessionCreated {
                        tenant: tenant_id.clone(),
                        session,
                    });
                }
            }
            Verdict::Deny(reason) => {
                if let Some(session) = was_live {
                    self.ended(tenant_id, session, reason);
                }
            }
            Verdict::Allow { .. } => {}
        }
        Ok(verdict)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        let now = self.clock.now_ms();
        let mut tenants = self.tenants.lock();
        let tenant = tenants.entry(revocation.tenant.clone()).or_default();
        if let Some(key) = &revocation.idempotency_key
            && let Some((outcome, _)) = tenant.applied.get(key)
        {
            return Ok(outcome.clone());
        }
        let ended = tenant.sessions.revoke(&revocation.target, now);
        let record = revocation.audit_record(
            now,
            ended.len() as u32,
            ended.first().map(|s| s.user.clone()),
        );
        let outcome = RevocationOutcome {
            sessions_revoked: ended.len() as u32,
            audit_id: record.id.clone(),
        };
        record.log();
        Self::push_audit(tenant, record);
        if let Some(key) = &revocation.idempotency_key {
            tenant.applied.insert(key.clone(), (outcome.clone(), now));
        }
        for session in ended {
            self.ended(&revocation.tenant, session, EndReason::Revoked);
        }
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
        entry.sessions.policy = Some(policy.clone());
        if let Some(record) = audit {
            record.log();
            Self::push_audit(entry, record);
        }
        self.publish(ChangeEvent::PolicyChanged {
            tenant: tenant.to_owned(),
            policy,
        });
        Ok(())
    }

    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.tenants.lock().get_mut(tenant) {
            entry.sessions.policy = None;
        }
        let policy = Policy::default_with(self.limits.default_max_age);
        self.publish(ChangeEvent::PolicyChanged {
            tenant: tenant.to_owned(),
            policy,
        });
        Ok(())
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let now = self.clock.now_ms();
        let tenants = self.tenants.lock();
        let Some(entry) = tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        // Sessions past the max age that housekeeping has not expired yet are not live.
        let max_age = crate::clock::millis(entry.sessions.policy(&self.limits).max_session_age);
        let mut live: Vec<SessionRecord> = entry
            .sessions
            .live
            .values()
            .filter(|s| now - s.started_at < max_age)
            .cloned()
            .collect();
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

    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError> {
        Ok(super::tenant_feed(self.changes.subscribe(), tenant))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut tenants = self.tenants.lock();
        let retention = crate::clock::millis(self.limits.retention);
        for (id, tenant) in tenants.iter_mut() {
            for session in tenant.sessions.sweep(&self.limits, now) {
                self.ended(id, session, EndReason::Expired);
            }
            tenant.applied.retain(|_, (_, at)| now - *at < retention);
        }
        tenants.retain(|_, t| !t.sessions.is_empty() || !t.audit.is_empty());
        Ok(())
    }
}
