//! Prometheus metrics of the request path, the store and the admin API's rate limit. Labels are
//! bounded: outcomes, refusal reasons, error kinds and write operations — never a tenant, user
//! or error text.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    registry: Registry,
    checks: Family<OutcomeLabel, Counter>,
    check_seconds: Histogram,
    token_rejections: Family<ReasonLabel, Counter>,
    store_errors: Family<ReasonLabel, Counter>,
    store_resets: Gauge,
    admin_writes_rate_limited: Family<OperationLabel, Counter>,
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
        Self {
            registry,
            checks,
            check_seconds,
            token_rejections,
            store_errors,
            store_resets,
            admin_writes_rate_limited,
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

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
