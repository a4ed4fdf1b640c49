//! The session store: one trait, answered by the embedded store (the default for one
//! replica: the in-process engine with a durable journal in a data folder), the memory store
//! (the same engine without a disk: tests and throwaway trials) and, for many replicas, by
//! Redis. Every call either completes or fails; a failure always refuses access.

mod embedded;
mod memory;
mod redis;
mod tenant;

pub use embedded::DATABASE_FILE;
pub use memory::MemoryStore;
/// The Redis reply decoders, for the fuzz targets only (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use redis::fuzz_api as redis_decoders;
pub use redis::{RedisSettings, RedisStore};

/// Audit records kept per tenant at most, whatever their age: a bound on the memory (and
/// Redis memory) an audit trail can take, not a retention — records are kept by time
/// ([`Limits::audit_retention`]). A record takes about 0.5–1 KB (up to about 3 KB with a
/// 500-character reason), so a tenant at the cap holds roughly 0.5–3 GB. Past it the oldest
/// records are dropped before the retention and an error is logged; the JSON audit log line of
/// each record is the durable copy.
pub const AUDIT_CAP: usize = 1_000_000;

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, UnixMillis};
use crate::decision::Limits;
use crate::listing::{self, SessionPage, SessionQuery, UserPage};

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process, written to a data folder (one replica; survives restarts).
    Embedded { data_dir: PathBuf },
    /// In this process only: nothing survives a restart, so a restarted process refuses every
    /// token issued before it started. For tests and throwaway trials.
    Memory,
    /// Redis (standalone or Cluster): shared by every replica and the operator.
    Redis(RedisSettings),
}

impl StoreConfig {
    /// Opens the store. The embedded store reads its data folder back (an error when it
    /// cannot: another process holds it, a damaged record, no permission); Redis connects on
    /// first use, so this never waits for the network.
    pub fn open(
        &self,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn SessionStore>, StoreError> {
        Ok(match self {
            StoreConfig::Embedded { data_dir } => {
                Arc::new(MemoryStore::open_durable(data_dir, limits, clock)?)
            }
            StoreConfig::Memory => Arc::new(MemoryStore::starting_now(limits, clock)),
            StoreConfig::Redis(settings) => {
                Arc::new(RedisStore::new(settings.clone(), limits, clock))
            }
        })
    }
}

use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::policy::Policy;
use crate::revocation::{BlockedUser, Revocation, RevocationOutcome};
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict};

/// A change to a tenant's sessions or policy, for live dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChangeEvent {
    /// A session was created.
    #[serde(rename_all = "camelCase")]
    SessionCreated {
        tenant: String,
        session: SessionRecord,
    },
    /// A live session was expired or revoked.
    #[serde(rename_all = "camelCase")]
    SessionEnded {
        tenant: String,
        session: String,
        user: Option<String>,
        reason: EndReason,
    },
    /// A user's revoke-all watermark or lock was set or lifted (the tenant's blocked users
    /// changed).
    #[serde(rename_all = "camelCase")]
    UserBlocksChanged { tenant: String, user: String },
    /// The tenant's policy changed (`policy` is the one now in force).
    #[serde(rename_all = "camelCase")]
    PolicyChanged { tenant: String, policy: Policy },
    /// Events were lost (a slow subscriber, a reconnect): reload the whole state.
    #[serde(rename_all = "camelCase")]
    Resync { tenant: String },
}

impl ChangeEvent {
    pub fn tenant(&self) -> &str {
        match self {
            Self::SessionCreated { tenant, .. }
            | Self::SessionEnded { tenant, .. }
            | Self::PolicyChanged { tenant, .. }
            | Self::UserBlocksChanged { tenant, .. }
            | Self::Resync { tenant } => tenant,
        }
    }
}

/// A tenant's change feed.
pub type ChangeStream = Pin<Box<dyn futures::Stream<Item = ChangeEvent> + Send>>;

