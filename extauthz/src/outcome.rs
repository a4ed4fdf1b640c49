//! The decision vocabulary: the [`Outcome`] of a request and, when refused, its [`Denial`].
//! `authorize` decides them; `response` and `pages` render them.

use std::sync::Arc;

use grantflow_core::clock::UnixMillis;
use grantflow_core::identity::Identity;

/// Why a request was refused, as shown to the person or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingToken,
    InvalidToken,
    SessionExpired,
    SessionRevoked,
    /// Every session of the user was ended and the token cannot prove a sign-in since (it has
    /// no `auth_time`): only a new interactive sign-in gets the user back in.
    SignInAgain,
    /// The request would start a new session and the user already holds the most live
    /// sessions the store keeps for one user in one tenant: nothing was stored, and the
    /// user's other sessions keep working.
    TooManySessions,
    /// The session ended after sitting unused longer than the tenant's idle timeout
    /// (`idle_seconds`, when the tenant still has one): sign in again.
    SessionIdle {
        idle_seconds: Option<u64>,
    },
    /// The request would start a new session and the user already holds the tenant's
    /// `maxSessionsPerUser` (`limit`) live sessions (`onLimit: RefuseNew`): nothing was stored.
    SessionLimit {
        limit: u32,
    },
    Unavailable,
    /// An administrator locked the user out until a time ([`LockNotice`]): no session before
    /// it ends, whatever the token.
    Locked,
}

/// What a [`Denial::Locked`] refusal tells the user: when the lock ends and the
/// administrator's message, if any (cleaned text; the page escapes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockNotice {
    pub until: UnixMillis,
    pub message: Option<String>,
}

/// The answer for one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Allow {
        identity: Arc<Identity>,
        created: bool,
    },
    Deny {
        denial: Denial,
        identity: Option<Arc<Identity>>,
        /// For [`Denial::Locked`]: the lock's end and message.
        lock: Option<LockNotice>,
    },
}

impl Denial {
    /// A short, bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Denial::MissingToken => "missing_token",
            Denial::InvalidToken => "invalid_token",
            Denial::SessionExpired => "session_expired",
            Denial::SessionRevoked => "session_revoked",
            Denial::SignInAgain => "sign_in_again",
            Denial::TooManySessions => "too_many_sessions",
            Denial::SessionIdle { .. } => "session_idle",
            Denial::SessionLimit { .. } => "session_limit",
            Denial::Unavailable => "unavailable",
            Denial::Locked => "user_locked",
        }
    }
}

impl Outcome {
    /// Every [`Outcome::label`]: the closed label set of the checks metric.
    pub const LABELS: [&'static str; 11] = [
        "allow",
        "missing_token",
        "invalid_token",
        "session_expired",
        "session_revoked",
        "sign_in_again",
        "too_many_sessions",
        "session_idle",
        "session_limit",
        "unavailable",
        "user_locked",
    ];

    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Allow { .. } => "allow",
            Outcome::Deny { denial, .. } => denial.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed_once() {
        let every = [
            Denial::MissingToken,
            Denial::InvalidToken,
            Denial::SessionExpired,
            Denial::SessionRevoked,
            Denial::SignInAgain,
            Denial::TooManySessions,
            Denial::SessionIdle { idle_seconds: None },
            Denial::SessionLimit { limit: 1 },
            Denial::Unavailable,
            Denial::Locked,
        ];
        for denial in every {
            // A new variant does not compile here until it is added to `every` (and LABELS).
            match denial {
                Denial::MissingToken
                | Denial::InvalidToken
                | Denial::SessionExpired
                | Denial::SessionRevoked
                | Denial::SignInAgain
                | Denial::TooManySessions
                | Denial::SessionIdle { .. }
                | Denial::SessionLimit { .. }
                | Denial::Unavailable
                | Denial::Locked => {}
            }
            assert!(Outcome::LABELS.contains(&denial.label()), "{denial:?}");
        }
        let mut labels = Outcome::LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), every.len() + 1, "allow and one per denial");
    }
}
