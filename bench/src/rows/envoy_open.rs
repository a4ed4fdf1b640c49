//! Row `envoy-open`: a fixed request rate through Envoy, open loop over HTTP/1.1 (issue 10,
//! item 3: "at half the floor's saturation: p99 ≤ 1.2× the floor's").
//!
//! wrk (the main table's Envoy runs) is a closed loop: it sends the next request when the last
//! answered, so a slow answer also slows the load and hides in the average. Here requests leave
//! at their scheduled times whatever the answers: a pacer thread sleeps until each one's time
//! and hands it to the runtime; at most [`MAX_OUTSTANDING`] are unanswered, more are dropped
//! and counted, and how late each one left against its schedule is recorded. They go over
//! reqwest's pool of HTTP/1.1 keep-alive connections (Envoy's admin counters show how many
//! were opened while measuring), each with a bearer token of the hot set.
//!
//! The rate is half of what wrk reached through Envoy + the no-op ext_authz server in the main
//! run. Every server gets its own Envoy (`--concurrency 1`) and, for the stores, its own fresh
//! `grantflow-extauthz`: the no-op first, then memory, embedded and a fresh Redis, then (not in
//! the short mode) the no-op again, which shows how far the floor itself moves. Before them
//! (not in the short mode) Envoy alone, without the ext_authz filter, at the same rate: what
//! this client and Envoy take by themselves, so a client that cannot keep up shows (its CPU
//! per request, its send lag).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use grantflow_e2e::redis::RedisServer;
use hdrhistogram::Histogram;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT as USER_AGENT_HEADER};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::cpu::{CpuSource, machine_cpu, micros_per, process_cpu, redis_cpu};
use crate::envoy::EnvoyProcess;
use crate::extauthz::{Extauthz, StoreUnderTest};
use crate::load::{Answer, call, check_request, connect};
use crate::noop::{NOOP_THREADS, NoopServer};
use crate::settings::{EnvoyTools, Plan};
use crate::{BoxError, USER_AGENT};

use super::{Context, Section, verdict};

/// Each store's p99 at most this many times the no-op's, at the same rate.
const GOAL: f64 = 1.2;
/// Requests sent and not answered yet, at most; one more is dropped (and counted). HTTP/1.1
/// has one request per connection at a time, so this also bounds the connections in use.
const MAX_OUTSTANDING: usize = 128;
/// The longest a request may take (send to the end of the body) before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What each request asks for (Envoy answers 200 itself once ext_authz allows).
const REQUEST_PATH: &str = "/api/orders?page=1";
/// Envoy's counter of downstream connections opened.
const CONNECTIONS_STAT: &str = "http.ingress_http.downstream_cx_total";
/// Requests at once when each token is first sent through Envoy: the keep-alive connections
/// the pool starts with (more open if the load needs them; Envoy counts them).
const PREOPEN: usize = 32;
/// Tries of each token's first request through Envoy before the row gives up.
const FIRST_TRIES: usize = 3;
/// A send this far behind its schedule counts as late.
const LATE: Duration = Duration::from_millis(1);
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
    runs.push(store_through_envoy(plan, context.extauthz, tools, &shape, Store::Memory).await?);
    if plan.embedded {
        runs.push(
            store_through_envoy(plan, context.extauthz, tools, &shape, Store::Embedded).await?,
        );
    }
    runs.push(store_through_envoy(plan, context.extauthz, tools, &shape, Store::Redis).await?);
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

/// Requests scheduled in `seconds` at `rate`: at least one.
fn scheduled_count(rate: u32, seconds: f64) -> u64 {
    (seconds * f64::from(rate)).round().max(1.0) as u64
}

/// When request `i` is due, counted from the start of the loop.
fn due_after(i: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(i as f64 / f64::from(rate))
}

