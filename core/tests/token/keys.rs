//! Keys: rotation, refetch limits on unknown `kid`s, withdrawn or replaced keys and the cache,
//! keys never loaded.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::clock::ManualClock;
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::token::{TokenError, TokenValidator};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::harness::{
    Down, KEYS, NOW, USER, claims, harness, harness_with, jwk_set, rules, sign, sign_as, with,
};

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval_and_follows_a_rotation() {
    // The refetch interval is measured with the real monotonic clock, so this test sleeps
    // (briefly) instead of moving the ManualClock.
    const INTERVAL: Duration = Duration::from_millis(1000);
    const PAST_INTERVAL: Duration = Duration::from_millis(1100);
    let h = harness_with(rules(), INTERVAL).await;
    assert_eq!(h.fetches(), 1);
    let new_token = sign_as(&KEYS.rotated, Some("k2"), Algorithm::RS256, &claims());

    // Before the rotation: "k2" is unknown even after the refetch it triggers.
    tokio::time::sleep(PAST_INTERVAL).await;
    assert_eq!(h.err(&new_token).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 2, "an unknown kid refetches");

    // The issuer rotates: "k2" is published next to "k1".
    h.jwks.publish(jwk_set(&[&KEYS.main, &KEYS.rotated]));
    // Inside the interval the new kid is still unknown: no refetch.
    assert_eq!(h.err(&new_token).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 2, "no refetch inside the minimum interval");

    tokio::time::sleep(PAST_INTERVAL).await;
    let id = h.ok(&new_token).await;
    assert_eq!(id.user, USER);
    assert_eq!(h.fetches(), 3, "the unknown kid refetched the rotated JWKS");

    // Known kids never fetch; the old key still verifies while published.
    h.ok(&sign(&with(claims(), "uti", json!("another-token"))))
        .await;
    let other = with(claims(), "uti", json!("yet-another"));
    h.ok(&sign_as(
        &KEYS.rotated,
        Some("k2"),
        Algorithm::RS256,
        &other,
    ))
    .await;
    assert_eq!(h.fetches(), 3);

    // A second unknown kid right after the refetch (e.g. a stream of forged kids) does not
    // hammer the issuer.
    let forged = sign_as(
        &KEYS.impostor,
        Some("k-forged"),
        Algorithm::RS256,
        &claims(),
    );
    for _ in 0..5 {
        assert_eq!(h.err(&forged).await, TokenError::UnknownKey);
    }
    assert_eq!(h.fetches(), 3, "no refetch inside the minimum interval");

    // The old key is withdrawn: once the keys are refetched, "k1" tokens (not yet cached) are
    // refused.
    h.jwks.publish(jwk_set(&[&KEYS.rotated]));
    tokio::time::sleep(PAST_INTERVAL).await;
    let old = sign(&with(
        claims(),
        "uti",
        json!("signed-with-the-withdrawn-key"),
    ));
    assert_eq!(h.err(&forged).await, TokenError::UnknownKey);
    assert_eq!(h.fetches(), 4);
    assert_eq!(h.err(&old).await, TokenError::UnknownKey);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_withdrawn_or_replaced() {
    let h = harness(rules()).await;
    let token = sign(&claims());
    h.ok(&token).await;
    h.ok(&token).await;
    let keys = h.validator.keys();

    // The issuer withdraws "k1" (rotated out, or compromised); the hourly refresh sees it.
    h.jwks.publish(jwk_set(&[&KEYS.rotated]));
    keys.refresh().await.expect("refresh");
    assert_eq!(
        h.err(&token).await,
        TokenError::UnknownKey,
        "not served from the cache until exp"
    );

    // Back again: verified anew, and cached again.
    h.jwks.publish(jwk_set(&[&KEYS.main, &KEYS.rotated]));
    keys.refresh().await.expect("refresh");
    h.ok(&token).await;
    h.ok(&token).await;

    // Other key material published under the same kid: the signature no longer verifies.
    h.jwks.publish(jwk_set(&[&KEYS.impostor]));
    keys.refresh().await.expect("refresh");
    assert_eq!(h.err(&token).await, TokenError::BadSignature);

    // A failed refresh keeps the keys, so it does not refuse anything by itself.
    h.jwks.publish(jwk_set(&[&KEYS.main]));
    keys.refresh().await.expect("refresh");
    h.ok(&token).await;
    h.jwks.publish(JwkSet { keys: vec![] });
    assert!(keys.refresh().await.is_err());
    h.ok(&token).await;
}

#[tokio::test]
async fn keys_never_loaded_refuse_with_keys_unavailable() {
    let clock = ManualClock::new(NOW * 1000);
    let token = sign(&claims());

    // The JWKS endpoint is down.
    let keys = Arc::new(KeySet::new(Down, Duration::ZERO));
    assert!(keys.refresh().await.is_err());
    assert!(!keys.is_loaded());
    let v = TokenValidator::new(rules(), keys, Arc::new(clock.clone()));
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );

    // The JWKS holds no usable key (empty, or only a symmetric key).
    let jwks = StaticJwks::default();
    let keys = Arc::new(KeySet::new(jwks.clone(), Duration::ZERO));
    let v = TokenValidator::new(rules(), keys.clone(), Arc::new(clock.clone()));
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );
    let mut oct =
        Jwk::from_encoding_key(&EncodingKey::from_secret(b"s3cret"), Algorithm::HS256).unwrap();
    oct.common.key_id = Some("k1".into());
    jwks.publish(JwkSet { keys: vec![oct] });
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        TokenError::KeysUnavailable
    );
    assert!(!keys.is_loaded());

    // Once the issuer publishes, the unknown kid fetches them.
    jwks.publish(jwk_set(&[&KEYS.main]));
    assert_eq!(v.validate(&token).await.unwrap().user, USER);
    assert!(keys.is_loaded());

    // A later failed refresh keeps the old keys.
    jwks.publish(JwkSet { keys: vec![] });
    assert!(keys.refresh().await.is_err());
    let fresh = sign(&with(claims(), "uti", json!("not-cached-yet")));
    assert_eq!(v.validate(&fresh).await.unwrap().user, USER);
}
