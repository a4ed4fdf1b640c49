//! The session policy of a tenant: how old a session may get, how long it may sit unused,
//! and how many sessions one user may hold at once.

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
    /// A session unused for longer ends (`None`: off). 1 minute ..= the max age.
    #[serde(with = "humantime_serde", default)]
    pub idle_timeout: Option<Duration>,
    /// Most live sessions one user may hold in the tenant (`None`: only the store's own bound
    /// of sessions per user applies). 1 ..= [`MAX_SESSIONS_PER_USER`].
    #[serde(default)]
    pub max_sessions_per_user: Option<u32>,
    /// What a new session beyond `max_sessions_per_user` does.
    #[serde(default)]
    pub on_limit: OnLimit,
    pub source: PolicySource,
}

/// What happens when a user at the tenant's `max_sessions_per_user` starts a new session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnLimit {
    /// The new session is refused (the user's other sessions keep working).
    #[default]
    RefuseNew,
    /// The user's oldest live session (by start) is ended, and the new one starts.
    EndOldest,
}

impl OnLimit {
    /// The name used in the API, the CRD and the Redis policy hash.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefuseNew => "RefuseNew",
            Self::EndOldest => "EndOldest",
        }
    }

    /// The value of [`Self::as_str`], if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RefuseNew" => Some(Self::RefuseNew),
            "EndOldest" => Some(Self::EndOldest),
            _ => None,
        }
    }
}

/// The shortest idle timeout a policy may set.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The highest `max_sessions_per_user` a policy may set: 1 000, the store's own default bound
/// of sessions per user.
pub const MAX_SESSIONS_PER_USER: u32 = 1_000;

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
            idle_timeout: None,
            max_sessions_per_user: None,
            on_limit: OnLimit::RefuseNew,
            source: PolicySource::Default,
        }
    }

    /// Checks every field's range: the max age (1 minute ..= 24 hours), the idle timeout
    /// (1 minute ..= the max age) and the session limit (1 ..= [`MAX_SESSIONS_PER_USER`]).
    pub fn check(&self) -> Result<(), PolicyOutOfRange> {
        check_max_age(self.max_session_age).map_err(|_| PolicyOutOfRange::MaxAge)?;
        check_idle_timeout(self.idle_timeout, self.max_session_age)?;
        check_session_limit(self.max_sessions_per_user)?;
        Ok(())
    }
}

/// A policy field out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyOutOfRange {
    #[error("the maximum session age must be between 1 minute and 24 hours")]
    MaxAge,
    #[error("the idle timeout must be between 1 minute and the maximum session age")]
    IdleTimeout,
    #[error("the maximum sessions per user must be between 1 and {MAX_SESSIONS_PER_USER}")]
    SessionLimit,
}

/// Checks that an idle timeout, when set, is within 1 minute ..= `max_age`.
pub fn check_idle_timeout(
    idle: Option<Duration>,
    max_age: Duration,
) -> Result<Option<Duration>, PolicyOutOfRange> {
    match idle {
        Some(idle) if !(MIN_IDLE_TIMEOUT..=max_age).contains(&idle) => {
            Err(PolicyOutOfRange::IdleTimeout)
        }
        _ => Ok(idle),
    }
}

/// Checks that a session limit, when set, is within 1 ..= [`MAX_SESSIONS_PER_USER`].
pub fn check_session_limit(limit: Option<u32>) -> Result<Option<u32>, PolicyOutOfRange> {
    match limit {
        Some(n) if !(1..=MAX_SESSIONS_PER_USER).contains(&n) => Err(PolicyOutOfRange::SessionLimit),
        _ => Ok(limit),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded store's journal holds policies as this JSON: one written before the idle
    /// timeout and the session limit existed reads back with both off.
    #[test]
    fn a_policy_written_by_the_previous_version_reads_with_the_new_rules_off() {
        let old = r#"{"maxSessionAge":"30m","source":{"kind":"admin"}}"#;
        let policy: Policy = serde_json::from_str(old).unwrap();
        assert_eq!(
            policy,
            Policy {
                source: PolicySource::Admin,
                ..Policy::default_with(Duration::from_secs(1800))
            }
        );
        assert_eq!(policy.idle_timeout, None);
        assert_eq!(policy.max_sessions_per_user, None);
        assert_eq!(policy.on_limit, OnLimit::RefuseNew);
    }

    #[test]
    fn the_new_rules_round_trip_through_json() {
        let policy = Policy {
            idle_timeout: Some(Duration::from_secs(300)),
            max_sessions_per_user: Some(3),
            on_limit: OnLimit::EndOldest,
            ..Policy::default_with(Duration::from_secs(3600))
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert!(json.contains(r#""idleTimeout":"5m""#), "{json}");
        assert!(json.contains(r#""onLimit":"EndOldest""#), "{json}");
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
    }

    #[test]
    fn bounds_of_the_new_rules() {
        let age = Duration::from_secs(900);
        let min = Duration::from_secs(60);
        assert_eq!(check_idle_timeout(None, age), Ok(None));
        assert_eq!(check_idle_timeout(Some(min), age), Ok(Some(min)));
        assert_eq!(check_idle_timeout(Some(age), age), Ok(Some(age)));
        for bad in [Duration::from_secs(59), age + Duration::from_secs(1)] {
            assert_eq!(
                check_idle_timeout(Some(bad), age),
                Err(PolicyOutOfRange::IdleTimeout)
            );
        }
        assert_eq!(check_session_limit(Some(1)), Ok(Some(1)));
        assert_eq!(check_session_limit(Some(1000)), Ok(Some(1000)));
        assert_eq!(
            check_session_limit(Some(0)),
            Err(PolicyOutOfRange::SessionLimit)
        );
        assert_eq!(
            check_session_limit(Some(1001)),
            Err(PolicyOutOfRange::SessionLimit)
        );
        let mut policy = Policy::default_with(age);
        policy.idle_timeout = Some(Duration::from_secs(1200));
        assert_eq!(policy.check(), Err(PolicyOutOfRange::IdleTimeout));
    }
}
