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
    /// What a parser said about a bad body or query, kept apart from the fixed wording.
    pub parser: Option<String>,
    /// Whole seconds to wait before trying again (the `Retry-After` header).
    pub retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
            parser: None,
            retry_after: None,
        }
    }

    /// The same problem, with what the parser said in its own `parser` field.
    pub fn with_parser(mut self, parser: impl Into<String>) -> Self {
        let text: String = parser.into().chars().take(300).collect();
        self.parser = Some(text);
        self
    }

    /// No such route.
    pub fn no_such_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "There is nothing at this address. The API is described at /api/v1/openapi.json."
                .into(),
        )
    }

    /// A route that exists, asked with a method it does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "This address does not take that method; the Allow header lists the ones it takes."
                .into(),
        )
    }

    /// Too many writes by this administrator in a short time: nothing was changed. The wait
    /// is only in `Retry-After`, so the wording stays fixed.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many changes",
            "You have made more changes in a short time than this API takes from one \
             administrator. Nothing was changed by this request. Wait the number of seconds in \
             the Retry-After header, then send it again."
                .into(),
        );
        problem.retry_after = Some(retry_after_secs.max(1));
        problem
    }

    /// The administrator's token would start a new session and they already hold the most
    /// sessions the store keeps for one user in one tenant: nothing was stored. No
    /// `Retry-After`: a slot frees only when one of their sessions ends.
    pub fn too_many_sessions() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-sessions",
            "Too many sessions",
            "You already have as many active sessions as one person may hold, so a new one \
             was not started. Sign out of privileged access in another browser or device and \
             try again, or ask another administrator to end your old sessions."
                .into(),
        )
    }

    /// A new session of the administrator refused by the tenant's `maxSessionsPerUser`
    /// (`onLimit: RefuseNew`).
    pub fn session_limit(limit: u32) -> Self {
        let sessions = if limit == 1 { "session" } else { "sessions" };
        Self::new(
            StatusCode::FORBIDDEN,
            "session-limit",
            "Session limit reached",
            format!(
                "You already have {limit} active {sessions}, the most this tenant allows, so a new \
                 one was not started. Sign out of privileged access in another browser or device \
                 and try again, or ask another administrator to end one of your sessions."
            ),
        )
    }

    /// The administrator already holds the most live event streams one administrator may
    /// hold open in this process; one frees when a stream ends (a tab closes).
    pub fn too_many_streams(retry_after_secs: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            "Too many live streams",
            "You already have as many live update streams open as one administrator may. \
             Close a dashboard tab you no longer use, or wait the number of seconds in the \
             Retry-After header and try again."
                .into(),
        );
        problem.retry_after = Some(retry_after_secs.max(1));
        problem
    }

    /// Any other refusal that did not come from a handler (a body too large, say): fixed
    /// wording by status, never the framework's text.
    pub(super) fn of_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::no_such_route(),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "body-too-large",
                "Body too large",
                "The request body is larger than this API takes.".into(),
            ),
            s if s.is_server_error() => Self::new(
                s,
                "internal-error",
                "Internal error",
                "The request could not be completed. Try again in a moment.".into(),
            ),
            s => Self::new(
                s,
                "invalid-request",
                "Invalid request",
                "The request is not one this API takes; see /api/v1/openapi.json.".into(),
            ),
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
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(parser) = self.parser {
            body["parser"] = parser.into();
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

/// The admin router's fallback: unknown addresses answer a problem document.
pub async fn no_such_route() -> Problem {
    Problem::no_such_route()
}

/// Turns every error answer that is not already a problem document (the framework's own 405,
/// 413, extractor rejections) into one with fixed wording, keeping its status and headers
/// (e.g. `Allow`). Successful answers and problem documents pass untouched.
pub async fn errors_as_problems(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let problem = Problem::of_status(status).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}
