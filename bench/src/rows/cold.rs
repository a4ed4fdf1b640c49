//! The `cold` row: every request carries a token never seen before, naming a session never
//! seen before, so each check verifies an RS256 signature in full and creates the session in
//! the store. On the memory store, the embedded store (when measured) and Redis, each in a
//! fresh `grantflow-extauthz`; compared with the floor (goal: server CPU ≤ 2× the floor's) and
//! with the warm run of the same store in the main table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource, micros_per};
use crate::load::{Measured, check_request, closed_loop, connect};
use crate::measure::StoreRun;
use crate::redis_info::{command_delta, command_stats_of};
use crate::settings::Plan;

use super::cluster::{
    describe_commands, describe_not_allowed, finite, ratio, seconds, server_cpu, strip_nulls,
    table_header,
};
use super::traffic::{RunningStore, on_each_store};
use super::{Context, Section, verdict};

/// The goal: cold server CPU per check at most this many times the floor's.
const GOAL_RATIO: f64 = 2.0;
/// Cold checks measured per store, at most (the loop also stops after `plan.seconds`): about
/// 8 s of cold checks at the few thousand per second a 2-core machine manages, without making
/// the minting (one RS256 signature each) dominate the row.
const TOKENS_FULL: usize = 20_000;
/// The same in the short mode (`BENCH_SECONDS` ≤ 2), where the row has a few seconds.
const TOKENS_SHORT: usize = 2_000;

/// Tokens measured and tokens used first as a warm-up (also each once, not measured).
fn sizes(plan: &Plan) -> (usize, usize) {
    let measured = if plan.short {
        TOKENS_SHORT
    } else {
        TOKENS_FULL
    };
    (measured, (measured / 10).max(100))
}

/// The cold run of one store.
struct ColdRun {
    store: &'static str,
    tokens: usize,
    warmup_tokens: usize,
    /// Tokens minted per second by `/dev/token` (before measuring).
    mint_per_s: f64,
    measured: Measured,
    /// Redis commands in the measured loop: (name, calls, µs inside Redis per call).
    commands: Vec<(String, u64, f64)>,
}

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let runs: Vec<ColdRun> = on_each_store(context, "cold", cold_run)
        .await?
        .into_iter()
        .map(|(_, run)| run)
        .collect();
    Ok(section(context, &runs))
}

/// The cold run on `store`'s fresh server (stopped by the caller, also on an error).
async fn cold_run(plan: &Plan, store: &RunningStore) -> Result<ColdRun, BoxError> {
    let (count, warmup) = sizes(plan);
    let server = &store.server;
    // Minting signs RS256 inside the server: all of it before the CPU is sampled.
    let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get());
    let minting = Instant::now();
    let run = format!("cold-{}", store.run);
    let tokens = server
        .tokens_in_flight(warmup + count, &run, in_flight)
        .await?;
    let mint_per_s = tokens.len() as f64 / minting.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "  {}: {} tokens minted ({mint_per_s:.0}/s)",
        store.kind.name(),
        tokens.len()
    );
    let requests: Vec<CheckRequest> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| check_request(token, i))
        .collect();
    let mut requests = requests.into_iter();
    let warmup_requests: Arc<Vec<CheckRequest>> =
        Arc::new(requests.by_ref().take(warmup).collect());
    let measured_requests: Arc<Vec<CheckRequest>> = Arc::new(requests.collect());
    let clients = connect(server.grpc, plan.connections).await?;
    let limit = Duration::from_secs_f64(plan.seconds);

    // Connections, the store (Redis script loaded) and the allocator warmed by cold checks.
    // Each loop sends every one of its requests once: at most as many calls as requests.
    let warm = closed_loop(
        &clients,
        &warmup_requests,
        plan.concurrency,
        limit,
        warmup_requests.len() as u64,
    )
    .await;
    if warm.allowed == 0 {
        return Err(format!(
            "{}: no cold check was allowed in the warm-up ({} calls); see {}",
            store.kind.name(),
            warm.calls,
            server.log.display()
        )
        .into());
    }

    let ports: Vec<u16> = store.redis_port().into_iter().collect();
    let commands_before = (!ports.is_empty()).then(|| command_stats_of(&ports));
    let source = CpuSource::Process(server.pid);
    let before = CpuSample::take(source, ports.iter().copied());
    let mut measured = closed_loop(
        &clients,
        &measured_requests,
        plan.concurrency,
        limit,
        measured_requests.len() as u64,
    )
    .await;
    let after = CpuSample::take(source, ports.iter().copied());
    measured.cpu = after.since(&before);
    let commands = match commands_before {
        Some(before) => command_delta(&before, &command_stats_of(&ports)),
        None => Vec::new(),
    };
    eprintln!(
        "  {} cold: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, server {:.1} µs CPU/check, {} of {} allowed",
        store.kind.name(),
        measured.rate(),
        measured.quantile_ms(0.5),
        measured.quantile_ms(0.99),
        server_cpu(&measured),
        measured.allowed,
        measured.calls
    );
    drop(clients);
    Ok(ColdRun {
        store: store.kind.name(),
        tokens: count,
        warmup_tokens: warmup,
        mint_per_s,
        measured,
        commands,
    })
}

