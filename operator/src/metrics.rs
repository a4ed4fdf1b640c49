//! Prometheus metrics of the operator. Labels are bounded: controller names, outcomes and
//! error kinds — never an object name, a tenant or error text. Names follow the Prometheus
//! conventions (`grantflow_operator_` prefix, base units in the name, `_total` counters); the
//! chart's dashboard and alerts read them (`docs/operations.md` lists them).

use std::future::Future;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    controller: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    controller: &'static str,
    error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciliations: Family<OutcomeLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    admissions: Family<ResultLabel, Counter>,
    leader: Gauge,
    revocation_write_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("grantflow_operator");
        let reconciliations = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations finished, by controller and outcome (the condition reason)",
            reconciliations.clone(),
        );
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed and will be retried, by controller and error kind",
            errors.clone(),
        );
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took",
            durations.clone(),
        );
        let admissions = Family::<ResultLabel, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered by the webhook, by result",
            admissions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and runs the controllers",
            leader.clone(),
        );
        let revocation_write_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 15));
        registry.register(
            "revocation_write_duration_seconds",
            "Time one Revocation's write took in the session store (whatever its result, the \
             store deadline included)",
            revocation_write_seconds.clone(),
        );
        Self {
            registry,
            reconciliations,
            errors,
            durations,
            admissions,
            leader,
            revocation_write_seconds,
        }
    }
}

impl Metrics {
    /// One reconciliation ended with `outcome` (a condition reason, or what it did).
    pub fn outcome(&self, controller: &'static str, outcome: &'static str) {
        self.reconciliations
            .get_or_create(&OutcomeLabel {
                controller,
                outcome,
            })
            .inc();
    }

    /// One reconciliation took this long (whatever its result).
    pub fn observe(&self, controller: &'static str, took: Duration) {
        self.durations
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    /// One reconciliation failed and will be retried.
    pub fn failed(&self, controller: &'static str, error: &'static str) {
        self.errors
            .get_or_create(&ErrorLabel { controller, error })
            .inc();
    }

    pub fn admission(&self, result: &'static str) {
        self.admissions.get_or_create(&ResultLabel { result }).inc();
    }

    /// Runs one Revocation's store write and records how long it took, whatever it answered.
    pub async fn time_revocation<T>(&self, write: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = write.await;
        self.revocation_write_seconds
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
