//! Row `envoy-open`: a fixed request rate through Envoy, open loop over HTTP/1.1 (issue 10,
//! item 3: "at half the floor's saturation: p99 ≤ 1.2× the floor's").
//!
//! wrk (the main table's Envoy runs) is a closed loop: it sends the next request when the last
//! answered, so a slow answer also slows the load and hides in the average. Here requests leave
//! at their scheduled times whatever the answers ([`http_load`](super::http_load): a pacer
//! thread, hyper's HTTP/1.1 client over [`CONNECTIONS`] keep-alive connections opened before,
//! a request finding them all busy waits in a queue of at most [`QUEUE`], more are dropped and
//! counted), and how late each one left against its schedule is recorded; Envoy's admin
//! counters show how many connections were opened while measuring. Each request carries a
//! bearer token of the hot set.
//!
//! The rate is half of what wrk reached through Envoy + the no-op ext_authz server in the main
//! run. Every server gets its own Envoy (`--concurrency 1`) and, for the stores, its own fresh
//! `grantflow-extauthz`: the no-op first, then memory, embedded and a fresh Redis, then (not in
//! the short mode) the no-op again, which shows how far the floor itself moves. Before them
//! (not in the short mode) Envoy alone, without the ext_authz filter, at the same rate: what
//! this client and Envoy take by themselves, so a client that cannot keep up shows (its CPU
//! per request, its send lag).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::cpu::{CpuSource, machine_cpu, micros_per, process_cpu, redis_cpu};
use crate::envoy::EnvoyProcess;
use crate::load::{Answer, call, check_request, connect};
use crate::noop::{NOOP_THREADS, NoopServer};
use crate::settings::{EnvoyTools, Plan};
use crate::{BoxError, USER_AGENT};

use super::http_load::{CONNECTIONS, Load, Outcome, Pool, QUEUE, Requests, quantile_ms};
use super::traffic::{RunningStore, StoreKind};
use super::{Context, Section, verdict};

/// Each store's p99 at most this many times the no-op's, at the same rate.
const GOAL: f64 = 1.2;
/// What each request asks for (Envoy answers 200 itself once ext_authz allows).
const REQUEST_PATH: &str = "/api/orders?page=1";
/// Envoy's counter of downstream connections opened.
const CONNECTIONS_STAT: &str = "http.ingress_http.downstream_cx_total";
/// Tries of each token's first request (over gRPC, then through Envoy) before the row gives up.
const FIRST_TRIES: usize = 3;
/// The highest rate the row runs at (as the main open loop's `--rate`).
const MAX_RATE: f64 = 50_000.0;

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let plan = context.plan;
    let Some(tools) = &plan.envoy else {
        return Ok(skipped(
            "Envoy and wrk were not both there (or BENCH_ENVOY=0), so the floor's saturation \
             through Envoy was not measured",
        ));
    };
    let Some(floor) = context.run_of("no-op").and_then(|run| run.envoy.as_ref()) else {
        return Ok(skipped("the no-op server was not measured through Envoy"));
    };
    let saturation = floor.rate();
    let Some(rate) = half_rate(saturation) else {
        return Ok(skipped(
            "wrk got no answers through Envoy + the no-op server, so there is no rate to halve",
        ));
    };
    let shape = Shape::new(plan, rate);
    let started = Instant::now();
    eprintln!(
        "  {rate}/s through Envoy (half of the floor's {saturation:.0}/s), {:.1} s after {:.2} s \
         warm-up",
        shape.seconds, shape.warmup
    );

    let mut runs = Vec::new();
    if shape.alone {
        runs.push(alone_through_envoy(plan, tools, &shape).await?);
    }
    runs.push(noop_through_envoy(plan, tools, &shape, Role::Floor).await?);
    for kind in StoreKind::for_plan(plan) {
        runs.push(store_through_envoy(plan, context.extauthz, tools, &shape, kind).await?);
    }
    if shape.noop_again {
        runs.push(noop_through_envoy(plan, tools, &shape, Role::Noise).await?);
    }
    eprintln!("  envoy-open took {:.1} s", started.elapsed().as_secs_f64());
    Ok(section(saturation, &shape, &runs))
}

