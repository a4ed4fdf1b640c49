//! Sessions: what a request asks for and what the store remembers about each session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::identity::{Identity, SessionAnchor};

/// One request to reach a protected workload, as the session engine sees it.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    pub identity: Arc<Identity>,
    /// The client address (trusted `x-forwarded-for` hop, else the peer address).
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What the store remembers about a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub tenant: String,
    pub user: String,
    pub display_name: Option<String>,
    /// The session key (`sid`, or `h-` and a hash).
    pub id: String,
    pub anchor: SessionAnchor,
    pub started_at: UnixMillis,
    pub last_seen: UnixMillis,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// A short "Browser on OS" label for display.
    pub client_label: Option<String>,
}

/// Why a session can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Older than its tenant's maximum age.
    Expired,
    /// Ended by an administrator, a Kubernetes Revocation, or a user lock/watermark.
    Revoked,
    /// Every session of the user was ended, and this token cannot prove a sign-in after that
    /// (it has no `auth_time`): only a new interactive sign-in, with a token that carries
    /// `auth_time`, gets the user back in (or an administrator lifting the revocation).
    Reauthenticate,
    /// Unused for longer than its tenant's idle timeout.
    Idle,
}

/// The store's answer to an [`AccessRequest`]. Not `Copy`: a lock's refusal carries its
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A live session: let the request through.
    Allow {
        /// The session was created by this request.
        created: bool,
        started_at: UnixMillis,
    },
    /// Refuse the request.
    Deny(EndReason),
    /// Refuse the request: it would start a new session, and the user already holds
    /// [`Limits::max_sessions_per_user`](crate::decision::Limits::max_sessions_per_user) live
    /// sessions in the tenant. Nothing was stored; the user's existing sessions keep working,
    /// and ending one (signing out elsewhere, or an administrator) makes room.
    TooManySessions,
    /// Refuse the request: an administrator locked the user out until `until` (every session
    /// of theirs was ended; no new one before then), with a message for them when one was
    /// given (shown on the refusal, e.g. "INC-2041").
    Locked {
        until: UnixMillis,
        message: Option<String>,
    },
    /// Refuse the request: the session ended after sitting unused longer than the tenant's
    /// idle timeout (now, or earlier: its key is tombstoned [`EndReason::Idle`]).
    /// `idle_timeout` is the tenant's idle timeout now (`None` when it was turned off since).
    Idle { idle_timeout: Option<Duration> },
    /// Refuse the request: it would start a new session, and the user already holds the
    /// tenant's `max_sessions_per_user` (`limit`) live sessions with `on_limit: RefuseNew`.
    /// Nothing was stored; the refusal is audited (`session.refuse`).
    SessionLimit { limit: u32 },
}

/// A "Browser on OS" label from a user agent, e.g. "Chrome on Windows".
/// The most bytes of a user agent a session keeps. 64 is Redis's default
/// `hash-max-listpack-value`: a longer value turns the session's hash from a listpack into a
/// real hash table (827 against 456 bytes, docs/benchmarks.md finding 4). The label for display
/// is derived from the whole user agent before it is cut ([`client_label`]), so what is lost
/// is only the tail of the raw string (e.g. a browser's exact build and `Safari/…`).
pub const USER_AGENT_CAP: usize = 64;

/// `user_agent` cut to at most [`USER_AGENT_CAP`] bytes, on a character boundary.
pub fn capped_user_agent(user_agent: &str) -> &str {
    if user_agent.len() <= USER_AGENT_CAP {
        return user_agent;
    }
    let mut end = USER_AGENT_CAP;
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    &user_agent[..end]
}

/// The dashboard's label of a user agent ("Chrome on Windows 10"): browser and OS as far as
/// woothee knows them; `None` when it knows neither.
///
/// Parsing a user agent runs woothee's rule set (~100 000 instructions, about as much as the
/// whole rest of a new session's check), and most sessions share a handful of agents: labels
/// are kept by agent, at most [`LABELS_KEPT`] of them (all are forgotten when full).
pub fn client_label(user_agent: &str) -> Option<String> {
    static LABELS: LazyLock<Mutex<HashMap<Box<str>, Option<String>>>> =
        LazyLock::new(Default::default);
    if let Some(label) = LABELS.lock().get(user_agent) {
        return label.clone();
    }
    let label = parse_client_label(user_agent);
    let mut labels = LABELS.lock();
    if labels.len() >= LABELS_KEPT {
        labels.clear();
    }
    labels.insert(user_agent.into(), label.clone());
    label
}

/// How many user agents' labels [`client_label`] keeps.
pub const LABELS_KEPT: usize = 4096;

fn parse_client_label(user_agent: &str) -> Option<String> {
    let parsed = woothee::parser::Parser::new().parse(user_agent)?;
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    match (known(parsed.name), known(parsed.os)) {
        (true, true) => Some(format!("{} on {}", parsed.name, parsed.os)),
        (true, false) => Some(parsed.name.to_string()),
        (false, true) => Some(parsed.os.to_string()),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_common_browsers() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(
            super::client_label(chrome).as_deref(),
            Some("Chrome on Windows 10")
        );
        // woothee names non-browser clients by kind (curl is an "HTTP Library").
        assert_eq!(
            super::client_label("curl/8.5.0").as_deref(),
            Some("HTTP Library")
        );
        assert_eq!(super::client_label("").as_deref(), None);
    }

    #[test]
    fn labels_kept_by_agent_are_the_parsed_ones_also_past_the_bound() {
        let agents: Vec<String> = (0..super::LABELS_KEPT + 10)
            .map(|i| {
                format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0")
            })
            .collect();
        for agent in agents.iter().chain(agents.iter().take(20)) {
            assert_eq!(
                super::client_label(agent),
                super::parse_client_label(agent),
                "{agent}"
            );
        }
        assert_eq!(
            super::client_label(&agents[5]).as_deref(),
            Some("Firefox on Linux")
        );
    }

    #[test]
    fn a_user_agent_is_capped_on_a_character_boundary() {
        use super::{USER_AGENT_CAP, capped_user_agent};
        assert_eq!(capped_user_agent("curl/8.5.0"), "curl/8.5.0");
        let long = "a".repeat(200);
        assert_eq!(capped_user_agent(&long).len(), USER_AGENT_CAP);
        // 63 ASCII bytes then a two-byte character that would straddle the cap.
        let straddling = format!("{}é tail", "a".repeat(USER_AGENT_CAP - 1));
        assert_eq!(
            capped_user_agent(&straddling),
            "a".repeat(USER_AGENT_CAP - 1)
        );
    }
}
