//! User and session claims: `oid` present and safe, `sid` safe, `require_sid` and what anchors
//! the session.

use grantflow_core::identity::{SessionAnchor, SessionKey};
use grantflow_core::token::TokenError;
use serde_json::json;

use crate::harness::{claims, harness, rules, sign, with, without};

#[tokio::test]
async fn oid_must_be_present_and_safe() {
    let h = harness(rules()).await;
    assert_eq!(
        h.err(&sign(&without(claims(), "oid"))).await,
        TokenError::MissingClaim("oid")
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "oid", json!(null)))).await,
        TokenError::MissingClaim("oid")
    );
    for oid in [
        "a b",
        "abc\r\nx-grantflow-user: admin",
        "abc\n",
        "\tabc",
        "",
        "ü",
    ] {
        let token = sign(&with(claims(), "oid", json!(oid)));
        assert_eq!(
            h.err(&token).await,
            TokenError::InvalidClaim("oid"),
            "oid = {oid:?}"
        );
    }
    assert_eq!(
        h.err(&sign(&with(claims(), "oid", json!(12)))).await,
        TokenError::Malformed
    );
}

#[tokio::test]
async fn sid_must_be_safe_when_present() {
    let h = harness(rules()).await;
    for sid in ["a b", "x\r\ny", ""] {
        let token = sign(&with(claims(), "sid", json!(sid)));
        assert_eq!(
            h.err(&token).await,
            TokenError::InvalidClaim("sid"),
            "sid = {sid:?}"
        );
    }
}

#[tokio::test]
async fn require_sid_refuses_tokens_without_sid_else_the_token_anchors_the_session() {
    let strict = {
        let mut r = rules();
        r.require_sid = true;
        harness(r).await
    };
    let lax = harness(rules()).await;

    // With sid, both accept it and the session is the sid.
    let with_sid = sign(&claims());
    assert_eq!(
        strict.ok(&with_sid).await.session.anchor,
        SessionAnchor::Sid
    );

    // Without sid but with `uti`: refused when sid is required, else one session per token.
    let no_sid = sign(&without(claims(), "sid"));
    assert_eq!(strict.err(&no_sid).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&no_sid).await;
    assert_eq!(
        id.session,
        SessionKey::derive(None, Some("AbCdEfGhIjKlMnOp"), &no_sid)
    );
    assert_eq!(id.session.anchor, SessionAnchor::TokenId);
    assert!(!id.session.id.contains("AbCdEf"), "the token id is hashed");

    // `jti` when there is no `uti`.
    let jti_only = sign(&with(
        without(without(claims(), "sid"), "uti"),
        "jti",
        json!("j-1"),
    ));
    assert_eq!(strict.err(&jti_only).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&jti_only).await;
    assert_eq!(id.session, SessionKey::derive(None, Some("j-1"), &jti_only));

    // Neither: a hash of the whole token.
    let bare = sign(&without(without(claims(), "sid"), "uti"));
    assert_eq!(strict.err(&bare).await, TokenError::MissingClaim("sid"));
    let id = lax.ok(&bare).await;
    assert_eq!(id.session, SessionKey::derive(None, None, &bare));
    assert_eq!(id.session.anchor, SessionAnchor::Token);
    assert!(!id.session.id.contains(&bare[..20]));
}
