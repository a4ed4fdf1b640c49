//! The Check benchmark (issue 3): the memory store and a real Redis side by side, in one run.
//!
//! ```text
//! cargo run --release -p grantflow-e2e --bin bench
//! ```
//!
//! For each store it starts the release `grantflow-extauthz --dev` as a child process on free
//! loopback ports, takes tokens from its `/dev/token`, and measures the gRPC Check call:
//!
//! - throughput in a closed loop (a fixed number of calls in flight over a fixed number of
//!   HTTP/2 connections, for a fixed time);
//! - latency in an open loop (a fixed request rate well below saturation);
//! - CPU time per check of the extauthz process (`/proc/<pid>/stat`), of Redis
//!   (`INFO cpu`) and of this client, plus how busy the whole machine was (`/proc/stat`), so
//!   a noisy neighbour shows.
//!
//! Before the Redis run it creates 100k sessions through `SessionStore::check` (in this
//! process, bounded concurrency) and reports Redis `used_memory` per live session.
//!
//! Needs `redis-server` and `redis-cli` (`REDIS_SERVER_BIN`, else `redis-server` on `PATH`).
//! Not a test: nothing here asserts on time. Every loop is bounded in count and in time, and
//! all traffic stays on 127.0.0.1. Knobs (environment): `BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`,
//! `BENCH_CONCURRENCY`, `BENCH_CONNECTIONS`, `BENCH_RATE`, `BENCH_OPEN_SECONDS`,
//! `BENCH_TOKENS`, `BENCH_SESSIONS`, `BENCH_CLIENT_THREADS`, `BENCH_SERVER_RUST_LOG`,
//! `BENCH_SERVER_WORKERS`, `GRANTFLOW_EXTAUTHZ_BIN` (use this binary instead of building it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use futures::StreamExt;
use grantflow_core::clock::{Clock, SystemClock};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{RedisSettings, RedisStore, SessionStore};
use grantflow_e2e::free_port;
use grantflow_e2e::redis::{RedisServer, redis_cli};
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

/// The development issuer's tenant (`grantflow_extauthz::config::DEV_TENANT`).
const TENANT: &str = grantflow_extauthz::config::DEV_TENANT;
/// A current desktop browser's user agent: what most sessions carry.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// The longest any single gRPC call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Plan {
    /// Closed loop: measured seconds, after `warmup` seconds not measured.
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    connections: usize,
    /// Closed loop: at most this many calls, whatever the time.
    max_calls: u64,
    /// Open loop: requests per second, for `open_seconds`.
    rate: u32,
    open_seconds: f64,
    /// Distinct tokens (users and sessions) the Check load cycles through.
    tokens: usize,
    /// Sessions created for the Redis memory measurement, and how many at once.
    sessions: usize,
    session_concurrency: usize,
    client_threads: usize,
    server_log: Option<String>,
    /// `TOKIO_WORKER_THREADS` of the extauthz process (default: one per core).
    server_workers: Option<usize>,
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a valid value")),
        Err(_) => default,
    }
}

impl Plan {
    fn from_env() -> Plan {
        Plan {
            seconds: knob("BENCH_SECONDS", 8.0_f64).clamp(0.5, 120.0),
            warmup: knob("BENCH_WARMUP_SECONDS", 2.0_f64).clamp(0.0, 60.0),
            concurrency: knob("BENCH_CONCURRENCY", 16_usize).clamp(1, 1024),
            connections: knob("BENCH_CONNECTIONS", 2_usize).clamp(1, 64),
            max_calls: 5_000_000,
            rate: knob("BENCH_RATE", 500_u32).clamp(1, 50_000),
            open_seconds: knob("BENCH_OPEN_SECONDS", 6.0_f64).clamp(0.5, 120.0),
            tokens: knob("BENCH_TOKENS", 64_usize).clamp(1, 10_000),
            sessions: knob("BENCH_SESSIONS", 100_000_usize).clamp(1, 2_000_000),
            session_concurrency: 64,
            client_threads: knob("BENCH_CLIENT_THREADS", 1_usize).clamp(1, 64),
            server_log: std::env::var("BENCH_SERVER_RUST_LOG").ok(),
            server_workers: std::env::var("BENCH_SERVER_WORKERS")
                .ok()
                .map(|v| v.parse().expect("BENCH_SERVER_WORKERS is a number")),
        }
    }
}

