//! The Redis store: standalone Redis or Redis Cluster, the engine for many replicas.
//!
//! Key layout (every key of a tenant carries the hash tag `{<tenant>}`, so each script runs
//! in one cluster slot):
//!
//! | key                         | type   | holds                                         |
//! |-----------------------------|--------|-----------------------------------------------|
//! | `gf:{T}:policy`             | hash   | `max_age_ms`, `source` (JSON), `idle_ms`, `max_per_user`, `on_limit` (absent: off / `RefuseNew`) |
//! | `gf:{T}:s:<session>`        | hash   | a live session; TTL start + max age + retention |
//! | `gf:{T}:end:<session>`      | hash   | tombstone `reason`, `at`, `user`; TTL retention |
//! | `gf:{T}:gen`                | hash   | generation marker: `id` (the instant the tenant's state began), `lost` (L) |
//! | `gf:{T}:u:<user>`           | hash   | `nb` watermark, `lock` until; TTL watermark retention (or lock) |
//! | `gf:{T}:blocked`            | zset   | users kept out by marks, by when that ends    |
//! | `gf:{T}:us:<user>`          | set    | the user's live session keys                  |
//! | `gf:{T}:live`               | zset   | live session keys by start                    |
//! | `gf:{T}:audit`              | stream | audit records (`record` = JSON); ids are the store's time; kept for the audit retention (at most [`AUDIT_CAP`]) |
//! | `gf:{T}:idem:<key>`         | hash   | outcome and fingerprint of an idempotent revocation; TTL 24 h |
//! | `gf:tenants`                | set    | tenants with sessions (for housekeeping)      |
//!
//! Changes are published on `gf:{T}:changes` (`SPUBLISH` on a cluster, `PUBLISH` otherwise).
//! Every call has a deadline; a timeout, a lost connection or a reply of the wrong shape is a
//! [`StoreError`], which refuses the request. Connections are made lazily and re-made by the
//! client library, so the store recovers by itself when Redis returns.
//!
//! The module by subject: `connection` (settings, the connection to either kind of
//! deployment, deadlines and `WAIT`), `scripts` (the Lua scripts of `../lua/` and the writes
//! that run them outside the trait's calls), `feed` (the change feed: subscription and
//! published messages), `codec` (key names and the hashes read back).

mod check;
mod codec;
mod connection;
mod feed;
mod listing;
mod scripts;

pub use connection::RedisSettings;

/// The reply decoders, reachable by the fuzz targets (`fuzz/`) only: compiled with the
/// `fuzzing` feature, which no shipped build enables. Thin wrappers, no behaviour of their own.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::identity::SessionAnchor;
    use crate::policy::Policy;
    use crate::session::SessionRecord;
    use crate::store::{ChangeEvent, StoreError};

    pub fn parse_anchor(anchor: &str) -> Option<SessionAnchor> {
        super::codec::parse_anchor(anchor)
    }

    pub fn parse_policy(
        fields: &HashMap<String, String>,
        default: Duration,
    ) -> Result<Policy, StoreError> {
        super::codec::parse_policy(fields, default)
    }

    pub fn parse_session(
        tenant: &str,
        id: &str,
        fields: HashMap<String, String>,
    ) -> Option<SessionRecord> {
        super::codec::parse_session(tenant, id, fields)
    }

    pub fn decode_push(data: &[redis::Value]) -> Option<ChangeEvent> {
        super::feed::decode_push(data)
    }
}

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use tokio::sync::{Mutex as AsyncMutex, broadcast};

use super::{AUDIT_CAP, ChangeEvent, ChangeStream, SessionStore, StoreError, StoreReset};
use crate::audit::AuditRecord;
use crate::clock::{Clock, millis};
use crate::decision::{Limits, UserMarks};
use crate::listing::{SessionPage, SessionQuery, UserPage};
use crate::policy::Policy;
use crate::revocation::{BlockedUser, IDEMPOTENCY_TTL, Revocation, RevocationOutcome};
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict};
use check::CheckReply;
use codec::{malformed, parse_policy, parse_session, prefix};
use connection::{Connection, unavailable};
use feed::Subscriber;
use scripts::{Scripts, log_capped};

const TENANTS_KEY: &str = "gf:tenants";

