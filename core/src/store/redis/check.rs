//! The request path's store call: `check.lua` run as a *touch* call (what a live session
//! needs, ARGV 1-12) and, only when that answers "create needed" (code 0), as a *create* call
//! (ARGV 1-23), and the script's answer read back.

use super::RedisStore;
use super::codec::{malformed, prefix};
use super::connection::unavailable;
use crate::clock::millis;
use crate::decision::TOUCH_INTERVAL_MS;
use crate::session::{AccessRequest, capped_user_agent, client_label};
use crate::store::{AUDIT_CAP, StoreError};

impl RedisStore {
    /// One run of `check.lua`: a touch call, or with `create` a create call.
    pub(super) async fn check_call(
        &self,
        request: &AccessRequest,
        create: bool,
    ) -> Result<CheckReply, StoreError> {
        let identity = &request.identity;
        let p = prefix(&identity.tenant);
        let known = self
            .generations
            .lock()
            .get(&identity.tenant)
            .cloned()
            .unwrap_or_default();
        let call = async {
            let mut connection = self.connection().await?;
            let now = self.clock.now_ms();
            let mut invocation = self.scripts.check.key(format!("{p}policy"));
            invocation
                .arg(&p)
                .arg(now)
                .arg(millis(self.limits.default_max_age))
                .arg(millis(self.limits.retention))
                .arg(millis(self.limits.watermark_retention))
                .arg(
                    identity
                        .auth_time
                        .map(|s| s.saturating_mul(1000).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    identity
                        .issued_at
                        .or(identity.auth_time)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                )
                .arg(&identity.session.id)
                .arg(&identity.user)
                .arg(self.publish)
                .arg(TOUCH_INTERVAL_MS)
                .arg(&known);
            if create {
                invocation
                    .arg(identity.display_name.as_deref().unwrap_or(""))
                    .arg(identity.session.anchor.as_str())
                    .arg(
                        request
                            .client_ip
                            .map(|ip| ip.to_string())
                            .unwrap_or_default(),
                    )
                    // Capped, so the session hash stays a listpack; the label is taken
                    // from the whole user agent (ARGV 23).
                    .arg(request.user_agent.as_deref().map_or("", capped_user_agent))
                    .arg(self.limits.max_sessions_per_user)
                    // For the audit record of the tenant's session limit, if this call writes one.
                    .arg(crate::audit::new_audit_id())
                    .arg(crate::clock::rfc3339(now))
                    .arg(millis(self.limits.audit_retention))
                    .arg(AUDIT_CAP)
                    .arg(&identity.tenant)
                    .arg(
                        request
                            .user_agent
                            .as_deref()
                            .and_then(client_label)
                            .map(|label| capped_user_agent(&label).to_owned())
                            .unwrap_or_default(),
                    );
            }
            let reply: Vec<redis::Value> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(reply)
        };
        check_reply(self.within(self.settings.timeout, call).await?)
    }

    /// Remembers the tenant's generation marker when the script named a new one, and records
    /// a loss it found.
    pub(super) async fn seen_generation(&self, tenant: &str, reply: &CheckReply) {
        if !reply.generation.is_empty() {
            self.generations
                .lock()
                .insert(tenant.to_owned(), reply.generation.clone());
            if reply.reset == 1 {
                self.found_reset(tenant, &reply.generation).await;
            }
        }
    }
}

/// `check.lua`'s answer: {code, started, generation, reset, fifth} where the fifth element is
/// the audit records the call appended (JSON strings; the session limit's) or, for a lock
/// (code 9), the lock's message ('' = none).
pub(super) struct CheckReply {
    pub(super) code: i64,
    pub(super) started_at: i64,
    pub(super) generation: String,
    pub(super) reset: u8,
    pub(super) audits: Vec<String>,
    pub(super) message: Option<String>,
}

fn check_reply(mut items: Vec<redis::Value>) -> Result<CheckReply, StoreError> {
    if items.len() != 5 {
        return Err(malformed("check verdict"));
    }
    let fifth = items.pop().expect("five elements");
    let (code, started_at, generation, reset): (i64, i64, String, u8) =
        redis::from_redis_value(redis::Value::Array(items))
            .map_err(|_| malformed("check verdict"))?;
    let (audits, message) = if code == 9 {
        let message: String =
            redis::from_redis_value(fifth).map_err(|_| malformed("lock message"))?;
        (Vec::new(), Some(message))
    } else {
        let audits: Vec<String> =
            redis::from_redis_value(fifth).map_err(|_| malformed("check audit records"))?;
        (audits, None)
    };
    Ok(CheckReply {
        code,
        started_at,
        generation,
        reset,
        audits,
        message,
    })
}
