//! The `cluster` row: the Redis store on a real local Redis Cluster of three masters (no
//! replicas), measured exactly as the main table measures standalone Redis ([`bench_store`]:
//! fresh tokens, warm-up, closed loop, open loop, CPU of extauthz and of every node, Redis
//! commands summed over the nodes, and through Envoy), next to the main table's standalone
//! Redis run and the floor.

use grantflow_e2e::redis::RedisCluster;
use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::cpu::micros_per;
use crate::envoy::EnvoyRun;
use crate::extauthz::StoreUnderTest;
use crate::json::check_figures;
use crate::load::Measured;
use crate::measure::{StoreRun, bench_store};

use super::{Context, Section, verdict};

/// The goal for the Redis store: server CPU per check at most this many times the
/// floor's.
const GOAL_RATIO: f64 = 1.5;
/// Masters in the cluster (`RedisCluster::start`).
const NODES: usize = 3;

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let plan = context.plan;
    eprintln!("  starting a Redis Cluster of {NODES} masters");
    // `RedisCluster::start` panics when the cluster does not form; in a task of its own that
    // is this row's error (the nodes started are killed as the task unwinds).
    let cluster = tokio::spawn(RedisCluster::start())
        .await
        .map_err(|error| format!("the Redis Cluster did not start: {error}"))?;
    // The short mode leaves Envoy out: the row would not fit its few seconds.
    let mut cluster_plan = plan.clone();
    if plan.short {
        cluster_plan.envoy = None;
    }
    let run = bench_store(
        &cluster_plan,
        context.extauthz,
        StoreUnderTest::RedisCluster(&cluster),
    )
    .await;
    drop(cluster);
    let run = run?;
    Ok(section(context, &run))
}

