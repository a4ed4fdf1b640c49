//! API errors as RFC 9457 `application/problem+json` documents. The text is fixed per kind
//! or written by the handler for the administrator; internal error text never reaches it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

const PROBLEM_BASE: &str = "https://grantflow.io/problems/";

/// One API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// The last part of the problem type URI, e.g. `not-found`.
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Sign-in required",
            detail.into(),
        )
    }

    pub fn forbidden(role: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not-an-administrator",
            "Not a session administrator",
            format!("This needs the `{role}` app role in your tenant."),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail.into(),
        )
    }

    pub fn conflict(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, title, detail.into())
    }

    /// The `Idempotency-Key` was used before for another request: nothing was changed.
    pub fn idempotency_key_mismatch() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-mismatch",
            "Idempotency key already used for another request",
            "This Idempotency-Key was already used, within the last 24 hours, for a different \
             request (another target, lock or reason). Nothing was changed. Repeat the first \
             request exactly to get its answer, or send a new key for a new request."
                .into(),
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Session store unavailable",
            "The session store did not answer. Nothing can be confirmed right now; try again \
             in a moment (a revocation that timed out may still have been applied — check the \
             audit trail)."
                .into(),
        )
    }

    /// A change the store's primary has, which its replicas did not confirm in time.
    pub fn not_replicated() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-not-replicated",
            "Change not confirmed by the store's replicas",
            "The change is in effect, but the session store's replicas did not confirm it in \
             time, so it could be lost if the store fails over now. The audit trail has the \
             record; check the store's replication before relying on it."
                .into(),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("{PROBLEM_BASE}{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}