/// Sessions, policies and audit trails in Redis.
pub struct RedisStore {
    settings: RedisSettings,
    limits: Limits,
    clock: Arc<dyn Clock>,
    scripts: Scripts,
    connection: AsyncMutex<Option<Connection>>,
    subscriber: AsyncMutex<Option<Subscriber>>,
    changes: broadcast::Sender<ChangeEvent>,
    publish: &'static str,
    /// Tenants this process has added to `gf:tenants`.
    registered: parking_lot::Mutex<HashSet<String>>,
    /// Each tenant's generation marker as this process last saw it (see `check.lua`).
    generations: parking_lot::Mutex<HashMap<String, String>>,
    /// The losses of data this process found.
    resets: parking_lot::Mutex<Vec<StoreReset>>,
}

impl RedisStore {
    /// A store for `settings`; connects on first use (so extauthz starts, and refuses with
    /// 503, while Redis is down).
    pub fn new(settings: RedisSettings, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let (changes, _) = broadcast::channel(4_096);
        let publish = if settings.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        Self {
            settings,
            limits,
            clock,
            scripts: Scripts::load(),
            connection: AsyncMutex::new(None),
            subscriber: AsyncMutex::new(None),
            changes,
            publish,
            registered: parking_lot::Mutex::new(HashSet::new()),
            generations: parking_lot::Mutex::new(HashMap::new()),
            resets: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Adds the tenant to `gf:tenants` for housekeeping (expiry, and forgetting audit records
    /// past the audit retention), once per tenant and process, so only the first new session
    /// or audit record of a tenant pays the extra round trip. A failure is retried with the
    /// next one and never changes the verdict or the write.
    async fn register_tenant(&self, tenant: &str) {
        if self.registered.lock().contains(tenant) {
            return;
        }
        let added = self
            .within(self.settings.timeout, async {
                let mut connection = self.connection().await?;
                let _: i64 = connection
                    .sadd(TENANTS_KEY, tenant)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await;
        match added {
            Ok(()) => {
                self.registered.lock().insert(tenant.to_owned());
            }
            Err(error) => tracing::debug!(%error, "could not register the tenant for housekeeping"),
        }
    }

    async fn read_policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        let mut connection = self.connection().await?;
        let fields: HashMap<String, String> = connection
            .hgetall(format!("{}policy", prefix(tenant)))
            .await
            .map_err(unavailable)?;
        parse_policy(&fields, self.limits.default_max_age)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError> {
        let identity = &request.identity;
        // A live session needs one touch call (ARGV 1-12); `check.lua` answers 0 when the
        // request would create a session, and only then the create call follows (ARGV 1-22),
        // which runs every rule again, atomically.
        let mut reply = self.check_call(request, false).await?;
        if reply.code == 0 {
            self.seen_generation(&identity.tenant, &reply).await;
            reply = self.check_call(request, true).await?;
            if reply.code == 0 {
                return Err(malformed("check verdict"));
            }
        }
        let CheckReply {
            code,
            started_at,
            generation: _,
            reset: _,
            ref audits,
            ref message,
        } = reply;
        // The session limit's audit records, in effect now: logged as the stream holds them.
        for json in audits {
            match serde_json::from_str::<AuditRecord>(json) {
                Ok(record) => record.log(),
                Err(_) => tracing::error!("a session-limit audit record could not be read back"),
            }
        }
        if !audits.is_empty() {
            self.register_tenant(&identity.tenant).await;
        }
        self.seen_generation(&identity.tenant, &reply).await;
        match code {
            1 => Ok(Verdict::Allow {
                created: false,
                started_at,
            }),
            2 => {
                self.register_tenant(&identity.tenant).await;
                Ok(Verdict::Allow {
                    created: true,
                    started_at,
                })
            }
            3 => Ok(Verdict::Deny(EndReason::Expired)),
            4 => Ok(Verdict::Deny(EndReason::Revoked)),
            5 => Ok(Verdict::Deny(EndReason::Reauthenticate)),
            6 => Ok(Verdict::TooManySessions),
            7 => Ok(Verdict::Idle {
                idle_timeout: u64::try_from(started_at)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
            }),
            8 => Ok(Verdict::SessionLimit {
                limit: u32::try_from(started_at).map_err(|_| malformed("session limit"))?,
            }),
            9 => Ok(Verdict::Locked {
                until: started_at,
                message: message.clone().filter(|m| !m.is_empty()),
            }),
            _ => Err(malformed("check verdict")),
        }
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        let now = self.clock.now_ms();
        let (kind, target_id, lock_until, message) = revocation.target.parts();
        // `revoke.lua` fills in the count and, for one session, its user, and answers the record
        // it stored, which is the one logged.
        let record = revocation.audit_record(now, 0, None);
        let fingerprint = revocation.fingerprint();
        let json = serde_json::to_string(&record).map_err(|_| malformed("audit record"))?;
        let p = prefix(&revocation.tenant);
        let call = async {
            let mut connection = self.connection().await?;
            let reply: (u32, String, u8, String, i64) = self
                .scripts
                .revoke
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(now)
                .arg(millis(self.limits.retention))
                .arg(kind)
                .arg(target_id)
                .arg(lock_until.map(|t| t.to_string()).unwrap_or_default())
                .arg(&json)
                .arg(revocation.idempotency_key.as_deref().unwrap_or(""))
                .arg(self.publish)
                .arg(AUDIT_CAP)
                .arg(&fingerprint)
                .arg(millis(IDEMPOTENCY_TTL))
                .arg(millis(self.limits.watermark_retention))
                .arg(millis(self.limits.audit_retention))
                .arg(message.unwrap_or(""))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let (sessions_revoked, audit_id, replayed, stored, capped) = reply;
            log_capped(&revocation.tenant, capped);
            if replayed == 2 {
                return Err(StoreError::IdempotencyKeyReused);
            }
            if replayed == 0 {
                // In effect now: logged even if the replicas do not confirm it below — the
                // record exactly as the stream holds it.
                match serde_json::from_str::<AuditRecord>(&stored) {
                    Ok(stored) => stored.log(),
                    Err(_) => {
                        tracing::error!(
                            "the stored audit record could not be read back; logging the request's"
                        );
                        record.log();
                    }
                }
            }
            self.replicated(&mut connection, &p).await?;
            Ok((sessions_revoked, audit_id, replayed))
        };
        let (sessions_revoked, audit_id, replayed) =
            self.within(self.settings.write_timeout, call).await?;
        self.register_tenant(&revocation.tenant).await;
        Ok(RevocationOutcome {
            sessions_revoked,
            audit_id,
            replayed: replayed == 1,
        })
    }

    async fn blocked_users(&self, tenant: &str) -> Result<Vec<BlockedUser>, StoreError> {
        let p = prefix(tenant);
        let now = self.clock.now_ms();
        let call = async {
            let mut connection = self.connection().await?;
            let users: Vec<String> = connection
                .zrangebyscore(format!("{p}blocked"), now + 1, "+inf")
                .await
                .map_err(unavailable)?;
            if users.is_empty() {
                return Ok((users, Vec::new()));
            }
            let mut pipe = redis::pipe();
            for user in &users {
                pipe.cmd("HMGET")
                    .arg(format!("{p}u:{user}"))
                    .arg("nb")
                    .arg("lock")
                    .arg("msg");
            }
            let marks: Vec<(Option<i64>, Option<i64>, Option<String>)> = pipe
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok((users, marks))
        };
        let (users, marks) = self.within(self.settings.write_timeout, call).await?;
        // The same rule as the in-process stores: only marks still in force are listed.
        let mut blocked: Vec<BlockedUser> = users
            .iter()
            .zip(marks)
            .filter_map(|(user, (not_before, lock_until, lock_message))| {
                let marks = UserMarks {
                    not_before,
                    lock_until,
                    lock_message,
                };
                marks.blocked(user, &self.limits, now)
            })
            .collect();
        blocked.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(blocked)
    }

    async fn unblock_user(
        &self,
        tenant: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let p = prefix(tenant);
        let json = serde_json::to_string(&audit).map_err(|_| malformed("audit record"))?;
        let call = async {
            let mut connection = self.connection().await?;
            let (lifted, capped): (i64, i64) = self
                .scripts
                .unblock
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(self.clock.now_ms())
                .arg(user)
                .arg(&json)
                .arg(AUDIT_CAP)
                .arg(millis(self.limits.watermark_retention))
                .arg(millis(self.limits.audit_retention))
                .arg(self.publish)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if lifted == 1 {
                audit.log();
                log_capped(tenant, capped);
            }
            self.replicated(&mut connection, &p).await?;
            Ok(lifted == 1)
        };
        let lifted = self.within(self.settings.write_timeout, call).await?;
        if lifted {
            self.register_tenant(tenant).await;
        }
        Ok(lifted)
    }

    async fn policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        self.within(self.settings.timeout, self.read_policy(tenant))
            .await
    }

    async fn set_policy(
        &self,
        tenant: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.write_policy(tenant, Some(&policy), audit.as_ref())
            .await
    }

    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError> {
        self.write_policy(tenant, None, None).await
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let p = prefix(tenant);
        let call = async {
            let mut connection = self.connection().await?;
            let keys: Vec<String> = connection
                .zrange(format!("{p}live"), 0, -1)
                .await
                .map_err(unavailable)?;
            if keys.is_empty() {
                return Ok((keys, Vec::new()));
            }
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hgetall(format!("{p}s:{key}"));
            }
            let rows: Vec<HashMap<String, String>> = pipe
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok((keys, rows))
        };
        let read = self.within(self.settings.write_timeout, call).await?;
        let (keys, rows) = match read {
            (keys, rows) if rows.len() == keys.len() => (keys, rows),
            _ => return Ok(Vec::new()),
        };
        let policy = self.policy(tenant).await?;
        let now = self.clock.now_ms();
        let max_age = millis(policy.max_session_age);
        // Sessions past the max age whose expiry housekeeping has not caught yet are not live.
        Ok(keys
            .iter()
            .zip(rows)
            .filter_map(|(key, fields)| parse_session(tenant, key, fields))
            .filter(|s| now - s.started_at < max_age)
            // Nor are sessions unused past the idle timeout.
            .filter(|s| {
                policy
                    .idle_timeout
                    .is_none_or(|idle| now - s.last_seen < millis(idle))
            })
            .collect())
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<SessionPage, StoreError> {
        self.list_page(tenant, query).await
    }

    async fn session_users(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<UserPage, StoreError> {
        let sessions = match &query.user {
            Some(user) => self.user_sessions(tenant, user).await?,
            None => self.sessions(tenant).await?,
        };
        Ok(crate::listing::group(query, &sessions))
    }

    async fn session(&self, tenant: &str, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.one_session(tenant, key).await
    }

    async fn live_count(&self, tenant: &str) -> Result<usize, StoreError> {
        let max_age = millis(self.policy(tenant).await?.max_session_age);
        let oldest = self.clock.now_ms() - max_age;
        let live = format!("{}live", prefix(tenant));
        let call = async {
            let mut connection = self.connection().await?;
            redis::cmd("ZCOUNT")
                .arg(live)
                .arg(format!("({oldest}"))
                .arg("+inf")
                .query_async::<usize>(&mut connection)
                .await
                .map_err(unavailable)
        };
        self.within(self.settings.write_timeout, call).await
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let key = format!("{}audit", prefix(tenant));
        let call = async {
            let mut connection = self.connection().await?;
            let reply: redis::streams::StreamRangeReply = connection
                .xrevrange_count(&key, "+", "-", limit)
                .await
                .map_err(unavailable)?;
            Ok(reply)
        };
        let reply = self.within(self.settings.write_timeout, call).await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry
                    .get("record")
                    .ok_or_else(|| malformed("audit entry"))?;
                serde_json::from_str(&json).map_err(|_| malformed("audit record"))
            })
            .collect()
    }

    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError> {
        // Subscribe to the broadcast first, so nothing published after `listen` is missed.
        let receiver = self.changes.subscribe();
        self.within(self.settings.write_timeout, self.listen(tenant))
            .await?;
        Ok(super::tenant_feed(receiver, tenant))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let call = async {
            let mut connection = self.connection().await?;
            let _: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        };
        self.within(self.settings.timeout.max(Duration::from_millis(200)), call)
            .await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let tenants: Vec<String> = self
            .within(self.settings.write_timeout, async {
                let mut connection = self.connection().await?;
                connection.smembers(TENANTS_KEY).await.map_err(unavailable)
            })
            .await?;
        for tenant in tenants {
            let expired = self
                .within(self.settings.write_timeout, self.sweep_tenant(&tenant))
                .await?;
            if expired > 0 {
                tracing::debug!(%tenant, expired, "expired sessions past the max age");
            }
        }
        Ok(())
    }

    fn resets(&self) -> Vec<StoreReset> {
        self.resets.lock().clone()
    }
}