fn section(context: &Context<'_>, runs: &[ColdRun]) -> Section {
    let plan = context.plan;
    let floor = context.floor;
    let floor_cpu = server_cpu(&floor.closed);
    let (count, warmup) = sizes(plan);

    let mut markdown = String::from("### Cold path: a new token and session every request\n\n");
    markdown.push_str(&format!(
        "Each store in a fresh extauthz: {} tokens of distinct users, each naming a session \
         never seen before, minted from `/dev/token` before anything is measured; {warmup} \
         of them are sent first (not measured), then a closed loop of {} calls in flight sends \
         each of the other {count} exactly once (at most {} s): every check verifies an RS256 \
         signature in full and creates its session. CPU per check as in the main table; warm \
         is the main table's closed loop of the same store (64 sessions, cached). Goal: cold \
         server CPU ≤ {GOAL_RATIO}× the floor's ({floor_cpu:.1} µs).\n\n",
        count + warmup,
        plan.concurrency,
        seconds(plan.seconds),
    ));
    markdown.push_str(&table_header(&[
        "gRPC Check, cold".to_string(),
        "checks/s cold (warm)".into(),
        "p50 / p99 ms cold (warm)".into(),
        "server CPU µs/check cold (warm)".into(),
        "cold × floor".into(),
        "cold ÷ warm".into(),
        "Redis CPU µs/check cold (warm)".into(),
        "Redis commands per cold check, µs each".into(),
        "not allowed".into(),
        format!("goal: server CPU ≤ {GOAL_RATIO}× floor"),
    ]));
    markdown.push_str(&format!(
        "| no-op server (floor) | {:.0} | {:.2} / {:.2} | {floor_cpu:.1} | 1.00× | – | – | – | {} | – |\n",
        floor.closed.rate(),
        floor.closed.quantile_ms(0.5),
        floor.closed.quantile_ms(0.99),
        describe_not_allowed(&[&floor.closed]),
    ));

    let mut figures = Map::new();
    figures.insert("floor_server_cpu_us".into(), json!(floor_cpu));
    figures.insert("server_cpu_goal_ratio".into(), json!(GOAL_RATIO));
    for run in runs {
        let cold = &run.measured;
        let warm = context.run_of(run.store);
        let cold_cpu = server_cpu(cold);
        let warm_cpu = warm.map(|w| server_cpu(&w.closed));
        let to_floor = ratio(cold_cpu, floor_cpu);
        let to_warm = warm_cpu.map_or(f64::NAN, |w| ratio(cold_cpu, w));
        let redis_cpu = |m: &Measured| m.cpu.redis.map(|s| micros_per(s, m.calls));
        let in_brackets =
            |value: Option<String>| value.map_or(String::new(), |v| format!(" ({v})"));
        let cells = [
            format!("extauthz, {} store", run.store),
            format!(
                "{:.0}{}",
                cold.rate(),
                in_brackets(warm.map(|w| format!("{:.0}", w.closed.rate())))
            ),
            format!(
                "{:.2} / {:.2}{}",
                cold.quantile_ms(0.5),
                cold.quantile_ms(0.99),
                in_brackets(warm.map(|w| format!(
                    "{:.2} / {:.2}",
                    w.closed.quantile_ms(0.5),
                    w.closed.quantile_ms(0.99)
                )))
            ),
            format!(
                "**{cold_cpu:.1}**{}",
                in_brackets(warm_cpu.map(|w| format!("{w:.1}")))
            ),
            format!("{to_floor:.2}×"),
            if to_warm.is_finite() {
                format!("{to_warm:.2}×")
            } else {
                "–".into()
            },
            redis_cpu(cold).map_or("–".into(), |c| {
                format!(
                    "{c:.1}{}",
                    in_brackets(
                        warm.and_then(|w| redis_cpu(&w.closed))
                            .map(|w| format!("{w:.1}"))
                    )
                )
            }),
            describe_commands(&run.commands, cold.calls),
            describe_not_allowed(&[cold]),
            verdict(to_floor, GOAL_RATIO, true).to_string(),
        ];
        markdown.push_str(&format!("| {} |\n", cells.join(" | ")));
        figures.insert(
            run.store.into(),
            store_figures(run, to_floor, warm, warm_cpu, to_warm),
        );
    }
    Section {
        markdown,
        json: strip_nulls(Value::Object(figures)),
    }
}