fn main() -> ExitCode {
    // `RedisServer` reads REDIS_SERVER_BIN; when it is unset, run again with it pointing at
    // the redis-server on PATH (setting it in this process would need `unsafe`).
    if std::env::var_os("REDIS_SERVER_BIN").is_none() {
        let Some(found) = on_path("redis-server") else {
            eprintln!(
                "error: set REDIS_SERVER_BIN or put redis-server on PATH (apt-get install redis-server)"
            );
            return ExitCode::from(2);
        };
        let me = std::env::current_exe().expect("the benchmark's own path");
        let error = StdCommand::new(me)
            .args(std::env::args_os().skip(1))
            .env("REDIS_SERVER_BIN", found)
            .exec();
        eprintln!("error: cannot run the benchmark again: {error}");
        return ExitCode::from(2);
    }
    if on_path("redis-cli").is_none() {
        eprintln!("error: redis-cli is not on PATH (apt-get install redis-tools)");
        return ExitCode::from(2);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    let plan = Plan::from_env();
    let extauthz = match extauthz_binary() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The whole run is bounded; a hang ends it with an error instead of waiting forever.
    let limit = Duration::from_secs(600);
    match runtime.block_on(async { tokio::time::timeout(limit, run(plan, extauthz)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("error: the benchmark did not finish within {limit:?}");
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(plan: Plan, extauthz: PathBuf) -> Result<(), BoxError> {
    let machine = Machine::describe();
    eprintln!(
        "GrantFlow Check benchmark on {} ({} cores); extauthz {}",
        machine.cpu,
        machine.cores,
        extauthz.display()
    );

    eprintln!("[1/3] memory store");
    let memory = bench_store(&plan, &extauthz, StoreUnderTest::Memory).await?;

    let mut redis = RedisServer::start().await;
    let redis_version = redis_cli(redis.port, &["INFO", "server"])
        .and_then(|info| info_field(&info, "redis_version"))
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "[2/3] Redis {redis_version} memory: {} sessions through store.check",
        plan.sessions
    );
    let footprint = session_footprint(&plan, &redis, 0, 20_000).await?;
    // The same again with session hashes allowed to stay compact (listpack) although the
    // user agent is longer than the default `hash-max-listpack-value` of 64 bytes.
    eprintln!("      again with hash-max-listpack-value 256");
    let listpack_value = redis_cli(redis.port, &["CONFIG", "GET", "hash-max-listpack-value"])
        .and_then(|out| out.lines().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "64".into());
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "hash-max-listpack-value", "256"],
    );
    let compact = session_footprint(&plan, &redis, plan.sessions + 1, 0).await?;
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "hash-max-listpack-value", &listpack_value],
    );
    eprintln!("[3/3] Redis store");
    let on_redis = bench_store(&plan, &extauthz, StoreUnderTest::Redis(&redis)).await?;
    redis.stop().await;

    print_report(
        &plan,
        &machine,
        &redis_version,
        &memory,
        &on_redis,
        &footprint,
        &compact,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The extauthz process.

#[derive(Clone, Copy)]
enum StoreUnderTest<'a> {
    Memory,
    Redis(&'a RedisServer),
}

impl StoreUnderTest<'_> {
    fn name(&self) -> &'static str {
        match self {
            StoreUnderTest::Memory => "memory",
            StoreUnderTest::Redis(_) => "redis",
        }
    }

    fn redis_port(&self) -> Option<u16> {
        match self {
            StoreUnderTest::Memory => None,
            StoreUnderTest::Redis(redis) => Some(redis.port),
        }
    }
}

