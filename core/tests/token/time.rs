//! Time: `exp` and `nbf` with the leeway, also for cached tokens, and extreme numeric claims.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::token::TokenError;
use serde_json::json;

use crate::harness::{LEEWAY, NOW, claims, harness, rules, sign, with, without};

#[tokio::test]
async fn expiry_allows_the_leeway_and_no_more() {
    let h = harness(rules()).await;
    for (exp, expected) in [
        (NOW + 1, None),
        (NOW, None),
        (NOW - 30, None),
        (NOW - LEEWAY + 1, None),
        (NOW - LEEWAY, Some(TokenError::Expired)),
        (NOW - LEEWAY - 1, Some(TokenError::Expired)),
        (NOW - 86_400, Some(TokenError::Expired)),
    ] {
        let token = sign(&with(claims(), "exp", json!(exp)));
        match expected {
            None => assert_eq!(h.ok(&token).await.expires_at, exp),
            Some(error) => assert_eq!(h.err(&token).await, error, "exp = now{:+}", exp - NOW),
        }
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "exp"))).await,
        TokenError::MissingClaim("exp")
    );
}

#[tokio::test]
async fn not_before_in_the_future_is_refused_beyond_the_leeway() {
    let h = harness(rules()).await;
    for (nbf, ok) in [
        (NOW + 30, true),
        (NOW + LEEWAY, true),
        (NOW + LEEWAY + 1, false),
        (NOW + 3600, false),
    ] {
        let token = sign(&with(claims(), "nbf", json!(nbf)));
        if ok {
            h.ok(&token).await;
        } else {
            assert_eq!(
                h.err(&token).await,
                TokenError::NotYetValid,
                "nbf = now+{}",
                nbf - NOW
            );
        }
    }
    // No nbf at all is fine.
    h.ok(&sign(&without(claims(), "nbf"))).await;
}

#[tokio::test]
async fn cached_token_still_expires_when_the_clock_passes_exp() {
    let h = harness(rules()).await;
    let token = sign(&with(claims(), "exp", json!(NOW + 120)));
    let first = h.ok(&token).await;
    let second = h.ok(&token).await;
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second validation is served from the cache"
    );

    h.clock
        .advance(Duration::from_secs(120 + LEEWAY as u64 - 1));
    h.ok(&token).await;
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.err(&token).await, TokenError::Expired);
    assert_eq!(h.err(&token).await, TokenError::Expired);
}

#[tokio::test]
async fn cached_token_is_not_served_before_its_nbf() {
    // Verified once (clock at NOW), then presented when the clock reads earlier than nbf.
    let h = harness(rules()).await;
    let token = sign(&with(claims(), "nbf", json!(NOW)));
    h.ok(&token).await;
    h.clock.set((NOW - LEEWAY - 1) * 1000);
    assert_eq!(h.err(&token).await, TokenError::NotYetValid);
}

#[tokio::test]
async fn extreme_numeric_claims_do_not_panic() {
    let h = harness(rules()).await;
    let c = with(claims(), "exp", json!(i64::MAX));
    let c = with(c, "nbf", json!(i64::MIN));
    let c = with(c, "iat", json!(i64::MIN));
    let c = with(c, "auth_time", json!(i64::MAX));
    let id = h.ok(&sign(&c)).await;
    assert_eq!(id.expires_at, i64::MAX);
    let c = with(claims(), "exp", json!(i64::MIN));
    assert_eq!(h.err(&sign(&c)).await, TokenError::Expired);
    let c = with(claims(), "nbf", json!(i64::MAX));
    assert_eq!(h.err(&sign(&c)).await, TokenError::NotYetValid);
    // Out of i64 range, fractional or of the wrong type: not a token we understand.
    for exp in [
        json!(u64::MAX),
        json!(1.75e9),
        json!("1750003600"),
        json!(null),
    ] {
        let c = with(claims(), "exp", exp.clone());
        let expected = if exp.is_null() {
            TokenError::MissingClaim("exp")
        } else {
            TokenError::Malformed
        };
        assert_eq!(h.err(&sign(&c)).await, expected, "exp = {exp}");
    }
}
