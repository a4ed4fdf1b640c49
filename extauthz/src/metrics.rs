//! Prometheus metrics of the request path, the store, the JWKS refresh, revocation writes and
//! the admin API's rate limit. Labels are bounded: outcomes, refusal reasons, error kinds,
//! results and write operations — never a tenant, user or error text. Names follow the
//! Prometheus conventions (`grantflow_` prefix, base units in the name, `_total` counters);
//! the chart's dashboard and alerts read them (`docs/operations.md` lists them).

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    checks: Family<OutcomeLabel, Counter>,
    check_seconds: Histogram,
    token_rejections: Family<ReasonLabel, Counter>,
    store_errors: Family<ReasonLabel, Counter>,
    store_resets: Gauge,
    admin_writes_rate_limited: Family<OperationLabel, Counter>,
    jwks_refreshes: Family<ResultLabel, Counter>,
    jwks_last_success: Gauge<f64, AtomicU64>,
    revocation_write_seconds: Family<OperationLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("grantflow");
        let checks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "checks",
            "Check requests answered, by outcome",
            checks.clone(),
        );
        let check_seconds = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "check_duration_seconds",
            "Time to decide one Check request",
            check_seconds.clone(),
        );
        let token_rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "token_rejections",
            "Bearer tokens refused, by reason",
            token_rejections.clone(),
        );
        let store_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Session store calls that failed (each refused a request)",
            store_errors.clone(),
        );
        // No label: a tenant label would be bounded per deployment, but /readyz names them.
        let store_resets = Gauge::default();
        registry.register(
            "store_resets",
            "Losses of tenant data the session store found while this process ran (its \
             generation marker gone or changed): tokens issued before each are refused; \
             /readyz lists them",
            store_resets.clone(),
        );
        // Labelled by operation (four writes and `other`), never by tenant or administrator.
        let admin_writes_rate_limited = Family::<OperationLabel, Counter>::default();
        registry.register(
            "admin_writes_rate_limited",
            "Admin API writes refused (429) by the per-administrator rate limit, by operation",
            admin_writes_rate_limited.clone(),
        );
        // The background refresh only (not the refetch on an unknown `kid`): `success` or
        // `failure`; a failure keeps the old keys and is retried within 10 s.
        let jwks_refreshes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Background JWKS refreshes, by result (success, failure)",
            jwks_refreshes.clone(),
        );
        let jwks_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the last successful background JWKS refresh (0: none yet)",
            jwks_last_success.clone(),
        );
        // Labelled by operation (session_revoke, user_revoke): the admin API's revocations.
        let revocation_write_seconds =
            Family::<OperationLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
            });
        registry.register(
            "revocation_write_duration_seconds",
            "Time one revocation write of the admin API took in the session store (whatever \
             its result, the 5 s admin deadline included), by operation",
            revocation_write_seconds.clone(),
        );
        // The closed label sets start at 0, so their series exist (and rates and ratios are
        // defined) before the first event: the chart's alerts and dashboard read them.
        for outcome in Outcome::LABELS {
            checks.get_or_create_owned(&OutcomeLabel { outcome });
        }
        for reason in ["unavailable", "timeout", "malformed"] {
            store_errors.get_or_create_owned(&ReasonLabel { reason });
        }
        for result in ["success", "failure"] {
            jwks_refreshes.get_or_create_owned(&ResultLabel { result });
        }
        for operation in ["session_revoke", "user_revoke"] {
            revocation_write_seconds.get_or_create_owned(&OperationLabel { operation });
        }
        for operation in [
            "session_revoke",
            "user_revoke",
            "user_unblock",
            "policy_update",
            "other",
        ] {
            admin_writes_rate_limited.get_or_create_owned(&OperationLabel { operation });
        }
        Self {
            registry,
            checks,
            check_seconds,
            token_rejections,
            store_errors,
            store_resets,
            admin_writes_rate_limited,
            jwks_refreshes,
            jwks_last_success,
            revocation_write_seconds,
        }
    }
}

impl Metrics {
    pub fn observe_check(&self, outcome: &'static str, took: Duration) {
        self.checks.get_or_create(&OutcomeLabel { outcome }).inc();
        self.check_seconds.observe(took.as_secs_f64());
    }

    pub fn token_rejected(&self, reason: &'static str) {
        self.token_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn store_failed(&self, reason: &'static str) {
        self.store_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The number of data losses the store has found (`SessionStore::resets` with a tenant).
    pub fn set_store_resets(&self, losses: usize) {
        self.store_resets
            .set(i64::try_from(losses).unwrap_or(i64::MAX));
    }

    /// An admin API write refused by the per-administrator rate limit.
    pub fn admin_write_rate_limited(&self, operation: &'static str) {
        self.admin_writes_rate_limited
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// One background JWKS refresh ended (`ok`: the keys were replaced).
    pub fn jwks_refreshed(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_refreshes
            .get_or_create(&ResultLabel { result })
            .inc();
        if ok {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.jwks_last_success.set(now.as_secs_f64());
        }
    }

    /// Runs one revocation write (`operation`: `session_revoke`, `user_revoke`) and records
    /// how long it took, whatever it answered.
    pub async fn time_revocation<T>(
        &self,
        operation: &'static str,
        write: impl Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let answer = write.await;
        self.revocation_write_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
