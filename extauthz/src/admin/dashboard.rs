//! The dashboard at `/admin/`: static assets compiled into the binary (`extauthz/web/`) and
//! the sign-in settings the page reads at start. The page itself holds no secret: it signs the
//! administrator in with authorization code + PKCE against the configured authority and calls
//! the API with the access token in the `Authorization` header — no cookies, so no CSRF.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use super::AdminState;
use crate::config::AdminSettings;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON_SVG: &str = include_str!("../../web/favicon.svg");
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The page's ES modules (`app.js` imports the others), each served at `/admin/<name>`.
const SCRIPTS: &[(&str, &str)] = &[
    ("/admin/app.js", include_str!("../../web/app.js")),
    ("/admin/api.js", include_str!("../../web/api.js")),
    ("/admin/audit.js", include_str!("../../web/audit.js")),
    ("/admin/blocked.js", include_str!("../../web/blocked.js")),
    ("/admin/live.js", include_str!("../../web/live.js")),
    ("/admin/overview.js", include_str!("../../web/overview.js")),
    ("/admin/policy.js", include_str!("../../web/policy.js")),
    ("/admin/sessions.js", include_str!("../../web/sessions.js")),
    ("/admin/signin.js", include_str!("../../web/signin.js")),
    ("/admin/state.js", include_str!("../../web/state.js")),
    ("/admin/ui.js", include_str!("../../web/ui.js")),
];

pub(super) fn routes() -> Router<AdminState> {
    let mut router = Router::new();
    for &(path, script) in SCRIPTS {
        router = router.route(
            path,
            get(move || async move { asset(script, JAVASCRIPT, "no-cache") }),
        );
    }
    router
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/admin/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8", "no-store") }),
        )
        .route(
            "/admin/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8", "no-cache") }),
        )
        .route(
            "/admin/favicon.svg",
            get(|| async { asset(FAVICON_SVG, "image/svg+xml", "no-cache") }),
        )
        .route("/admin/config.json", get(config))
}

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// What the page needs to sign in. Public: it names the authority and the client id, which
/// any sign-in redirect shows anyway.
async fn config(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let sign_in =
        state.admin.sign_in.as_ref().map(
            |s| json!({ "authority": s.authority, "clientId": s.client_id, "scope": s.scope }),
        );
    Json(json!({
        "signIn": sign_in,
        // Development mode only: the built-in issuer hands out admin tokens at /dev/token.
        "devSignIn": state.dev.is_some() && sign_in.is_none(),
        "adminRole": state.admin.role,
    }))
}

/// The Content-Security-Policy of every admin response: everything from this origin only,
/// no inline script or style; the page may also `fetch` the sign-in authority (discovery
/// document and token endpoint).
pub(super) fn content_security_policy(admin: &AdminSettings) -> HeaderValue {
    let authority = admin
        .sign_in
        .as_ref()
        .map(|s| format!(" {}", s.authority_origin))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src 'self'{authority}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"))
}
