//! Signatures and algorithms: another key under a known `kid`, tampering, `alg: none`, `crit`
//! headers, ID tokens, HMAC with the RSA public key, an algorithm the JWK does not pin, no
//! `kid`.

use grantflow_core::token::TokenError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::harness::{
    KEYS, TENANT, b64url, claims, harness, rules, sign, sign_as, v2_issuer, with, without,
};

#[tokio::test]
async fn signature_by_another_key_with_the_same_kid_is_refused() {
    let h = harness(rules()).await;
    let forged = sign_as(&KEYS.impostor, Some("k1"), Algorithm::RS256, &claims());
    assert_eq!(h.err(&forged).await, TokenError::BadSignature);
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let h = harness(rules()).await;
    let token = sign(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let evil = b64url(
        with(claims(), "oid", json!("attacker"))
            .to_string()
            .as_bytes(),
    );
    parts[1] = &evil;
    assert_eq!(h.err(&parts.join(".")).await, TokenError::BadSignature);
    // Signature stripped.
    let unsigned = format!("{}.{}.", parts[0], token.split('.').nth(1).unwrap());
    assert_eq!(h.err(&unsigned).await, TokenError::BadSignature);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let h = harness(rules()).await;
    let header = b64url(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let payload = b64url(claims().to_string().as_bytes());
    // jsonwebtoken has no `none` algorithm at all, so the header does not even parse.
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::Malformed
    );
    let header = b64url(br#"{"alg":"None","typ":"JWT","kid":"k1"}"#);
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::Malformed
    );
    // An algorithm name jsonwebtoken knows but the validator never accepts.
    let header = b64url(br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
    assert_eq!(
        h.err(&format!("{header}.{payload}.")).await,
        TokenError::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    // RFC 7515 §4.1.11: a recipient that does not understand an extension listed in `crit`
    // must refuse the JWS. This validator implements none.
    let h = harness(rules()).await;
    let signed = |crit: Vec<&str>| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEYS.main.kid.to_owned());
        header.crit = Some(crit.into_iter().map(str::to_owned).collect());
        header.extras.insert("urn:example:must-check", true);
        jsonwebtoken::encode(&header, &claims(), &KEYS.main.encoding).expect("signing")
    };
    assert_eq!(
        h.err(&signed(vec!["urn:example:must-check"])).await,
        TokenError::CriticalHeader
    );
    assert_eq!(
        h.err(&signed(vec!["b64"])).await,
        TokenError::CriticalHeader
    );
    // An empty list is forbidden by the RFC.
    assert_eq!(h.err(&signed(vec![])).await, TokenError::CriticalHeader);
    // A `crit` that is not a list of names does not parse.
    let header = b64url(br#"{"alg":"RS256","typ":"JWT","kid":"k1","crit":"exp"}"#);
    let payload = b64url(claims().to_string().as_bytes());
    assert_eq!(
        h.err(&format!("{header}.{payload}.c2ln")).await,
        TokenError::Malformed
    );
    // The same token without `crit` is fine.
    h.ok(&sign(&claims())).await;
}

#[tokio::test]
async fn id_tokens_are_refused() {
    // The API's own app registration signs users in too: its ID tokens have the client id as
    // `aud`, which is an accepted audience (v2 access tokens carry the same).
    let h = harness(rules()).await;
    let v2 = || {
        let c = with(claims(), "iss", json!(v2_issuer(TENANT)));
        let c = with(c, "ver", json!("2.0"));
        without(c, "uti")
    };
    // An Entra v2 ID token of an administrator: `nonce`, app roles, no `scp`, no `azp`.
    let id_token = with(v2(), "nonce", json!("n-0S6_WzA2Mj"));
    assert_eq!(
        h.err(&sign(&id_token)).await,
        TokenError::NotAnAccessToken("nonce")
    );
    // The same without `nonce` (a sign-in that sent none): no scopes, no calling app.
    assert_eq!(
        h.err(&sign(&without(id_token, "nonce"))).await,
        TokenError::NotAnAccessToken("scp")
    );
    let no_roles = without(v2(), "roles");
    assert_eq!(
        h.err(&sign(&no_roles)).await,
        TokenError::NotAnAccessToken("scp")
    );
    assert_eq!(
        h.err(&sign(&with(v2(), "scp", json!(" ")))).await,
        TokenError::NotAnAccessToken("scp")
    );
    assert_eq!(
        h.err(&sign(&with(no_roles.clone(), "azp", json!("client-app"))))
            .await,
        TokenError::NotAnAccessToken("scp"),
        "a calling app without roles"
    );
    // v1 tokens (and tokens of other issuers) may carry `nonce` in no case.
    assert_eq!(
        h.err(&sign(&with(claims(), "nonce", json!("abc")))).await,
        TokenError::NotAnAccessToken("nonce")
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "nonce", json!(null)))).await,
        TokenError::NotAnAccessToken("nonce")
    );
    // `idtyp` (optional access-token claim) is `user` or `app`; anything else is refused.
    for idtyp in [
        json!("id"),
        json!("access"),
        json!("User"),
        json!(1),
        json!(null),
    ] {
        assert_eq!(
            h.err(&sign(&with(claims(), "idtyp", idtyp.clone()))).await,
            TokenError::NotAnAccessToken("idtyp"),
            "idtyp = {idtyp}"
        );
    }

    // Access tokens pass: delegated (v2 with `scp`, with or without roles; `idtyp` user) and
    // app-only (v2 with `roles` and the calling app `azp`; `idtyp` app); v1 as before.
    let delegated = with(v2(), "scp", json!("access_as_user Sessions.Read"));
    h.ok(&sign(&delegated)).await;
    h.ok(&sign(&with(delegated, "idtyp", json!("user")))).await;
    h.ok(&sign(&with(no_roles, "scp", json!("access_as_user"))))
        .await;
    let app = with(without(v2(), "sid"), "azp", json!("client-app"));
    h.ok(&sign(&app)).await;
    h.ok(&sign(&with(app, "idtyp", json!("app")))).await;
    h.ok(&sign(&claims())).await;
    h.ok(&sign(&without(claims(), "roles"))).await;
}

#[tokio::test]
async fn hmac_signed_with_the_rsa_public_key_is_refused() {
    // The classic key-confusion attack: the public key is public, so an attacker can HMAC
    // with it and hope the verifier uses it as an HMAC secret.
    let h = harness(rules()).await;
    for secret in [
        KEYS.main.public_der.as_slice(),
        KEYS.main.public_pem.as_bytes(),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".into());
            let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
                .unwrap();
            assert_eq!(
                h.err(&token).await,
                TokenError::UnsupportedAlgorithm,
                "{alg:?}"
            );
        }
    }
    assert_eq!(h.fetches(), 1, "refused before any key lookup");
}

#[tokio::test]
async fn algorithm_other_than_the_one_the_jwk_pins_is_refused() {
    // A valid PS256 signature by the right key, but the JWK says RS256.
    let h = harness(rules()).await;
    let token = sign_as(&KEYS.main, Some("k1"), Algorithm::PS256, &claims());
    assert_eq!(h.err(&token).await, TokenError::UnsupportedAlgorithm);
}

#[tokio::test]
async fn token_without_kid_is_refused() {
    let h = harness(rules()).await;
    let token = sign_as(&KEYS.main, None, Algorithm::RS256, &claims());
    assert_eq!(h.err(&token).await, TokenError::UnknownKey);
}
