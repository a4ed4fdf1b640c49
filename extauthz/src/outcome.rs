//! The decision vocabulary: the [`Outcome`] of a request and, when refused, its [`Denial`].
//! `authorize` decides them; `response` and `pages` render them.

use std::sync::Arc;

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
    },
}

impl Outcome {
    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Allow { .. } => "allow",
            Outcome::Deny { denial, .. } => match denial {
                Denial::MissingToken => "missing_token",
                Denial::InvalidToken => "invalid_token",
                Denial::SessionExpired => "session_expired",
                Denial::SessionRevoked => "session_revoked",
                Denial::SignInAgain => "sign_in_again",
                Denial::TooManySessions => "too_many_sessions",
                Denial::SessionIdle { .. } => "session_idle",
                Denial::SessionLimit { .. } => "session_limit",
                Denial::Unavailable => "unavailable",
            },
        }
    }
}
