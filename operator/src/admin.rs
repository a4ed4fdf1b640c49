//! The operator's admin HTTP side: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use grantflow_core::store::SessionStore;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn SessionStore>,
    pub metrics: Arc<Metrics>,
    pub store_timeout: Duration,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready when the session store answers: a replica that cannot reach it could neither apply
/// policies nor revocations. (The webhook needs no store and is served regardless.)
async fn readyz(State(state): State<AdminState>) -> Response {
    let store = tokio::time::timeout(state.store_timeout, state.store.ping()).await;
    if matches!(store, Ok(Ok(()))) {
        (StatusCode::OK, "store: ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store: unavailable\n").into_response()
    }
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