fn store_figures(
    run: &ColdRun,
    to_floor: f64,
    warm: Option<&StoreRun>,
    warm_cpu: Option<f64>,
    to_warm: f64,
) -> Value {
    let cold = &run.measured;
    json!({
        "checks_per_s": cold.rate(),
        "p50_ms": cold.quantile_ms(0.5),
        "p99_ms": cold.quantile_ms(0.99),
        "p999_ms": cold.quantile_ms(0.999),
        "server_cpu_us": server_cpu(cold),
        "redis_cpu_us": cold.cpu.redis.map(|s| micros_per(s, cold.calls)),
        "client_cpu_us": micros_per(cold.cpu.client, cold.calls),
        "machine_busy_cores": cold.cpu.machine_busy / cold.elapsed.as_secs_f64().max(1e-9),
        "redis_commands": commands(&run.commands, cold.calls),
        "calls": cold.calls,
        "allowed": cold.allowed,
        "not_allowed": cold.denied.values().sum::<u64>(),
        "failed": cold.failed,
        "elapsed_s": cold.elapsed.as_secs_f64(),
        "tokens": run.tokens,
        "warmup_tokens": run.warmup_tokens,
        "mint_per_s": run.mint_per_s,
        "server_cpu_ratio_to_floor": finite(to_floor),
        "server_cpu_goal": verdict(to_floor, GOAL_RATIO, true),
        "warm_checks_per_s": warm.map(|w| w.closed.rate()),
        "warm_server_cpu_us": warm_cpu,
        "server_cpu_ratio_to_warm": finite(to_warm),
    })
}

/// Redis commands per check: `{ "evalsha": { "per_call": 1.0, "usec_each": 30.2 } }`; `null`
/// (so absent) without Redis.
fn commands(delta: &[(String, u64, f64)], calls: u64) -> Value {
    if delta.is_empty() {
        return Value::Null;
    }
    delta
        .iter()
        .map(|(name, n, usec)| {
            (
                name.clone(),
                json!({ "per_call": *n as f64 / calls.max(1) as f64, "usec_each": usec }),
            )
        })
        .collect::<Map<String, Value>>()
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::load::Answer;

    #[test]
    fn tallies_count_every_answer_and_merge() {
        let mut a = Measured::empty();
        a.note(Answer::Allowed, 100);
        a.note(Answer::Denied(401), 200);
        let mut b = Measured::empty();
        b.note(Answer::Failed, 5_000_000);
        b.note(Answer::Denied(401), 300);
        a.merge(b);
        a.elapsed = Duration::from_secs(2);
        let measured = a;
        assert_eq!(
            (measured.calls, measured.allowed, measured.failed),
            (4, 1, 1)
        );
        assert_eq!(measured.denied, HashMap::from([(401, 2)]));
        assert_eq!(measured.rate(), 2.0);
        assert_eq!(measured.latency.len(), 4);
    }

    #[test]
    fn the_short_mode_measures_fewer_tokens() {
        use clap::Parser;

        use crate::settings::Settings;

        let plan = |seconds: &str| {
            Plan::new(&Settings::parse_from([
                "bench",
                "--seconds",
                seconds,
                "--envoy",
                "0",
            ]))
            .unwrap()
        };
        assert_eq!(sizes(&plan("2")), (TOKENS_SHORT, 200));
        assert_eq!(sizes(&plan("8")), (TOKENS_FULL, 2_000));
    }

    #[test]
    fn commands_are_per_check_and_absent_without_redis() {
        assert_eq!(
            commands(&[("evalsha".into(), 300, 30.0)], 100),
            json!({ "evalsha": { "per_call": 3.0, "usec_each": 30.0 } })
        );
        assert_eq!(commands(&[], 100), Value::Null);
    }
}