fn section(context: &Context<'_>, cluster: &StoreRun) -> Section {
    let plan = context.plan;
    let floor = context.floor;
    let standalone = context.run_of("redis");
    let floor_cpu = server_cpu(&floor.closed);
    let ratio_of = |run: &StoreRun| ratio(server_cpu(&run.closed), floor_cpu);
    let through_envoy = cluster.envoy.is_some();

    let mut markdown = String::from("### Redis Cluster (3 masters)\n\n");
    markdown.push_str(&format!(
        "The Redis store on a local Redis Cluster of {NODES} masters without replicas \
         (`--redis-cluster true`, every node a seed), measured exactly as the main table's \
         standalone Redis: {} tokens first seen, {} s warm-up, a closed loop of {} calls in \
         flight for {} s, an open loop at {}/s for {} s{}. Redis CPU and commands are \
         summed over the {NODES} nodes' `INFO cpu` and `INFO commandstats`; the floor and the \
         standalone Redis are the main table's runs. Goal: server CPU ≤ {GOAL_RATIO}× the \
         floor's.\n\n",
        plan.tokens,
        seconds(plan.warmup),
        plan.concurrency,
        seconds(plan.seconds),
        plan.rate,
        seconds(plan.open_seconds),
        if through_envoy {
            ", then wrk through Envoy"
        } else {
            " (Envoy left out)"
        },
    ));
    let mut header = vec![
        "gRPC Check".to_string(),
        "checks/s (closed)".into(),
        format!("p50 / p99 ms (open {}/s)", plan.rate),
        "p50 / p99 ms (closed)".into(),
        "server CPU µs/check".into(),
        "× floor".into(),
        "Redis CPU µs/check".into(),
        "Redis commands per check, µs each".into(),
        "not allowed".into(),
    ];
    if through_envoy {
        header.push("requests/s through Envoy".into());
        header.push("extauthz CPU µs/request through Envoy".into());
    }
    header.push(format!("goal: server CPU ≤ {GOAL_RATIO}× floor"));
    markdown.push_str(&table_header(&header));
    let mut servers = vec![("no-op server (floor)", floor, None)];
    if let Some(standalone) = standalone {
        servers.push((
            "extauthz, Redis standalone (main table)",
            standalone,
            Some(ratio_of(standalone)),
        ));
    }
    servers.push((
        "**extauthz, Redis Cluster (3 masters)**",
        cluster,
        Some(ratio_of(cluster)),
    ));
    for (name, run, ratio) in servers {
        let closed = &run.closed;
        let open = &run.open;
        let mut cells = vec![
            name.to_string(),
            format!("{:.0}", closed.rate()),
            format!(
                "{:.3} / {:.3}",
                open.quantile_ms(0.5),
                open.quantile_ms(0.99)
            ),
            format!(
                "{:.2} / {:.2}",
                closed.quantile_ms(0.5),
                closed.quantile_ms(0.99)
            ),
            format!("{:.1}", server_cpu(closed)),
            ratio.map_or("1.00×".into(), |r| format!("{r:.2}×")),
            closed.cpu.redis.map_or("–".into(), |s| {
                format!("{:.1}", micros_per(s, closed.calls))
            }),
            describe_commands(&run.commands, closed.calls),
            describe_not_allowed(&[closed, open]),
        ];
        if through_envoy {
            cells.push(
                run.envoy
                    .as_ref()
                    .map_or("–".into(), |e| format!("{:.0}", e.rate())),
            );
            cells.push(
                run.envoy
                    .as_ref()
                    .and_then(|e| e.extauthz_cpu.map(|c| micros_per(c, e.requests)))
                    .map_or("–".into(), |c| format!("{c:.1}")),
            );
        }
        cells.push(ratio.map_or("–".into(), |r| verdict(r, GOAL_RATIO, true).to_string()));
        markdown.push_str(&format!("| {} |\n", cells.join(" | ")));
    }

    let mut figures = check_figures(cluster);
    figures.insert("nodes".into(), json!(NODES));
    let cluster_ratio = ratio_of(cluster);
    figures.insert("server_cpu_ratio_to_floor".into(), finite(cluster_ratio));
    figures.insert("server_cpu_goal_ratio".into(), json!(GOAL_RATIO));
    figures.insert(
        "server_cpu_goal".into(),
        json!(verdict(cluster_ratio, GOAL_RATIO, true)),
    );
    figures.insert("floor_server_cpu_us".into(), json!(floor_cpu));
    if let Some(standalone) = standalone {
        figures.insert(
            "standalone_server_cpu_us".into(),
            json!(server_cpu(&standalone.closed)),
        );
        figures.insert(
            "standalone_server_cpu_ratio_to_floor".into(),
            finite(ratio_of(standalone)),
        );
        figures.insert(
            "standalone_redis_cpu_us".into(),
            json!(
                standalone
                    .closed
                    .cpu
                    .redis
                    .map(|s| micros_per(s, standalone.closed.calls))
            ),
        );
    }
    if let Some(envoy) = &cluster.envoy {
        figures.insert("envoy".into(), envoy_figures(envoy));
    }
    Section {
        markdown,
        json: strip_nulls(Value::Object(figures)),
    }
}

/// Server CPU µs per check of a loop.
pub(super) fn server_cpu(measured: &Measured) -> f64 {
    micros_per(measured.cpu.server, measured.calls)
}

/// Seconds as the method states them: `8`, `0.5`.
pub(super) fn seconds(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// `value / base`; NaN (not measured) when the base is not a positive number.
pub(super) fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 && base.is_finite() && value.is_finite() {
        value / base
    } else {
        f64::NAN
    }
}

/// A figure for the JSON report: `null` (so absent) when not a finite number.
pub(super) fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// `| a | b |` and the separator line, the first column left-aligned and the rest right.
pub(super) fn table_header(cells: &[String]) -> String {
    format!(
        "| {} |\n|---|{}\n",
        cells.join(" | "),
        "---:|".repeat(cells.len().saturating_sub(1))
    )
}

