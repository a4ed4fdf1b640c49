//! The in-process session engine: the whole session state of every tenant, decided by
//! [`TenantSessions`] under one lock.
//!
//! Alone it is the **memory store** (tests and throwaway trials; nothing survives a restart).
//! With a [`Journal`] it is the **embedded store**, the default for one replica: every change
//! that decides a verdict (a new session, a tombstone, a watermark or lock, a policy, an audit
//! record, an idempotency record) is written to the data folder and fsynced before the call
//! that made it returns; last-seen times are written behind by `maintain`. Writes are queued
//! in the order the lock saw them and committed in groups by one writer thread, so the check
//! path never writes to disk itself and a live session's check never waits for one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::broadcast;

mod listing;

use super::embedded::{Journal, Op};
use super::tenant::{Applied, Logged, Tenant};
use super::{AUDIT_CAP, ChangeEvent, ChangeStream, SessionStore, StoreError, StoreReset};
use crate::audit::AuditRecord;
use crate::clock::{Clock, UnixMillis, millis};
use crate::decision::Limits;
use crate::listing::{SessionPage, SessionQuery, UserPage};
use crate::policy::Policy;
use crate::revocation::{
    BlockedUser, IDEMPOTENCY_TTL, Revocation, RevocationOutcome, RevocationTarget,
};
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict};

/// Change events buffered for slow subscribers before they must resync.
const CHANGE_BUFFER: usize = 4_096;

/// Sessions, policies and audit trails in this process, optionally journaled to disk.
pub struct MemoryStore {
    limits: Limits,
    clock: Arc<dyn Clock>,
    tenants: Mutex<HashMap<String, Tenant>>,
    changes: broadcast::Sender<ChangeEvent>,
    /// L: tokens issued before it are refused (the store began then; what came before is not
    /// known to it).
    lost_at: Option<UnixMillis>,
    generation: Option<String>,
    journal: Option<Journal>,
    /// When last-seen times were last written behind.
    flushed_at: Mutex<UnixMillis>,
    /// Audit records kept per tenant at most ([`AUDIT_CAP`]; smaller in unit tests).
    audit_cap: usize,
}