/// The row's Section when it could not run, saying why.
fn skipped(reason: &str) -> Section {
    Section {
        markdown: format!(
            "### Fixed rate through Envoy (open loop over HTTP/1.1)\n\nSkipped: {reason}.\n"
        ),
        json: json!({ "skipped": reason }),
    }
}

/// Half the floor's saturation through Envoy, in whole requests per second; `None` when that
/// was not measured (no answers, or not a number).
fn half_rate(saturation_per_s: f64) -> Option<u32> {
    if !saturation_per_s.is_finite() || saturation_per_s < 2.0 {
        return None;
    }
    Some((saturation_per_s / 2.0).round().clamp(1.0, MAX_RATE) as u32)
}

/// How long and how fast each server is loaded.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    rate: u32,
    /// Measured seconds at `rate`.
    seconds: f64,
    /// Seconds at `rate` first, not measured (connections opened, caches warm).
    warmup: f64,
    /// Measure the no-op again after the stores (not in the short mode).
    noop_again: bool,
    /// Measure Envoy alone first, no ext_authz: what the client and Envoy cost by themselves
    /// at this rate (not in the short mode).
    alone: bool,
    /// Hot tokens cycled through (`plan.tokens`).
    tokens: usize,
}

impl Shape {
    fn new(plan: &Plan, rate: u32) -> Shape {
        if plan.short {
            // Four servers, each with its own Envoy, in the few seconds a row gets.
            Shape {
                rate,
                seconds: plan.open_seconds.min(1.0),
                warmup: 0.25,
                noop_again: false,
                alone: false,
                tokens: plan.tokens,
            }
        } else {
            Shape {
                rate,
                seconds: plan.open_seconds,
                warmup: (plan.warmup / 2.0).clamp(0.25, 1.0),
                noop_again: true,
                alone: true,
                tokens: plan.tokens,
            }
        }
    }
}

/// What a run is there for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Envoy alone, no ext_authz: the client's and Envoy's own share.
    Alone,
    /// The no-op ext_authz server, first: the floor the goal compares with.
    Floor,
    /// A store: its p99 against the floor's is the goal.
    Store,
    /// The no-op again, last: how far the floor moves.
    Noise,
}

/// A server Envoy sends its Check calls to (none: Envoy alone).
struct Server<'a> {
    /// The key of its figures in the JSON.
    key: &'static str,
    label: &'static str,
    role: Role,
    grpc: Option<SocketAddr>,
    cpu: Option<CpuSource>,
    redis_port: Option<u16>,
    tokens: Vec<String>,
    log: Option<&'a Path>,
}

/// What one server measured through Envoy.
struct OpenRun {
    key: &'static str,
    label: &'static str,
    role: Role,
    load: Load,
    cpu: Cpu,
    /// Connections Envoy accepted while measuring (keep-alive: few or none).
    connections_opened: Option<u64>,
}

/// Tokens for the no-op server and Envoy alone: anything goes.
fn any_tokens(plan: &Plan) -> Vec<String> {
    (0..plan.tokens)
        .map(|i| format!("noop-token-{i}"))
        .collect()
}

/// Envoy answering 200 itself, no ext_authz filter: the same client at the same rate.
async fn alone_through_envoy(
    plan: &Plan,
    tools: &EnvoyTools,
    shape: &Shape,
) -> Result<OpenRun, BoxError> {
    let server = Server {
        key: "alone",
        label: "Envoy alone (no ext_authz)",
        role: Role::Alone,
        grpc: None,
        cpu: None,
        redis_port: None,
        tokens: any_tokens(plan),
        log: None,
    };
    eprintln!("  {}", server.label);
    through_envoy_open(tools, shape, &server).await
}