/// A running `grantflow-extauthz --dev`, killed when dropped.
struct Extauthz {
    child: Child,
    pid: u32,
    grpc: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Extauthz {
    async fn start(
        binary: &Path,
        store: StoreUnderTest<'_>,
        plan: &Plan,
    ) -> Result<Extauthz, BoxError> {
        let grpc = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = std::env::temp_dir().join(format!(
            "grantflow-bench-{}-extauthz-{}.log",
            std::process::id(),
            store.name()
        ));
        let mut command = Command::new(binary);
        command
            .args(["--dev", "--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--store", store.name()])
            // The store deadline of production; the bench reports any 503 it causes.
            .args(["--store-timeout", "50ms"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        for name in [
            "GRANTFLOW_CONFIG",
            "GRANTFLOW_STORE",
            "GRANTFLOW_REDIS_URL",
            "GRANTFLOW_REDIS_CLUSTER",
            "GRANTFLOW_LOG_FORMAT",
        ] {
            command.env_remove(name);
        }
        command.env_remove("TOKIO_WORKER_THREADS");
        if let Some(filter) = &plan.server_log {
            command.env("RUST_LOG", filter);
        }
        if let Some(workers) = plan.server_workers {
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        if let StoreUnderTest::Redis(redis) = store {
            command.args(["--redis-url", &redis.url()]);
        }
        let child = command.spawn()?;
        let pid = child.id().ok_or("extauthz exited at once")?;
        let mut extauthz = Extauthz {
            child,
            pid,
            grpc,
            admin,
            log,
        };
        extauthz.wait_ready().await?;
        Ok(extauthz)
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(
                    format!("extauthz exited with {status}; see {}", self.log.display()).into(),
                );
            }
            let ready = http
                .get(format!("http://{}/readyz", self.admin))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "extauthz was not ready within 30 s; see {}",
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tokens of `count` distinct users, each in its own session, from `/dev/token`.
    async fn tokens(&self, count: usize, run: &str) -> Result<Vec<String>, BoxError> {
        let http = reqwest::Client::new();
        let mut tokens = Vec::with_capacity(count);
        for i in 0..count {
            let url = format!(
                "http://{}/dev/token?user=bench{i}&session=bench-{run}-{i}",
                self.admin
            );
            let response = http
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?;
            tokens.push(response.text().await?.trim().to_owned());
        }
        Ok(tokens)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The release (or, in a debug run, debug) `grantflow-extauthz` next to this binary, built
/// first by the cargo that runs us so that it is current.
fn extauthz_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GRANTFLOW_EXTAUTHZ_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let binary = me.with_file_name("grantflow-extauthz");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = StdCommand::new(cargo);
    build.current_dir(grantflow_e2e::repo_root()).args([
        "build",
        "-p",
        "grantflow-extauthz",
        "--bin",
        "grantflow-extauthz",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    // Target directory: the one we were built into (cargo passes CARGO_TARGET_DIR through).
    eprintln!("building grantflow-extauthz ...");
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() || !binary.exists() {
        return Err(format!(
            "cargo build -p grantflow-extauthz failed ({status}) or did not produce {}; \
             set GRANTFLOW_EXTAUTHZ_BIN to a built binary",
            binary.display()
        ));
    }
    Ok(binary)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

// ---------------------------------------------------------------------------------------------
// Check requests and the two load shapes.

/// A CheckRequest as Envoy sends it for a browser's GET with a bearer token.
fn check_request(token: &str, i: usize) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "app.example.test".to_string()),
        (":method", "GET".to_string()),
        (":path", "/api/orders?page=1".to_string()),
        (":scheme", "https".to_string()),
        ("accept", "application/json".to_string()),
        ("accept-encoding", "gzip, deflate, br".to_string()),
        ("accept-language", "en-US,en;q=0.9".to_string()),
        ("authorization", format!("Bearer {token}")),
        ("user-agent", USER_AGENT.to_string()),
        ("x-forwarded-proto", "https".to_string()),
        (
            "x-request-id",
            format!("6f1c2a7e-0d7b-4b8e-9a51-{:012x}", i),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let socket = |ip: &str, port: u32| Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ),
            ..Default::default()
        })),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket(&format!("203.0.113.{}", i % 250 + 1), 51_000)),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("10.0.0.10", 10_000)),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: format!("{i}"),
                    method: "GET".into(),
                    path: "/api/orders?page=1".into(),
                    host: "app.example.test".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

type Client = AuthorizationClient<Channel>;

/// `count` HTTP/2 connections to `addr` (a tonic `Channel` from `connect` is one connection).
async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Client>, BoxError> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        clients.push(AuthorizationClient::new(channel));
    }
    Ok(clients)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allowed,
    Denied(i32),
    Failed,
}

fn answer(
    result: Result<Result<tonic::Response<CheckResponse>, tonic::Status>, impl Sized>,
) -> Answer {
    match result {
        Ok(Ok(response)) => match response.into_inner().http_response {
            Some(HttpResponse::OkResponse(_)) => Answer::Allowed,
            Some(HttpResponse::DeniedResponse(denied)) => {
                Answer::Denied(denied.status.map(|s| s.code).unwrap_or_default())
            }
            _ => Answer::Failed,
        },
        _ => Answer::Failed,
    }
}

async fn call(client: &mut Client, request: CheckRequest) -> Answer {
    answer(tokio::time::timeout(CALL_TIMEOUT, client.check(request)).await)
}

