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
                Denial::Unavailable => "unavailable",
                Denial::Locked => "user_locked",
            },
        }
    }
}
