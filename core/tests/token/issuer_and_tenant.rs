//! Issuer and tenant: the issuer must match, `tid` must be the tenant the issuer names (a
//! GUID), `allowed_tenants`, an explicit issuer with a custom tenant claim.

use grantflow_core::identity::SessionAnchor;
use grantflow_core::token::TokenError;
use serde_json::json;

use crate::harness::{
    AUD, NOW, OTHER_TENANT, TENANT, claims, harness, rules, sign, v1_issuer, v2_issuer, with,
    without,
};

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let h = harness(rules()).await;
    for iss in [
        "https://evil.example/".to_owned(),
        format!("https://sts.windows.net/{TENANT}"),
        format!("https://login.microsoftonline.com/{TENANT}/v2.0/"),
        format!("http://sts.windows.net/{TENANT}/"),
        String::new(),
    ] {
        let token = sign(&with(claims(), "iss", json!(iss)));
        assert_eq!(
            h.err(&token).await,
            TokenError::WrongIssuer,
            "iss = {iss:?}"
        );
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "iss"))).await,
        TokenError::MissingClaim("iss")
    );
}

#[tokio::test]
async fn tid_must_be_the_tenant_the_issuer_names_and_a_guid() {
    let h = harness(rules()).await;
    // The issuer names another tenant than `tid`.
    let c = with(claims(), "iss", json!(v1_issuer(OTHER_TENANT)));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    let c = with(claims(), "iss", json!(v2_issuer(OTHER_TENANT)));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    // An Entra-shaped issuer whose tenant slot holds something else is refused the same way.
    let c = with(
        claims(),
        "iss",
        json!(format!(
            "https://login.microsoftonline.com/{TENANT}/oauth2/v2.0"
        )),
    );
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("tid".into())
    );
    // Consistent, but not a GUID.
    for tid in [
        "contoso",
        "72f988bf86f141af91ab2d7cd011db47",
        "common",
        "a/b",
    ] {
        let c = with(claims(), "tid", json!(tid));
        let c = with(c, "iss", json!(v1_issuer(tid)));
        assert_eq!(
            h.err(&sign(&c)).await,
            TokenError::InvalidTenant("tid".into()),
            "tid = {tid}"
        );
    }
    assert_eq!(
        h.err(&sign(&without(claims(), "tid"))).await,
        TokenError::MissingTenant("tid".into())
    );
    let c = with(claims(), "tid", json!(42));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::MissingTenant("tid".into())
    );
}

#[tokio::test]
async fn allowed_tenants_restrict_who_gets_in() {
    let mut r = rules();
    r.allowed_tenants = vec![OTHER_TENANT.into()];
    let h = harness(r).await;
    assert_eq!(h.err(&sign(&claims())).await, TokenError::TenantNotAllowed);
    let c = with(claims(), "tid", json!(OTHER_TENANT));
    let c = with(c, "iss", json!(v2_issuer(OTHER_TENANT)));
    assert_eq!(h.ok(&sign(&c)).await.tenant, OTHER_TENANT);
}

#[tokio::test]
async fn explicit_issuer_with_a_custom_tenant_claim() {
    let mut r = rules();
    r.issuers = vec!["https://idp.example.com".into()];
    r.tenant_claim = "org".into();
    let h = harness(r).await;
    let custom = json!({
        "iss": "https://idp.example.com",
        "aud": AUD,
        "exp": NOW + 600,
        "iat": NOW,
        "org": "acme",
        "oid": "user-17",
        "jti": "jti-1",
    });
    let id = h.ok(&sign(&custom)).await;
    assert_eq!(
        id.tenant, "acme",
        "a non-GUID tenant is fine for an explicit issuer"
    );
    assert_eq!(id.user, "user-17");
    assert_eq!(id.session.anchor, SessionAnchor::TokenId);

    // Entra tokens are not accepted by a validator for another issuer. (The tenant claim is
    // read before the issuer is compared, so a token without it says so first.)
    let c = with(claims(), "org", json!("acme"));
    assert_eq!(h.err(&sign(&c)).await, TokenError::WrongIssuer);
    assert_eq!(
        h.err(&sign(&claims())).await,
        TokenError::MissingTenant("org".into()),
        "the error names the configured claim"
    );
    // The tenant comes from the configured claim only: `tid` does not count.
    let c = with(without(custom.clone(), "org"), "tid", json!(TENANT));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::MissingTenant("org".into())
    );
    // The tenant must still be a safe identifier.
    for org in ["acme corp", "acme\r\nx: 1", "", &"a".repeat(129)] {
        let c = with(custom.clone(), "org", json!(org));
        assert_eq!(
            h.err(&sign(&c)).await,
            TokenError::InvalidTenant("org".into()),
            "org = {org:?}"
        );
    }

    // An explicit issuer template with the tenant placeholder requires a GUID tenant.
    let mut r = rules();
    r.issuers = vec!["https://idp.example.com/{tenantid}".into()];
    r.tenant_claim = "org".into();
    let h = harness(r).await;
    let c = with(custom.clone(), "org", json!(TENANT));
    let c = with(c, "iss", json!(format!("https://idp.example.com/{TENANT}")));
    assert_eq!(h.ok(&sign(&c)).await.tenant, TENANT);
    let c = with(c, "org", json!("acme"));
    assert_eq!(
        h.err(&sign(&c)).await,
        TokenError::InvalidTenant("org".into())
    );
}
