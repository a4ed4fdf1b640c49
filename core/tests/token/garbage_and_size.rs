//! Garbage and size: malformed input, non-object claims, the size cap, the bounds on claims and
//! roles, bounded error labels.

use grantflow_core::token::{MAX_CLAIMS, MAX_ROLE_CHARS, MAX_ROLES, TokenError};
use serde_json::json;

use crate::harness::{b64url, claims, harness, rules, sign, with};

#[tokio::test]
async fn garbage_is_malformed() {
    let h = harness(rules()).await;
    let valid = sign(&claims());
    let random: String =
        String::from_utf8_lossy(&(0..200u32).map(|i| (i * 97 + 13) as u8).collect::<Vec<_>>())
            .into_owned();
    let huge_header = format!("{}.e30.", "A".repeat(12 * 1024));
    let header_of = |json: &str| b64url(json.as_bytes());
    let cases = vec![
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c".into(),
        "...".into(),
        "a.b.c.d".into(),
        format!("{valid}.x"),
        format!(".{valid}"),
        format!("Bearer {valid}"),
        random,
        huge_header,
        "\u{0}\u{0}.\u{0}.\u{0}".into(),
        // Header is not JSON / not an object / lacks alg.
        format!("{}.e30.", header_of("not json")),
        format!("{}.e30.", header_of("[]")),
        format!("{}.e30.", header_of(r#"{"typ":"JWT","kid":"k1"}"#)),
        format!("{}.e30.", header_of(r#"{"alg":"RS999","kid":"k1"}"#)),
    ];
    for token in cases {
        assert_eq!(
            h.err(&token).await,
            TokenError::Malformed,
            "token = {:?}",
            token.chars().take(60).collect::<String>()
        );
    }
    assert_eq!(h.fetches(), 1, "garbage never makes the key set refetch");
}

#[tokio::test]
async fn validly_signed_non_object_claims_are_malformed() {
    let h = harness(rules()).await;
    for claims in [json!("hello"), json!([1, 2]), json!(42), json!(null)] {
        assert_eq!(
            h.err(&sign(&claims)).await,
            TokenError::Malformed,
            "claims = {claims}"
        );
    }
    // Claims of the wrong type.
    let c = with(claims(), "roles", json!("GrantFlow.SessionAdmin"));
    assert_eq!(h.err(&sign(&c)).await, TokenError::Malformed);
}

#[tokio::test]
async fn oversized_token_is_too_large() {
    let mut r = rules();
    r.max_token_bytes = 4096;
    let h = harness(r).await;
    assert_eq!(h.err(&"A".repeat(4097)).await, TokenError::TooLarge);
    assert_eq!(
        h.err(&"A".repeat(4096)).await,
        TokenError::Malformed,
        "at the limit: parsed"
    );
    // A validly signed token over the limit is refused unverified.
    let padded = sign(&with(claims(), "padding", json!("x".repeat(4096))));
    assert_eq!(h.err(&padded).await, TokenError::TooLarge);
    // The default limit is 16 KiB.
    let h = harness(rules()).await;
    assert_eq!(
        h.err(&"A".repeat(16 * 1024 + 1)).await,
        TokenError::TooLarge
    );
    let big = sign(&with(claims(), "padding", json!("x".repeat(8 * 1024))));
    h.ok(&big).await;
}

#[tokio::test]
async fn error_labels_are_bounded() {
    let errors = [
        (TokenError::TooLarge, "too_large"),
        (TokenError::Malformed, "malformed"),
        (TokenError::UnsupportedAlgorithm, "unsupported_algorithm"),
        (TokenError::UnknownKey, "unknown_key"),
        (TokenError::KeysUnavailable, "keys_unavailable"),
        (TokenError::BadSignature, "bad_signature"),
        (TokenError::Expired, "expired"),
        (TokenError::NotYetValid, "not_yet_valid"),
        (TokenError::WrongAudience, "wrong_audience"),
        (TokenError::WrongIssuer, "wrong_issuer"),
        (TokenError::TenantNotAllowed, "tenant_not_allowed"),
        (TokenError::MissingClaim("oid"), "missing_claim"),
        (TokenError::InvalidClaim("oid"), "invalid_claim"),
        (TokenError::CriticalHeader, "critical_header"),
        (TokenError::NotAnAccessToken("nonce"), "not_access_token"),
        (TokenError::NotAnAccessToken("scp"), "not_access_token"),
        (TokenError::TooManyClaims, "too_many_claims"),
        (TokenError::OversizedClaim("roles"), "oversized_claim"),
        (TokenError::OversizedClaim("scp"), "oversized_claim"),
    ];
    for (error, label) in errors {
        assert_eq!(error.label(), label);
    }
}

#[tokio::test]
async fn more_than_256_claims_are_refused() {
    let h = harness(rules()).await;
    assert_eq!(MAX_CLAIMS, 256);
    let padded = |total: usize| {
        let mut c = claims();
        let have = c.as_object().unwrap().len();
        for i in have..total {
            c[format!("x{i}")] = json!(1);
        }
        assert_eq!(c.as_object().unwrap().len(), total);
        sign(&c)
    };
    h.ok(&padded(MAX_CLAIMS)).await;
    let refused = h.err(&padded(MAX_CLAIMS + 1)).await;
    assert_eq!(refused, TokenError::TooManyClaims);
    assert_eq!(refused.label(), "too_many_claims");
}

#[tokio::test]
async fn roles_and_scopes_are_bounded_in_number_and_length() {
    let h = harness(rules()).await;
    assert_eq!((MAX_ROLES, MAX_ROLE_CHARS), (256, 256));
    let roles = |n: usize, chars: usize| {
        let list: Vec<String> = (0..n)
            .map(|i| format!("{i:03}{}", "r".repeat(chars - 3)))
            .collect();
        sign(&with(claims(), "roles", json!(list)))
    };
    h.ok(&roles(MAX_ROLES, 10)).await;
    h.ok(&roles(2, MAX_ROLE_CHARS)).await;
    let many = h.err(&roles(MAX_ROLES + 1, 10)).await;
    assert_eq!(many, TokenError::OversizedClaim("roles"));
    assert_eq!(many.label(), "oversized_claim");
    assert_eq!(
        h.err(&roles(2, MAX_ROLE_CHARS + 1)).await,
        TokenError::OversizedClaim("roles")
    );
    // `scp` is a space-separated list: the same bounds apply to its entries.
    let scopes = |n: usize, chars: usize| {
        let list: Vec<String> = (0..n)
            .map(|i| format!("{i:03}{}", "s".repeat(chars - 3)))
            .collect();
        sign(&with(claims(), "scp", json!(list.join(" "))))
    };
    h.ok(&scopes(MAX_ROLES, 10)).await;
    h.ok(&scopes(1, MAX_ROLE_CHARS)).await;
    assert_eq!(
        h.err(&scopes(MAX_ROLES + 1, 10)).await,
        TokenError::OversizedClaim("scp")
    );
    assert_eq!(
        h.err(&scopes(1, MAX_ROLE_CHARS + 1)).await,
        TokenError::OversizedClaim("scp")
    );
}
