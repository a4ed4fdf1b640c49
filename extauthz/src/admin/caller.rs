//! Who is calling the admin API: a bearer token validated by the request path's validator,
//! carrying the admin app role, whose own session is live. The tenant is the token's.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use grantflow_core::audit::{Actor, ActorKind, Source};
use grantflow_core::identity::Identity;
use grantflow_core::session::{AccessRequest, EndReason, Verdict};
use grantflow_core::token::TokenError;

use super::problem::Problem;
use super::{ADMIN_STORE_TIMEOUT, AdminState};

/// The header the dashboard sets on its API calls so audit records say `source: dashboard`.
/// It only labels the record: it grants nothing.
pub const CLIENT_HEADER: &str = "x-grantflow-client";

/// An authenticated tenant administrator.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    /// `dashboard` when the dashboard made the call, else `api`.
    pub source: Source,
}

impl Caller {
    /// The caller's tenant: the one every read and write is scoped to.
    pub fn tenant(&self) -> &str {
        &self.identity.tenant
    }

    /// The caller as the actor of an audit record.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::Admin,
            id: self.identity.user.clone(),
            name: self.identity.display_name.clone(),
        }
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let identity = authenticate(parts, state).await?;
        confirm(parts, state, identity).await
    }
}

fn header_value(parts: &Parts, name: header::HeaderName) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The first half of [`Caller`]: a valid bearer token with the admin app role. Touches no
/// store, so a write can be held to its rate limit before the store is asked anything.
pub(super) async fn authenticate(
    parts: &Parts,
    state: &AdminState,
) -> Result<Arc<Identity>, Problem> {
    let Some(token) = bearer(header_value(parts, header::AUTHORIZATION).as_deref()) else {
        return Err(Problem::unauthorized(
            "Send an access token in the Authorization header (Bearer).",
        ));
    };
    let identity = match state.validator.validate(&token).await {
        Ok(identity) => identity,
        Err(TokenError::KeysUnavailable) => return Err(Problem::unavailable()),
        Err(error) => {
            tracing::info!(reason = error.label(), "admin token refused");
            return Err(Problem::unauthorized(
                "The access token is not valid here. Sign in again.",
            ));
        }
    };
    if !identity.roles.iter().any(|role| *role == state.admin.role) {
        tracing::info!(tenant = %identity.tenant, user = %identity.user, "admin API refused: no admin role");
        return Err(Problem::forbidden(&state.admin.role));
    }
    Ok(identity)
}

/// The second half of [`Caller`]: the administrator's own session is live.
pub(super) async fn confirm(
    parts: &Parts,
    state: &AdminState,
    identity: Arc<Identity>,
) -> Result<Caller, Problem> {
    // The admin side is privileged access too: the administrator's own session obeys the
    // tenant's policy and revocations like any other.
    let access = AccessRequest {
        identity: identity.clone(),
        client_ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip()),
        user_agent: header_value(parts, header::USER_AGENT)
            .map(|ua| ua.chars().take(512).collect()),
    };
    let verdict = tokio::time::timeout(ADMIN_STORE_TIMEOUT, state.store.check(&access))
        .await
        .map_err(|_| Problem::unavailable())?
        .map_err(|error| {
            tracing::warn!(%error, "session store failed on an admin request");
            Problem::unavailable()
        })?;
    match verdict {
        Verdict::Allow { .. } => {}
        Verdict::Deny(EndReason::Expired) => {
            return Err(Problem::unauthorized(
                "Your session has expired. Sign in again.",
            ));
        }
        Verdict::Deny(EndReason::Revoked) => {
            return Err(Problem::unauthorized(
                "Your session was ended by an administrator. Sign in again.",
            ));
        }
        Verdict::Deny(EndReason::Reauthenticate) => {
            return Err(Problem::unauthorized(
                "All of your sessions were ended by an administrator. Sign out and sign in \
                 again with your password or security key; a refreshed token is not enough.",
            ));
        }
        Verdict::TooManySessions => return Err(Problem::too_many_sessions()),
        Verdict::Locked { .. } => {
            return Err(Problem::unauthorized(
                "Your access is locked by an administrator.",
            ));
        }
        Verdict::Deny(EndReason::Idle) | Verdict::Idle { .. } => {
            return Err(Problem::unauthorized(
                "Your session ended after a period without activity. Sign in again.",
            ));
        }
        Verdict::SessionLimit { limit } => {
            return Err(Problem::session_limit(limit));
        }
    }
    let source = match header_value(parts, header::HeaderName::from_static(CLIENT_HEADER)) {
        Some(client) if client.eq_ignore_ascii_case("dashboard") => Source::Dashboard,
        _ => Source::Api,
    };
    Ok(Caller { identity, source })
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Option<String> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}
