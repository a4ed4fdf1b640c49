//! Valid tokens: Entra v1 and v2 tokens become identities, display names and audiences.

use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::token::TokenError;
use serde_json::json;

use crate::harness::{
    AUD, NOW, SID, TENANT, USER, claims, harness, rules, sign, v2_issuer, with, without,
};

#[tokio::test]
async fn entra_v1_token_becomes_an_identity() {
    let h = harness(rules()).await;
    let id = h.ok(&sign(&claims())).await;
    assert_eq!(
        *id,
        Identity {
            tenant: TENANT.into(),
            user: USER.into(),
            display_name: Some("ada@contoso.example".into()),
            session: SessionKey {
                id: SID.into(),
                anchor: SessionAnchor::Sid
            },
            auth_time: Some(NOW - 300),
            issued_at: Some(NOW - 10),
            not_before: Some(NOW - 10),
            expires_at: NOW + 3600,
            roles: vec!["GrantFlow.SessionAdmin".into(), "Reader".into()],
        }
    );
}

#[tokio::test]
async fn entra_v2_token_becomes_an_identity() {
    let h = harness(rules()).await;
    let c = with(claims(), "iss", json!(v2_issuer(TENANT)));
    let c = with(c, "ver", json!("2.0"));
    let c = with(c, "scp", json!("access_as_user"));
    let c = without(c, "auth_time");
    let id = h.ok(&sign(&c)).await;
    assert_eq!(id.tenant, TENANT);
    assert_eq!(id.user, USER);
    assert_eq!(
        id.session,
        SessionKey {
            id: SID.into(),
            anchor: SessionAnchor::Sid
        }
    );
    assert_eq!(id.display_name.as_deref(), Some("ada@contoso.example"));
    assert_eq!(id.roles, ["GrantFlow.SessionAdmin", "Reader"]);
    assert_eq!(id.auth_time, None);
    assert_eq!(id.issued_at, Some(NOW - 10));
}

#[tokio::test]
async fn display_name_falls_back_to_upn_then_name_and_drops_control_characters() {
    let h = harness(rules()).await;
    let c = without(claims(), "preferred_username");
    let c = with(c, "upn", json!("ada@upn.example"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("ada@upn.example")
    );
    let c = without(c, "upn");
    let c = with(c, "name", json!("Ada\r\nX-Evil: 1\u{7}"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("Ada  X-Evil: 1")
    );
    let c = without(c, "name");
    assert_eq!(h.ok(&sign(&c)).await.display_name, None);
    let c = without(c, "roles");
    assert!(h.ok(&sign(&c)).await.roles.is_empty());
}

#[tokio::test]
async fn display_name_loses_format_characters() {
    let h = harness(rules()).await;
    // A right-to-left override makes "moc.live@nimda" read "admin@evil.com"; zero-width
    // characters make two names that look the same differ (or one hide inside another).
    let c = with(
        claims(),
        "preferred_username",
        json!("\u{202e}moc.live@nimda\u{202c}\u{200b}\u{200d}\u{2066}x\u{2069}\u{feff}"),
    );
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("moc.live@nimdax")
    );
    // Nothing visible left: the next name claim is used.
    let c = with(
        claims(),
        "preferred_username",
        json!("\u{200b}\u{202e} \u{0}"),
    );
    let c = with(c, "upn", json!("ada@upn.example"));
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("ada@upn.example")
    );
    let c = without(c, "upn");
    assert_eq!(
        h.ok(&sign(&c)).await.display_name.as_deref(),
        Some("Ada Lovelace")
    );
    let c = without(c, "name");
    assert_eq!(h.ok(&sign(&c)).await.display_name, None);
}

#[tokio::test]
async fn audience_as_string_or_array() {
    let h = harness(rules()).await;
    h.ok(&sign(&with(claims(), "aud", json!(AUD)))).await;
    h.ok(&sign(&with(claims(), "aud", json!(["api://other", AUD]))))
        .await;
    assert_eq!(
        h.err(&sign(&with(
            claims(),
            "aud",
            json!(["api://other", "api://third"])
        )))
        .await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "aud", json!("api://other"))))
            .await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&with(claims(), "aud", json!([])))).await,
        TokenError::WrongAudience
    );
    assert_eq!(
        h.err(&sign(&without(claims(), "aud"))).await,
        TokenError::WrongAudience
    );
    // Several accepted audiences: any one of them will do.
    let mut r = rules();
    r.audiences.push("api://second".into());
    let h = harness(r).await;
    h.ok(&sign(&with(claims(), "aud", json!("api://second"))))
        .await;
}