impl MemoryStore {
    /// A memory store that knows nothing of any earlier state and does not say so: for tests.
    pub fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self::build(limits, clock, HashMap::new(), None, None, None)
    }

    /// A memory store for a running service (`--store memory`): it begins now, so tokens
    /// issued before it started are refused — whatever an earlier process revoked is not
    /// known to this one.
    pub fn starting_now(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let now = crate::decision::begins_at(clock.now_ms());
        let generation = uuid::Uuid::now_v7().to_string();
        Self::build(
            limits,
            clock,
            HashMap::new(),
            Some(now),
            Some(generation),
            None,
        )
    }

    /// The embedded store in `dir` (created when missing): the state of the last run, read
    /// back, and a journal for every change from now on. A new data folder is a new
    /// generation that begins now (a fresh folder cannot be told from a wiped one), so tokens
    /// issued before it are refused.
    pub fn open_durable(
        dir: &std::path::Path,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let now = clock.now_ms();
        let opened = Journal::open(dir, crate::decision::begins_at(now), now, AUDIT_CAP)?;
        if opened.created {
            tracing::warn!(
                data_dir = %dir.display(),
                lost_at = %crate::clock::rfc3339(opened.lost_at),
                "a new data folder: tokens issued before now are refused (sign in again)"
            );
        }
        // Records past the cap when read back (a folder written with a larger one) leave the
        // disk too.
        for (tenant, id) in opened.audit_dropped {
            opened.journal.record(Op::AuditDrop { tenant, id });
        }
        Ok(Self::build(
            limits,
            clock,
            opened.tenants,
            Some(opened.lost_at),
            Some(opened.generation),
            Some(opened.journal),
        ))
    }

    fn build(
        limits: Limits,
        clock: Arc<dyn Clock>,
        tenants: HashMap<String, Tenant>,
        lost_at: Option<UnixMillis>,
        generation: Option<String>,
        journal: Option<Journal>,
    ) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let flushed_at = Mutex::new(clock.now_ms());
        Self {
            limits,
            clock,
            tenants: Mutex::new(tenants),
            changes,
            lost_at,
            generation,
            journal,
            flushed_at,
            audit_cap: AUDIT_CAP,
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

    /// Queues a change for the disk (called under the state lock, so the journal sees changes
    /// in the order the state did).
    fn record(&self, op: impl FnOnce() -> Op) {
        if let Some(journal) = &self.journal {
            journal.record(op());
        }
    }

    /// Writes the key's live session and tombstone as they are now.
    fn record_key(&self, tenant_id: &str, tenant: &Tenant, key: &str) {
        self.record(|| Op::Session {
            tenant: tenant_id.to_owned(),
            key: key.to_owned(),
            record: tenant.sessions.live.get(key).cloned(),
        });
        self.record(|| Op::Tombstone {
            tenant: tenant_id.to_owned(),
            key: key.to_owned(),
            tombstone: tenant.sessions.ended.get(key).cloned(),
        });
    }

    fn record_marks(&self, tenant_id: &str, tenant: &Tenant, user: &str) {
        self.record(|| Op::Marks {
            tenant: tenant_id.to_owned(),
            user: user.to_owned(),
            marks: tenant.sessions.users.get(user).cloned(),
        });
    }

    /// Appends an audit record at `now`. Records are kept by time (dropped by `maintain` once
    /// older than the audit retention); the cap is only a bound on memory: past it the oldest
    /// record is dropped and an error logged (the JSON audit log line is the durable copy).
    fn push_audit(
        &self,
        tenant_id: &str,
        tenant: &mut Tenant,
        record: AuditRecord,
        now: UnixMillis,
    ) {
        while tenant.audit.len() >= self.audit_cap
            && let Some(dropped) = tenant.audit.pop_front()
        {
            self.record(|| Op::AuditDrop {
                tenant: tenant_id.to_owned(),
                id: dropped.record.id,
            });
            tenant.capped += 1;
            if tenant.capped == 1 {
                tracing::error!(
                    tenant = %tenant_id,
                    cap = self.audit_cap,
                    "the tenant's audit trail reached its cap: the oldest records are dropped from the store before the audit retention (the JSON audit log keeps them)"
                );
            }
        }
        self.record(|| Op::Audit {
            tenant: tenant_id.to_owned(),
            record: record.clone(),
        });
        tenant.audit.push_back(Logged { at: now, record });
    }

    /// The sequence number of the last change queued so far (0 without a journal).
    fn queued(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::queued)
    }

    /// Returns once every change queued up to `seq` is on disk; an error when the disk
    /// refused a write (from then on the store refuses everything: it cannot vouch for it).
    async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.durable(seq).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError> {
        if let Some(journal) = &self.journal {
            journal.healthy()?;
        }
        let now = self.clock.now_ms();
        let tenant_id = &request.identity.tenant;
        let key = &request.identity.session.id;
        let (verdict, wait_for) = {
            let mut tenants = self.tenants.lock();
            let tenant = tenants.entry(tenant_id.clone()).or_default();
            let was_live = tenant.sessions.live.get(key).cloned();
            let tombstone = tenant.sessions.ended.get(key).cloned();
            let verdict =
                tenant
                    .sessions
                    .decide(tenant_id, request, &self.limits, self.lost_at, now);
            // The oldest sessions the tenant's session limit ended to make room (EndOldest).
            let evicted = tenant.sessions.take_evicted();
            if !evicted.is_empty() {
                let limit = tenant
                    .sessions
                    .policy(&self.limits)
                    .max_sessions_per_user
                    .unwrap_or_default();
                let keys: Vec<String> = evicted.iter().map(|s| s.id.clone()).collect();
                let record = crate::session_limit::ended_oldest(
                    tenant_id,
                    &request.identity.user,
                    &keys,
                    key,
                    limit,
                    now,
                );
                record.log();
                self.push_audit(tenant_id, tenant, record, now);
                for session in evicted {
                    self.record_key(tenant_id, tenant, &session.id);
                    self.ended(tenant_id, session, EndReason::Revoked);
                }
            }
            if let Verdict::SessionLimit { limit } = &verdict {
                let record = crate::session_limit::refused(
                    tenant_id,
                    &request.identity.user,
                    key,
                    *limit,
                    now,
                );
                record.log();
                self.push_audit(tenant_id, tenant, record, now);
            }
            match &verdict {
                Verdict::Allow { created: true, .. } => {
                    self.record_key(tenant_id, tenant, key);
                    // A fresh sign-in under the key of a session that had just ended (max age
                    // or idle: its tombstone was replaced, so tell by its age).
                    if let Some(ended) = was_live {
                        let max_age = tenant.sessions.policy(&self.limits).max_session_age;
                        let reason = if now - ended.started_at < millis(max_age) {
                            EndReason::Idle
                        } else {
                            EndReason::Expired
                        };
                        self.ended(tenant_id, ended, reason);
                    }
                    if let Some(session) = tenant.sessions.live.get(key).cloned() {
                        self.publish(ChangeEvent::SessionCreated {
                            tenant: tenant_id.clone(),
                            session,
                        });
                    }
                }
                Verdict::Deny(_)
                | Verdict::TooManySessions
                | Verdict::Locked { .. }
                | Verdict::Idle { .. }
                | Verdict::SessionLimit { .. } => {
                    // Only a change is written: a refused client that keeps trying costs no
                    // disk write. A tombstone can change in place: a sign-in after the end
                    // replaces it, and is refused as too old (a later end). Too many sessions
                    // stores nothing, but a session of this key past its max age has ended.
                    // A live session this refusal ended (not one left live: another user's
                    // token naming it is refused and does not touch it).
                    let ended = was_live.filter(|_| !tenant.sessions.live.contains_key(key));
                    let changed =
                        ended.is_some() || tenant.sessions.ended.get(key) != tombstone.as_ref();
                    if changed {
                        self.record_key(tenant_id, tenant, key);
                    }
                    if let Some(session) = ended {
                        // The reason its tombstone says (max age, idle, or another user's
                        // token naming it: revoked).
                        let reason = match verdict {
                            Verdict::Deny(reason) => reason,
                            Verdict::Locked { .. } => EndReason::Revoked,
                            _ => tenant
                                .sessions
                                .ended
                                .get(key)
                                .map_or(EndReason::Expired, |t| t.reason),
                        };
                        self.ended(tenant_id, session, reason);
                    }
                }
                Verdict::Allow { .. } => {}
            }
            // Whatever this verdict rests on must be on disk before it is given, including a
            // change another request queued a moment ago (e.g. this session's creation).
            (verdict, self.queued())
        };
        self.durable(wait_for).await?;
        Ok(verdict)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        let now = self.clock.now_ms();
        let fingerprint = revocation.fingerprint();
        let (outcome, ended, wait_for) = 'apply: {
            let mut tenants = self.tenants.lock();
            let tenant_id = &revocation.tenant;
            let tenant = tenants.entry(tenant_id.clone()).or_default();
            let ttl = millis(IDEMPOTENCY_TTL);
            if let Some(key) = &revocation.idempotency_key
                && let Some(applied) = tenant.applied.get(key)
                && now - applied.at < ttl
            {
                if applied.fingerprint != fingerprint {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let outcome = RevocationOutcome {
                    replayed: true,
                    ..applied.outcome.clone()
                };
                // The first answer may still be on its way to the disk.
                break 'apply (outcome, Vec::new(), self.queued());
            }
            let ended = tenant.sessions.revoke(&revocation.target, now);
            match &revocation.target {
                RevocationTarget::Session(key) => self.record_key(tenant_id, tenant, key),
                RevocationTarget::User { user, .. } => {
                    for session in &ended {
                        self.record_key(tenant_id, tenant, &session.id);
                    }
                    self.record_marks(tenant_id, tenant, user);
                }
            }
            let record = revocation.audit_record(
                now,
                ended.len() as u32,
                ended.first().map(|s| s.user.clone()),
            );
            let outcome = RevocationOutcome {
                sessions_revoked: ended.len() as u32,
                audit_id: record.id.clone(),
                replayed: false,
            };
            record.log();
            self.push_audit(tenant_id, tenant, record, now);
            if let Some(key) = &revocation.idempotency_key {
                let applied = Applied {
                    fingerprint,
                    outcome: outcome.clone(),
                    at: now,
                };
                self.record(|| Op::Applied {
                    tenant: tenant_id.clone(),
                    key: key.clone(),
                    applied: Some(applied.clone()),
                });
                tenant.applied.insert(key.clone(), applied);
            }
            (outcome, ended, self.queued())
        };
        // Refused from now on in this process; acknowledged once it is on disk.
        for session in ended {
            self.ended(&revocation.tenant, session, EndReason::Revoked);
        }
        if let RevocationTarget::User { user, .. } = &revocation.target
            && !outcome.replayed
        {
            self.publish(ChangeEvent::UserBlocksChanged {
                tenant: revocation.tenant.clone(),
                user: user.clone(),
            });
        }
        self.durable(wait_for).await?;
        Ok(outcome)
    }

    async fn blocked_users(&self, tenant: &str) -> Result<Vec<BlockedUser>, StoreError> {
        let now = self.clock.now_ms();
        let tenants = self.tenants.lock();
        Ok(tenants
            .get(tenant)
            .map(|t| t.sessions.blocked_users(&self.limits, now))
            .unwrap_or_default())
    }

    async fn unblock_user(
        &self,
        tenant_id: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let wait_for = {
            let mut tenants = self.tenants.lock();
            let Some(tenant) = tenants.get_mut(tenant_id) else {
                return Ok(false);
            };
            if !tenant.sessions.unblock(user, &self.limits, now) {
                self.record_marks(tenant_id, tenant, user);
                return Ok(false);
            }
            self.record_marks(tenant_id, tenant, user);
            self.publish(ChangeEvent::UserBlocksChanged {
                tenant: tenant_id.to_owned(),
                user: user.to_owned(),
            });
            audit.log();
            self.push_audit(tenant_id, tenant, audit, now);
            self.queued()
        };
        self.durable(wait_for).await?;
        Ok(true)
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
        tenant_id: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let wait_for = {
            let mut tenants = self.tenants.lock();
            let tenant = tenants.entry(tenant_id.to_owned()).or_default();
            tenant.sessions.policy = Some(policy.clone());
            self.record(|| Op::Policy {
                tenant: tenant_id.to_owned(),
                policy: Some(policy.clone()),
            });
            if let Some(record) = audit {
                record.log();
                self.push_audit(tenant_id, tenant, record, now);
            }
            self.queued()
        };
        self.publish(ChangeEvent::PolicyChanged {
            tenant: tenant_id.to_owned(),
            policy,
        });
        self.durable(wait_for).await
    }

    async fn clear_policy(&self, tenant_id: &str) -> Result<(), StoreError> {
        let wait_for = {
            let mut tenants = self.tenants.lock();
            if let Some(tenant) = tenants.get_mut(tenant_id) {
                tenant.sessions.policy = None;
            }
            self.record(|| Op::Policy {
                tenant: tenant_id.to_owned(),
                policy: None,
            });
            self.queued()
        };
        let policy = Policy::default_with(self.limits.default_max_age);
        self.publish(ChangeEvent::PolicyChanged {
            tenant: tenant_id.to_owned(),
            policy,
        });
        self.durable(wait_for).await
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let now = self.clock.now_ms();
        let tenants = self.tenants.lock();
        let Some(entry) = tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        // Sessions past the max age that housekeeping has not expired yet are not live.
        let max_age = millis(entry.sessions.policy(&self.limits).max_session_age);
        // Nor are sessions unused past the idle timeout.
        let idle = entry.sessions.policy(&self.limits).idle_timeout.map(millis);
        let mut live: Vec<SessionRecord> = entry
            .sessions
            .live
            .values()
            .filter(|s| now - s.started_at < max_age)
            .filter(|s| idle.is_none_or(|idle| now - s.last_seen < idle))
            .cloned()
            .collect();
        live.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(live)
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<SessionPage, StoreError> {
        Ok(self.list_page(tenant, query))
    }

    async fn session_users(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<UserPage, StoreError> {
        Ok(self.user_page(tenant, query))
    }

    async fn session(&self, tenant: &str, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.live_session(tenant, key))
    }

    async fn live_count(&self, tenant: &str) -> Result<usize, StoreError> {
        Ok(self.count_live(tenant))
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let tenants = self.tenants.lock();
        Ok(tenants
            .get(tenant)
            .map(|t| {
                t.audit
                    .iter()
                    .rev()
                    .take(limit)
                    .map(|logged| logged.record.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError> {
        Ok(super::tenant_feed(self.changes.subscribe(), tenant))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.healthy(),
            None => Ok(()),
        }
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        if let Some(journal) = &self.journal {
            journal.check_folder()?;
        }
        let now = self.clock.now_ms();
        let idempotency_ttl = millis(IDEMPOTENCY_TTL);
        // Audit records this old or older are forgotten.
        let audit_cutoff = now.saturating_sub(millis(self.limits.audit_retention));
        let wait_for = {
            let mut tenants = self.tenants.lock();
            let mut flushed_at = self.flushed_at.lock();
            for (id, tenant) in tenants.iter_mut() {
                // Last-seen times, written behind (they decide no verdict).
                if self.journal.is_some() {
                    for session in tenant.sessions.live.values() {
                        if session.last_seen > *flushed_at {
                            self.record(|| Op::Touch {
                                tenant: id.clone(),
                                key: session.id.clone(),
                                last_seen: session.last_seen,
                            });
                        }
                    }
                }
                let tombstones: Vec<String> = tenant.sessions.ended.keys().cloned().collect();
                let users: Vec<String> = tenant.sessions.users.keys().cloned().collect();
                for session in tenant.sessions.sweep(&self.limits, now) {
                    self.record_key(id, tenant, &session.id);
                    let reason = tenant
                        .sessions
                        .ended
                        .get(&session.id)
                        .map_or(EndReason::Expired, |t| t.reason);
                    self.ended(id, session, reason);
                }
                for key in tombstones {
                    if !tenant.sessions.ended.contains_key(&key) {
                        self.record_key(id, tenant, &key);
                    }
                }
                for user in users {
                    if !tenant.sessions.users.contains_key(&user) {
                        self.record_marks(id, tenant, &user);
                    }
                }
                // The audit trail is kept by time. Records are appended in time order, so the
                // old ones are at the front (one appended under a clock that stepped back waits
                // behind its neighbours: kept longer, never dropped early).
                while tenant
                    .audit
                    .front()
                    .is_some_and(|logged| logged.at <= audit_cutoff)
                    && let Some(dropped) = tenant.audit.pop_front()
                {
                    self.record(|| Op::AuditDrop {
                        tenant: id.clone(),
                        id: dropped.record.id,
                    });
                }
                if tenant.capped > 0 {
                    tracing::error!(
                        tenant = %id,
                        dropped = tenant.capped,
                        cap = self.audit_cap,
                        "audit records were dropped from the store by the cap before the audit retention (the JSON audit log keeps them)"
                    );
                    tenant.capped = 0;
                }
                tenant.applied.retain(|key, applied| {
                    let keep = now - applied.at < idempotency_ttl;
                    if !keep {
                        self.record(|| Op::Applied {
                            tenant: id.clone(),
                            key: key.clone(),
                            applied: None,
                        });
                    }
                    keep
                });
            }
            tenants.retain(|_, t| {
                !t.sessions.is_empty() || !t.audit.is_empty() || !t.applied.is_empty()
            });
            *flushed_at = now;
            self.queued()
        };
        self.durable(wait_for).await
    }

    fn resets(&self) -> Vec<StoreReset> {
        match (&self.lost_at, &self.generation) {
            (Some(lost_at), Some(generation)) => vec![StoreReset {
                tenant: None,
                lost_at: *lost_at,
                generation: generation.clone(),
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