/// `tenant`'s events from a store-wide broadcast. A subscriber that fell behind, and a
/// `Resync` for every tenant (an empty tenant), become a `Resync` of this tenant.
fn tenant_feed(
    receiver: tokio::sync::broadcast::Receiver<ChangeEvent>,
    tenant: &str,
) -> ChangeStream {
    use futures::StreamExt;
    use tokio_stream::wrappers::BroadcastStream;

    let tenant = tenant.to_owned();
    let stream = BroadcastStream::new(receiver).filter_map(move |item| {
        let event = match item {
            Ok(ChangeEvent::Resync { tenant: all }) if all.is_empty() => {
                Some(ChangeEvent::Resync {
                    tenant: tenant.clone(),
                })
            }
            Ok(event) => (event.tenant() == tenant).then_some(event),
            Err(_lagged) => Some(ChangeEvent::Resync {
                tenant: tenant.clone(),
            }),
        };
        std::future::ready(event)
    });
    Box::pin(stream)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("the session store did not answer in time")]
    Timeout,
    #[error("the session store gave an unexpected answer: {0}")]
    Malformed(String),
    /// A write is in effect on the primary, but fewer replicas than required acknowledged it
    /// in time (Redis `WAIT`): it could be lost if the primary fails over now.
    #[error(
        "the change is in effect on the store's primary, but only {acknowledged} of {wanted} \
         replicas acknowledged it in time: it could be lost in a failover"
    )]
    NotReplicated { acknowledged: u32, wanted: u32 },
    /// The idempotency key was used before for a different request (another action, target,
    /// lock or reason): nothing was changed.
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
}

impl StoreError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout => "timeout",
            Self::Malformed(_) => "malformed",
            Self::NotReplicated { .. } => "not_replicated",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

/// A loss of data the store found: its generation marker was gone or had changed (Redis
/// wiped, failed over to an empty replica, restarted without persistence), or the store is
/// new (a fresh data folder cannot be told from a wiped one). Tokens issued before `lost_at`
/// are refused (Session expired: sign in again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreReset {
    /// The tenant whose data was lost; `None`: the whole store.
    pub tenant: Option<String>,
    /// L: tokens issued before this instant (`iat`, else `auth_time`) are refused.
    pub lost_at: UnixMillis,
    /// The new generation marker.
    pub generation: String,
}

/// Where sessions, policies, revocations and the audit trail live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Decides one request atomically (docs/design.md §3): policy, user marks, tombstone, session
    /// create-or-touch, verdict.
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError>;

    /// Ends sessions and appends one audit record; returns once the store holds both
    /// (durably). With an idempotency key seen before: the first answer, `replayed`, when the
    /// request is the same ([`Revocation::fingerprint`]), else
    /// [`StoreError::IdempotencyKeyReused`]; nothing changes either way.
    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError>;

    /// The users of the tenant that a revoke-all watermark or a lock still keeps out.
    async fn blocked_users(&self, tenant: &str) -> Result<Vec<BlockedUser>, StoreError>;

    /// Lifts a user's watermark and lock and appends `audit`; `false` (and no audit record)
    /// when the user was not blocked.
    async fn unblock_user(
        &self,
        tenant: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, StoreError>;

    /// The tenant's policy (the default when it has none).
    async fn policy(&self, tenant: &str) -> Result<Policy, StoreError>;

    /// Sets the tenant's policy; applies to existing sessions at once. An audit record, when
    /// given, is appended with it.
    async fn set_policy(
        &self,
        tenant: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError>;

    /// Returns the tenant to the default policy.
    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError>;

    /// The tenant's live sessions, oldest first.
    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// One page of the tenant's live sessions as `query` asks ([`crate::listing`]). This
    /// default lists every session and pages them here; the stores answer a user's sessions
    /// through their per-user index (O(result)).
    async fn list_sessions(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<SessionPage, StoreError> {
        let all = self.sessions(tenant).await?;
        Ok(listing::page(query, &all))
    }

    /// One page of the tenant's users with live sessions matching `query`, one row per user
    /// with the count of their sessions. Looks at every live session of the tenant (or of the
    /// user, when the query names one).
    async fn session_users(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<UserPage, StoreError> {
        let all = self.sessions(tenant).await?;
        Ok(listing::group(query, &all))
    }

    /// One live session of the tenant by its key (`None`: not live). This default lists every
    /// session; the stores read the one session.
    async fn session(&self, tenant: &str, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .sessions(tenant)
            .await?
            .into_iter()
            .find(|s| s.id == key))
    }

    /// How many live sessions the tenant has now.
    async fn live_count(&self, tenant: &str) -> Result<usize, StoreError> {
        Ok(self.sessions(tenant).await?.len())
    }

    /// The tenant's audit trail, newest first, at most `limit` records.
    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// The tenant's change feed, from now on. Every replica sees every change.
    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Periodic housekeeping (expiring old sessions, forgetting past the retention, writing
    /// last-seen times behind).
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The losses of data this store (as seen by this process) knows of; tokens issued
    /// before each are refused.
    fn resets(&self) -> Vec<StoreReset> {
        Vec::new()
    }
}
