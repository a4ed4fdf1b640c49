//! The warm load the `sessions` and `tenants` rows measure a store with ([`warm_load`]: the
//! main tables' [`load`], every token once, a warm-up, the closed loop and the open loop, CPU
//! around each), how long its loops run ([`loops_of`]), what it measured ([`Warm`]) and one
//! load against another ([`Ratios`], the goal).

use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::cpu::micros_per;
use crate::load::{Measured, Target};
use crate::measure::{Loops, load};
use crate::rows::verdict;
use crate::settings::Plan;

/// The goals: at the large size (or with many tenants) at least this share of the
/// throughput, and at most this multiple of the p99s.
pub const THROUGHPUT_GOAL: f64 = 0.9;
pub const P99_GOAL: f64 = 1.1;

/// How long each warm load runs: the main tables' durations ([`Loops::main`]), shortened in
/// the short mode so a row with four loads stays within a few seconds.
pub fn loops_of(plan: &Plan) -> Loops {
    let main = Loops::main(plan);
    if plan.short {
        Loops {
            warmup: main.warmup.min(0.25),
            closed: (main.closed / 4.0).max(0.5),
            open: (main.open / 4.0).max(0.5),
        }
    } else {
        main
    }
}

/// What one warm load measured: the closed loop and the open loop.
pub struct Warm {
    pub closed: Measured,
    pub open: Measured,
    /// First checks tried again after a 503 (not measured; a busy machine's sign).
    pub first_sight_retries: u32,
}

impl Warm {
    pub fn checks_per_s(&self) -> f64 {
        self.closed.rate()
    }

    pub fn closed_p99_ms(&self) -> f64 {
        self.closed.quantile_ms(0.99)
    }

    pub fn open_p99_ms(&self) -> f64 {
        self.open.quantile_ms(0.99)
    }

    pub fn server_cpu_us(&self) -> f64 {
        micros_per(self.closed.cpu.server, self.closed.calls)
    }

    pub fn redis_cpu_us(&self) -> Option<f64> {
        self.closed
            .cpu
            .redis
            .map(|seconds| micros_per(seconds, self.closed.calls))
    }

    /// Answers that were not "allowed", both loops.
    pub fn not_allowed(&self) -> u64 {
        [&self.closed, &self.open]
            .iter()
            .map(|m| m.denied.values().sum::<u64>() + m.failed)
            .sum()
    }

    pub fn json(&self) -> Map<String, Value> {
        let mut figures = Map::new();
        let mut put = |key: &str, value: Value| {
            figures.insert(key.into(), value);
        };
        put("checks_per_s", json!(self.checks_per_s()));
        put("closed_p50_ms", json!(self.closed.quantile_ms(0.5)));
        put("closed_p99_ms", json!(self.closed_p99_ms()));
        put("open_p50_ms", json!(self.open.quantile_ms(0.5)));
        put("open_p99_ms", json!(self.open_p99_ms()));
        put("server_cpu_us", json!(self.server_cpu_us()));
        if let Some(redis) = self.redis_cpu_us() {
            put("redis_cpu_us", json!(redis));
        }
        put("calls_closed", json!(self.closed.calls));
        put("calls_open", json!(self.open.calls));
        put("not_allowed", json!(self.not_allowed()));
        put("open_dropped", json!(self.open.dropped));
        put("first_sight_retries", json!(self.first_sight_retries));
        figures
    }

    /// `| checks/s | closed p99 | open p99 | server CPU | Redis CPU |` cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.0} | {:.2} | {:.3} | {:.1} | {}",
            self.checks_per_s(),
            self.closed_p99_ms(),
            self.open_p99_ms(),
            self.server_cpu_us(),
            self.redis_cpu_us()
                .map_or_else(|| "–".into(), |us| format!("{us:.1}"))
        )
    }
}

/// One load against another (`other / base`): the goal is throughput ≥ [`THROUGHPUT_GOAL`]×
/// and both p99s ≤ [`P99_GOAL`]×.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    pub throughput: f64,
    pub closed_p99: f64,
    pub open_p99: f64,
}

