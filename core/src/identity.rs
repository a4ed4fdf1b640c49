//! Who a verified token speaks for: tenant, user and the session it belongs to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The facts the session layer takes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant (`tid`, or the configured tenant claim).
    pub tenant: String,
    /// The user (`oid`).
    pub user: String,
    /// `preferred_username`, `upn` or `name`, for display only.
    pub display_name: Option<String>,
    /// Which session this token belongs to.
    pub session: SessionKey,
    /// `auth_time` (seconds), when the token carries it.
    pub auth_time: Option<i64>,
    /// `iat` (seconds).
    pub issued_at: Option<i64>,
    /// `nbf` (seconds).
    pub not_before: Option<i64>,
    /// `exp` (seconds).
    pub expires_at: i64,
    /// App roles (`roles`), used by the admin API.
    pub roles: Vec<String>,
}

/// The key a session is stored under, and what it was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub id: String,
    pub anchor: SessionAnchor,
}

/// What a session key was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionAnchor {
    /// The `sid` claim: stable across silent token refresh.
    Sid,
    /// A hash of the token's `uti` (Entra) or `jti`: one session per access token.
    TokenId,
    /// A hash of the whole token: one session per access token.
    Token,
}

impl SessionAnchor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sid => "sid",
            Self::TokenId => "tokenid",
            Self::Token => "token",
        }
    }
}

impl SessionKey {
    /// The session key of a token: its `sid` when present, else a hash of its `uti`/`jti`,
    /// else a hash of the whole token.
    pub fn derive(sid: Option<&str>, token_id: Option<&str>, raw_token: &str) -> Self {
        match (sid, token_id) {
            (Some(sid), _) => Self {
                id: sid.to_owned(),
                anchor: SessionAnchor::Sid,
            },
            (None, Some(id)) => Self {
                id: hashed(id),
                anchor: SessionAnchor::TokenId,
            },
            (None, None) => Self {
                id: hashed(raw_token),
                anchor: SessionAnchor::Token,
            },
        }
    }
}

/// `h-` and the first 128 bits of SHA-256, hex. Never the input itself.
fn hashed(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    format!("h-{}", hex::encode(&digest[..16]))
}

/// Whether a claim value is safe to use as an identifier, a store key part and an HTTP
/// header value: 1–128 characters of `[A-Za-z0-9._:@-]`.
pub fn is_safe_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Whether `value` is a GUID in its canonical 8-4-4-4-12 hex form.
pub fn is_guid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_key_prefers_sid_then_token_id_then_token() {
        let k = SessionKey::derive(Some("s-1"), Some("u"), "tok");
        assert_eq!((k.id.as_str(), k.anchor), ("s-1", SessionAnchor::Sid));
        let k = SessionKey::derive(None, Some("u"), "tok");
        assert_eq!(k.anchor, SessionAnchor::TokenId);
        assert!(k.id.starts_with("h-") && k.id.len() == 34 && !k.id.contains('u'));
        let k2 = SessionKey::derive(None, None, "tok");
        assert_eq!(k2.anchor, SessionAnchor::Token);
        assert_ne!(k.id, k2.id);
    }

    #[test]
    fn guid_and_safe_id() {
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf86f141af91ab2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4g"));
        assert!(is_safe_id("a1b2.c_d:e@f-g"));
        assert!(!is_safe_id("a b"));
        assert!(!is_safe_id("a\r\nx-evil: 1"));
        assert!(!is_safe_id(""));
        assert!(!is_safe_id(&"a".repeat(129)));
    }
}