#[derive(Clone, Copy)]
enum Store {
    Memory,
    Embedded,
    Redis,
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

/// Removes a data folder when dropped (also when a step fails).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn store_through_envoy(
    plan: &Plan,
    binary: &Path,
    tools: &EnvoyTools,
    shape: &Shape,
    store: Store,
) -> Result<OpenRun, BoxError> {
    let data_dir = RemoveDir(
        std::env::temp_dir().join(format!("grantflow-bench-{}-open-data", std::process::id())),
    );
    // A fresh Redis, stopped when dropped.
    let redis = match store {
        Store::Redis => Some(RedisServer::start().await),
        Store::Memory | Store::Embedded => None,
    };
    let under_test = match (store, &redis) {
        (Store::Redis, Some(redis)) => StoreUnderTest::Redis(redis),
        (Store::Embedded, _) => StoreUnderTest::Embedded(&data_dir.0),
        _ => StoreUnderTest::Memory,
    };
    let name = under_test.name();
    eprintln!("  {name}");
    // Killed when dropped.
    let extauthz = Extauthz::start(binary, under_test, plan).await?;
    let run = format!("open-{name}-{}", std::process::id());
    let tokens = extauthz.tokens(plan.tokens, &run).await?;
    let server = Server {
        key: name,
        label: name,
        role: Role::Store,
        grpc: Some(extauthz.grpc),
        cpu: Some(CpuSource::Process(extauthz.pid)),
        redis_port: redis.as_ref().map(|redis| redis.port),
        tokens,
        log: Some(&extauthz.log),
    };
    let measured = through_envoy_open(tools, shape, &server).await;
    drop(server);
    // Keep the log when the run failed: the error names it.
    if measured.is_ok() {
        extauthz.stop().await;
    }
    if let Some(mut redis) = redis {
        redis.stop().await;
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
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(MAX_OUTSTANDING)
        .pool_idle_timeout(None)
        .connect_timeout(Duration::from_secs(1))
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()?;
    // Parsed once: each request clones it.
    let url: Arc<Url> = Arc::new(Url::parse(&format!(
        "http://127.0.0.1:{}{REQUEST_PATH}",
        envoy.listener
    ))?);
    let tokens: Arc<Vec<HeaderValue>> = Arc::new(
        server
            .tokens
            .iter()
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .collect::<Result<_, _>>()?,
    );

    let log = || {
        server
            .log
            .map_or("its output".into(), |log| log.display().to_string())
    };
    // First sight of every token, straight over gRPC as in the main run (a 5 s deadline, not
    // Envoy's 0.5 s): verified, its session created. Must all be allowed.
    if let Some(addr) = server.grpc {
        let mut grpc = connect(addr, 1).await?.remove(0);
        for (i, token) in server.tokens.iter().enumerate() {
            let answer = call(&mut grpc, check_request(token, i)).await;
            if answer != Answer::Allowed {
                return Err(format!(
                    "{}: fresh token {i} was not allowed ({answer:?}); see {}",
                    server.label,
                    log()
                )
                .into());
            }
        }
    }
    // Then each through Envoy (at least PREOPEN requests, PREOPEN at a time, so that the pool
    // starts with that many keep-alive connections): allowed there too (a few tries each for a
    // busy machine).
    let first: Vec<(usize, Outcome)> = stream::iter(0..tokens.len().max(PREOPEN))
        .map(|i| {
            let (client, url) = (&client, &url);
            let i = i % tokens.len();
            let token = tokens[i].clone();
            async move {
                let mut outcome = Outcome::Failed;
                for _ in 0..FIRST_TRIES {
                    outcome = get(client, url, token.clone()).await;
                    if outcome == Outcome::Ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (i, outcome)
            }
        })
        .buffer_unordered(PREOPEN)
        .collect()
        .await;
    if let Some((i, outcome)) = first.iter().find(|(_, outcome)| *outcome != Outcome::Ok) {
        return Err(format!(
            "{} through Envoy: token {i} was not allowed in {FIRST_TRIES} tries ({outcome:?}); \
             see {}",
            server.label,
            log()
        )
        .into());
    }
    if shape.warmup > 0.0 {
        open_loop_http(
            &client,
            &url,
            &tokens,
            shape.rate,
            Duration::from_secs_f64(shape.warmup),
        )
        .await?;
    }

    let connections_before = envoy.counter(CONNECTIONS_STAT).await;
    let before = CpuSample::take(envoy.pid, server.cpu, server.redis_port);
    let load = open_loop_http(
        &client,
        &url,
        &tokens,
        shape.rate,
        Duration::from_secs_f64(shape.seconds),
    )
    .await?;
    let after = CpuSample::take(envoy.pid, server.cpu, server.redis_port);
    let connections_after = envoy.counter(CONNECTIONS_STAT).await;
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
         CPU µs/request: Envoy {:.1}, ext_authz {}, client {:.1}",
        run.load.achieved_per_s(),
        run.load.quantile_ms(0.5).unwrap_or(f64::NAN),
        run.load.quantile_ms(0.99).unwrap_or(f64::NAN),
        run.load.non_2xx,
        run.load.failed,
        run.load.dropped,
        micros_per(run.cpu.envoy, answered),
        run.cpu.server.map_or("–".to_owned(), |s| format!(
            "{:.1}",
            micros_per(s, answered)
        )),
        micros_per(run.cpu.client, answered),
    );
    Ok(run)
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Answered with this status, not 2xx.
    Status(u16),
    /// No full answer (connection error, timeout).
    Failed,
}

/// One GET through Envoy with `authorization`, the body read to its end (so that the
/// connection goes back to the pool).
async fn get(client: &reqwest::Client, url: &Url, authorization: HeaderValue) -> Outcome {
    let sent = client
        .get(url.clone())
        .header(AUTHORIZATION, authorization)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .header(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status.is_success() => Outcome::Ok,
                Ok(_) => Outcome::Status(status.as_u16()),
                Err(_) => Outcome::Failed,
            }
        }
        Err(_) => Outcome::Failed,
    }
}