impl Ratios {
    pub fn of(base: &Warm, other: &Warm) -> Ratios {
        Ratios::from_figures(
            (
                base.checks_per_s(),
                base.closed_p99_ms(),
                base.open_p99_ms(),
            ),
            (
                other.checks_per_s(),
                other.closed_p99_ms(),
                other.open_p99_ms(),
            ),
        )
    }

    /// From (checks/s, closed p99, open p99) of each; a base of zero gives a ratio that is not
    /// finite ("not measured").
    pub fn from_figures(base: (f64, f64, f64), other: (f64, f64, f64)) -> Ratios {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratios {
            throughput: ratio(other.0, base.0),
            closed_p99: ratio(other.1, base.1),
            open_p99: ratio(other.2, base.2),
        }
    }

    /// "met" when all three are within the goal, "missed" when one is not, "not measured"
    /// when one could not be computed.
    pub fn verdict(&self) -> &'static str {
        let verdicts = [
            verdict(self.throughput, THROUGHPUT_GOAL, false),
            verdict(self.closed_p99, P99_GOAL, true),
            verdict(self.open_p99, P99_GOAL, true),
        ];
        if verdicts.contains(&"not measured") {
            "not measured"
        } else if verdicts.iter().all(|v| *v == "met") {
            "met"
        } else {
            "missed"
        }
    }

    /// `| throughput | closed p99 | open p99 | goal |` cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.2}× ({}) | {:.2}× ({}) | {:.2}× ({}) | **{}**",
            self.throughput,
            verdict(self.throughput, THROUGHPUT_GOAL, false),
            self.closed_p99,
            verdict(self.closed_p99, P99_GOAL, true),
            self.open_p99,
            verdict(self.open_p99, P99_GOAL, true),
            self.verdict()
        )
    }

    pub fn json(&self) -> Value {
        let finite = |v: f64| v.is_finite().then_some(v);
        let mut figures = Map::new();
        for (key, value) in [
            ("throughput_ratio", finite(self.throughput)),
            ("closed_p99_ratio", finite(self.closed_p99)),
            ("open_p99_ratio", finite(self.open_p99)),
        ] {
            if let Some(value) = value {
                figures.insert(key.into(), json!(value));
            }
        }
        figures.insert("goal".into(), json!(self.verdict()));
        Value::Object(figures)
    }
}

/// The warm load on `target`: [`load`] (every token once, a warm-up, the closed loop and the
/// open loop, with CPU around each loop) as in the main tables, without Envoy.
pub async fn warm_load(plan: &Plan, loops: &Loops, target: &Target<'_>) -> Result<Warm, BoxError> {
    let loaded = load(plan, loops, target).await?;
    let warm = Warm {
        closed: loaded.closed,
        open: loaded.open,
        first_sight_retries: loaded.first_sight_retries,
    };
    eprintln!(
        "  {}: {:.0} checks/s, closed p99 {:.2} ms, open p99 {:.3} ms, server {:.1} µs CPU/check",
        target.name,
        warm.checks_per_s(),
        warm.closed_p99_ms(),
        warm.open_p99_ms(),
        warm.server_cpu_us()
    );
    Ok(warm)
}

/// A sentence on answers that were not "allowed" in the measured loops, when there were any.
pub fn not_allowed_note<'a>(loads: impl IntoIterator<Item = (String, &'a Warm)>) -> String {
    let notes: Vec<String> = loads
        .into_iter()
        .filter(|(_, warm)| warm.not_allowed() > 0)
        .map(|(label, warm)| {
            format!(
                "{label}: {} of {}",
                warm.not_allowed(),
                warm.closed.calls + warm.open.calls
            )
        })
        .collect();
    if notes.is_empty() {
        String::new()
    } else {
        format!(
            "\nAnswers not allowed (a 503 is the 50 ms store deadline overrun): {}.\n",
            notes.join("; ")
        )
    }
}
