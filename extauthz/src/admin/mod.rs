//! The admin HTTP side (axum): health, readiness and metrics; the tenant administrators' JSON
//! API under `/api/v1/` and their dashboard under `/admin/`; in development mode, the built-in
//! issuer's token endpoint.
//!
//! ```text
//! browser (/admin/, app.js) ──fetch + Authorization: Bearer──► api:: handlers
//!                                                               │ caller::Caller (token → tenant, role)
//!                                                               ▼
//!                                         SessionStore: sessions, revoke, audit, policy
//! /api/v1/events (SSE) ◄── events:: ◄── SessionStore::subscribe(caller's tenant)
//! ```
//!
//! `api` and `events` show sessions, blocked users and the policy in the shapes of `views`.
//! The API's writes are held to a per-administrator rate limit (`rate_limit`) before the store
//! is touched; reads are not.
//!
//! The caller's tenant is always the validated token's tenant, never a parameter; every
//! response carries the security headers of [`security_headers`].

mod api;
mod backchannel;
mod caller;
mod dashboard;
mod events;
mod problem;
mod rate_limit;
mod signals;
mod ssf;
mod views;

pub use api::{API_ROUTES, OPENAPI_JSON};
pub use caller::{CLIENT_HEADER, Caller};
pub use events::{MAX_STREAMS_PER_ADMIN, STREAM_RETRY_AFTER_SECS};
pub use problem::Problem;
pub use rate_limit::{
    HOUSEKEEPING_INTERVAL, REPLAY_MEMORY, WRITE_BURST, WRITE_OPERATIONS, WRITE_REFILL,
    WriteLimiter, WriteOperation, WriteRequest, Writer,
};
pub use signals::{BACKCHANNEL_LOGOUT_PATH, SIGNAL_ROUTES, SSF_EVENTS_PATH, Signals, SsfReceiver};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use grantflow_core::clock::{Clock, rfc3339};
use grantflow_core::jwks::KeySet;
use grantflow_core::store::{SessionStore, StoreError};
use grantflow_core::token::TokenValidator;

use crate::config::AdminSettings;
use crate::dev::{DevIssuer, DevTokenRequest};
use crate::metrics::Metrics;

/// Deadline of one store call made for the admin API (listing, revoking, policy). Longer than
/// the request path's budget: an administrator waits, a proxy does not.
pub const ADMIN_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a store call within the admin deadline; a failure is a 503 and never detail.
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, Problem> {
    match tokio::time::timeout(ADMIN_STORE_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::IdempotencyKeyReused)) => Err(Problem::idempotency_key_mismatch()),
        Ok(Err(error @ StoreError::NotReplicated { .. })) => {
            tracing::warn!(%error, "session store replicas did not confirm an admin change");
            Err(Problem::not_replicated())
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "session store failed on an admin request");
            Err(Problem::unavailable())
        }
        Err(_) => {
            tracing::warn!("session store timed out on an admin request");
            Err(Problem::unavailable())
        }
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn SessionStore>,
    pub keys: Arc<KeySet>,
    /// The request path's validator: admin tokens are checked by the very same rules.
    pub validator: Arc<TokenValidator>,
    pub metrics: Arc<Metrics>,
    pub store_timeout: Duration,
    pub clock: Arc<dyn Clock>,
    pub admin: Arc<AdminSettings>,
    pub dev: Option<Arc<DevIssuer>>,
    /// The request path's per-minute counts (the overview).
    pub activity: Arc<crate::activity::Activity>,
}

pub fn router(state: AdminState) -> Router {
    router_with_signals(Signals::default(), state)
}

/// [`router`] with the configured signal endpoints (back-channel logout, Shared Signals).
pub fn router_with_signals(signals: Signals, state: AdminState) -> Router {
    let csp = dashboard::content_security_policy(&state.admin);
    // The API's writes are held to a per-administrator budget (see `rate_limit`).
    let writes = Arc::new(WriteLimiter::new(state.clock.clone()));
    // Live event streams are held to a number per administrator (see `events`).
    let streams = Arc::new(events::StreamSlots::default());
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(dashboard::routes())
        .merge(signal_routes(&signals))
        .fallback(problem::no_such_route);
    if state.dev.is_some() {
        router = router.route("/dev/token", get(dev_token));
    }
    router
        .with_state(state)
        .layer(Extension(writes))
        .layer(Extension(streams))
        .layer(Extension(Arc::new(signals)))
        .layer(middleware::from_fn(move |request, next| {
            security_headers(csp.clone(), request, next)
        }))
}

/// The configured endpoints (the handlers find [`Signals`] as an extension).
fn signal_routes(signals: &Signals) -> Router<AdminState> {
    let mut router = Router::new();
    if !signals.backchannel_audiences.is_empty() {
        router = router.route(BACKCHANNEL_LOGOUT_PATH, post(backchannel::logout));
    }
    if signals.ssf.is_some() {
        router = router.route(SSF_EVENTS_PATH, post(ssf::events));
    }
    router.layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
}

/// Headers on every admin response: a strict Content-Security-Policy (scripts, styles and
/// images only from this origin; `connect-src` adds the sign-in authority), no sniffing, no
/// referrer (the sign-in callback URL carries the authorization code), no framing.
async fn security_headers(csp: HeaderValue, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Store resets listed one per line on `/readyz`, at most (a wiped multi-tenant Redis is
/// found tenant by tenant).
const READYZ_RESETS: usize = 20;

/// Ready when the store answers within its deadline and the issuer's keys are loaded. One
/// more line per loss of data the store knows of (its generation start, for the embedded and
/// memory stores): tokens issued before it are refused. Those lines never change the status.
async fn readyz(State(state): State<AdminState>) -> Response {
    let store = tokio::time::timeout(state.store_timeout * 4, state.store.ping()).await;
    let store_ok = matches!(store, Ok(Ok(())));
    let keys_ok = state.keys.is_loaded();
    let mut body = format!(
        "store: {}\nkeys: {}\n",
        if store_ok { "ok" } else { "unavailable" },
        if keys_ok { "loaded" } else { "not loaded" }
    );
    let resets = state.store.resets();
    for reset in resets.iter().take(READYZ_RESETS) {
        let at = rfc3339(reset.lost_at);
        let line = match &reset.tenant {
            None => format!(
                "store generation since {at}: tokens issued before it are refused (sign in again)\n"
            ),
            Some(tenant) => format!(
                "store reset: tenant {tenant} at {at}: tokens issued before it are refused (sign in again)\n"
            ),
        };
        body.push_str(&line);
    }
    if resets.len() > READYZ_RESETS {
        body.push_str(&format!(
            "store reset: {} more not shown\n",
            resets.len() - READYZ_RESETS
        ));
    }
    let status = if store_ok && keys_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let losses = state
        .store
        .resets()
        .iter()
        .filter(|reset| reset.tenant.is_some())
        .count();
    state.metrics.set_store_resets(losses);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn dev_token(
    State(state): State<AdminState>,
    Query(request): Query<DevTokenRequest>,
) -> Response {
    let Some(dev) = &state.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match dev.mint(&request, state.clock.now_secs()) {
        Ok(token) => ([(header::CACHE_CONTROL, "no-store")], format!("{token}\n")).into_response(),
        Err(detail) => Problem::bad_request(detail).into_response(),
    }
}
