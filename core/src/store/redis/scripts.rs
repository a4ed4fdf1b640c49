//! The Lua scripts (in `../lua/`; each runs atomically in the tenant's slot), and the writes
//! that run them apart from the store's calls: appending a `store.reset` record, the expiry
//! sweep, and setting or clearing a policy.

use redis::Script;

use super::RedisStore;
use super::codec::{malformed, prefix};
use super::connection::unavailable;
use crate::audit::AuditRecord;
use crate::clock::millis;
use crate::policy::Policy;
use crate::store::{AUDIT_CAP, StoreError, StoreReset};

pub(super) struct Scripts {
    pub(super) check: Script,
    pub(super) revoke: Script,
    pub(super) unblock: Script,
    pub(super) policy: Script,
    pub(super) sweep: Script,
    pub(super) append: Script,
}

/// `audit.lua` (the audit stream's `append_audit`) and a script that uses it.
fn with_audit(script: &str) -> Script {
    Script::new(&format!("{}\n{script}", include_str!("../lua/audit.lua")))
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            check: with_audit(include_str!("../lua/check.lua")),
            revoke: with_audit(include_str!("../lua/revoke.lua")),
            unblock: with_audit(include_str!("../lua/unblock.lua")),
            policy: with_audit(include_str!("../lua/policy.lua")),
            sweep: Script::new(include_str!("../lua/sweep.lua")),
            append: with_audit(include_str!("../lua/append.lua")),
        }
    }
}

/// Says so when the cap dropped audit records of `tenant` before the audit retention.
pub(super) fn log_capped(tenant: &str, capped: i64) {
    if capped > 0 {
        tracing::error!(
            %tenant,
            dropped = capped,
            cap = AUDIT_CAP,
            "the tenant's audit trail reached its cap: the oldest records are dropped from the store before the audit retention (the JSON audit log keeps them)"
        );
    }
}

impl RedisStore {
    /// Records that `tenant`'s data was lost (its generation marker vanished or changed):
    /// tokens issued before `lost_at` are refused from now on, by every replica (the loss time
    /// is in Redis). Audited as `store.reset` and logged.
    pub(super) async fn found_reset(&self, tenant: &str, generation: &str) {
        let lost_at: i64 = generation.parse().unwrap_or_else(|_| self.clock.now_ms());
        tracing::error!(
            %tenant,
            lost_at = %crate::clock::rfc3339(lost_at),
            "the session store lost this tenant's data (generation marker gone or changed): tokens issued before the loss are refused"
        );
        self.registered.lock().remove(tenant);
        self.resets.lock().push(StoreReset {
            tenant: Some(tenant.to_owned()),
            lost_at,
            generation: generation.to_owned(),
        });
        let record = AuditRecord {
            id: crate::audit::new_audit_id(),
            time: crate::clock::rfc3339(self.clock.now_ms()),
            tenant: tenant.to_owned(),
            actor: crate::audit::Actor {
                kind: crate::audit::ActorKind::System,
                id: "grantflow-extauthz".into(),
                name: None,
            },
            action: crate::audit::Action::StoreReset,
            target: crate::audit::Target::default(),
            reason: Some(
                "the session store lost this tenant's data; tokens issued before the loss are refused"
                    .into(),
            ),
            source: crate::audit::Source::System,
            sessions_revoked: None,
            detail: Some(format!(
                "tokens issued before {} must be replaced (sign in again)",
                crate::clock::rfc3339(lost_at)
            )),
        };
        record.log();
        let Ok(json) = serde_json::to_string(&record) else {
            return;
        };
        let key = format!("{}audit", prefix(tenant));
        let appended = self
            .within(self.settings.write_timeout, async {
                let mut connection = self.connection().await?;
                let capped: i64 = self
                    .scripts
                    .append
                    .key(&key)
                    .arg(self.clock.now_ms())
                    .arg(millis(self.limits.audit_retention))
                    .arg(AUDIT_CAP)
                    .arg(&record.id)
                    .arg(&json)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                log_capped(tenant, capped);
                Ok(())
            })
            .await;
        if let Err(error) = appended {
            tracing::warn!(%error, "the store.reset audit record could not be appended (the loss is enforced all the same)");
        }
    }

    pub(super) async fn sweep_tenant(&self, tenant: &str) -> Result<i64, StoreError> {
        let mut connection = self.connection().await?;
        let p = prefix(tenant);
        self.scripts
            .sweep
            .key(format!("{p}policy"))
            .key(format!("{p}audit"))
            .arg(&p)
            .arg(self.clock.now_ms())
            .arg(millis(self.limits.default_max_age))
            .arg(millis(self.limits.retention))
            .arg(self.publish)
            .arg(millis(self.limits.audit_retention))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Runs `policy.lua`: sets `policy` (or clears it when `None`), with an optional audit
    /// record (appended, and logged once in effect), and publishes the change.
    pub(super) async fn write_policy(
        &self,
        tenant: &str,
        policy: Option<&Policy>,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let p = prefix(tenant);
        let (max_age, source) = match policy {
            Some(policy) => (
                millis(policy.max_session_age).to_string(),
                serde_json::to_string(&policy.source).map_err(|_| malformed("policy"))?,
            ),
            None => (String::new(), String::new()),
        };
        // The idle timeout and session limit ('' = off), and what the limit does.
        let idle = policy
            .and_then(|p| p.idle_timeout)
            .map(|idle| millis(idle).to_string())
            .unwrap_or_default();
        let per_user = policy
            .and_then(|p| p.max_sessions_per_user)
            .map(|n| n.to_string())
            .unwrap_or_default();
        let on_limit = policy.map_or("RefuseNew", |p| p.on_limit.as_str());
        let audit_json = audit
            .map(serde_json::to_string)
            .transpose()
            .map_err(|_| malformed("audit record"))?
            .unwrap_or_default();
        let call = async {
            let mut connection = self.connection().await?;
            let capped: i64 = self
                .scripts
                .policy
                .key(format!("{p}policy"))
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(&max_age)
                .arg(&source)
                .arg(&audit_json)
                .arg(self.publish)
                .arg(AUDIT_CAP)
                .arg(millis(self.limits.default_max_age))
                .arg(self.clock.now_ms())
                .arg(millis(self.limits.audit_retention))
                .arg(&idle)
                .arg(&per_user)
                .arg(on_limit)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            // In effect now: logged even if the replicas do not confirm it below.
            if let Some(record) = audit {
                record.log();
                log_capped(tenant, capped);
            }
            self.replicated(&mut connection, &p).await
        };
        self.within(self.settings.write_timeout, call).await?;
        if audit.is_some() {
            self.register_tenant(tenant).await;
        }
        Ok(())
    }
}
