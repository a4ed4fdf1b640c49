//! The endpoints that end sessions on a signal from outside the tenant's administrators:
//! OpenID Connect back-channel logout ([`super::backchannel`]) and the Shared Signals (CAEP)
//! receiver ([`super::ssf`]): their settings and the one step they share ([`apply`]). The
//! router (`admin::router_with_signals`) routes each only when configured (else the admin fallback
//! answers 404), asks for no admin token (the signed token is the authentication), keeps the
//! API's body limit, and ends sessions through `SessionStore::revoke` with the signal's
//! idempotency key, so a replay is found by the store on every replica.

use std::sync::Arc;

use grantflow_core::jwks::KeySet;
use grantflow_core::revocation::{Revocation, RevocationTarget};
use grantflow_core::signals::Transmitter;
use grantflow_core::store::StoreError;

use super::{ADMIN_STORE_TIMEOUT, AdminState};

/// Where the identity provider posts logout tokens.
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/oidc/backchannel-logout";
/// Where the Shared Signals transmitter pushes SETs (RFC 8935).
pub const SSF_EVENTS_PATH: &str = "/ssf/events";

/// The signal endpoints, as (method, OpenAPI path): documented in the OpenAPI document next
/// to the API's routes, served only when configured.
pub const SIGNAL_ROUTES: &[(&str, &str)] =
    &[("post", BACKCHANNEL_LOGOUT_PATH), ("post", SSF_EVENTS_PATH)];

/// What is configured; the default is both endpoints off.
#[derive(Clone, Default)]
pub struct Signals {
    /// The client ids logout tokens may be addressed to; empty: back-channel logout is off.
    pub backchannel_audiences: Vec<String>,
    /// The Shared Signals transmitter; `None`: the receiver is off.
    pub ssf: Option<SsfReceiver>,
}

/// One Shared Signals transmitter and its keys.
#[derive(Clone)]
pub struct SsfReceiver {
    pub transmitter: Transmitter,
    pub keys: Arc<KeySet>,
}

/// How a signal's revocation went.
pub(super) enum Applied {
    /// Applied now (logged with its audit id).
    Done,
    /// The same issuer and `jti` came before (with the same request: a replay).
    Replayed,
    /// The same issuer and `jti` came before with another request.
    JtiReused,
    /// The store failed or did not answer in time: nothing is known to have ended, the
    /// sender must retry.
    Unavailable,
}

/// Applies a signal's revocation within the admin store deadline.
pub(super) async fn apply(state: &AdminState, revocation: &Revocation) -> Applied {
    let operation = match revocation.target {
        RevocationTarget::Session(_) => "session_revoke",
        RevocationTarget::User { .. } => "user_revoke",
    };
    let write = tokio::time::timeout(ADMIN_STORE_TIMEOUT, state.store.revoke(revocation));
    match state.metrics.time_revocation(operation, write).await {
        Ok(Ok(outcome)) if outcome.replayed => Applied::Replayed,
        Ok(Ok(outcome)) => {
            tracing::info!(
                tenant = %revocation.tenant,
                source = ?revocation.source,
                sessions_revoked = outcome.sessions_revoked,
                audit_id = %outcome.audit_id,
                "signal applied"
            );
            Applied::Done
        }
        Ok(Err(StoreError::IdempotencyKeyReused)) => Applied::JtiReused,
        Ok(Err(error)) => {
            tracing::warn!(%error, source = ?revocation.source, "session store failed on a signal");
            Applied::Unavailable
        }
        Err(_) => {
            tracing::warn!(source = ?revocation.source, "session store timed out on a signal");
            Applied::Unavailable
        }
    }
}