/// What one loop measured.
struct Measured {
    calls: u64,
    allowed: u64,
    /// HTTP status of denials → how many.
    denied: HashMap<i32, u64>,
    failed: u64,
    /// Microseconds.
    latency: Histogram<u64>,
    elapsed: Duration,
    cpu: CpuUse,
    /// Open loop: the worst lateness of a send against its schedule, microseconds.
    send_lag_p99: Option<u64>,
    dropped: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn note(&mut self, answer: Answer, micros: u64) {
        self.calls += 1;
        match answer {
            Answer::Allowed => self.allowed += 1,
            Answer::Denied(code) => *self.denied.entry(code).or_default() += 1,
            Answer::Failed => self.failed += 1,
        }
        self.latency.saturating_record(micros);
    }

    fn merge(&mut self, other: Measured) {
        self.calls += other.calls;
        self.allowed += other.allowed;
        for (code, n) in other.denied {
            *self.denied.entry(code).or_default() += n;
        }
        self.failed += other.failed;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
    }

    fn empty() -> Measured {
        Measured {
            calls: 0,
            allowed: 0,
            denied: HashMap::new(),
            failed: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            elapsed: Duration::ZERO,
            cpu: CpuUse::default(),
            send_lag_p99: None,
            dropped: 0,
        }
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `concurrency` callers, each sending its next request when the previous answered, for
/// `duration` (and at most `max_calls` calls in all).
async fn closed_loop(
    clients: &[Client],
    requests: &Arc<Vec<CheckRequest>>,
    concurrency: usize,
    duration: Duration,
    max_calls: u64,
) -> Measured {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let requests = requests.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::empty();
            let mut next = worker;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_calls {
                let request = requests[next % requests.len()].clone();
                next += concurrency;
                let sent = Instant::now();
                let answer = call(&mut client, request).await;
                measured.note(answer, sent.elapsed().as_micros() as u64);
            }
            measured
        }));
    }
    let mut total = Measured::empty();
    for task in tasks {
        if let Ok(measured) = task.await {
            total.merge(measured);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// `rate` requests per second for `duration`, each sent at its time whatever the answers
/// (at most `max_outstanding` unanswered; more are dropped and counted).
async fn open_loop(
    clients: &[Client],
    requests: &Arc<Vec<CheckRequest>>,
    rate: u32,
    duration: Duration,
) -> Measured {
    const MAX_OUTSTANDING: usize = 1_024;
    let count = (duration.as_secs_f64() * f64::from(rate)).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel::<(Answer, u64)>();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut dropped = 0;
    let started = Instant::now();
    for i in 0..count {
        let due = started + period * (i as u32);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let mut client = clients[i as usize % clients.len()].clone();
        let request = requests[i as usize % requests.len()].clone();
        let done = done.clone();
        let sent = Instant::now();
        lag.saturating_record(sent.saturating_duration_since(due).as_micros() as u64);
        tokio::spawn(async move {
            let answer = call(&mut client, request).await;
            let _ = done.send((answer, sent.elapsed().as_micros() as u64));
            drop(permit);
        });
    }
    drop(done);
    let mut measured = Measured::empty();
    // Every call is bounded by CALL_TIMEOUT, so this ends.
    while let Some((answer, micros)) = answers.recv().await {
        measured.note(answer, micros);
    }
    measured.elapsed = started.elapsed();
    measured.send_lag_p99 = Some(lag.value_at_quantile(0.99));
    measured.dropped = dropped;
    measured
}

/// Both loops against one store.
struct StoreRun {
    store: &'static str,
    closed: Measured,
    open: Measured,
    /// Redis commands run in the closed loop: (name, calls, µs inside Redis per call).
    commands: Vec<(String, u64, f64)>,
}

async fn bench_store(
    plan: &Plan,
    binary: &Path,
    store: StoreUnderTest<'_>,
) -> Result<StoreRun, BoxError> {
    let server = Extauthz::start(binary, store, plan).await?;
    let run = format!("{}-{}", store.name(), std::process::id());
    let tokens = server.tokens(plan.tokens, &run).await?;
    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        tokens
            .iter()
            .enumerate()
            .map(|(i, token)| check_request(token, i))
            .collect(),
    );
    let clients = connect(server.grpc, plan.connections).await?;

    // First sight of every token: signature verified, session created. Must all be allowed.
    let mut first = clients[0].clone();
    for request in requests.iter() {
        let answer = call(&mut first, request.clone()).await;
        if answer != Answer::Allowed {
            return Err(format!(
                "{} store: a fresh token was not allowed ({answer:?}); see {}",
                store.name(),
                server.log.display()
            )
            .into());
        }
    }
    if plan.warmup > 0.0 {
        let warmup = Duration::from_secs_f64(plan.warmup);
        closed_loop(
            &clients,
            &requests,
            plan.concurrency,
            warmup,
            plan.max_calls,
        )
        .await;
    }

    let commands_before = store.redis_port().map(command_stats);
    let before = CpuSample::take(server.pid, store.redis_port());
    let mut closed = closed_loop(
        &clients,
        &requests,
        plan.concurrency,
        Duration::from_secs_f64(plan.seconds),
        plan.max_calls,
    )
    .await;
    let after = CpuSample::take(server.pid, store.redis_port());
    closed.cpu = after.since(&before);
    let commands = match (commands_before, store.redis_port()) {
        (Some(before), Some(port)) => command_delta(&before, &command_stats(port)),
        _ => Vec::new(),
    };
    eprintln!(
        "  closed loop: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms",
        closed.rate(),
        closed.quantile_ms(0.5),
        closed.quantile_ms(0.99)
    );

    let before = CpuSample::take(server.pid, store.redis_port());
    let mut open = open_loop(
        &clients,
        &requests,
        plan.rate,
        Duration::from_secs_f64(plan.open_seconds),
    )
    .await;
    let after = CpuSample::take(server.pid, store.redis_port());
    open.cpu = after.since(&before);
    eprintln!(
        "  open loop {}/s: p50 {:.3} ms, p99 {:.3} ms",
        plan.rate,
        open.quantile_ms(0.5),
        open.quantile_ms(0.99)
    );
    server.stop().await;
    Ok(StoreRun {
        store: store.name(),
        closed,
        open,
        commands,
    })
}

// ---------------------------------------------------------------------------------------------
// CPU accounting.

/// CPU seconds used, from the kernel's counters.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    server: f64,
    client: f64,
    redis: Option<f64>,
    /// Every CPU of the machine together: busy seconds of CPU.
    machine_busy: f64,
}