/// What one open loop measured.
struct Load {
    scheduled: u64,
    ok: u64,
    non_2xx: u64,
    failed: u64,
    dropped: u64,
    /// Send to the end of the answer, every request that was sent; microseconds.
    latency: Histogram<u64>,
    /// Scheduled time to the end of the answer (counts the client's own lateness too).
    from_schedule: Histogram<u64>,
    /// How late each request left against its schedule.
    lag: Histogram<u64>,
    /// Requests that left more than [`LATE`] behind their schedule.
    late: u64,
    /// From the first scheduled send to the last answer.
    elapsed: Duration,
}

impl Load {
    fn answered(&self) -> u64 {
        self.ok + self.non_2xx
    }

    /// 2xx answers per second.
    fn achieved_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.latency, q)
    }
}

/// A quantile in milliseconds of a histogram in microseconds; `None` when it is empty.
fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1000.0)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What a request task reports.
struct Answered {
    outcome: Outcome,
    from_send_us: u64,
    from_schedule_us: u64,
    lag_us: u64,
}

/// `rate` GETs per second for `duration`, each sent at its scheduled time whatever the
/// answers: a pacer thread (`std::thread::sleep`, finer than tokio's millisecond timer)
/// spawns each request onto the runtime at its time; at most [`MAX_OUTSTANDING`] unanswered,
/// more are dropped and counted. Bounded: `duration × rate` requests, each within
/// [`REQUEST_TIMEOUT`].
async fn open_loop_http(
    client: &reqwest::Client,
    url: &Arc<Url>,
    tokens: &Arc<Vec<HeaderValue>>,
    rate: u32,
    duration: Duration,
) -> Result<Load, BoxError> {
    let count = scheduled_count(rate, duration.as_secs_f64());
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel::<Answered>();
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    let pacer = {
        let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
        tokio::task::spawn_blocking(move || {
            let mut dropped = 0u64;
            for i in 0..count {
                let due = started + due_after(i, rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                    dropped += 1;
                    continue;
                };
                let (client, url, done) = (client.clone(), url.clone(), done.clone());
                let token = tokens[i as usize % tokens.len()].clone();
                runtime.spawn(async move {
                    let sent = Instant::now();
                    let outcome = get(&client, &url, token).await;
                    let finished = Instant::now();
                    let _ = done.send(Answered {
                        outcome,
                        from_send_us: (finished - sent).as_micros() as u64,
                        from_schedule_us: finished.saturating_duration_since(due).as_micros()
                            as u64,
                        lag_us: sent.saturating_duration_since(due).as_micros() as u64,
                    });
                    drop(permit);
                });
            }
            dropped
        })
    };
    let mut load = Load {
        scheduled: count,
        ok: 0,
        non_2xx: 0,
        failed: 0,
        dropped: 0,
        latency: histogram(),
        from_schedule: histogram(),
        lag: histogram(),
        late: 0,
        elapsed: Duration::ZERO,
    };
    // Answers are read while the pacer sends (nothing piles up). The loop ends once the
    // pacer's sender is gone (it has sent all) and each request's (within REQUEST_TIMEOUT).
    while let Some(answer) = answers.recv().await {
        match answer.outcome {
            Outcome::Ok => load.ok += 1,
            Outcome::Status(_) => load.non_2xx += 1,
            Outcome::Failed => load.failed += 1,
        }
        load.latency.saturating_record(answer.from_send_us.max(1));
        load.from_schedule
            .saturating_record(answer.from_schedule_us.max(1));
        load.lag.saturating_record(answer.lag_us.max(1));
        if answer.lag_us > LATE.as_micros() as u64 {
            load.late += 1;
        }
    }
    load.elapsed = started.elapsed();
    load.dropped = pacer.await.map_err(|e| format!("the pacer failed: {e}"))?;
    Ok(load)
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
         their scheduled times whatever the answers (a pacer thread; at most {MAX_OUTSTANDING} \
         unanswered, more dropped and counted) over reqwest's pool of HTTP/1.1 keep-alive \
         connections ({PREOPEN} opened before), each with a bearer token of the {tokens} hot ones; latency is from the \
         send to the end of the answer (hdrhistogram), CPU from `/proc/<pid>/stat` of Envoy, of \
         the ext_authz server and of this client. {alone}{again}Goal: each store's p99 ≤ {GOAL}× the \
         no-op's at the same rate, every request answered 2xx.\n\n\
         | through Envoy at {rate}/s | 2xx/s | p50 / p99 / p99.9, ms | p99 ÷ no-op | Envoy CPU \
         µs/request | ext_authz CPU µs/request | client CPU µs/request | not 2xx / failed / \
         dropped | send lag p99, µs (sends > 1 ms late) | connections opened | cores not ours | goal p99 ≤ {GOAL}× \
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
    json.insert("max_outstanding".into(), json!(MAX_OUTSTANDING));
    json.insert("preopened_connections".into(), json!(PREOPEN));
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
                format!("{} ({})", load.lag.value_at_quantile(0.99), load.late)
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
mod tests {
    use clap::Parser;

    use super::*;
    use crate::settings::Settings;

    fn plan(args: &[&str]) -> Plan {
        let mut all = vec!["bench", "--envoy", "0"];
        all.extend_from_slice(args);
        Plan::new(&Settings::parse_from(all)).unwrap()
    }

    #[test]
    fn the_rate_is_half_the_floors_saturation() {
        assert_eq!(half_rate(9313.0), Some(4657));
        assert_eq!(half_rate(9312.4), Some(4656));
        assert_eq!(half_rate(2.0), Some(1));
        assert_eq!(half_rate(1.0), None);
        assert_eq!(half_rate(0.0), None);
        assert_eq!(half_rate(f64::NAN), None);
        assert_eq!(half_rate(f64::INFINITY), None);
        assert_eq!(half_rate(1e9), Some(50_000));
    }

    #[test]
    fn the_short_mode_measures_less_and_the_no_op_once() {
        let short = Shape::new(&plan(&["--seconds", "2"]), 4000);
        assert_eq!(
            short,
            Shape {
                rate: 4000,
                seconds: 1.0,
                warmup: 0.25,
                noop_again: false,
                alone: false,
                tokens: 64
            }
        );
        let shorter = Shape::new(&plan(&["--seconds", "1", "--open-seconds", "0.5"]), 10);
        assert_eq!(shorter.seconds, 0.5);
        let full = Shape::new(&plan(&["--tokens", "8"]), 4000);
        assert_eq!(
            full,
            Shape {
                rate: 4000,
                seconds: 6.0,
                warmup: 1.0,
                noop_again: true,
                alone: true,
                tokens: 8
            }
        );
        let no_warmup = Shape::new(&plan(&["--warmup-seconds", "0"]), 4000);
        assert_eq!(no_warmup.warmup, 0.25);
    }

    #[test]
    fn the_schedule_is_evenly_spaced_and_bounded() {
        assert_eq!(scheduled_count(4000, 6.0), 24_000);
        assert_eq!(scheduled_count(3, 0.1), 1);
        assert_eq!(due_after(0, 4000), Duration::ZERO);
        assert_eq!(due_after(4000, 4000), Duration::from_secs(1));
        assert_eq!(due_after(1, 4000), Duration::from_micros(250));
    }

    fn load(latencies_us: &[u64], non_2xx: u64, dropped: u64) -> Load {
        let mut load = Load {
            scheduled: latencies_us.len() as u64 + dropped,
            ok: latencies_us.len() as u64 - non_2xx,
            non_2xx,
            failed: 0,
            dropped,
            latency: histogram(),
            from_schedule: histogram(),
            lag: histogram(),
            late: 0,
            elapsed: Duration::from_secs(1),
        };
        for &us in latencies_us {
            load.latency.record(us).unwrap();
            load.from_schedule.record(us + 10).unwrap();
            load.lag.record(10).unwrap();
        }
        load
    }

    fn run(key: &'static str, role: Role, latencies_us: &[u64]) -> OpenRun {
        OpenRun {
            key,
            label: key,
            role,
            load: load(latencies_us, 0, 0),
            cpu: Cpu {
                envoy: 0.1,
                server: (role != Role::Alone).then_some(0.05),
                client: 0.02,
                redis: (key == "redis").then_some(0.01),
                machine: 0.5,
            },
            connections_opened: Some(0),
        }
    }

    #[test]
    fn the_goal_needs_the_ratio_and_every_request_answered() {
        let fine = load(&[1000; 10], 0, 0);
        assert_eq!(goal_verdict(Some(1.1), &fine), "met");
        assert_eq!(goal_verdict(Some(1.3), &fine), "missed");
        assert_eq!(goal_verdict(None, &fine), "not measured");
        let lossy = load(&[1000; 10], 1, 2);
        assert_eq!(goal_verdict(Some(1.0), &lossy), "missed (3 of 12 not 2xx)");
    }

    #[test]
    fn an_empty_loop_has_no_quantiles() {
        let empty = load(&[], 0, 0);
        assert_eq!(empty.quantile_ms(0.99), None);
        assert_eq!(load(&[1500], 0, 0).quantile_ms(0.5), Some(1.5));
    }

    #[test]
    fn cores_not_ours_are_what_the_measured_processes_did_not_use() {
        let cpu = Cpu {
            envoy: 0.5,
            server: Some(0.25),
            client: 0.125,
            redis: Some(0.125),
            machine: 1.5,
        };
        assert_eq!(cpu.not_ours_cores(2.0), 0.25);
        let busy_only_us = Cpu {
            machine: 0.9,
            ..cpu
        };
        assert_eq!(busy_only_us.not_ours_cores(2.0), 0.0);
    }

    #[test]
    fn the_section_has_a_row_per_server_and_figures_with_units() {
        let shape = Shape {
            rate: 100,
            seconds: 1.0,
            warmup: 0.25,
            noop_again: true,
            alone: true,
            tokens: 64,
        };
        let runs = [
            run("alone", Role::Alone, &[500; 100]),
            run("noop", Role::Floor, &[1000; 100]),
            run("memory", Role::Store, &[1100; 100]),
            run("redis", Role::Store, &[2000; 100]),
            run("noop_again", Role::Noise, &[1050; 100]),
        ];
        let section = section(200.0, &shape, &runs);
        let table: Vec<&str> = section
            .markdown
            .lines()
            .filter(|line| line.starts_with('|'))
            .collect();
        assert_eq!(table.len(), 2 + runs.len(), "{}", section.markdown);
        let columns = table[0].matches('|').count();
        assert!(
            table
                .iter()
                .all(|line| line.matches('|').count() == columns)
        );
        assert!(
            table[2].ends_with(
                "| 0.50× | 1000.0 | – | 200.0 | 0 / 0 / 0 | 10 (0) | 0 | 0.38 | (no ext_authz) |"
            ),
            "{}",
            table[2]
        );
        assert!(table[3].ends_with("| (the floor) |"), "{}", table[3]);
        assert!(table[4].contains("| 1.10× |") && table[4].ends_with("| met |"));
        assert!(table[5].contains("Redis") && table[5].ends_with("| missed |"));
        assert!(table[6].ends_with("| (noise) |"), "{}", table[6]);
        assert!(section.markdown.starts_with("### "));

        let json = &section.json;
        assert_eq!(json["rate_per_s"], 100);
        assert_eq!(json["noop"]["p99_ms"], 1.0);
        assert!(json["noop"].get("goal").is_none());
        assert_eq!(json["memory"]["goal"], "met");
        assert_eq!(json["redis"]["goal"], "missed");
        assert_eq!(json["redis"]["p99_ratio"], 2.0);
        assert!(json["memory"].get("redis_cpu_us").is_none());
        assert_eq!(json["redis"]["redis_cpu_us"], 100.0);
        assert_eq!(json["memory"]["envoy_cpu_us"], 1000.0);
        assert!(json["noop_again"].get("goal").is_none());
        assert!(json["noop_again"].get("p99_ratio").is_some());
        assert!(json["alone"].get("extauthz_cpu_us").is_none());
        assert!(json["alone"].get("goal").is_none());
        assert_eq!(json["alone"]["p99_ratio"], 0.5);
    }

    #[test]
    fn a_skipped_row_says_why() {
        let section = skipped("no Envoy");
        assert!(section.markdown.contains("Skipped: no Envoy."));
        assert_eq!(section.json["skipped"], "no Envoy");
    }
}