/// Redis commands per call, busiest first: `evalsha 1.00 at 10.5 µs`; `–` without Redis.
pub(super) fn describe_commands(delta: &[(String, u64, f64)], calls: u64) -> String {
    if delta.is_empty() {
        return "–".into();
    }
    delta
        .iter()
        .map(|(name, n, usec)| {
            format!(
                "{name} {:.2} at {usec:.1} µs",
                *n as f64 / calls.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers other than "allowed" over some loops: `3× 503, 1× error`, or `0`.
pub(super) fn describe_not_allowed(loops: &[&Measured]) -> String {
    let mut denied: Vec<(i32, u64)> = Vec::new();
    let mut failed = 0;
    for measured in loops {
        failed += measured.failed;
        for (code, n) in &measured.denied {
            match denied.iter_mut().find(|(c, _)| c == code) {
                Some((_, total)) => *total += n,
                None => denied.push((*code, *n)),
            }
        }
    }
    denied.sort_unstable();
    let mut parts: Vec<String> = denied
        .iter()
        .map(|(code, n)| format!("{n}× {code}"))
        .collect();
    if failed > 0 {
        parts.push(format!("{failed}× error"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}

fn envoy_figures(run: &EnvoyRun) -> Value {
    json!({
        "rps": run.rate(),
        "p50_ms": finite(run.p50_ms),
        "p99_ms": finite(run.p99_ms),
        "envoy_cpu_us": micros_per(run.envoy_cpu, run.requests),
        "extauthz_cpu_us": run.extauthz_cpu.map(|c| micros_per(c, run.requests)),
        "redis_cpu_us": run.redis_cpu.map(|c| micros_per(c, run.requests)),
        "requests": run.requests,
        "non_2xx": run.non_2xx,
        "socket_errors": run.socket_errors,
    })
}

/// Drops `null` members (at any depth) so that "not measured" is an absent key.
pub(super) fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;
    use crate::cpu::CpuUse;

    fn measured(denied: &[(i32, u64)], failed: u64) -> Measured {
        Measured {
            calls: 10,
            allowed: 10,
            denied: denied.iter().copied().collect::<HashMap<_, _>>(),
            failed,
            latency: Histogram::new(3).unwrap(),
            elapsed: Duration::from_secs(1),
            cpu: CpuUse::default(),
            send_lag_p99: None,
            dropped: 0,
        }
    }

    #[test]
    fn ratios_need_a_positive_base() {
        assert_eq!(ratio(45.0, 30.0), 1.5);
        assert!(ratio(45.0, 0.0).is_nan());
        assert!(ratio(f64::NAN, 30.0).is_nan());
        assert_eq!(verdict(ratio(45.0, 30.0), GOAL_RATIO, true), "met");
        assert_eq!(verdict(ratio(46.0, 30.0), GOAL_RATIO, true), "missed");
    }

    #[test]
    fn unmeasured_figures_are_absent() {
        let value =
            strip_nulls(json!({ "a": null, "b": { "c": null, "d": 1 }, "e": finite(f64::NAN) }));
        assert_eq!(value, json!({ "b": { "d": 1 } }));
    }

    #[test]
    fn tables_and_commands_read_well() {
        assert_eq!(
            table_header(&["x".into(), "a".into(), "b".into()]),
            "| x | a | b |\n|---|---:|---:|\n"
        );
        let delta = vec![
            ("evalsha".to_string(), 200, 10.5),
            ("ping".to_string(), 1, 1.0),
        ];
        assert_eq!(
            describe_commands(&delta, 100),
            "evalsha 2.00 at 10.5 µs, ping 0.01 at 1.0 µs"
        );
        assert_eq!(describe_commands(&[], 100), "–");
        assert_eq!(
            (seconds(8.0), seconds(0.5)),
            ("8".to_string(), "0.5".to_string())
        );
    }

    #[test]
    fn answers_not_allowed_are_summed_over_loops() {
        let a = measured(&[(503, 2)], 1);
        let b = measured(&[(503, 1), (401, 4)], 0);
        assert_eq!(describe_not_allowed(&[&a, &b]), "4× 401, 3× 503, 1× error");
        assert_eq!(describe_not_allowed(&[&measured(&[], 0)]), "0");
    }
}