/// The no-op ext_authz server in this process: the floor (`Role::Floor`), or the same again
/// last (`Role::Noise`).
async fn noop_through_envoy(
    plan: &Plan,
    tools: &EnvoyTools,
    shape: &Shape,
    role: Role,
) -> Result<OpenRun, BoxError> {
    let (key, label) = match role {
        Role::Noise => ("noop_again", "no-op again (noise)"),
        _ => ("noop", "no-op"),
    };
    eprintln!("  {label}");
    // Stops when dropped too (its shutdown sender goes).
    let noop = NoopServer::start()?;
    let server = Server {
        key,
        label,
        role,
        grpc: Some(noop.addr),
        cpu: Some(CpuSource::Threads(NOOP_THREADS)),
        redis_port: None,
        tokens: any_tokens(plan),
        log: None,
    };
    let measured = through_envoy_open(tools, shape, &server).await;
    noop.stop();
    measured
}

async fn store_through_envoy(
    plan: &Plan,
    binary: &Path,
    tools: &EnvoyTools,
    shape: &Shape,
    kind: StoreKind,
) -> Result<OpenRun, BoxError> {
    let name = kind.name();
    eprintln!("  {name}");
    // A fresh extauthz (and data folder or Redis), killed and removed when dropped.
    let store = RunningStore::start(plan, binary, kind).await?;
    let extauthz = &store.server;
    let tokens = extauthz
        .tokens(plan.tokens, &format!("open-{}", store.run))
        .await?;
    let server = Server {
        key: name,
        label: name,
        role: Role::Store,
        grpc: Some(extauthz.grpc),
        cpu: Some(CpuSource::Process(extauthz.pid)),
        redis_port: store.redis_port(),
        tokens,
        log: Some(&extauthz.log),
    };
    let measured = through_envoy_open(tools, shape, &server).await;
    drop(server);
    // Keep the log when the run failed: the error names it (the store is killed as dropped).
    if measured.is_ok() {
        store.stop().await;
    }
    measured
}

/// A fresh Envoy in front of `server`, its tokens each seen once, a warm-up, then the measured
/// open loop with CPU sampled around it.
async fn through_envoy_open(
    tools: &EnvoyTools,
    shape: &Shape,
    server: &Server<'_>,
) -> Result<OpenRun, BoxError> {
    let envoy = EnvoyProcess::start(&tools.envoy, server.grpc).await?;
    let measured = drive(&envoy, shape, server).await;
    envoy.stop().await;
    measured
}

