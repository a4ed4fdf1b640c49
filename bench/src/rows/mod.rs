//! The rows measured beside the main tables (issue 10, item 3): each its own scenario in its
//! own file, selected with `--rows` / `BENCH_ROWS`, run after the main tables so that it can
//! compare itself with the floor measured there.
//!
//! | row | file | what |
//! |---|---|---|
//! | `cluster` | [`cluster`] | Redis Cluster (3 masters) next to standalone Redis |
//! | `cold` | [`cold`] | a new token and session every request (full RS256 verification) |
//! | `sessions` | [`sessions`] | 1 k vs 1 M live sessions: throughput, p99, bytes per session |
//! | `tenants` | [`tenants`] | 1 vs 1 000 tenants |
//! | `burst` | [`burst`] | a burst of new tokens during steady warm traffic |
//! | `revocations` | [`revocations`] | a revoke every 100 ms during the closed loop |
//! | `envoy-open` | [`envoy_open`] | a fixed request rate through Envoy (open loop over HTTP) |
//!
//! A row returns a [`Section`]: its Markdown (a heading, the method in a sentence or two, a
//! table with the goal marked met or missed) and its figures as JSON under [`Row::key`].

mod burst;
mod cluster;
mod cold;
mod envoy_open;
mod http_load;
mod revocations;
mod sessions;
mod tenants;
mod traffic;

use std::path::Path;

use serde_json::Value;

use crate::BoxError;
use crate::measure::StoreRun;
use crate::settings::{Plan, Row};

/// Measures `row` ([`Row`] names them, in `settings.rs`, where `--rows` chooses them).
pub async fn run(row: Row, context: &Context<'_>) -> Result<Section, BoxError> {
    match row {
        Row::Cluster => cluster::run(context).await,
        Row::Cold => cold::run(context).await,
        Row::Sessions => sessions::run(context).await,
        Row::Tenants => tenants::run(context).await,
        Row::Burst => burst::run(context).await,
        Row::Revocations => revocations::run(context).await,
        Row::EnvoyOpen => envoy_open::run(context).await,
    }
}

/// What a row may use from the main run.
pub struct Context<'a> {
    pub plan: &'a Plan,
    /// The `grantflow-extauthz` binary measured.
    pub extauthz: &'a Path,
    /// The no-op ext_authz server's run (the floor), gRPC Check.
    pub floor: &'a StoreRun,
    /// Every server of the main table (no-op first), each with its run through Envoy when
    /// Envoy was measured.
    pub runs: &'a [&'a StoreRun],
}

impl Context<'_> {
    /// The main table's run of `store` (`no-op`, `memory`, `embedded`, `redis`).
    pub fn run_of(&self, store: &str) -> Option<&StoreRun> {
        self.runs.iter().copied().find(|run| run.store == store)
    }
}

/// What a row measured.
pub struct Section {
    /// Markdown: a `###` heading, the method, a table; goals marked met or missed.
    pub markdown: String,
    /// Every figure of the table, units in the keys as in the rest of the report.
    pub json: Value,
}

/// "met" or "missed" for a ratio against its goal (`at_most`: lower is better).
pub fn verdict(ratio: f64, goal: f64, at_most: bool) -> &'static str {
    if !ratio.is_finite() {
        "not measured"
    } else if (at_most && ratio <= goal) || (!at_most && ratio >= goal) {
        "met"
    } else {
        "missed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(1.1, 1.2, true), "met");
        assert_eq!(verdict(1.3, 1.2, true), "missed");
        assert_eq!(verdict(0.95, 0.9, false), "met");
        assert_eq!(verdict(f64::NAN, 0.9, false), "not measured");
    }

    #[test]
    fn keys_are_distinct() {
        let mut keys: Vec<&str> = Row::ALL.iter().map(|row| row.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), Row::ALL.len());
    }
}