/// CPU seconds used in a window.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    client: f64,
    redis: Option<f64>,
    machine_busy: f64,
}

impl CpuSample {
    fn take(server_pid: u32, redis_port: Option<u16>) -> CpuSample {
        let machine_busy = machine_cpu();
        CpuSample {
            server: process_cpu(&format!("/proc/{server_pid}/stat")),
            client: process_cpu("/proc/self/stat"),
            redis: redis_port.and_then(redis_cpu),
            machine_busy,
        }
    }

    fn since(&self, before: &CpuSample) -> CpuUse {
        CpuUse {
            server: self.server - before.server,
            client: self.client - before.client,
            redis: self.redis.zip(before.redis).map(|(a, b)| a - b),
            machine_busy: self.machine_busy - before.machine_busy,
        }
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        StdCommand::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in seconds.
fn process_cpu(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / clock_ticks()
}

/// Redis's own CPU (`INFO cpu`: used_cpu_user + used_cpu_sys), in seconds.
fn redis_cpu(port: u16) -> Option<f64> {
    let info = redis_cli(port, &["INFO", "cpu"])?;
    let user: f64 = info_field(&info, "used_cpu_user")?.parse().ok()?;
    let sys: f64 = info_field(&info, "used_cpu_sys")?.parse().ok()?;
    Some(user + sys)
}

/// All CPUs: busy seconds since boot, from the first line of `/proc/stat`.
fn machine_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is inside user)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / clock_ticks()
}