async fn drive(
    envoy: &EnvoyProcess,
    shape: &Shape,
    server: &Server<'_>,
) -> Result<OpenRun, BoxError> {
    let listener = SocketAddr::from(([127, 0, 0, 1], envoy.listener));
    let requests = Arc::new(Requests::new(
        listener,
        REQUEST_PATH,
        &server.tokens,
        USER_AGENT,
    )?);
    let log = || {
        server
            .log
            .map_or("its output".into(), |log| log.display().to_string())
    };
    // First sight of every token, straight over gRPC as in the main run (a 5 s deadline, not
    // Envoy's 0.5 s): verified, its session created. Must all be allowed, in a few tries each
    // (a fresh store's first calls may pass its 50 ms deadline on a busy machine: 503).
    if let Some(addr) = server.grpc {
        let mut grpc = connect(addr, 1).await?.remove(0);
        for (i, token) in server.tokens.iter().enumerate() {
            let mut answer = call(&mut grpc, check_request(token, i)).await;
            for _ in 1..FIRST_TRIES {
                if answer == Answer::Allowed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                answer = call(&mut grpc, check_request(token, i)).await;
            }
            if answer != Answer::Allowed {
                return Err(format!(
                    "{}: fresh token {i} was not allowed in {FIRST_TRIES} tries ({answer:?}); \
                     see {}",
                    server.label,
                    log()
                )
                .into());
            }
        }
    }
    // The client's keep-alive connections, opened now; then each token through Envoy, every
    // connection used: allowed there too (a few tries each for a busy machine).
    let mut pool = Pool::open(listener, CONNECTIONS).await?;
    let first = pool.first_sight(&requests, FIRST_TRIES).await;
    if let Some((i, outcome)) = first
        .iter()
        .enumerate()
        .find(|(_, outcome)| **outcome != Outcome::Ok)
    {
        return Err(format!(
            "{} through Envoy: token {i} was not allowed in {FIRST_TRIES} tries ({outcome:?}); \
             see {}",
            server.label,
            log()
        )
        .into());
    }
    if shape.warmup > 0.0 {
        pool.open_loop(&requests, shape.rate, Duration::from_secs_f64(shape.warmup))
            .await?;
    }

    let connections_before = envoy.counter(CONNECTIONS_STAT).await;
    let before = CpuSample::take(envoy.pid, server.cpu, server.redis_port);
    let load = pool
        .open_loop(
            &requests,
            shape.rate,
            Duration::from_secs_f64(shape.seconds),
        )
        .await?;
    let after = CpuSample::take(envoy.pid, server.cpu, server.redis_port);
    let connections_after = envoy.counter(CONNECTIONS_STAT).await;
    drop(pool);
    let cpu = after.since(&before);
    let run = OpenRun {
        key: server.key,
        label: server.label,
        role: server.role,
        load,
        cpu,
        connections_opened: connections_after
            .zip(connections_before)
            .map(|(a, b)| a.saturating_sub(b)),
    };
    let answered = run.load.answered();
    eprintln!(
        "    {:.0}/s answered 2xx, p50 {:.3} ms, p99 {:.3} ms; not 2xx {}, failed {}, dropped {}; \
         late sends {} (pacer {}); CPU µs/request: Envoy {:.1}, ext_authz {}, client {:.1}",
        run.load.achieved_per_s(),
        run.load.quantile_ms(0.5).unwrap_or(f64::NAN),
        run.load.quantile_ms(0.99).unwrap_or(f64::NAN),
        run.load.non_2xx,
        run.load.failed,
        run.load.dropped,
        run.load.late,
        run.load.pacer_late,
        micros_per(run.cpu.envoy, answered),
        run.cpu.server.map_or("–".to_owned(), |s| format!(
            "{:.1}",
            micros_per(s, answered)
        )),
        micros_per(run.cpu.client, answered),
    );
    Ok(run)
}

/// CPU seconds of everything in the path, from the kernel's counters.
struct CpuSample {
    envoy: f64,
    server: Option<f64>,
    client: f64,
    redis: Option<f64>,
    machine: f64,
}

/// CPU seconds used while measuring.
struct Cpu {
    envoy: f64,
    /// The ext_authz server's (none: Envoy alone).
    server: Option<f64>,
    client: f64,
    redis: Option<f64>,
    machine: f64,
}

impl CpuSample {
    fn take(envoy_pid: u32, server: Option<CpuSource>, redis_port: Option<u16>) -> CpuSample {
        let machine = machine_cpu();
        let server_seconds = server.map(|source| source.seconds());
        let mut client = process_cpu("/proc/self/stat");
        // The no-op server's threads live in this process: not the client's.
        if let (Some(CpuSource::Threads(_)), Some(seconds)) = (server, server_seconds) {
            client -= seconds;
        }
        CpuSample {
            envoy: process_cpu(&format!("/proc/{envoy_pid}/stat")),
            server: server_seconds,
            client,
            redis: redis_port.and_then(redis_cpu),
            machine,
        }
    }

    fn since(&self, before: &CpuSample) -> Cpu {
        Cpu {
            envoy: self.envoy - before.envoy,
            server: self.server.zip(before.server).map(|(a, b)| a - b),
            client: self.client - before.client,
            redis: self.redis.zip(before.redis).map(|(a, b)| a - b),
            machine: self.machine - before.machine,
        }
    }
}

impl Cpu {
    /// Busy CPU of the machine that none of the measured processes used, in cores.
    fn not_ours_cores(&self, seconds: f64) -> f64 {
        let ours =
            self.envoy + self.server.unwrap_or(0.0) + self.client + self.redis.unwrap_or(0.0);
        ((self.machine - ours) / seconds.max(1e-9)).max(0.0)
    }
}

/// A run's p99 over the floor's, when both were measured.
fn p99_ratio(run: &OpenRun, floor: Option<&OpenRun>) -> Option<f64> {
    Some(run.load.quantile_ms(0.99)? / floor?.load.quantile_ms(0.99)?)
}

