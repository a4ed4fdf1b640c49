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
    /// One of each kind of denial (numbers in them are examples): for tests that go through
    /// every kind. A test in this file fails to compile when a new kind is missing here.
    pub const EVERY: [Denial; 10] = [
        Denial::MissingToken,
        Denial::InvalidToken,
        Denial::SessionExpired,
        Denial::SessionRevoked,
        Denial::SignInAgain,
        Denial::TooManySessions,
        Denial::SessionIdle {
            idle_seconds: Some(300),
        },
        Denial::SessionLimit { limit: 2 },
        Denial::Unavailable,
        Denial::Locked,
    ];

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
        let every = Denial::EVERY;
        let mut kinds = [false; Denial::EVERY.len()];
        for denial in every {
            // A new kind does not compile here until it has its place here, in EVERY and in
            // LABELS.
            let kind = match denial {
                Denial::MissingToken => 0,
                Denial::InvalidToken => 1,
                Denial::SessionExpired => 2,
                Denial::SessionRevoked => 3,
                Denial::SignInAgain => 4,
                Denial::TooManySessions => 5,
                Denial::SessionIdle { .. } => 6,
                Denial::SessionLimit { .. } => 7,
                Denial::Unavailable => 8,
                Denial::Locked => 9,
            };
            kinds[kind] = true;
            assert!(Outcome::LABELS.contains(&denial.label()), "{denial:?}");
        }
        let mut labels = Outcome::LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), every.len() + 1, "allow and one per denial");
        assert!(kinds.iter().all(|seen| *seen), "EVERY holds each kind once");
    }
}
