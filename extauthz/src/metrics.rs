//! Prometheus metrics of the request path. Labels are bounded: outcomes, refusal reasons and
//! error kinds — never a tenant, user or error text.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
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
        Self {
            registry,
            checks,
            check_seconds,
            token_rejections,
            store_errors,
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

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
