//! `POST /ssf/events`: Shared Signals push delivery (RFC 8935) of CAEP Security Event Tokens
//! from the configured transmitter. A valid SET answers 202 Accepted (a duplicate `jti` too,
//! without a second revocation or audit record); a refused one 400 with the RFC 8935 error
//! JSON `{"err": .., "description": ..}` (fixed texts, never the token's content); a store
//! failure 503, so the transmitter retries.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use grantflow_core::signals::{SetValidator, SignalError};
use serde_json::json;

use super::AdminState;
use super::signals::{Applied, Signals, apply};

pub(super) async fn events(
    State(state): State<AdminState>,
    Extension(signals): Extension<Arc<Signals>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(receiver) = &signals.ssf else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(token) = body
        .ok()
        .and_then(|body| String::from_utf8(body.to_vec()).ok())
    else {
        return error("invalid_request", "The request body is not a SET.");
    };
    let validator = SetValidator {
        transmitter: &receiver.transmitter,
        keys: &receiver.keys,
        rules: state.validator.rules(),
        clock: state.clock.as_ref(),
    };
    let signal = match validator.validate(token.trim()).await {
        Ok(signal) => signal,
        Err(refusal) => {
            tracing::info!(reason = refusal.label(), "security event refused");
            return refused(&refusal);
        }
    };
    match apply(&state, &signal.revocation).await {
        Applied::Done | Applied::Replayed => accepted(),
        Applied::JtiReused => error(
            "invalid_request",
            "The jti was already used for another event.",
        ),
        Applied::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response()
}

fn refused(refusal: &SignalError) -> Response {
    let code = refusal.set_error_code();
    let description = match code {
        "invalid_key" => "The SET's signature or key is not accepted.",
        "invalid_issuer" => "The SET's issuer is not accepted.",
        "invalid_audience" => "The SET's audience is not accepted.",
        _ => "The SET is not acceptable.",
    };
    error(code, description)
}

/// RFC 8935 §2.3: 400 with `{"err": .., "description": ..}`.
fn error(code: &'static str, description: &'static str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        json!({ "err": code, "description": description }).to_string(),
    )
        .into_response()
}
