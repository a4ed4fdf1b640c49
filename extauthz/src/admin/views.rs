//! The shapes the admin API and its event stream show: a live session, a blocked user, the
//! policy. Both `api` and `events` render with them.

use grantflow_core::clock::{UnixMillis, rfc3339};
use grantflow_core::policy::{
    MAX_MAX_SESSION_AGE, MAX_SESSIONS_PER_USER, MIN_IDLE_TIMEOUT, MIN_MAX_SESSION_AGE, Policy,
    PolicySource,
};
use grantflow_core::revocation::BlockedUser;
use grantflow_core::session::SessionRecord;
use serde::Serialize;

/// A live session as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionView {
    id: String,
    user: String,
    display_name: Option<String>,
    /// What the session key was derived from: `sid`, `tokenid` or `token`.
    anchor: &'static str,
    started_at: String,
    last_seen: String,
    age_seconds: i64,
    client_ip: Option<String>,
    client_label: Option<String>,
    user_agent: Option<String>,
}

impl SessionView {
    pub(super) fn new(record: &SessionRecord, now: UnixMillis) -> Self {
        Self {
            id: record.id.clone(),
            user: record.user.clone(),
            display_name: record.display_name.clone(),
            anchor: record.anchor.as_str(),
            started_at: rfc3339(record.started_at),
            last_seen: rfc3339(record.last_seen),
            age_seconds: now.saturating_sub(record.started_at).max(0) / 1000,
            client_ip: record.client_ip.map(|ip| ip.to_string()),
            client_label: record.client_label.clone(),
            user_agent: record.user_agent.clone(),
        }
    }
}

/// A user that a revoke-all watermark or a lock keeps out, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockedView {
    user: String,
    /// The watermark W: tokens must prove a sign-in (`auth_time`) after it.
    not_before: Option<String>,
    /// No session at all until then.
    lock_until: Option<String>,
    /// The lock's message to the user (only with a lock that has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// When nothing holds the user out any more (the watermark is forgotten, the lock over).
    holds_until: String,
}

impl BlockedView {
    pub(super) fn new(b: &BlockedUser) -> Self {
        Self {
            user: b.user.clone(),
            not_before: b.not_before.map(rfc3339),
            lock_until: b.lock_until.map(rfc3339),
            message: b.message.clone(),
            holds_until: rfc3339(b.holds_until),
        }
    }
}

/// The tenant's policy as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyView {
    max_session_age_seconds: u64,
    /// `default`, `admin` or `kubernetes`.
    source: &'static str,
    /// The Kubernetes SessionPolicy (`namespace/name`) that manages it.
    managed_by: Option<String>,
    /// Whether the dashboard and API may change it (not when Kubernetes manages it).
    editable: bool,
    min_seconds: u64,
    max_seconds: u64,
    /// A session unused this long ends; `null`: off.
    idle_timeout_seconds: Option<u64>,
    /// The shortest idle timeout (the longest is the max age).
    min_idle_seconds: u64,
    /// Most live sessions one user may hold; `null`: off.
    max_sessions_per_user: Option<u32>,
    /// The highest `maxSessionsPerUser` the tenant may set.
    max_sessions_per_user_cap: u32,
    /// `RefuseNew` or `EndOldest`.
    on_limit: &'static str,
}

impl PolicyView {
    pub(super) fn new(policy: &Policy) -> Self {
        let (source, managed_by) = match &policy.source {
            PolicySource::Default => ("default", None),
            PolicySource::Admin => ("admin", None),
            PolicySource::Kubernetes(name) => ("kubernetes", Some(name.clone())),
        };
        Self {
            max_session_age_seconds: policy.max_session_age.as_secs(),
            source,
            editable: managed_by.is_none(),
            managed_by,
            min_seconds: MIN_MAX_SESSION_AGE.as_secs(),
            max_seconds: MAX_MAX_SESSION_AGE.as_secs(),
            idle_timeout_seconds: policy.idle_timeout.map(|d| d.as_secs()),
            min_idle_seconds: MIN_IDLE_TIMEOUT.as_secs(),
            max_sessions_per_user: policy.max_sessions_per_user,
            max_sessions_per_user_cap: MAX_SESSIONS_PER_USER,
            on_limit: policy.on_limit.as_str(),
        }
    }
}
