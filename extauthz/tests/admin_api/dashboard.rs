//! The dashboard: strict security headers and no inline script, and development mode's
//! sign-in with the built-in issuer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use grantflow_core::clock::ManualClock;
use grantflow_core::decision::Limits;
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::store::MemoryStore;
use grantflow_core::token::{TokenRules, TokenValidator};
use grantflow_extauthz::admin::{self, AdminState};
use grantflow_extauthz::config::{
    AdminSettings, DEFAULT_ADMIN_ROLE, DEV_AUDIENCE, DEV_TENANT, DashboardSignIn,
};
use grantflow_extauthz::dev::DevIssuer;
use grantflow_extauthz::metrics::Metrics;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{START, harness_with, read_json};

/// Whether any tag in `html` has an attribute starting with `on` (an inline event handler).
fn has_inline_handler(html: &str) -> bool {
    html.split('<').skip(1).any(|tag| {
        let tag = tag.split('>').next().unwrap_or("");
        tag.split_whitespace()
            .skip(1)
            .any(|attr| attr.to_ascii_lowercase().starts_with("on"))
    })
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_security_headers_and_no_inline_script() {
    let h = harness_with(Some(DashboardSignIn {
        authority: "https://login.microsoftonline.com/organizations/v2.0".into(),
        authority_origin: "https://login.microsoftonline.com".into(),
        client_id: "dashboard-client".into(),
        scope: "openid profile api://grantflow-test/.default".into(),
    }));
    let redirect = h.call("GET", "/admin", None, None, &[]).await;
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/admin/");

    for (path, content_type) in [
        ("/admin/", "text/html; charset=utf-8"),
        ("/admin/app.js", "text/javascript; charset=utf-8"),
        ("/admin/app.css", "text/css; charset=utf-8"),
        ("/admin/favicon.svg", "image/svg+xml"),
        ("/admin/config.json", "application/json"),
        ("/api/v1/openapi.json", "application/json"),
        ("/api/v1/me", "application/problem+json"),
    ] {
        let response = h.call("GET", path, None, None, &[]).await;
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' https://login.microsoftonline.com;"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers.get("set-cookie").is_none());
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    let response = h.call("GET", "/api/v1/me", None, None, &[]).await;
    assert_eq!(response.headers()["cache-control"], "no-store");

    let html = h.call("GET", "/admin/", None, None, &[]).await.into_body();
    let html = axum::body::to_bytes(html, 1 << 20).await.unwrap();
    let html = std::str::from_utf8(&html).unwrap();
    // No inline script, handler or style; nothing from another origin.
    let module = r#"<script type="module" src="/admin/app.js"></script>"#;
    assert_eq!(html.matches("<script").count(), 1);
    assert_eq!(html.matches(module).count(), 1);
    assert!(!html.contains(" style=") && !html.contains("<style"));
    assert!(
        !has_inline_handler(html),
        "inline event handler in index.html"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));

    let (_, config) = h.get("/admin/config.json", None).await;
    assert_eq!(config["signIn"]["clientId"], "dashboard-client");
    assert_eq!(
        config["signIn"]["authority"],
        "https://login.microsoftonline.com/organizations/v2.0"
    );
    assert_eq!(config["devSignIn"], false);
    assert_eq!(config["adminRole"], DEFAULT_ADMIN_ROLE);
}

#[tokio::test]
async fn development_mode_signs_the_dashboard_in_with_the_built_in_issuer() {
    let dev = Arc::new(DevIssuer::generate());
    let clock = ManualClock::new(START);
    let keys = Arc::new(KeySet::new(
        StaticJwks::new(dev.jwks()),
        Duration::from_secs(1),
    ));
    let validator = Arc::new(TokenValidator::new(
        TokenRules::entra(vec![DEV_AUDIENCE.into()]),
        keys.clone(),
        Arc::new(clock.clone()),
    ));
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let app = admin::router(AdminState {
        store,
        keys,
        validator,
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_millis(50),
        clock: Arc::new(clock.clone()),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in: None,
        }),
        dev: Some(dev),
        activity: Arc::new(grantflow_extauthz::activity::Activity::new(Arc::new(clock))),
    });
    let get = |uri: &str, token: Option<String>| {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {}", token.trim()));
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let text = |response: Response<Body>| async move {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };

    let (status, config) = read_json(get("/admin/config.json", None).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["devSignIn"], true);
    assert_eq!(config["signIn"], Value::Null);

    // The dashboard's development sign-in: an admin token from /dev/token.
    let admin = text(get("/dev/token?admin=true&user=admin", None).await.unwrap()).await;
    let (status, me) = read_json(get("/api/v1/me", Some(admin)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["tenant"], DEV_TENANT);
    assert_eq!(me["roles"], json!([DEFAULT_ADMIN_ROLE]));
    let user = text(get("/dev/token?user=bob", None).await.unwrap()).await;
    let (status, _) = read_json(get("/api/v1/me", Some(user)).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another tenant: `?tenant=<GUID>`; anything else is refused with a clear message.
    let other = "7d3c1e52-9a4b-4c1d-8e2f-0123456789ab";
    let admin = get(
        &format!("/dev/token?admin=true&user=admin&tenant={other}"),
        None,
    );
    let admin = text(admin.await.unwrap()).await;
    let (status, me) = read_json(get("/api/v1/me", Some(admin)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["tenant"], other);
    let (status, problem) = read_json(get("/dev/token?tenant=contoso", None).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("tenant must be a GUID")),
        "{problem}"
    );
}