/// The goal's verdict: the p99 ratio, and every scheduled request answered 2xx (a fast error
/// is not a fast check).
fn goal_verdict(ratio: Option<f64>, load: &Load) -> String {
    let verdict = verdict(ratio.unwrap_or(f64::NAN), GOAL, true);
    let lost = load.non_2xx + load.failed + load.dropped;
    if lost > 0 && verdict == "met" {
        format!("missed ({lost} of {} not 2xx)", load.scheduled)
    } else {
        verdict.to_owned()
    }
}

fn figures(run: &OpenRun, floor: Option<&OpenRun>) -> Value {
    let load = &run.load;
    let answered = load.answered();
    let mut figures = Map::new();
    let mut put = |key: &str, value: Value| {
        figures.insert(key.to_owned(), value);
    };
    put("achieved_per_s", json!(load.achieved_per_s()));
    put("scheduled", json!(load.scheduled));
    put("ok", json!(load.ok));
    put("non_2xx", json!(load.non_2xx));
    put("failed", json!(load.failed));
    put("dropped", json!(load.dropped));
    for (key, q) in [
        ("p50_ms", 0.5),
        ("p99_ms", 0.99),
        ("p999_ms", 0.999),
        ("max_ms", 1.0),
    ] {
        if let Some(value) = load.quantile_ms(q) {
            put(key, json!(value));
        }
    }
    if let Some(value) = quantile_ms(&load.from_schedule, 0.99) {
        put("p99_from_schedule_ms", json!(value));
    }
    if !load.lag.is_empty() {
        put("send_lag_p99_us", json!(load.lag.value_at_quantile(0.99)));
        put("late_sends", json!(load.late));
    }
    if !load.pacer_lag.is_empty() {
        put(
            "pacer_lag_p99_us",
            json!(load.pacer_lag.value_at_quantile(0.99)),
        );
        put("pacer_late", json!(load.pacer_late));
    }
    put("connections_replaced", json!(load.replaced));
    if answered > 0 {
        put("envoy_cpu_us", json!(micros_per(run.cpu.envoy, answered)));
        if let Some(server) = run.cpu.server {
            put("extauthz_cpu_us", json!(micros_per(server, answered)));
        }
        put("client_cpu_us", json!(micros_per(run.cpu.client, answered)));
        if let Some(redis) = run.cpu.redis {
            put("redis_cpu_us", json!(micros_per(redis, answered)));
        }
    }
    put(
        "machine_busy_cores",
        json!(run.cpu.machine / load.elapsed.as_secs_f64().max(1e-9)),
    );
    put(
        "client_busy_cores",
        json!(run.cpu.client / load.elapsed.as_secs_f64().max(1e-9)),
    );
    put(
        "not_ours_cores",
        json!(run.cpu.not_ours_cores(load.elapsed.as_secs_f64())),
    );
    if let Some(opened) = run.connections_opened {
        put("connections_opened", json!(opened));
    }
    put("elapsed_s", json!(load.elapsed.as_secs_f64()));
    if run.role != Role::Floor
        && let Some(ratio) = p99_ratio(run, floor)
    {
        put("p99_ratio", json!(ratio));
    }
    if run.role == Role::Store {
        put("goal", json!(goal_verdict(p99_ratio(run, floor), load)));
    }
    Value::Object(figures)
}

