//! `POST /oidc/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0): the identity
//! provider posts a form-encoded `logout_token`; a valid one ends the session it names by
//! `sid`, or every session of its user. Success answers 200, every refusal 400 without detail
//! (the reason is logged, never the token), a store failure 503 so the provider retries.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use grantflow_core::signals::LogoutValidator;
use serde::Deserialize;

use super::AdminState;
use super::signals::{Applied, Signals, apply};

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    logout_token: String,
}

pub(super) async fn logout(
    State(state): State<AdminState>,
    Extension(signals): Extension<Arc<Signals>>,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        tracing::info!(reason = "malformed_request", "back-channel logout refused");
        return refused();
    };
    let validator = LogoutValidator {
        rules: state.validator.rules(),
        keys: &state.keys,
        audiences: &signals.backchannel_audiences,
        clock: state.clock.as_ref(),
    };
    let signal = match validator.validate(form.logout_token.trim()).await {
        Ok(signal) => signal,
        Err(error) => {
            tracing::info!(reason = error.label(), "back-channel logout refused");
            return refused();
        }
    };
    match apply(&state, &signal.revocation).await {
        Applied::Done => no_store(StatusCode::OK, ""),
        Applied::Replayed | Applied::JtiReused => {
            tracing::info!(reason = "replayed_jti", "back-channel logout refused");
            refused()
        }
        Applied::Unavailable => no_store(StatusCode::SERVICE_UNAVAILABLE, ""),
    }
}

/// 400 with the one error code OpenID Connect names, and nothing about why.
fn refused() -> Response {
    let mut response = no_store(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn no_store(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        body,
    )
        .into_response()
}
