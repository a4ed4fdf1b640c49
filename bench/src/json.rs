//! The machine-readable report (`--json FILE` / `BENCH_JSON`): every figure of the Markdown
//! tables under a stable key, so runs can be compared by a script (`jq .redis.server_cpu_us`).
//!
//! Keys: one object per server (`noop`, `memory`, `embedded`, `redis`) with the gRPC Check
//! figures, `redis.bytes_per_session` and the rest of the session footprint under
//! `redis.footprint`, and `envoy.<alone|noop|memory|embedded|redis>` with the figures through
//! Envoy. A figure that was not measured (Redis CPU of the memory store, Envoy skipped) is
//! absent, never zero. Units are in the key: `_us` microseconds, `_ms` milliseconds, `_s`
//! seconds, `_per_s` a rate.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::cpu::micros_per;
use crate::envoy::EnvoyRun;
use crate::footprint::Footprint;
use crate::load::Measured;
use crate::measure::StoreRun;
use crate::report::Machine;
use crate::settings::Plan;

/// The key of a server: `no-op` becomes `noop`, the store names stay.
pub fn server_key(store: &str) -> String {
    store.replace('-', "")
}

/// The whole report as one JSON object.
pub fn report(
    plan: &Plan,
    machine: &Machine,
    redis_version: &str,
    runs: &[&StoreRun],
    footprint: &Footprint,
    compact: &Footprint,
    envoy_alone: Option<&EnvoyRun>,
) -> Value {
    let mut root = Map::new();
    root.insert(
        "machine".into(),
        json!({ "cpu": machine.cpu, "cores": machine.cores, "redis_version": redis_version }),
    );
    root.insert(
        "plan".into(),
        json!({
            "seconds": plan.seconds,
            "warmup_s": plan.warmup,
            "concurrency": plan.concurrency,
            "connections": plan.connections,
            "open_rate_per_s": plan.rate,
            "open_seconds": plan.open_seconds,
            "tokens": plan.tokens,
            "sessions": plan.sessions,
            "client_threads": plan.client_threads,
        }),
    );
    let mut envoy = Map::new();
    if let Some(alone) = envoy_alone {
        envoy.insert("alone".into(), envoy_figures(alone));
    }
    for run in runs {
        let mut figures = check_figures(run);
        if run.store == "redis" {
            figures.insert(
                "bytes_per_session".into(),
                json!(footprint.bytes_per_session()),
            );
            figures.insert(
                "footprint".into(),
                json!({
                    "sessions_created": footprint.created,
                    "sessions_failed": footprint.failed,
                    "create_per_s": footprint.created as f64 / footprint.elapsed.as_secs_f64().max(1e-9),
                    "session_encoding": footprint.encoding,
                    "bytes_per_session_listpack_256": compact.bytes_per_session(),
                    "session_encoding_listpack_256": compact.encoding,
                    "create_client_cpu_us": micros_per(footprint.client_cpu, footprint.created as u64),
                    "create_redis_cpu_us": footprint.redis_cpu.map(|s| micros_per(s, footprint.created as u64)),
                    "keys_per_session": footprint.keys_after.saturating_sub(footprint.keys_before) as f64
                        / footprint.created.max(1) as f64,
                    "create_commands": commands(&footprint.commands, footprint.created as u64),
                }),
            );
        }
        if let Some(through) = &run.envoy {
            envoy.insert(server_key(run.store), envoy_figures(through));
        }
        root.insert(server_key(run.store), Value::Object(figures));
    }
    if !envoy.is_empty() {
        root.insert("envoy".into(), Value::Object(envoy));
    }
    strip_nulls(Value::Object(root))
}

/// Writes the report to `path`, pretty-printed.
pub fn write(path: &Path, report: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).expect("a JSON value serializes");
    std::fs::write(path, text + "\n")
}

pub fn check_figures(run: &StoreRun) -> Map<String, Value> {
    let closed = &run.closed;
    let open = &run.open;
    let value = json!({
        "checks_per_s": closed.rate(),
        "closed_p50_ms": closed.quantile_ms(0.5),
        "closed_p99_ms": closed.quantile_ms(0.99),
        "closed_p999_ms": closed.quantile_ms(0.999),
        "open_p50_ms": open.quantile_ms(0.5),
        "open_p99_ms": open.quantile_ms(0.99),
        "open_p999_ms": open.quantile_ms(0.999),
        "server_cpu_us": micros_per(closed.cpu.server, closed.calls),
        "server_cpu_us_open": micros_per(open.cpu.server, open.calls),
        "redis_cpu_us": closed.cpu.redis.map(|s| micros_per(s, closed.calls)),
        "redis_cpu_us_open": open.cpu.redis.map(|s| micros_per(s, open.calls)),
        "client_cpu_us": micros_per(closed.cpu.client, closed.calls),
        "machine_busy_cores": closed.cpu.machine_busy / closed.elapsed.as_secs_f64().max(1e-9),
        "calls_closed": closed.calls,
        "calls_open": open.calls,
        "not_allowed": not_allowed(closed) + not_allowed(open),
        "failed": closed.failed + open.failed,
        "open_dropped": open.dropped,
        "redis_commands": commands(&run.commands, closed.calls),
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

fn envoy_figures(run: &EnvoyRun) -> Value {
    json!({
        "rps": run.rate(),
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "envoy_cpu_us": micros_per(run.envoy_cpu, run.requests),
        "extauthz_cpu_us": run.extauthz_cpu.map(|c| micros_per(c, run.requests)),
        "redis_cpu_us": run.redis_cpu.map(|c| micros_per(c, run.requests)),
        "wrk_cpu_us": run.wrk_cpu.map(|c| micros_per(c, run.requests)),
        "machine_busy_cores": run.machine_busy / run.seconds.max(1e-9),
        "requests": run.requests,
        "non_2xx": run.non_2xx,
        "socket_errors": run.socket_errors,
    })
}

fn not_allowed(measured: &Measured) -> u64 {
    measured.denied.values().sum()
}

/// Redis commands per call: `{ "EVALSHA": { "per_call": 1.0, "usec_each": 10.5 } }`; empty
/// (so absent) when Redis was not involved.
fn commands(delta: &[(String, u64, f64)], per: u64) -> Option<Value> {
    if delta.is_empty() {
        return None;
    }
    let map: Map<String, Value> = delta
        .iter()
        .map(|(name, calls, usec)| {
            (
                name.clone(),
                json!({ "per_call": *calls as f64 / per.max(1) as f64, "usec_each": usec }),
            )
        })
        .collect();
    Some(Value::Object(map))
}

/// Drops `null` members so that "not measured" is an absent key.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_are_stable() {
        assert_eq!(server_key("no-op"), "noop");
        assert_eq!(server_key("memory"), "memory");
        assert_eq!(server_key("redis"), "redis");
        assert_eq!(server_key("embedded"), "embedded");
    }

    #[test]
    fn nulls_are_absent_and_nested_objects_kept() {
        let value = strip_nulls(json!({ "a": null, "b": { "c": null, "d": 1 }, "e": [null] }));
        assert_eq!(value, json!({ "b": { "d": 1 }, "e": [null] }));
    }

    #[test]
    fn commands_are_per_call() {
        let delta = vec![("EVALSHA".to_string(), 200, 10.5)];
        assert_eq!(
            commands(&delta, 100),
            Some(json!({ "EVALSHA": { "per_call": 2.0, "usec_each": 10.5 } }))
        );
        assert_eq!(commands(&[], 100), None);
    }
}
