//! Steps 2 and 3 of the request path: validate the bearer token, then ask the store for a
//! decision within its deadline. Anything that cannot be checked is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::session::{AccessRequest, EndReason, Verdict};
use grantflow_core::store::{SessionStore, StoreError};
use grantflow_core::token::{TokenError, TokenValidator};

use crate::activity::Activity;
use crate::metrics::Metrics;
use crate::outcome::{Denial, LockNotice, Outcome};
use crate::request::{Credential, HttpRequest};

/// Decides requests: token, then session.
pub struct Authorizer {
    pub validator: Arc<TokenValidator>,
    pub store: Arc<dyn SessionStore>,
    pub store_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// The per-minute counts of the dashboard's overview.
    pub activity: Arc<Activity>,
}

impl Authorizer {
    // A debug-level span: at the default `info` filter it costs nothing on the hot path
    // (an info span formatted its fields on every check, ≈ 3.5 µs; docs/benchmarks.md).
    #[tracing::instrument(
        name = "authorize",
        level = "debug",
        skip_all,
        fields(tenant, user, outcome)
    )]
    pub async fn authorize(&self, request: &HttpRequest) -> Outcome {
        let started = Instant::now();
        let outcome = self.decide(request).await;
        let span = tracing::Span::current();
        if let Outcome::Allow { identity, .. }
        | Outcome::Deny {
            identity: Some(identity),
            ..
        } = &outcome
        {
            span.record("tenant", identity.tenant.as_str());
            span.record("user", identity.user.as_str());
        }
        span.record("outcome", outcome.label());
        self.metrics
            .observe_check(outcome.label(), started.elapsed());
        self.activity.record(&outcome);
        tracing::debug!("checked");
        outcome
    }

    async fn decide(&self, request: &HttpRequest) -> Outcome {
        let deny = |denial, identity| Outcome::Deny {
            denial,
            identity,
            lock: None,
        };
        let token = match &request.credential {
            Credential::Bearer(token) => token,
            Credential::Missing => return deny(Denial::MissingToken, None),
            Credential::Unsupported => return deny(Denial::InvalidToken, None),
        };
        let identity = match self.validator.validate(token).await {
            Ok(identity) => identity,
            Err(error) => {
                self.metrics.token_rejected(error.label());
                tracing::info!(reason = error.label(), "token refused");
                let denial = match error {
                    TokenError::KeysUnavailable => Denial::Unavailable,
                    _ => Denial::InvalidToken,
                };
                return deny(denial, None);
            }
        };
        let access = AccessRequest {
            identity: identity.clone(),
            client_ip: request.client_ip,
            user_agent: request.user_agent.clone(),
        };
        let verdict = tokio::time::timeout(self.store_timeout, self.store.check(&access))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        match verdict {
            Ok(Verdict::Allow { created, .. }) => Outcome::Allow { identity, created },
            Ok(Verdict::Deny(EndReason::Expired)) => deny(Denial::SessionExpired, Some(identity)),
            Ok(Verdict::Deny(EndReason::Revoked)) => deny(Denial::SessionRevoked, Some(identity)),
            Ok(Verdict::Deny(EndReason::Reauthenticate)) => {
                deny(Denial::SignInAgain, Some(identity))
            }
            Ok(Verdict::TooManySessions) => deny(Denial::TooManySessions, Some(identity)),
            Ok(Verdict::Locked { until, message }) => Outcome::Deny {
                denial: Denial::Locked,
                identity: Some(identity),
                lock: Some(LockNotice { until, message }),
            },
            Ok(Verdict::Deny(EndReason::Idle)) => {
                deny(Denial::SessionIdle { idle_seconds: None }, Some(identity))
            }
            Ok(Verdict::Idle { idle_timeout }) => deny(
                Denial::SessionIdle {
                    idle_seconds: idle_timeout.map(|idle| idle.as_secs()),
                },
                Some(identity),
            ),
            Ok(Verdict::SessionLimit { limit }) => {
                deny(Denial::SessionLimit { limit }, Some(identity))
            }
            Err(error) => {
                // Fail closed: a store that cannot answer never lets a request through.
                self.metrics.store_failed(error.label());
                tracing::warn!(%error, "session store failed; refusing");
                deny(Denial::Unavailable, Some(identity))
            }
        }
    }
}