fn section(saturation: f64, shape: &Shape, runs: &[OpenRun]) -> Section {
    let floor = runs.iter().find(|run| run.role == Role::Floor);
    let mut markdown = format!(
        "### Fixed rate through Envoy (open loop over HTTP/1.1)\n\n\
         Envoy (`--concurrency 1`, `direct_response` upstream) in front of each server, a fresh \
         one each, loaded at **{rate}/s**, half the {saturation:.0}/s wrk reached through Envoy \
         + the no-op above, for {seconds} s after {warmup} s at the same rate. Requests leave at \
         their scheduled times whatever the answers (a pacer thread) over hyper's HTTP/1.1 \
         client, {CONNECTIONS} keep-alive connections opened before; a request finding them \
         all busy waits in a queue of at most {QUEUE} (its latency from the schedule counts \
         the wait), more are dropped and counted. Each request carries a bearer token of the \
         {tokens} hot ones; latency is from the send to the end of the answer (hdrhistogram), \
         send lag from the schedule to the send (the pacer's lateness and the wait for a free \
         connection; the pacer's alone after the semicolon), CPU from `/proc/<pid>/stat` of \
         Envoy, of the ext_authz server and of this client. {alone}{again}Goal: each store's p99 ≤ {GOAL}× the \
         no-op's at the same rate, every request answered 2xx.\n\n\
         | through Envoy at {rate}/s | 2xx/s | p50 / p99 / p99.9, ms | p99 ÷ no-op | Envoy CPU \
         µs/request | ext_authz CPU µs/request | client CPU µs/request | not 2xx / failed / \
         dropped | send lag p99, µs (sends > 1 ms late; by the pacer) | connections opened | cores not ours | goal p99 ≤ {GOAL}× \
         |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        rate = shape.rate,
        seconds = shape.seconds,
        warmup = shape.warmup,
        tokens = shape.tokens,
        alone = if shape.alone {
            "Envoy alone (no ext_authz filter) at the same rate shows what this client and Envoy \
             take by themselves. "
        } else {
            ""
        },
        again = if shape.noop_again {
            "The no-op runs first and again last: the two show how far the floor itself moves. "
        } else {
            ""
        },
    );
    let mut json = Map::new();
    json.insert("floor_saturation_per_s".into(), json!(saturation));
    json.insert("rate_per_s".into(), json!(shape.rate));
    json.insert("seconds".into(), json!(shape.seconds));
    json.insert("warmup_s".into(), json!(shape.warmup));
    json.insert("max_outstanding".into(), json!(CONNECTIONS + QUEUE));
    json.insert("preopened_connections".into(), json!(CONNECTIONS));
    json.insert("queue_bound".into(), json!(QUEUE));
    json.insert("goal_p99_ratio".into(), json!(GOAL));
    for run in runs {
        let load = &run.load;
        let answered = load.answered();
        let ms = |q| {
            load.quantile_ms(q)
                .map_or("–".to_owned(), |v| format!("{v:.3}"))
        };
        let per = |seconds: f64| {
            if answered > 0 {
                format!("{:.1}", micros_per(seconds, answered))
            } else {
                "–".to_owned()
            }
        };
        let ratio = p99_ratio(run, floor).map_or("–".to_owned(), |r| format!("{r:.2}×"));
        let server_cpu = match (run.cpu.server, run.cpu.redis) {
            (Some(server), Some(redis)) => format!("{} + Redis {}", per(server), per(redis)),
            (Some(server), None) => per(server),
            (None, _) => "–".to_owned(),
        };
        let goal = match run.role {
            Role::Alone => "(no ext_authz)".to_owned(),
            Role::Floor => "(the floor)".to_owned(),
            Role::Noise => "(noise)".to_owned(),
            Role::Store => goal_verdict(p99_ratio(run, floor), load),
        };
        markdown.push_str(&format!(
            "| {} | {:.0} | {} / {} / {} | {ratio} | {} | {server_cpu} | {} | {} / {} / {} | {} | {} | {:.2} | {goal} |\n",
            run.label,
            load.achieved_per_s(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            per(run.cpu.envoy),
            per(run.cpu.client),
            load.non_2xx,
            load.failed,
            load.dropped,
            if load.lag.is_empty() {
                "–".to_owned()
            } else {
                format!(
                    "{} ({}; {})",
                    load.lag.value_at_quantile(0.99),
                    load.late,
                    load.pacer_late
                )
            },
            run.connections_opened
                .map_or("–".to_owned(), |n| n.to_string()),
            run.cpu.not_ours_cores(load.elapsed.as_secs_f64()),
        ));
        json.insert(run.key.into(), figures(run, floor));
    }
    Section {
        markdown,
        json: Value::Object(json),
    }
}

#[cfg(test)]
mod tests;
