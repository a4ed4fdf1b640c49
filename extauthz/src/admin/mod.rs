//! The admin HTTP side: health, readiness and metrics (and, in development mode, the built-in
//! issuer's token endpoint).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use grantflow_core::clock::Clock;
use grantflow_core::jwks::KeySet;
use grantflow_core::store::SessionStore;

use crate::dev::{DevIssuer, DevTokenRequest};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn SessionStore>,
    pub keys: Arc<KeySet>,
    pub metrics: Arc<Metrics>,
    pub store_timeout: Duration,
    pub clock: Arc<dyn Clock>,
    pub dev: Option<Arc<DevIssuer>>,
}

pub fn router(state: AdminState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.dev.is_some() {
        router = router.route("/dev/token", get(dev_token));
    }
    router.with_state(state)
}

/// Ready when the store answers within its deadline and the issuer's keys are loaded.
async fn readyz(State(state): State<AdminState>) -> Response {
    let store = tokio::time::timeout(state.store_timeout * 4, state.store.ping()).await;
    let store_ok = matches!(store, Ok(Ok(())));
    let keys_ok = state.keys.is_loaded();
    let body = format!(
        "store: {}\nkeys: {}\n",
        if store_ok { "ok" } else { "unavailable" },
        if keys_ok { "loaded" } else { "not loaded" }
    );
    let status = if store_ok && keys_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
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
    let token = dev.mint(&request, state.clock.now_secs());
    ([(header::CACHE_CONTROL, "no-store")], format!("{token}\n")).into_response()
}
