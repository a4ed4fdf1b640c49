//! The session policy of a tenant: how old a session may get.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The maximum session age when a tenant has no policy of its own.
pub const DEFAULT_MAX_SESSION_AGE: Duration = Duration::from_secs(15 * 60);
/// The shortest maximum age a policy may set.
pub const MIN_MAX_SESSION_AGE: Duration = Duration::from_secs(60);
/// The longest maximum age a policy may set.
pub const MAX_MAX_SESSION_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A tenant's session policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(with = "humantime_serde")]
    pub max_session_age: Duration,
    pub source: PolicySource,
}

/// Where a tenant's policy comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum PolicySource {
    /// No policy of its own: the configured default applies.
    Default,
    /// A Kubernetes `SessionPolicy` (namespace/name); edits elsewhere are refused.
    Kubernetes(String),
    /// Set by a tenant administrator through the dashboard or API.
    Admin,
}

impl Policy {
    pub fn default_with(max_session_age: Duration) -> Self {
        Self {
            max_session_age,
            source: PolicySource::Default,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the maximum session age must be between 1 minute and 24 hours")]
pub struct MaxAgeOutOfRange;

/// Checks that a maximum session age is within 1 minute ..= 24 hours.
pub fn check_max_age(age: Duration) -> Result<Duration, MaxAgeOutOfRange> {
    if (MIN_MAX_SESSION_AGE..=MAX_MAX_SESSION_AGE).contains(&age) {
        Ok(age)
    } else {
        Err(MaxAgeOutOfRange)
    }
}