/// `INFO commandstats`: command → (calls, microseconds spent executing it).
fn command_stats(port: u16) -> HashMap<String, (u64, u64)> {
    let info = redis_cli(port, &["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_owned(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Per command run between two `command_stats`: (calls, µs per call), busiest first.
fn command_delta(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
) -> Vec<(String, u64, f64)> {
    let mut delta: Vec<(String, u64, f64)> = after
        .iter()
        .filter_map(|(name, (calls, usec))| {
            let (calls0, usec0) = before.get(name).copied().unwrap_or((0, 0));
            let calls = calls.checked_sub(calls0).filter(|n| *n > 0)?;
            let usec = usec.saturating_sub(usec0);
            Some((name.clone(), calls, usec as f64 / calls as f64))
        })
        .filter(|(name, _, _)| name != "info")
        .collect();
    delta.sort_by_key(|d| std::cmp::Reverse(d.1));
    delta
}

fn describe_commands(delta: &[(String, u64, f64)], per: u64, unit: &str) -> String {
    delta
        .iter()
        .map(|(name, calls, usec)| {
            format!(
                "{name} {:.2}/{unit} at {usec:.1} µs",
                *calls as f64 / per.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Redis memory per live session.

struct Footprint {
    sessions: usize,
    created: usize,
    failed: usize,
    bytes_before: u64,
    bytes_after: u64,
    keys_before: u64,
    keys_after: u64,
    elapsed: Duration,
    /// CPU seconds of this process (the in-process RedisStore) and of Redis.
    client_cpu: f64,
    redis_cpu: Option<f64>,
    commands: Vec<(String, u64, f64)>,
    round_trip: RoundTrip,
    /// `OBJECT ENCODING` of one session hash.
    encoding: String,
}

/// One more command on the store's connection: what the `SADD gf:tenants` after each new
/// session costs, measured with `PING` (the same path through the client, a trivial command).
#[derive(Default)]
struct RoundTrip {
    calls: u64,
    client_cpu: f64,
    redis_cpu: Option<f64>,
    /// One at a time, microseconds.
    latency: Option<Histogram<u64>>,
}

async fn round_trip(store: &RedisStore, port: u16, calls: u64) -> RoundTrip {
    let client_before = process_cpu("/proc/self/stat");
    let redis_before = redis_cpu(port);
    let ok = futures::stream::iter(0..calls)
        .map(|_| store.ping())
        .buffer_unordered(64)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await as u64;
    let client_cpu = process_cpu("/proc/self/stat") - client_before;
    let redis_cpu = redis_cpu(port).zip(redis_before).map(|(a, b)| a - b);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    for _ in 0..2_000 {
        let sent = Instant::now();
        if store.ping().await.is_ok()
            && let Some(h) = latency.as_mut()
        {
            h.saturating_record(sent.elapsed().as_micros() as u64);
        }
    }
    RoundTrip {
        calls: ok,
        client_cpu,
        redis_cpu,
        latency,
    }
}

impl Footprint {
    fn bytes_per_session(&self) -> f64 {
        self.bytes_after.saturating_sub(self.bytes_before) as f64 / self.created.max(1) as f64
    }
}

/// What a real Entra session brings: GUID user and sid, an e-mail-like name, an IPv4
/// client and a browser's user agent.
fn access_request(i: usize, now_secs: i64) -> AccessRequest {
    let guid = |kind: u32| format!("{kind:08x}-0000-4000-8000-{i:012x}");
    AccessRequest {
        identity: Arc::new(Identity {
            tenant: TENANT.into(),
            user: guid(0xb0b),
            display_name: Some(format!("user.{i}@contoso.example")),
            session: SessionKey {
                id: guid(0x5e5),
                anchor: SessionAnchor::Sid,
            },
            auth_time: None,
            issued_at: Some(now_secs),
            not_before: Some(now_secs),
            expires_at: now_secs + 3600,
            roles: Vec::new(),
        }),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(
            203,
            0,
            (i / 250 % 250) as u8,
            (i % 250 + 1) as u8,
        ))),
        user_agent: Some(USER_AGENT.into()),
    }
}

fn dbsize(port: u16) -> u64 {
    redis_cli(port, &["DBSIZE"])
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(0)
}

async fn session_footprint(
    plan: &Plan,
    redis: &RedisServer,
    first: usize,
    round_trips: u64,
) -> Result<Footprint, BoxError> {
    let clock = Arc::new(SystemClock);
    let store = RedisStore::new(
        RedisSettings {
            urls: vec![redis.url()],
            cluster: false,
            timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
        },
        Limits::default(),
        clock.clone(),
    );
    let now = clock.now_secs();
    // One session first: the script is loaded, the tenant's shared keys exist.
    let warm = store
        .check(&access_request(first + plan.sessions, now))
        .await?;
    if !matches!(warm, Verdict::Allow { created: true, .. }) {
        return Err(format!("the first session was not created: {warm:?}").into());
    }
    let bytes_before = redis.used_memory();
    let keys_before = dbsize(redis.port);
    let commands_before = command_stats(redis.port);
    let redis_cpu_before = redis_cpu(redis.port);
    let client_cpu_before = process_cpu("/proc/self/stat");
    let started = Instant::now();
    let store = &store;
    let results: Vec<bool> = futures::stream::iter(first..first + plan.sessions)
        .map(|i| async move {
            matches!(
                store.check(&access_request(i, now)).await,
                Ok(Verdict::Allow { created: true, .. })
            )
        })
        .buffer_unordered(plan.session_concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let client_cpu = process_cpu("/proc/self/stat") - client_cpu_before;
    let redis_cpu = redis_cpu(redis.port)
        .zip(redis_cpu_before)
        .map(|(a, b)| a - b);
    let commands = command_delta(&commands_before, &command_stats(redis.port));
    let bytes_after = redis.used_memory();
    let keys_after = dbsize(redis.port);
    let session_key = format!(
        "gf:{{{TENANT}}}:s:{}",
        access_request(first, now).identity.session.id
    );
    let encoding = redis_cli(redis.port, &["OBJECT", "ENCODING", &session_key])
        .map(|e| e.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let created = results.iter().filter(|ok| **ok).count();
    let round_trip = if round_trips > 0 {
        round_trip(store, redis.port, round_trips).await
    } else {
        RoundTrip::default()
    };
    let footprint = Footprint {
        sessions: plan.sessions,
        created,
        failed: plan.sessions - created,
        bytes_before,
        bytes_after,
        keys_before,
        keys_after,
        elapsed,
        client_cpu,
        redis_cpu,
        commands,
        round_trip,
        encoding,
    };
    eprintln!(
        "  {} sessions in {:.1} s ({:.0}/s), {:.0} bytes each (session hash: {})",
        footprint.created,
        elapsed.as_secs_f64(),
        footprint.created as f64 / elapsed.as_secs_f64(),
        footprint.bytes_per_session(),
        footprint.encoding
    );
    Ok(footprint)
}

// ---------------------------------------------------------------------------------------------
// The report.

struct Machine {
    cpu: String,
    cores: usize,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

fn micros_per(seconds: f64, calls: u64) -> f64 {
    seconds * 1e6 / calls.max(1) as f64
}

fn print_report(
    plan: &Plan,
    machine: &Machine,
    redis_version: &str,
    memory: &StoreRun,
    redis: &StoreRun,
    footprint: &Footprint,
    compact: &Footprint,
) {
    let runs = [memory, redis];
    let row = |label: &str, value: &dyn Fn(&StoreRun) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| value(r)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    println!();
    println!(
        "Machine: {} ({} cores, `nproc` = {}); Redis {redis_version}; client: {} tokio worker thread(s); \
         extauthz: {} tokio worker thread(s), RUST_LOG {}.",
        machine.cpu,
        machine.cores,
        machine.cores,
        plan.client_threads,
        plan.server_workers
            .map_or_else(|| format!("{} (default)", machine.cores), |n| n.to_string()),
        plan.server_log.as_deref().unwrap_or("unset (info)")
    );
    println!(
        "Closed loop: {} calls in flight over {} HTTP/2 connections, {:.0} s measured after {:.0} s warm-up. \
         Open loop: {}/s for {:.0} s. {} distinct tokens/sessions, each verified once (cached after).",
        plan.concurrency,
        plan.connections,
        plan.seconds,
        plan.warmup,
        plan.rate,
        plan.open_seconds,
        plan.tokens
    );
    println!();
    println!(
        "| gRPC Check | {} store | {} store |",
        runs[0].store, runs[1].store
    );
    println!("|---|---:|---:|");
    row("throughput, checks/s (closed loop)", &|r| {
        format!("{:.0}", r.closed.rate())
    });
    row(
        &format!("latency p50 / p99, ms (open loop {}/s)", plan.rate),
        &|r| {
            format!(
                "{:.3} / {:.3}",
                r.open.quantile_ms(0.5),
                r.open.quantile_ms(0.99)
            )
        },
    );
    row("latency p50 / p99, ms (closed loop)", &|r| {
        format!(
            "{:.2} / {:.2}",
            r.closed.quantile_ms(0.5),
            r.closed.quantile_ms(0.99)
        )
    });
    row("extauthz CPU µs/check (closed loop)", &|r| {
        format!("{:.1}", micros_per(r.closed.cpu.server, r.closed.calls))
    });
    row(
        &format!("extauthz CPU µs/check (open loop {}/s)", plan.rate),
        &|r| format!("{:.1}", micros_per(r.open.cpu.server, r.open.calls)),
    );
    row("Redis CPU µs/check (closed loop)", &|r| {
        r.closed.cpu.redis.map_or("–".into(), |s| {
            format!("{:.1}", micros_per(s, r.closed.calls))
        })
    });
    row(
        "Redis commands per check (script's own included), µs each inside Redis",
        &|r| {
            if r.commands.is_empty() {
                "–".into()
            } else {
                describe_commands(&r.commands, r.closed.calls, "check")
            }
        },
    );
    row("bench client CPU µs/check (closed loop)", &|r| {
        format!("{:.1}", micros_per(r.closed.cpu.client, r.closed.calls))
    });
    row("machine busy, cores: all / not ours (closed loop)", &|r| {
        let c = &r.closed.cpu;
        let seconds = r.closed.elapsed.as_secs_f64();
        let ours = c.server + c.client + c.redis.unwrap_or(0.0);
        format!(
            "{:.2} / {:.2}",
            c.machine_busy / seconds,
            (c.machine_busy - ours).max(0.0) / seconds
        )
    });
    row("answers not allowed (closed + open)", &|r| {
        let mut denied: HashMap<i32, u64> = r.closed.denied.clone();
        for (code, n) in &r.open.denied {
            *denied.entry(*code).or_default() += n;
        }
        let mut parts: Vec<String> = denied
            .iter()
            .map(|(code, n)| format!("{n}× {code}"))
            .collect();
        let failed = r.closed.failed + r.open.failed;
        if failed > 0 {
            parts.push(format!("{failed}× error"));
        }
        if r.open.dropped > 0 {
            parts.push(format!("{} dropped", r.open.dropped));
        }
        if parts.is_empty() {
            "0".into()
        } else {
            parts.join(", ")
        }
    });
    println!();
    println!("| Redis memory (`INFO memory` used_memory) | |");
    println!("|---|---:|");
    println!(
        "| live sessions created through `store.check` | {} of {} ({} failed), {:.1} s, {:.0}/s, {} in flight |",
        footprint.created,
        footprint.sessions,
        footprint.failed,
        footprint.elapsed.as_secs_f64(),
        footprint.created as f64 / footprint.elapsed.as_secs_f64(),
        plan.session_concurrency
    );
    println!(
        "| used_memory before → after | {} → {} bytes |",
        footprint.bytes_before, footprint.bytes_after
    );
    println!(
        "| **bytes per live session** (session hash encoded as {}) | **{:.0}** |",
        footprint.encoding,
        footprint.bytes_per_session()
    );
    println!(
        "| bytes per live session with `hash-max-listpack-value 256` (session hash: {}; {} more sessions) | {:.0} |",
        compact.encoding,
        compact.created,
        compact.bytes_per_session()
    );
    println!(
        "| CPU µs per session created: RedisStore client / Redis | {:.1} / {} |",
        micros_per(footprint.client_cpu, footprint.created as u64),
        footprint.redis_cpu.map_or("–".into(), |s| format!(
            "{:.1}",
            micros_per(s, footprint.created as u64)
        ))
    );
    println!(
        "| Redis commands per session created (script's own included), µs each inside Redis | {} |",
        describe_commands(&footprint.commands, footprint.created as u64, "session")
    );
    let rt = &footprint.round_trip;
    println!(
        "| one more round trip (PING on the store's connection, 64 in flight): CPU µs client / Redis; alone p50 | {:.1} / {} ; {} |",
        micros_per(rt.client_cpu, rt.calls),
        rt.redis_cpu
            .map_or("–".into(), |s| format!("{:.1}", micros_per(s, rt.calls))),
        rt.latency.as_ref().map_or("–".into(), |h| format!(
            "{:.3} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0
        ))
    );
    println!(
        "| keys per live session | {:.2} |",
        footprint.keys_after.saturating_sub(footprint.keys_before) as f64
            / footprint.created.max(1) as f64
    );
    println!();
    for run in runs {
        println!(
            "{} store detail: closed loop {} calls in {:.2} s, p90 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
             open loop {} calls, p90 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, send lag p99 {} µs; \
             open-loop CPU µs/check: Redis {}, client {:.1}",
            run.store,
            run.closed.calls,
            run.closed.elapsed.as_secs_f64(),
            run.closed.quantile_ms(0.9),
            run.closed.quantile_ms(0.999),
            run.closed.latency.max() as f64 / 1000.0,
            run.open.calls,
            run.open.quantile_ms(0.9),
            run.open.quantile_ms(0.999),
            run.open.latency.max() as f64 / 1000.0,
            run.open.send_lag_p99.unwrap_or(0),
            run.open.cpu.redis.map_or("–".into(), |s| format!(
                "{:.1}",
                micros_per(s, run.open.calls)
            )),
            micros_per(run.open.cpu.client, run.open.calls),
        );
    }
}
